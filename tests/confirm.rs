//! Confirmation end to end: `hashgate authority serve` (the range API) queried by curl and
//! by gateways, with a real false positive (a digest in the gateway's filter that the
//! authority does not list) and a confirmer that goes away.

mod common;

use std::path::Path;
use std::process::Command;

use common::procs::*;

fn authority(s: &Setup) -> (Killed, u16) {
    authority_with(s, &[])
}

fn authority_with(s: &Setup, extra: &[&str]) -> (Killed, u16) {
    std::fs::write(s.path("tokens.txt"), "# gateways\nsecret-token-1\n").unwrap();
    std::fs::write(s.path("token"), "secret-token-1\n").unwrap();
    let (child, port, _) = spawn_listening(
        Command::new(env!("CARGO_BIN_EXE_hashgate"))
            .args([
                "authority",
                "serve",
                "--list",
                s.path("list.txt").to_str().unwrap(),
                "--tokens",
                s.path("tokens.txt").to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
            ])
            .args(extra),
    );
    (child, port)
}

fn get(url: &str, token: Option<&str>) -> (u16, String) {
    let (code, _, body) = get_with(url, token, &[]);
    (code, body)
}

/// The status, the response headers and the body of a GET with `extra` curl arguments.
fn get_with(url: &str, token: Option<&str>, extra: &[&str]) -> (u16, String, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-D", "-", "-w", "\n%{http_code}"])
        .args(extra);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let out = cmd.arg(url).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (all, code) = text.rsplit_once('\n').unwrap();
    let (headers, body) = all.split_once("\r\n\r\n").unwrap_or((all, ""));
    (
        code.parse().unwrap(),
        headers.to_ascii_lowercase(),
        body.to_string(),
    )
}

#[test]
fn the_range_api_answers_padded_ranges_to_token_holders_only() {
    let s = Setup::new();
    let (_a, port) = authority(&s);
    let listed = sha256_hex(&std::fs::read(&s.listed).unwrap());
    let url = |p: &str| format!("http://127.0.0.1:{port}/v1/range/{p}");
    assert_eq!(get(&url(&format!("sha256/{}", &listed[..5])), None).0, 401);
    assert_eq!(
        get(&url(&format!("sha256/{}", &listed[..5])), Some("wrong")).0,
        401
    );
    let (code, body) = get(
        &url(&format!("sha256/{}", &listed[..5].to_uppercase())),
        Some("secret-token-1"),
    );
    assert_eq!(code, 200);
    let lines: Vec<&str> = body.lines().collect();
    assert!(
        lines.contains(&listed.as_str()),
        "the listed digest is in its range"
    );
    assert_eq!(lines.len() % 32, 0, "padded to a multiple of 32 lines");
    assert!(lines
        .iter()
        .all(|l| l.len() == 64 && l.starts_with(&listed[..5])));
    // A range with nothing listed looks the same from outside.
    let other = if listed.starts_with('0') {
        "fffff"
    } else {
        "00000"
    };
    let (code, body) = get(&url(&format!("sha256/{other}")), Some("secret-token-1"));
    assert_eq!((code, body.lines().count()), (200, 32));
    assert!(!body.contains(&listed));
    assert_eq!(
        get(&url("sha256/abc"), Some("secret-token-1")).0,
        400,
        "prefix too short"
    );
    // One prefix length only: a longer prefix could tell pad lines from listed ones.
    let (code, body) = get(
        &url(&format!("sha256/{}", &listed[..6])),
        Some("secret-token-1"),
    );
    assert_eq!(code, 400);
    assert!(body.contains("exactly 5 hex digits"), "{body}");
    assert_eq!(
        get(&url("sha256/abcdz"), Some("secret-token-1")).0,
        400,
        "not hex"
    );
    assert_eq!(get(&url("crc32/abcde"), Some("secret-token-1")).0, 404);
    assert_eq!(
        get(
            &format!("http://127.0.0.1:{port}/v1/list"),
            Some("secret-token-1")
        )
        .0,
        404
    );
}

