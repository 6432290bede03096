//! Nextcloud chunked upload v2 through the gateway (`--nextcloud-spool`): curl sends the
//! request shapes Nextcloud's developer manual documents, to a WebDAV origin
//! (tests/nextcloud_origin.py) that assembles chunks as the manual says. Nextcloud
//! itself cannot run here (PHP, a database): this origin stands in for it.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::procs::*;

const FOLDER: &str = "/remote.php/dav/uploads/alice";

/// The stand-in origin, storing under `root`, and its port.
fn origin(root: &Path) -> (Killed, u16) {
    std::fs::create_dir_all(root).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/nextcloud_origin.py");
    let (child, port, _, _) = spawn_logged(Command::new("python3").arg(script).arg(root));
    (child, port)
}

/// `file` uploaded as chunks of `chunk` bytes named by `name`, then assembled at
/// `destination`; the status of every request, in order.
fn chunked(
    gw: &str,
    id: &str,
    file: &Path,
    chunk: usize,
    name: impl Fn(usize) -> String,
    destination: &str,
) -> Vec<u16> {
    let data = std::fs::read(file).unwrap();
    let folder = format!("{gw}{FOLDER}/{id}");
    let target = format!("Destination: {gw}/remote.php/dav/files/alice/{destination}");
    let total = format!("OC-Total-Length: {}", data.len());
    let mut statuses = vec![curl(&["-X", "MKCOL", "-H", &target, &folder])];
    for (i, piece) in data.chunks(chunk).enumerate() {
        let part = file.with_extension(format!("chunk{i}"));
        std::fs::write(&part, piece).unwrap();
        statuses.push(curl_put(
            &part,
            &format!("{folder}/{}", name(i + 1)),
            &["-H", &target, "-H", &total],
        ));
    }
    statuses.push(curl(&[
        "-X",
        "MOVE",
        "-H",
        &target,
        "-H",
        &total,
        &format!("{folder}/.file"),
    ]));
    statuses
}

#[test]
fn nextcloud_chunked_uploads_are_checked_as_the_file_they_make() {
    let s = Setup::new();
    let root = s.path("cloud");
    let (_origin, origin_port) = origin(&root);
    let spool = s.path("chunks");
    let (_gw, port, _) = s.gateway(
        &["--origin", &format!("http://127.0.0.1:{origin_port}")],
        &["--nextcloud-spool", spool.to_str().unwrap()],
    );
    let gw = format!("http://127.0.0.1:{port}");
    let padded = |n: usize| format!("{n:05}");
    let mib = 1 << 20;

    // The listed file in three chunks: refused at the MOVE, never assembled, and its
    // chunks deleted at the origin.
    assert_eq!(
        chunked(&gw, "u1", &s.listed, mib, padded, "listed.bin"),
        [201, 201, 201, 201, 451]
    );
    let files = root.join("remote.php/dav/files/alice");
    assert!(!files.join("listed.bin").exists());
    assert!(!root.join("remote.php/dav/uploads/alice/u1").exists());

    // A clean file: assembled, intact.
    let mut clean = std::fs::read(&s.big_clean).unwrap();
    clean.truncate(3 * mib + 5);
    std::fs::write(s.path("clean.dat"), &clean).unwrap();
    assert_eq!(
        chunked(&gw, "u2", &s.path("clean.dat"), mib, padded, "clean.dat"),
        [201, 201, 201, 201, 201, 201]
    );
    assert_eq!(std::fs::read(files.join("clean.dat")).unwrap(), clean);

    // Names of two widths (`2` after `00001`): the server would sort them its own way.
    let mixed = |n: usize| if n == 1 { padded(n) } else { n.to_string() };
    assert_eq!(
        chunked(&gw, "u3", &s.listed, mib, mixed, "mixed.bin")[2],
        400
    );

    // A chunk the gateway did not see (sent straight to the origin): the MOVE is
    // refused, since the chunks it saw do not add up.
    let direct = format!("http://127.0.0.1:{origin_port}");
    let listed = std::fs::read(&s.listed).unwrap();
    std::fs::write(s.path("first"), &listed[..mib]).unwrap();
    std::fs::write(s.path("rest"), &listed[mib..]).unwrap();
    let target = format!("Destination: {gw}/remote.php/dav/files/alice/sneaky.bin");
    let total = format!("OC-Total-Length: {}", listed.len());
    assert_eq!(curl(&["-X", "MKCOL", &format!("{gw}{FOLDER}/u4")]), 201);
    assert_eq!(
        curl_put(&s.path("first"), &format!("{direct}{FOLDER}/u4/00001"), &[]),
        201
    );
    assert_eq!(
        curl_put(
            &s.path("rest"),
            &format!("{gw}{FOLDER}/u4/00002"),
            &["-H", &total]
        ),
        201
    );
    assert_eq!(
        curl(&[
            "-X",
            "MOVE",
            "-H",
            &target,
            "-H",
            &total,
            &format!("{gw}{FOLDER}/u4/.file")
        ]),
        503
    );
    // Nor can a stored file be copied in as a chunk, or v1 chunking be used.
    assert_eq!(
        curl_put(
            &s.path("first"),
            &format!("{direct}/remote.php/dav/files/alice/first"),
            &[]
        ),
        201
    );
    let into = format!("Destination: {gw}{FOLDER}/u4/00001");
    assert_eq!(
        curl(&[
            "-X",
            "COPY",
            "-H",
            &into,
            &format!("{gw}/remote.php/dav/files/alice/first")
        ]),
        400
    );
    assert_eq!(
        curl_put(
            &s.path("first"),
            &format!("{gw}/remote.php/dav/files/alice/a-chunking-1-2-0"),
            &["-H", "OC-Chunked: 1"]
        ),
        400
    );
    assert_eq!(
        curl_put(
            &s.path("first"),
            &format!("{gw}/remote.php/dav//uploads/alice/u4/00001"),
            &[]
        ),
        400
    );
    assert!(!files.join("sneaky.bin").exists());
}

#[test]
fn a_nextcloud_chunked_upload_is_recorded_in_the_catalog_at_its_destination() {
    let s = Setup::new();
    let root = s.path("cloud");
    let (_origin, origin_port) = origin(&root);
    let catalog = s.path("state/catalog.db");
    let (_gw, port, _) = s.gateway(
        &["--origin", &format!("http://127.0.0.1:{origin_port}")],
        &[
            "--nextcloud-spool",
            s.path("chunks").to_str().unwrap(),
            "--catalog",
            catalog.to_str().unwrap(),
        ],
    );
    let gw = format!("http://127.0.0.1:{port}");
    let mut clean = std::fs::read(&s.big_clean).unwrap();
    clean.truncate(2 << 20);
    std::fs::write(s.path("clean.dat"), &clean).unwrap();
    let statuses = chunked(
        &gw,
        "u1",
        &s.path("clean.dat"),
        1 << 20,
        |n| format!("{n:05}"),
        "c.dat",
    );
    assert_eq!(statuses.last(), Some(&201), "{statuses:?}");
    let expected = ["/remote.php/dav/files/alice/c.dat".to_string()];
    assert!(
        wait_until(Duration::from_secs(10), || s
            .recorded_at(&catalog, &[&s.path("clean.dat")])
            == expected),
        "{:?}",
        s.recorded_at(&catalog, &[&s.path("clean.dat")])
    );
}
