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
