//! tus through the gateway: a real tus server (@tus/server with @tus/file-store) and a
//! real client (tus-js-client), both from npm on the machine's Node.js (scripts/test.sh
//! installs them), the gateway in tus mode (`--tus-spool`) between them.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::procs::*;

/// Where the npm packages are (scripts/test.sh installs them into target/tus-node).
fn modules() -> PathBuf {
    match std::env::var_os("HG_TUS_MODULES") {
        Some(dir) => dir.into(),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tus-node/node_modules"),
    }
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/tus")
        .join(name)
}

/// The tus server, storing under `dir`, and its port.
fn tus_server(dir: &Path) -> (Killed, u16) {
    std::fs::create_dir_all(dir).unwrap();
    let (child, port, _, _) = spawn_logged(
        Command::new("node")
            .arg(script("server.mjs"))
            .arg(dir)
            .env("HG_TUS_MODULES", modules()),
    );
    (child, port)
}

/// One tus-js-client upload of `file` to `endpoint` in `chunk`-byte PATCHes; its line.
fn client(endpoint: &str, file: &Path, chunk: usize, mode: &[&str], with_creation: bool) -> String {
    let out = Command::new("node")
        .arg(script("client.mjs"))
        .arg(endpoint)
        .arg(file)
        .arg(chunk.to_string())
        .args(mode)
        .env("HG_TUS_MODULES", modules())
        .env(
            "HG_TUS_WITH_CREATION",
            if with_creation { "1" } else { "0" },
        )
        .output()
        .expect("node with tus-js-client (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The uploads the tus server holds (file-store keeps `<id>` and `<id>.json`).
fn stored(dir: &Path) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = files_under(dir)
        .into_iter()
        .filter(|p| p.extension().is_none())
        .collect();
    files.sort();
    files.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

#[test]
fn tus_uploads_in_pieces_are_checked_as_the_file_they_make() {
    let s = Setup::new();
    let store = s.path("tus-files");
    let (_tus, tus_port) = tus_server(&store);
    let spool = s.path("tus-spool");
    let origin = format!("http://127.0.0.1:{tus_port}");
    let start = |listen: &str| {
        s.gateway_at(
            listen,
            &["--origin", &origin],
            &["--tus-spool", spool.to_str().unwrap()],
        )
    };
    let (gw, port, _) = start("127.0.0.1:0");
    let endpoint = format!("http://127.0.0.1:{port}/files/");
    let listed = std::fs::read(&s.listed).unwrap();
    let fifth = listed.len().div_ceil(5);
    let mut clean = std::fs::read(&s.big_clean).unwrap();
    clean.truncate(listed.len());
    std::fs::write(s.path("clean-3m"), &clean).unwrap();
    let failed = |line: &str, status: u16| line.starts_with(&format!("failed {status} "));

    // The listed file in five PATCHes: refused at the fifth, and terminated.
    let out = client(&endpoint, &s.listed, fifth, &[], false);
    assert!(failed(&out, 451), "{out}");
    // The first chunk riding on the creation (creation-with-upload).
    let out = client(&endpoint, &s.listed, fifth, &[], true);
    assert!(failed(&out, 451), "{out}");
    // In one PATCH.
    let out = client(&endpoint, &s.listed, listed.len(), &[], false);
    assert!(failed(&out, 451), "{out}");
    assert!(stored(&store).is_empty(), "a refused upload stayed");

    // A connection dropped after two chunks, then resumed: still the whole file.
    let out = client(
        &endpoint,
        &s.listed,
        fifth,
        &[&(2 * fifth).to_string()],
        false,
    );
    let url = out.strip_prefix("stopped ").expect(&out).to_string();
    let out = client(&endpoint, &s.listed, fifth, &["resume", &url], false);
    assert!(failed(&out, 451), "{out}");
    assert!(stored(&store).is_empty(), "a refused upload stayed");

    // The gateway restarted between two chunks: the spool is reloaded, the upload still
    // checked whole.
    let out = client(
        &endpoint,
        &s.listed,
        fifth,
        &[&(3 * fifth).to_string()],
        false,
    );
    let url = out.strip_prefix("stopped ").expect(&out).to_string();
    drop(gw);
    let (_gw, again, _) = start(&format!("127.0.0.1:{port}"));
    assert_eq!(again, port);
    let out = client(&endpoint, &s.listed, fifth, &["resume", &url], false);
    assert!(failed(&out, 451), "{out}");
    assert!(stored(&store).is_empty(), "a refused upload stayed");

    // Clean uploads, in pieces, resumed, and with the creation: intact.
    let out = client(&endpoint, &s.path("clean-3m"), fifth, &[], false);
    assert!(out.starts_with("done "), "{out}");
    let out = client(
        &endpoint,
        &s.path("clean-3m"),
        fifth,
        &[&fifth.to_string()],
        true,
    );
    let url = out.strip_prefix("stopped ").expect(&out).to_string();
    let out = client(
        &endpoint,
        &s.path("clean-3m"),
        fifth,
        &["resume", &url],
        false,
    );
    assert!(out.starts_with("done "), "{out}");
    assert_eq!(stored(&store), [clean.clone(), clean.clone()]);

    // An upload begun straight at the origin cannot be completed through the gateway:
    // it did not see the first pieces.
    let direct = format!("http://127.0.0.1:{tus_port}/files/");
    let out = client(
        &direct,
        &s.listed,
        fifth,
        &[&(2 * fifth).to_string()],
        false,
    );
    let url = out.strip_prefix("stopped ").expect(&out).to_string();
    let through = url.replace(&tus_port.to_string(), &port.to_string());
    let out = client(&endpoint, &s.listed, fifth, &["resume", &through], false);
    assert!(failed(&out, 503), "{out}");

    let audit = std::fs::read_to_string(s.path("audit.log")).unwrap();
    let blocks = audit
        .lines()
        .filter(|l| l.contains("\"action\":\"block\""))
        .count();
    assert!(blocks >= 5, "{audit}");
    // Refused and completed uploads leave nothing spooled (the unvouched one stays
    // until it is terminated).
    assert!(files_under(&spool).len() <= 2, "{:?}", files_under(&spool));
}

#[test]
fn an_abandoned_tus_upload_expires_from_the_spool_and_cannot_be_completed() {
    let s = Setup::new();
    let store = s.path("tus-files");
    let (_tus, tus_port) = tus_server(&store);
    let spool = s.path("tus-spool");
    let (_gw, port, admin) = s.configured_gateway(&format!(
        "origin = \"http://127.0.0.1:{tus_port}\"\ntus_spool_dir = {spool:?}\nspool_expire_secs = 2\n"
    ));
    let endpoint = format!("http://127.0.0.1:{port}/files/");
    let listed = std::fs::read(&s.listed).unwrap();
    let fifth = listed.len().div_ceil(5);

    // Two chunks of the listed file, then the client goes away.
    let out = client(
        &endpoint,
        &s.listed,
        fifth,
        &[&(2 * fifth).to_string()],
        false,
    );
    let url = out.strip_prefix("stopped ").expect(&out).to_string();
    assert!(!files_under(&spool).is_empty(), "the pieces are spooled");
    const EXPIRED: &str = "hashgate_spool_expired_total{spool=\"tus\"}";
    assert!(
        wait_until(Duration::from_secs(30), || metric(admin, EXPIRED) >= 1.0),
        "{}",
        metrics(admin)
    );
    assert!(files_under(&spool).is_empty(), "{:?}", files_under(&spool));

    // Resumed after expiry: the gateway no longer vouches for the first chunks.
    let out = client(&endpoint, &s.listed, fifth, &["resume", &url], false);
    assert!(out.starts_with("failed 503 "), "{out}");
    assert!(
        stored(&store).iter().all(|f| f.len() < listed.len()),
        "the listed file was completed at the origin"
    );

    // Uploads under way are not abandoned ones: a clean upload in small, quick pieces
    // completes while the sweeps go on.
    let clean = s.path("clean-1m");
    std::fs::write(&clean, &std::fs::read(&s.big_clean).unwrap()[..1 << 20]).unwrap();
    let out = client(&endpoint, &clean, 64 << 10, &[], false);
    assert!(out.starts_with("done "), "{out}");
}

#[test]
fn a_tus_upload_in_pieces_is_recorded_in_the_catalog_at_its_url() {
    let s = Setup::new();
    let store = s.path("tus-files");
    let (_tus, tus_port) = tus_server(&store);
    let catalog = s.path("state/catalog.db");
    let (_gw, port, _) = s.gateway(
        &["--origin", &format!("http://127.0.0.1:{tus_port}")],
        &[
            "--tus-spool",
            s.path("tus-spool").to_str().unwrap(),
            "--catalog",
            catalog.to_str().unwrap(),
        ],
    );
    let mut clean = std::fs::read(&s.big_clean).unwrap();
    clean.truncate(1 << 20);
    std::fs::write(s.path("clean-1m"), &clean).unwrap();
    let endpoint = format!("http://127.0.0.1:{port}/files/");
    let file = s.path("clean-1m");
    // In four PATCHes, in one, and whole in its creation (creation-with-upload).
    let mut paths: Vec<String> = [
        (clean.len().div_ceil(4), false),
        (clean.len(), false),
        (clean.len(), true),
    ]
    .into_iter()
    .map(|(chunk, with_creation)| {
        let out = client(&endpoint, &file, chunk, &[], with_creation);
        let url = out.strip_prefix("done ").expect(&out).to_string();
        url.parse::<hyper::Uri>()
            .map_or(url.clone(), |u| u.path().to_string())
    })
    .collect();
    paths.sort();
    // Stored once whole, at its URL (where a re-check would delete it).
    assert!(
        wait_until(Duration::from_secs(10), || s
            .recorded_at(&catalog, &[&file])
            == paths),
        "{:?}, uploaded to {paths:?}",
        s.recorded_at(&catalog, &[&file])
    );
}

/// The stand-in tus origin with the concatenation extension (tests/tus_origin.py:
/// neither @tus/file-store nor @tus/s3-store implements it, and tusd cannot be
/// installed here), storing under `root`, and its port.
fn concatenating_origin(root: &Path) -> (Killed, u16) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tus_origin.py");
    let (child, port, _, _) = spawn_logged(Command::new("python3").arg(script).arg(root));
    (child, port)
}

/// One tus request by curl: its status and `Location`.
fn tus_request(method: &str, url: &str, headers: &[String], body: Option<&Path>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-o", "/dev/null", "-D", "-", "-X", method, url])
        .args(["-H", "Tus-Resumable: 1.0.0"]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    if let Some(file) = body {
        cmd.args(["-H", "Content-Type: application/offset+octet-stream"])
            .arg("--data-binary")
            .arg(format!("@{}", file.display()));
    }
    let out = String::from_utf8_lossy(&cmd.output().unwrap().stdout).into_owned();
    // The last head's status (a `100 Continue` may come first).
    let status = out
        .lines()
        .rfind(|l| l.starts_with("HTTP/"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    let location = out
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("location")
                .then(|| value.trim().to_string())
        })
        .unwrap_or_default();
    (status, location)
}

#[test]
fn a_concatenation_of_partial_uploads_is_checked_as_the_file_it_makes() {
    let s = Setup::new();
    let root = s.path("tus-concat");
    let (_origin, origin_port) = concatenating_origin(&root);
    let spool = s.path("tus-spool");
    let (_gw, port, _) = s.gateway(
        &["--origin", &format!("http://127.0.0.1:{origin_port}")],
        &["--tus-spool", spool.to_str().unwrap()],
    );
    let endpoint = format!("http://127.0.0.1:{port}/files/");
    let mut clean = std::fs::read(&s.big_clean).unwrap();
    clean.truncate(1 << 20);
    let listed = std::fs::read(&s.listed).unwrap();

    // Each half a partial upload: the first whole in its creation, the second created
    // empty and sent in one PATCH; then the final upload joining them.
    let concatenate = |name: &str, bytes: &[u8]| -> (u16, String, [String; 2]) {
        let half = bytes.len() / 2;
        let (first, second) = (s.path(&format!("{name}.1")), s.path(&format!("{name}.2")));
        std::fs::write(&first, &bytes[..half]).unwrap();
        std::fs::write(&second, &bytes[half..]).unwrap();
        let partial = |len: usize| {
            vec![
                "Upload-Concat: partial".into(),
                format!("Upload-Length: {len}"),
            ]
        };
        let (status, a) = tus_request("POST", &endpoint, &partial(half), Some(&first));
        assert_eq!(status, 201, "{name}: the first partial upload");
        let (status, b) = tus_request("POST", &endpoint, &partial(bytes.len() - half), None);
        assert_eq!(status, 201, "{name}: the second partial upload");
        let (status, _) = tus_request("PATCH", &b, &["Upload-Offset: 0".into()], Some(&second));
        assert_eq!(status, 204, "{name}: the second partial's bytes");
        let concat = format!("Upload-Concat: final;{a} {b}");
        let (status, location) = tus_request("POST", &endpoint, &[concat], None);
        (status, location, [a, b])
    };

    // The listed file, joined from two clean halves: refused, and the halves terminated.
    let (status, _, partials) = concatenate("listed", &listed);
    assert_eq!(status, 451);
    for partial in &partials {
        assert_eq!(
            tus_request("HEAD", partial, &[], None).0,
            404,
            "{partial} terminated"
        );
    }

    // A clean file: joined at the origin, intact.
    let (status, location, _) = concatenate("clean", &clean);
    assert_eq!(status, 201);
    let joined = Command::new("curl")
        .args(["-s", "-H", "Tus-Resumable: 1.0.0", &location])
        .output()
        .unwrap()
        .stdout;
    assert!(joined == clean, "the concatenation is the clean file");
}
