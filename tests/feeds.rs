//! Several authorities at once (`[[feed]]` tables): a real gateway (embedded store)
//! and `hashgate scan` checking every object against two authorities' filters, each
//! with its own policy, and feeds that update, break and go stale on their own.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::procs::*;
use hashgate_host::feed::protocol::{Envelope, Manifest};
use rand::RngCore;

fn ok(out: std::process::Output) {
    assert!(out.status.success(), "{out:?}");
}

fn md5_hex(bytes: &[u8]) -> String {
    let mut h = hashgate_host::hashing::ObjectHasher::new(&[hashgate_host::Algorithm::Md5]);
    h.update(bytes);
    hex::encode(&h.finish()[0].bytes)
}

/// A new random file `name` of `size` bytes in `s`.
fn random_file(s: &Setup, name: &str, size: usize) -> PathBuf {
    let mut bytes = vec![0u8; size];
    rand::thread_rng().fill_bytes(&mut bytes);
    std::fs::write(s.path(name), &bytes).unwrap();
    s.path(name)
}

/// `hashgate build` of `lines` into `out`, signed with `key` (base name), series `series`.
fn build(s: &Setup, key: &str, series: &str, version: u32, lines: &str, out: &str) -> PathBuf {
    let list = s.path(&format!("{out}.txt"));
    std::fs::write(&list, lines).unwrap();
    ok(hashgate(&[
        "build",
        "--key",
        s.path(&format!("{key}.key")).to_str().unwrap(),
        "--series",
        series,
        "--version",
        &version.to_string(),
        "--out",
        s.path(out).to_str().unwrap(),
        list.to_str().unwrap(),
    ]));
    s.path(out)
}