#[test]
fn padding_cannot_be_stripped_answers_are_cacheable_and_every_token_is_rate_limited() {
    let s = Setup::new();
    let audit = s.path("confirm-audit.jsonl");
    let args = [
        "--rate",
        "60",
        "--burst",
        "3",
        "--audit-log",
        audit.to_str().unwrap(),
    ];
    let (a, port) = authority_with(&s, &args);
    let listed = sha256_hex(&std::fs::read(&s.listed).unwrap());
    let url = format!("http://127.0.0.1:{port}/v1/range/sha256/{}", &listed[..5]);
    let token = Some("secret-token-1");
    // Two answers for one prefix are the same: their intersection is the whole answer,
    // not the listed digests.
    let (code, headers, first) = get_with(&url, token, &[]);
    assert_eq!(code, 200);
    assert!(
        headers.contains("cache-control: private, max-age=600"),
        "{headers}"
    );
    let etag = headers
        .lines()
        .find_map(|l| l.strip_prefix("etag: "))
        .unwrap()
        .trim()
        .to_string();
    let (_, _, second) = get_with(&url, token, &[]);
    assert_eq!(first, second);
    assert_eq!(first.lines().count(), 32);
    // Revalidation by the tag.
    let (code, _, body) = get_with(&url, token, &["-H", &format!("If-None-Match: {etag}")]);
    assert_eq!((code, body.as_str()), (304, ""));
    // The burst is spent: 429 with Retry-After, while another prefix is no way around it.
    let (code, headers, _) = get_with(&url.replace(&listed[..5], "00000"), token, &[]);
    assert_eq!(code, 429, "{}", std::fs::read_to_string(&audit).unwrap());
    let wait: u64 = headers
        .lines()
        .find_map(|l| l.strip_prefix("retry-after: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    assert_eq!(get(&url, None).0, 401);
    // The same pad key after a restart gives the same padding.
    drop(a);
    let (_a, port) = authority_with(&s, &[]);
    let again = get(
        &url.replace(
            &url[..url.find("/v1").unwrap()],
            &format!("http://127.0.0.1:{port}"),
        ),
        token,
    );
    assert_eq!(again, (200, first));
    // Who asked for what: the token by its hash, never the token itself.
    let records: Vec<serde_json::Value> = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let statuses: Vec<u64> = records
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [200, 200, 304, 429, 401]);
    assert!(records[..4]
        .iter()
        .all(|r| r["token"].as_str().unwrap().len() == 16));
    assert!(records[4]["token"].is_null());
    assert_eq!(
        records[0]["path"],
        format!("/v1/range/sha256/{}", &listed[..5])
    );
    assert!(!std::fs::read_to_string(&audit)
        .unwrap()
        .contains("secret-token-1"));
}

/// A gateway with `filter`, a quarantine, a report log and `[confirm]` (extra keys in
/// `table`) pointing at the authority on `port`.
fn gateway(s: &Setup, name: &str, filter: &Path, port: u16, table: &str) -> (Killed, u16) {
    let p = |n: &str| s.path(&format!("{name}-{n}"));
    std::fs::create_dir_all(p("store")).unwrap();
    let config = format!(
        "filter = {filter:?}\npub = {key:?}\nstore = {store:?}\nquarantine_dir = {q:?}\naudit_log = {audit:?}\n\
         [confirm]\nurl = \"http://127.0.0.1:{port}\"\ntoken_file = {token:?}\nreport_log = {report:?}\ntimeout_secs = 2\n{table}\n",
        key = s.path("k.pub"),
        store = p("store"),
        q = p("quarantine"),
        audit = p("audit.log"),
        token = s.path("token"),
        report = p("reports.log"),
    );
    std::fs::write(p("config.toml"), config).unwrap();
    let (child, port, _) = spawn_listening(Command::new(env!("CARGO_BIN_EXE_hashgate")).args([
        "gateway",
        "--config",
        p("config.toml").to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]));
    (child, port)
}

fn records(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn put(port: u16, file: &Path, key: &str) -> u16 {
    curl_put(file, &format!("http://127.0.0.1:{port}/{key}"), &[])
}

#[test]
fn confirmed_hits_are_quarantined_and_reported_and_false_positives_are_not() {
    let s = Setup::new();
    let (_a, aport) = authority(&s);
    // The gateway's filter lists one more file than the authority: a false positive.
    let files = s.filter_listing("fp.hgf", 1, &[("fp.bin", 50_000)]);
    let fp = &files[1];
    let (_g, port) = gateway(&s, "g", &s.path("fp.hgf"), aport, "");
    assert_eq!(put(port, &s.listed, "listed.bin"), 451);
    assert_eq!(
        put(port, fp, "fp.bin"),
        451,
        "blocking acts on the filter hit"
    );
    assert_eq!(put(port, &s.clean, "clean.bin"), 201);
    let audit = records(&s.path("g-audit.log"));
    let evidence: Vec<&str> = audit
        .iter()
        .map(|r| r["evidence"].as_str().unwrap())
        .collect();
    assert_eq!(evidence, ["confirmed", "not-listed"]);
    assert!(audit[0]["quarantine"].is_string());
    assert!(audit[1]["quarantine"].is_null());
    assert_eq!(
        walk(&s.path("g-quarantine")).len(),
        1,
        "only the confirmed match is kept"
    );
    let reports = records(&s.path("g-reports.log"));
    assert_eq!(reports.len(), 1);
    assert_eq!(
        reports[0]["digest"],
        sha256_hex(&std::fs::read(&s.listed).unwrap())
    );
}

#[test]
fn blocking_can_wait_for_confirmation_and_an_unreachable_confirmer_has_its_outcome() {
    let s = Setup::new();
    let (authority_process, aport) = authority(&s);
    let files = s.filter_listing("fp.hgf", 1, &[("fp.bin", 50_000)]);
    let (_g, port) = gateway(
        &s,
        "wait",
        &s.path("fp.hgf"),
        aport,
        "block = \"confirmed\"",
    );
    assert_eq!(
        put(port, &files[1], "fp.bin"),
        201,
        "a refuted hit is not blocked"
    );
    assert_eq!(put(port, &s.listed, "listed.bin"), 451);

    drop(authority_process);
    let (_act, act_port) = gateway(&s, "act", &s.path("fp.hgf"), aport, "block = \"confirmed\"");
    let (_skip, skip_port) = gateway(
        &s,
        "skip",
        &s.path("fp.hgf"),
        aport,
        "block = \"confirmed\"\non_unavailable = \"skip\"",
    );
    assert_eq!(
        put(act_port, &s.listed, "a.bin"),
        451,
        "fails closed by default"
    );
    assert_eq!(
        put(skip_port, &s.listed, "b.bin"),
        201,
        "skip lets it through"
    );
    for name in ["act", "skip"] {
        let audit = records(&s.path(&format!("{name}-audit.log")));
        assert_eq!(audit[0]["evidence"], "confirmation-unavailable", "{name}");
        assert!(records(&s.path(&format!("{name}-reports.log"))).is_empty());
    }
    assert!(
        walk(&s.path("act-quarantine")).len() == 1,
        "act: quarantined too"
    );
}

/// `hashgate pdq` lines for `pictures` (of the PDQ reference photos), category `pictures`.
fn pdq_lines(pictures: &[&str]) -> String {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pdq");
    let mut args = vec!["pdq".to_string(), "--category".into(), "pictures".into()];
    args.extend(pictures.iter().map(|p| data.join(p).display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = hashgate(&args);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn pdq_matches_are_confirmed_by_one_window_and_only_confirmed_ones_are_kept_and_reported() {
    let s = Setup::new();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pdq");
    // The authority lists the bridge; the gateway's (older) filter also lists c.png,
    // which the authority has taken off its list since.
    let bridge = pdq_lines(&["bridge-mods/aaa-orig.jpg"]);
    let mut list = std::fs::read_to_string(s.path("list.txt")).unwrap();
    list.push_str(&bridge);
    std::fs::write(s.path("list.txt"), &list).unwrap();
    list.push_str(&pdq_lines(&["misc-images/c.png"]));
    std::fs::write(s.path("gateway-list.txt"), &list).unwrap();
    s.build(&s.path("gateway-list.txt"), "pdq.hgf", 2);
    let (_a, aport) = authority(&s);

    // The range of the bridge's first window: padded, every line a PDQ hash of it.
    let listed = bridge
        .trim()
        .strip_prefix("pdq:")
        .unwrap()
        .split(',')
        .next()
        .unwrap();
    let url = format!("http://127.0.0.1:{aport}/v1/range/pdq/{}", &listed[..4]);
    let (code, body) = get(&url, Some("secret-token-1"));
    assert_eq!(code, 200, "{body}");
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines.len(), 32, "{body}");
    assert!(lines.contains(&listed));
    assert!(lines
        .iter()
        .all(|l| l.len() == 64 && l.starts_with(&listed[..4])));
    // One window only: a longer prefix would tell pad lines from listed hashes.
    let longer = format!("http://127.0.0.1:{aport}/v1/range/pdq/{}", &listed[..5]);
    assert_eq!(get(&longer, Some("secret-token-1")).0, 400);

    let (_g, port) = gateway(&s, "g", &s.path("pdq.hgf"), aport, "");
    let edit = data.join("bridge-mods/high-contrast.jpg");
    assert_eq!(put(port, &edit, "edit.jpg"), 451);
    let delisted = data.join("misc-images/c.png");
    assert_eq!(
        put(port, &delisted, "c.png"),
        451,
        "blocking acts on the filter"
    );
    let audit = records(&s.path("g-audit.log"));
    let of = |path: &str| {
        audit
            .iter()
            .find(|r| r["path"] == path && r["algorithm"] == "pdq")
            .unwrap_or_else(|| panic!("no PDQ record of {path}: {audit:?}"))
    };
    assert_eq!(of("/edit.jpg")["evidence"], "confirmed");
    assert_eq!(of("/edit.jpg")["digest"], listed);
    assert!(of("/edit.jpg")["quarantine"].is_string());
    assert_eq!(of("/c.png")["evidence"], "not-listed");
    assert!(of("/c.png")["quarantine"].is_null());
    assert_eq!(
        walk(&s.path("g-quarantine")).len(),
        1,
        "only the confirmed match is kept"
    );
    let reports = records(&s.path("g-reports.log"));
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(reports[0]["path"], "/edit.jpg");
    assert!(reports[0]["pdq"]["distance"].as_u64().unwrap() <= 31);
}