/// A gateway over the embedded store `store/` configured by `toml` alone (no filter
/// flags: the `[[feed]]` tables name the filters), with its log.
fn gateway(s: &Setup, toml: &str) -> (Killed, u16, u16, Log) {
    let config = s.path("feeds.toml");
    std::fs::write(&config, toml).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hashgate"));
    cmd.args(["gateway", "--config", config.to_str().unwrap()])
        .args(["--store", s.path("store").to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .args(["--audit-log", s.path("audit.log").to_str().unwrap()]);
    spawn_logged(&mut cmd)
}

/// `curl -s URL`: status and body.
fn get(url: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_string())
}

/// PUT `file` to `key`: status and body.
fn put(file: &Path, port: u16, key: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", "-T", file.to_str().unwrap()])
        .arg(format!("http://127.0.0.1:{port}/{key}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_string())
}

fn audit(s: &Setup) -> Vec<serde_json::Value> {
    s.audit_records("audit.log")
}

/// `hashgate gateway --check-config` with the config file `toml` (written as `name`)
/// over the embedded store.
fn check_config(s: &Setup, name: &str, toml: &str) -> std::process::Output {
    let config = s.path(name);
    std::fs::write(&config, toml).unwrap();
    hashgate(&[
        "gateway",
        "--config",
        config.to_str().unwrap(),
        "--store",
        s.path("store").to_str().unwrap(),
        "--check-config",
    ])
}

/// Two authorities with fixed filters: `nl` (SHA-256 entries, blocks) and `iwf` (MD5
/// entries, only monitored by this operator); `a` listed by nl, `b` and `d` by iwf, `c`
/// by both.
struct Two {
    s: Setup,
    a: PathBuf,
    b: PathBuf,
    c: PathBuf,
    d: PathBuf,
    toml: String,
}

fn two_authorities() -> Two {
    let s = Setup::new();
    ok(hashgate(&[
        "keygen",
        "--out",
        s.path("k2").to_str().unwrap(),
    ]));
    let (a, b, c, d) = (
        random_file(&s, "a.bin", 5000),
        random_file(&s, "b.bin", 6000),
        random_file(&s, "c.bin", 7000),
        random_file(&s, "d.bin", 8000),
    );
    let sha = |f: &Path| sha256_hex(&std::fs::read(f).unwrap());
    let md5 = |f: &Path| md5_hex(&std::fs::read(f).unwrap());
    let nl = build(
        &s,
        "k",
        "nl-list",
        4,
        &format!("{},csam\n{},csam\n", sha(&a), sha(&c)),
        "nl.hgf",
    );
    let iwf = build(
        &s,
        "k2",
        "iwf-list",
        9,
        &format!(
            "md5:{},grade-c\nmd5:{},grade-c\nmd5:{},grade-c\n",
            md5(&b),
            md5(&c),
            md5(&d)
        ),
        "iwf.hgf",
    );
    let toml = format!(
        "[[feed]]\nname = \"nl\"\nfilter = {:?}\npub = {:?}\n\n\
         [[feed]]\nname = \"iwf\"\nfilter = {:?}\npub = {:?}\nactions = {{ default = \"monitor\" }}\n",
        nl,
        s.path("k.pub"),
        iwf,
        s.path("k2.pub"),
    );
    Two {
        s,
        a,
        b,
        c,
        d,
        toml,
    }
}

#[test]
fn each_authority_decides_by_its_own_policy_the_strictest_wins_and_the_hit_is_named() {
    let t = two_authorities();
    let (_gw, port, admin, log) = gateway(&t.s, &t.toml);
    let ready: serde_json::Value = log
        .lock()
        .unwrap()
        .iter()
        .find_map(|l| {
            l.strip_prefix("ready ")
                .map(|j| serde_json::from_str(j).unwrap())
        })
        .unwrap();
    assert_eq!(ready["feeds"][0]["name"], "nl", "{ready}");
    assert_eq!(ready["feeds"][1]["series"], "iwf-list", "{ready}");

    // nl lists a (SHA-256) and blocks: refused, naming nl and its list.
    let (code, body) = put(&t.a, port, "a");
    assert_eq!(code, 451, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["authority"], "nl", "{body}");
    assert_eq!(body["filter"]["series"], "nl-list", "{body}");
    assert_eq!(body["filter"]["version"], 4, "{body}");
    // iwf lists b (MD5: hashed although nl's filter holds no MD5) and this operator
    // only monitors iwf: stored, audited as iwf's.
    assert_eq!(put(&t.b, port, "b").0, 201);
    assert!(t.s.path("store/b").exists());
    // c is on both lists: nl's block is stricter than iwf's monitor.
    assert_eq!(put(&t.c, port, "c").0, 451);
    assert!(!t.s.path("store/c").exists());
    // Clean: stored.
    assert_eq!(put(&t.s.clean, port, "clean").0, 201);

    let records = audit(&t.s);
    let of = |path: &str| -> Vec<&serde_json::Value> {
        records.iter().filter(|r| r["path"] == path).collect()
    };
    let a = of("/a");
    assert_eq!(a.len(), 1, "{records:?}");
    assert_eq!(a[0]["authority"], "nl");
    assert_eq!(a[0]["filter_series"], "nl-list");
    assert_eq!(a[0]["action"], "block");
    let b = of("/b");
    assert_eq!(b.len(), 1, "{records:?}");
    assert_eq!(b[0]["authority"], "iwf");
    assert_eq!(b[0]["algorithm"], "md5");
    assert_eq!(b[0]["category"], "grade-c");
    assert_eq!(b[0]["action"], "monitor");
    let mut c: Vec<(String, String)> = of("/c")
        .iter()
        .map(|r| {
            (
                r["authority"].as_str().unwrap().to_string(),
                r["action"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    c.sort();
    assert_eq!(
        c,
        [
            ("iwf".into(), "monitor".into()),
            ("nl".into(), "block".into())
        ]
    );

    // Per-feed metrics and readiness.
    assert_eq!(
        metric(
            admin,
            "hashgate_feed_hits_total{feed=\"nl\",action=\"block\"}"
        ),
        2.0
    );
    assert_eq!(
        metric(
            admin,
            "hashgate_feed_hits_total{feed=\"iwf\",action=\"monitor\"}"
        ),
        2.0
    );
    assert_eq!(
        metric(admin, "hashgate_feed_filter_version{feed=\"iwf\"}"),
        9.0
    );
    assert_eq!(
        metric(admin, "hashgate_feed_filter_version{feed=\"nl\"}"),
        4.0
    );
    assert_eq!(metric(admin, "hashgate_inspected_objects_total"), 4.0);
    assert_eq!(get(&format!("http://127.0.0.1:{admin}/readyz/nl")).0, 200);
    assert_eq!(get(&format!("http://127.0.0.1:{admin}/readyz/iwf")).0, 200);
    assert_eq!(
        get(&format!("http://127.0.0.1:{admin}/readyz/ncmec")).0,
        404
    );
    assert_eq!(get(&format!("http://127.0.0.1:{admin}/readyz")).0, 200);
}

#[test]
fn scan_checks_every_file_against_every_filter_given() {
    let t = two_authorities();
    let dir = t.s.path("tree");
    std::fs::create_dir_all(&dir).unwrap();
    for f in [&t.a, &t.b, &t.s.clean] {
        std::fs::copy(f, dir.join(f.file_name().unwrap())).unwrap();
    }
    let p = |n: &str| t.s.path(n).to_str().unwrap().to_string();
    let out = hashgate(&[
        "scan",
        "--json",
        "--filter",
        &p("nl.hgf"),
        "--pub",
        &p("k.pub"),
        "--filter",
        &p("iwf.hgf"),
        "--pub",
        &p("k2.pub"),
        dir.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let hits: Vec<(String, String)> = lines
        .iter()
        .filter(|l| l["type"] == "hit")
        .map(|l| {
            let path = l["path"].as_str().unwrap();
            let name = Path::new(path).file_name().unwrap().to_str().unwrap();
            (
                name.to_string(),
                l["authority"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(hits.len(), 2, "{lines:?}");
    assert!(
        hits.contains(&("a.bin".into(), "nl-list".into())),
        "{hits:?}"
    );
    assert!(
        hits.contains(&("b.bin".into(), "iwf-list".into())),
        "{hits:?}"
    );
    let summary = lines.iter().find(|l| l["type"] == "summary").unwrap();
    assert_eq!(summary["hits"], 2, "{summary}");
    assert_eq!(summary["filters"].as_array().unwrap().len(), 2, "{summary}");

    // Two filters and three keys: refused before anything is read.
    let out = hashgate(&[
        "scan",
        "--filter",
        &p("nl.hgf"),
        "--filter",
        &p("iwf.hgf"),
        "--pub",
        &p("k.pub"),
        "--pub",
        &p("k2.pub"),
        "--pub",
        &p("k.pub"),
        dir.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--pub"),
        "{out:?}"
    );
    // A filter signed by another key than the one given for it is refused.
    let out = hashgate(&[
        "scan",
        "--filter",
        &p("nl.hgf"),
        "--pub",
        &p("k.pub"),
        "--filter",
        &p("iwf.hgf"),
        "--pub",
        &p("k.pub"),
        dir.to_str().unwrap(),
    ]);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("iwf.hgf"),
        "{out:?}"
    );
}

#[test]
fn feed_tables_that_cannot_work_are_refused_at_start_up() {
    let t = two_authorities();
    let check = |toml: &str| -> String {
        let out = check_config(&t.s, "bad.toml", toml);
        assert!(!out.status.success(), "{toml}: {out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // The good one passes the check.
    ok(check_config(&t.s, "good.toml", &t.toml));
    let nl = t.s.path("nl.hgf");
    let key = t.s.path("k.pub");
    let one = |name: &str| format!("[[feed]]\nname = {name:?}\nfilter = {nl:?}\npub = {key:?}\n");
    let err = check(&format!("{}{}", one("nl"), one("nl")));
    assert!(err.contains("two feeds are named"), "{err}");
    let err = check(&one("nl/../x"));
    assert!(err.contains("name must be"), "{err}");
    let err = check(&format!("filter = {nl:?}\n{}", one("nl")));
    assert!(err.contains("`filter` is set at the top level"), "{err}");
    let err = check(&format!("[[feed]]\nname = \"nl\"\nfilter = {nl:?}\n"));
    assert!(err.contains("filter needs pub"), "{err}");
    let err = check("[[feed]]\nname = \"nl\"\nurl = \"http://127.0.0.1:1/m.json\"\n");
    assert!(err.contains("url needs root"), "{err}");
    let err = check(&format!("{}typo = 1\n", one("nl")));
    assert!(err.contains("typo"), "{err}");
    // A filter signed by another authority's key than its table names.
    let err = check(&format!(
        "[[feed]]\nname = \"iwf\"\nfilter = {:?}\npub = {key:?}\n",
        t.s.path("iwf.hgf")
    ));
    assert!(err.contains("iwf"), "{err}");
}

/// One authority's feed: its keys, its root, the nginx serving its `origin/`.
struct Authority {
    s: Setup,
    series: &'static str,
    nginx: Option<Nginx>,
    port: u16,
}

impl Authority {
    /// A feed whose first version expires in `expires` (`1h`, `8s`).
    fn new(series: &'static str, expires: &str) -> Authority {
        let s = Setup::new();
        let p = |n: &str| s.path(n).to_str().unwrap().to_string();
        for k in ["r", "m"] {
            ok(hashgate(&["keygen", "--out", &p(k)]));
        }
        ok(hashgate(&[
            "root",
            "init",
            "--root-key",
            &p("r.pub"),
            "--manifest-key",
            &p("m.pub"),
            "--out",
            &p("root.json"),
        ]));
        ok(hashgate(&[
            "root",
            "sign",
            "--key",
            &p("r.key"),
            &p("root.json"),
        ]));
        let (nginx, port, _) = s.nginx_serving(None, "", None);
        let a = Authority {
            s,
            series,
            nginx: Some(nginx),
            port,
        };
        a.publish(expires);
        a
    }

    fn publish(&self, expires: &str) {
        let p = |n: &str| self.s.path(n).to_str().unwrap().to_string();
        ok(hashgate(&[
            "publish",
            "--feed",
            &p("origin"),
            "--series",
            self.series,
            "--root",
            &p("root.json"),
            "--min-poll",
            "1s",
            "--expires",
            expires,
            "--key",
            &p("m.key"),
            &p("list.txt"),
        ]));
    }

    /// Lists a new file and publishes the next version; returns the file.
    fn list_new_file(&self, name: &str) -> PathBuf {
        let file = random_file(&self.s, name, 3000);
        let mut list = std::fs::read_to_string(self.s.path("list.txt")).unwrap();
        list.push_str(&format!("{}\n", sha256_hex(&std::fs::read(&file).unwrap())));
        std::fs::write(self.s.path("list.txt"), list).unwrap();
        self.publish("1h");
        file
    }

    fn table(&self, name: &str, state: &Path) -> String {
        format!(
            "[[feed]]\nname = {name:?}\nurl = \"http://127.0.0.1:{}/manifest.json\"\nroot = {:?}\n\
             state_dir = {:?}\npoll_secs = 1\ntimeout_secs = 3\n",
            self.port,
            self.s.path("root.json"),
            state.join(name),
        )
    }
}

#[test]
fn one_authoritys_broken_feed_leaves_the_other_enforced_and_updating() {
    // nl's first version expires soon: its feed will break and it will go stale.
    let (nl, iwf) = (
        Authority::new("nl-feed", "10s"),
        Authority::new("iwf-feed", "1h"),
    );
    let here = Setup::new();
    let state = here.path("state");
    let toml = format!("{}\n{}", nl.table("nl", &state), iwf.table("iwf", &state));
    let (_gw, port, admin, _log) = gateway(&here, &toml);
    // Both feeds' first versions are in force and kept in a state directory of their own.
    assert_eq!(put(&nl.s.listed, port, "nl-1").0, 451);
    assert_eq!(put(&iwf.s.listed, port, "iwf-1").0, 451);
    assert!(state.join("nl").is_dir() && state.join("iwf").is_dir());
    let polls = |feed: &str, outcome: &str| {
        metric(
            admin,
            &format!("hashgate_feed_polls_by_feed_total{{feed=\"{feed}\",outcome=\"{outcome}\"}}"),
        )
    };

    // nl's feed is forged: a later version in the payload, the old signature.
    let path = nl.s.path("origin/manifest.json");
    let mut envelope = Envelope::parse(&std::fs::read(&path).unwrap()).unwrap();
    let mut manifest: Manifest = serde_json::from_slice(&envelope.payload().unwrap()).unwrap();
    manifest.version += 1;
    envelope.payload = Manifest::envelope(&manifest).payload;
    std::fs::write(&path, envelope.to_bytes()).unwrap();
    // nginx's ETag is the size and the mtime in seconds: the forged file may match the
    // real one in both, and be answered 304. A later mtime makes it new.
    let later = std::time::SystemTime::now() + Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(later)
        .unwrap();
    assert!(wait_until(Duration::from_secs(30), || polls(
        "nl", "failed"
    ) >= 2.0));
    // Then its server goes away altogether.
    let mut nl = nl;
    drop(nl.nginx.take());
    let failed = polls("nl", "failed");
    // (Its polls back off after failures: up to a minute apart.)
    assert!(wait_until(Duration::from_secs(90), || polls(
        "nl", "failed"
    ) > failed));

    // iwf updates meanwhile: its new entry is enforced, nl's filter still is.
    let new = iwf.list_new_file("new.bin");
    assert!(
        wait_until(Duration::from_secs(20), || {
            metric(admin, "hashgate_feed_filter_version{feed=\"iwf\"}") >= 2.0
        }),
        "iwf's update was not applied while nl's feed was broken"
    );
    assert_eq!(put(&new, port, "iwf-new").0, 451);
    assert_eq!(put(&nl.s.listed, port, "nl-2").0, 451);
    assert_eq!(polls("iwf", "failed"), 0.0);

    // nl's filter goes stale: /readyz says so and names it; iwf's is ready.
    assert!(wait_until(Duration::from_secs(20), || {
        get(&format!("http://127.0.0.1:{admin}/readyz/nl")).0 == 503
    }));
    let (code, body) = get(&format!("http://127.0.0.1:{admin}/readyz"));
    assert_eq!(code, 503);
    assert!(body.contains("nl") && !body.contains("iwf"), "{body}");
    assert_eq!(get(&format!("http://127.0.0.1:{admin}/readyz/iwf")).0, 200);
    assert_eq!(
        metric(admin, "hashgate_feed_filter_stale{feed=\"nl\"}"),
        1.0
    );
    assert_eq!(
        metric(admin, "hashgate_feed_filter_stale{feed=\"iwf\"}"),
        0.0
    );
    // Still enforcing the stale filter.
    assert_eq!(put(&nl.s.listed, port, "nl-3").0, 451);
}

/// The ISTag an ICAP server answers OPTIONS with.
fn istag(port: u16) -> String {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.write_all(
        b"OPTIONS icap://127.0.0.1/reqmod ICAP/1.0\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut answer = String::new();
    c.read_to_string(&mut answer).unwrap();
    answer
        .lines()
        .find_map(|l| l.strip_prefix("ISTag: "))
        .unwrap_or_else(|| panic!("no ISTag in {answer}"))
        .to_string()
}

#[test]
fn the_icap_istag_changes_when_any_authoritys_filter_does() {
    let t = two_authorities();
    let icap = |toml: &str| {
        let config =
            t.s.path(&format!("icap-{}.toml", sha256_hex(toml.as_bytes())));
        std::fs::write(&config, toml).unwrap();
        spawn_listening(Command::new(env!("CARGO_BIN_EXE_hashgate")).args([
            "icap",
            "--config",
            config.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ]))
    };
    let (_one, port, _) = icap(&t.toml);
    let tag = istag(port);
    assert!(tag.starts_with('"') && tag.len() <= 34, "{tag}");
    // The same nl filter, and iwf's next version.
    let md5 = md5_hex(&std::fs::read(&t.b).unwrap());
    let iwf10 = build(
        &t.s,
        "k2",
        "iwf-list",
        10,
        &format!("md5:{md5}\n"),
        "iwf10.hgf",
    );
    let toml = t
        .toml
        .replace(&format!("{:?}", t.s.path("iwf.hgf")), &format!("{iwf10:?}"));
    assert_ne!(toml, t.toml);
    let (_two, port2, _) = icap(&toml);
    assert_ne!(
        istag(port2),
        tag,
        "a new version of one authority's filter needs a new ISTag"
    );
    // The same filters again: the same tag (a proxy's cached verdicts stay valid).
    let (_three, port3, _) = icap(&t.toml);
    assert_eq!(istag(port3), tag);
}

/// `hashgate authority serve` for one authority's list, taking feedback from the
/// operators whose keys are in `operators`, keeping it in `kept`.
fn authority_serve(s: &Setup, list: &Path, operators: &Path, kept: &Path) -> (Killed, u16) {
    let tokens = s.path("tokens");
    std::fs::write(&tokens, "a-token-for-range-queries\n").unwrap();
    let (child, port, _) = spawn_listening(Command::new(env!("CARGO_BIN_EXE_hashgate")).args([
        "authority",
        "serve",
        "--list",
        list.to_str().unwrap(),
        "--tokens",
        tokens.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--operators",
        operators.to_str().unwrap(),
        "--feedback-dir",
        kept.to_str().unwrap(),
    ]));
    (child, port)
}

fn totals(kept: &Path) -> Vec<serde_json::Value> {
    let out = hashgate(&[
        "authority",
        "feedback",
        "--json",
        "--feedback-dir",
        kept.to_str().unwrap(),
    ]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn each_authority_is_told_only_of_its_own_lists_hits_and_false_positives() {
    let t = two_authorities();
    ok(hashgate(&[
        "keygen",
        "--out",
        t.s.path("op").to_str().unwrap(),
    ]));
    let operators = t.s.path("operators");
    std::fs::create_dir(&operators).unwrap();
    std::fs::copy(t.s.path("op.pub"), operators.join("op.pub")).unwrap();
    let (nl_kept, iwf_kept) = (t.s.path("kept-nl"), t.s.path("kept-iwf"));
    let (_nl, nl_port) = authority_serve(&t.s, &t.s.path("nl.hgf.txt"), &operators, &nl_kept);
    let (_iwf, iwf_port) = authority_serve(&t.s, &t.s.path("iwf.hgf.txt"), &operators, &iwf_kept);
    // The operator allow-lists d (a false positive of iwf's list) and a clean file.
    let md5 = |f: &Path| md5_hex(&std::fs::read(f).unwrap());
    let sha = |f: &Path| sha256_hex(&std::fs::read(f).unwrap());
    std::fs::write(
        t.s.path("allow.txt"),
        format!("md5:{}\nsha256:{}\n", md5(&t.d), sha(&t.s.clean)),
    )
    .unwrap();
    let feedback = |port: u16| {
        format!(
            "[feed.feedback]\nurl = \"http://127.0.0.1:{port}/v1/feedback\"\nkey = {:?}\ninterval_secs = 1\n",
            t.s.path("op.key")
        )
    };
    // Each [[feed]] table gets its own [feed.feedback], right after it.
    let tables: Vec<&str> = t.toml.split("[[feed]]").filter(|x| !x.is_empty()).collect();
    let toml = format!(
        "allow_list = {:?}\n[[feed]]{}{}\n[[feed]]{}{}",
        t.s.path("allow.txt"),
        tables[0],
        feedback(nl_port),
        tables[1],
        feedback(iwf_port)
    );
    let (_gw, port, _, _) = gateway(&t.s, &toml);
    for (file, key) in [(&t.a, "a1"), (&t.a, "a2"), (&t.b, "b"), (&t.c, "c")] {
        put(file, port, key);
    }
    assert_eq!(put(&t.d, port, "d").0, 201, "d is allow-listed");
    let hits = |kept: &Path, entry: &str| -> u64 {
        totals(kept)
            .iter()
            .find(|x| x["entry"] == entry)
            .map_or(0, |x| x["hits"].as_u64().unwrap_or(0))
    };
    let (a, c) = (
        format!("sha256:{}", sha(&t.a)),
        format!("sha256:{}", sha(&t.c)),
    );
    let (b, c5) = (format!("md5:{}", md5(&t.b)), format!("md5:{}", md5(&t.c)));
    assert!(
        wait_until(Duration::from_secs(30), || {
            hits(&nl_kept, &a) == 2
                && hits(&nl_kept, &c) == 1
                && hits(&iwf_kept, &b) == 1
                && hits(&iwf_kept, &c5) == 1
        }),
        "nl: {:?}\niwf: {:?}",
        totals(&nl_kept),
        totals(&iwf_kept)
    );
    // Neither hears of the other's entries, nor of a false positive not on its list.
    let nl = totals(&nl_kept);
    assert!(
        nl.iter()
            .all(|x| x["entry"].as_str().unwrap().starts_with("sha256:")),
        "{nl:?}"
    );
    assert!(nl.iter().all(|x| x["allowed_by"] == 0), "{nl:?}");
    let iwf = totals(&iwf_kept);
    assert!(
        iwf.iter()
            .all(|x| x["entry"].as_str().unwrap().starts_with("md5:")),
        "{iwf:?}"
    );
    let allowed: Vec<&str> = iwf
        .iter()
        .filter(|x| x["allowed_by"] == 1)
        .map(|x| x["entry"].as_str().unwrap())
        .collect();
    assert_eq!(allowed, [format!("md5:{}", md5(&t.d))], "{iwf:?}");
}

#[test]
fn a_quarantine_action_keeps_copies_of_its_categories_only() {
    let t = two_authorities();
    let quarantine = t.s.path("quarantine");
    // nl's csam entries are quarantined; iwf's grade-c entries blocked without a copy.
    let toml = format!(
        "[[feed]]\nname = \"nl\"\nfilter = {:?}\npub = {:?}\nactions = {{ csam = \"quarantine\" }}\n\n\
         [[feed]]\nname = \"iwf\"\nfilter = {:?}\npub = {:?}\n",
        t.s.path("nl.hgf"),
        t.s.path("k.pub"),
        t.s.path("iwf.hgf"),
        t.s.path("k2.pub"),
    );
    // Without a quarantine directory the gateway refuses to start.
    let out = check_config(&t.s, "q.toml", &toml);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("needs quarantine_dir"),
        "{out:?}"
    );
    let toml = format!("quarantine_dir = {quarantine:?}\n{toml}");
    let (_gw, port, _, _) = gateway(&t.s, &toml);
    let kept = || files_under(&quarantine).len();
    // b: iwf blocks it, keeps no copy.
    assert_eq!(put(&t.b, port, "b").0, 451);
    assert_eq!(kept(), 0);
    // a: nl quarantines it: refused, its copy kept and named in the audit record.
    assert_eq!(put(&t.a, port, "a").0, 451);
    assert_eq!(kept(), 1);
    let copy = &files_under(&quarantine)[0];
    assert_eq!(std::fs::read(copy).unwrap(), std::fs::read(&t.a).unwrap());
    let records = audit(&t.s);
    let a = records.iter().find(|r| r["path"] == "/a").unwrap();
    assert_eq!(a["action"], "block");
    assert!(a["quarantine"].as_str().is_some(), "{a}");
    let b = records.iter().find(|r| r["path"] == "/b").unwrap();
    assert!(b.get("quarantine").is_none(), "{b}");
}

#[test]
fn a_stored_object_a_later_version_of_either_authority_lists_is_found_and_named() {
    // Both authorities call their list alike: each re-check is its own all the same.
    let (nl, iwf) = (Authority::new("csam", "1h"), Authority::new("csam", "1h"));
    let here = Setup::new();
    let state = here.path("state");
    let toml = format!(
        "[catalog]\npath = {:?}\naction = \"report\"\n\n{}\n{}",
        here.path("catalog.db"),
        nl.table("nl", &state),
        iwf.table("iwf", &state)
    );
    let (_gw, port, admin, _log) = gateway(&here, &toml);
    let (early, late) = (
        random_file(&here, "early.bin", 4000),
        random_file(&here, "late.bin", 5000),
    );
    assert_eq!(put(&early, port, "early.bin").0, 201);
    assert_eq!(put(&late, port, "late.bin").0, 201);
    let list = |a: &Authority, file: &Path| {
        let mut text = std::fs::read_to_string(a.s.path("list.txt")).unwrap();
        text.push_str(&format!("{}\n", sha256_hex(&std::fs::read(file).unwrap())));
        std::fs::write(a.s.path("list.txt"), text).unwrap();
        a.publish("1h");
    };
    let retroactive = || -> Vec<serde_json::Value> {
        audit(&here)
            .into_iter()
            .filter(|r| r["evidence"] == "retroactive")
            .collect()
    };
    list(&iwf, &early);
    assert!(
        wait_until(Duration::from_secs(30), || retroactive().len() == 1),
        "{:?}",
        retroactive()
    );
    list(&nl, &late);
    assert!(
        wait_until(Duration::from_secs(30), || retroactive().len() == 2),
        "{:?}",
        retroactive()
    );
    let found: Vec<(String, String, u64)> = retroactive()
        .iter()
        .map(|r| {
            (
                r["path"].as_str().unwrap().to_string(),
                r["authority"].as_str().unwrap().to_string(),
                r["filter_version"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            ("/early.bin".into(), "iwf".into(), 2),
            ("/late.bin".into(), "nl".into(), 2)
        ]
    );
    assert!(metric(admin, "hashgate_retroactive_hits_total{action=\"report\"}") >= 2.0);
}
