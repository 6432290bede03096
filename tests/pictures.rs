//! Pictures found by what they look like, through the real binary: a listed picture
//! (its PDQ hash in the filter) re-encoded as a JPEG of quality 40, as a PNG or a WebP,
//! or resized by half, is found by `scan`, refused by the gateway (as sent, in a form, in
//! a zip) and through Squid by the ICAP server; an unrelated picture is stored; a
//! decompression bomb is refused from its header; a picture over the budget is only not
//! PDQ-hashed. The variants are made here with the `image` crate; the pictures are Meta's
//! harmless reference photos (tests/data/pdq).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::bomb_png;
use common::procs::*;
use image::codecs::jpeg::JpegEncoder;
use image::{DynamicImage, ImageFormat};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/pdq")
        .join(name)
}

/// A setup whose filter lists the bridge photo's PDQ hash (category `pictures`) beside
/// the setup's listed file.
fn listing_the_bridge() -> Setup {
    let s = Setup::new();
    let out = hashgate(&[
        "pdq",
        "--category",
        "pictures",
        data("bridge-mods/aaa-orig.jpg").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let mut list = std::fs::read_to_string(s.path("list.txt")).unwrap();
    list.push_str(std::str::from_utf8(&out.stdout).unwrap());
    std::fs::write(s.path("list.txt"), list).unwrap();
    s.build(&s.path("list.txt"), "f.hgf", 2);
    s
}

fn jpeg(picture: &DynamicImage, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    let encoder = JpegEncoder::new_with_quality(&mut out, quality);
    picture.to_rgb8().write_with_encoder(encoder).unwrap();
    out
}

fn encoded(picture: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    picture.to_rgb8().write_to(&mut out, format).unwrap();
    out.into_inner()
}

/// The bridge re-encoded four ways, none of them byte-identical to anything listed.
fn variants(dir: &Path) -> Vec<PathBuf> {
    let bridge = image::open(data("bridge-mods/aaa-orig.jpg")).unwrap();
    let half = bridge.resize(
        bridge.width() / 2,
        bridge.height() / 2,
        image::imageops::FilterType::Triangle,
    );
    let made = [
        ("q40.jpg", jpeg(&bridge, 40)),
        ("bridge.png", encoded(&bridge, ImageFormat::Png)),
        ("bridge.webp", encoded(&bridge, ImageFormat::WebP)),
        ("half.jpg", jpeg(&half, 75)),
    ];
    made.into_iter()
        .map(|(name, bytes)| {
            let path = dir.join(name);
            std::fs::write(&path, bytes).unwrap();
            path
        })
        .collect()
}

fn audit(s: &Setup, log: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(s.path(log))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn scan_finds_a_listed_picture_re_encoded_resized_and_in_archives_and_not_an_unrelated_one() {
    let s = listing_the_bridge();
    let files = s.path("files");
    std::fs::create_dir_all(&files).unwrap();
    let made = variants(&files);
    sh(
        &files,
        "zip -q inside.zip q40.jpg && tar czf inside.tgz half.jpg",
    );
    std::fs::copy(data("misc-images/c.png"), files.join("unrelated.png")).unwrap();
    let out = hashgate(&[
        "scan",
        "--json",
        "--filter",
        s.path("f.hgf").to_str().unwrap(),
        "--pub",
        s.path("k.pub").to_str().unwrap(),
        files.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let hits: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["type"] == "hit")
        .collect();
    let hit_of = |name: &str| {
        hits.iter()
            .find(|h| h["path"].as_str().is_some_and(|p| p.ends_with(name)))
            .unwrap_or_else(|| panic!("no hit for {name} in\n{stdout}"))
    };
    for path in &made {
        let hit = hit_of(path.file_name().unwrap().to_str().unwrap());
        assert_eq!(hit["algorithm"], "pdq");
        assert_eq!(hit["category"], "pictures");
        let distance = hit["pdq"]["distance"].as_u64().unwrap();
        assert!(distance <= 31, "{hit}");
        assert!(hit["pdq"]["quality"].as_u64().unwrap() >= 50, "{hit}");
    }
    assert_eq!(hit_of("inside.zip")["member"], "q40.jpg");
    assert_eq!(hit_of("inside.tgz")["layers"], "gzip>tar>file");
    assert!(
        !stdout.contains("unrelated.png\",\"type\":\"hit"),
        "{stdout}"
    );
    assert_eq!(hits.len(), 6, "{stdout}");
}

#[test]
fn the_gateway_refuses_a_listed_picture_however_it_is_re_encoded_and_stores_an_unrelated_one() {
    let s = listing_the_bridge();
    let store = s.path("store");
    let (_gw, port, _) = s.gateway(&["--store", store.to_str().unwrap()], &[]);
    let made = variants(s.dir.path());
    for path in &made {
        let name = path.file_name().unwrap().to_str().unwrap();
        let url = format!("http://127.0.0.1:{port}/up/{name}");
        assert_eq!(curl_put(path, &url, &[]), 451, "{name}");
        // As a browser sends it: a form part.
        let form = format!("file=@{}", path.display());
        let status = curl(&["-F", &form, &format!("http://127.0.0.1:{port}/form/{name}")]);
        assert_eq!(status, 451, "{name} in a form");
    }
    sh(s.dir.path(), "zip -q pictures.zip bridge.webp");
    let url = format!("http://127.0.0.1:{port}/up/pictures.zip");
    assert_eq!(curl_put(&s.path("pictures.zip"), &url, &[]), 451);
    assert!(files_under(&store).is_empty(), "{:?}", files_under(&store));

    let unrelated = data("misc-images/c.png");
    let url = format!("http://127.0.0.1:{port}/up/c.png");
    assert_eq!(curl_put(&unrelated, &url, &[]), 201);
    assert_eq!(
        std::fs::read(store.join("up/c.png")).unwrap(),
        std::fs::read(&unrelated).unwrap()
    );

    let records = audit(&s, "audit.log");
    let q40 = records
        .iter()
        .find(|r| r["path"] == "/up/q40.jpg")
        .expect("an audit record of q40.jpg");
    assert_eq!(q40["algorithm"], "pdq");
    assert_eq!(q40["action"], "block");
    assert_eq!(q40["evidence"], "perceptual");
    assert!(q40["pdq"]["distance"].as_u64().unwrap() <= 31, "{q40}");
    assert!(q40["pdq"]["quality"].as_u64().unwrap() >= 50, "{q40}");
    assert_eq!(q40["pdq"]["transform"], "original");
    // A perceptual match keeps no quarantine copy until it can be confirmed.
    assert!(q40.get("quarantine").is_none(), "{q40}");
    let zipped = records
        .iter()
        .find(|r| r["path"] == "/up/pictures.zip" && r["algorithm"] == "pdq")
        .expect("an audit record of the zip");
    assert_eq!(zipped["part"], "bridge.webp");
}

#[test]
fn a_picture_bomb_is_refused_from_its_header_and_a_picture_over_the_budget_passes_unhashed() {
    let s = listing_the_bridge();
    let store = s.path("store");
    let config = format!(
        "store = {:?}\n[inspect]\npicture_max_bytes = 100000\n",
        store.display().to_string()
    );
    let (gw, port, _) = s.configured_gateway(&config);
    std::fs::write(s.path("bomb.png"), bomb_png(50_000, 50_000)).unwrap();
    let started = Instant::now();
    let status = curl_put(
        &s.path("bomb.png"),
        &format!("http://127.0.0.1:{port}/up/bomb.png"),
        &[],
    );
    assert_eq!(status, 422, "a bomb is refused as not inspectable");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(rss_kb(gw.0.id()) < 200_000, "the bomb was decoded");

    // The original bridge (over 100,000 bytes) is not PDQ-hashed: stored, and audited.
    let bridge = data("bridge-mods/aaa-orig.jpg");
    assert!(std::fs::metadata(&bridge).unwrap().len() > 100_000);
    let url = format!("http://127.0.0.1:{port}/up/bridge.jpg");
    assert_eq!(curl_put(&bridge, &url, &[]), 201);
    let records = audit(&s, "audit.log");
    let passed = records
        .iter()
        .find(|r| r["path"] == "/up/bridge.jpg")
        .expect("an audit record of the unhashed picture");
    assert_eq!(passed["action"], "uninspectable-pass");
    assert!(
        passed["problem"].as_str().unwrap().starts_with("picture: "),
        "{passed}"
    );
    let bomb = records
        .iter()
        .find(|r| r["path"] == "/up/bomb.png")
        .unwrap();
    assert_eq!(bomb["action"], "uninspectable-block");
    assert!(
        bomb["problem"].as_str().unwrap().starts_with("limit: "),
        "{bomb}"
    );
    assert!(!store.join("up/bomb.png").exists());
}

#[test]
fn a_turned_copy_is_refused_only_with_dihedral_hashes_on() {
    let s = listing_the_bridge();
    let bridge = image::open(data("bridge-mods/aaa-orig.jpg")).unwrap();
    std::fs::write(s.path("turned.jpg"), jpeg(&bridge.rotate90(), 80)).unwrap();
    for (dihedral, expected) in [(false, 201), (true, 451)] {
        let store = s.path(&format!("store-{dihedral}"));
        let config = format!(
            "store = {:?}\n[inspect]\ndihedral = {dihedral}\n",
            store.display().to_string()
        );
        let (_gw, port, _) = s.configured_gateway(&config);
        let url = format!("http://127.0.0.1:{port}/up/turned.jpg");
        assert_eq!(
            curl_put(&s.path("turned.jpg"), &url, &[]),
            expected,
            "dihedral = {dihedral}"
        );
    }
    let turned = audit(&s, "audit.log")
        .into_iter()
        .find(|r| r["algorithm"] == "pdq")
        .expect("the turned copy's record");
    assert_ne!(turned["pdq"]["transform"], "original", "{turned}");
}

#[test]
fn through_squid_the_icap_server_refuses_a_re_encoded_listed_picture() {
    let s = listing_the_bridge();
    let (_nginx, origin, root) = s.nginx();
    let (_icap, icap_port, _) =
        spawn_listening(Command::new(env!("CARGO_BIN_EXE_hashgate")).args([
            "icap",
            "--filter",
            s.path("f.hgf").to_str().unwrap(),
            "--pub",
            s.path("k.pub").to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--audit-log",
            s.path("icap-audit.log").to_str().unwrap(),
        ]));
    let (_squid, proxy) = s.squid(icap_port);
    let made = variants(s.dir.path());
    for path in &made {
        let name = path.file_name().unwrap().to_str().unwrap();
        let status = curl(&[
            "-x",
            &format!("http://127.0.0.1:{proxy}"),
            "-T",
            path.to_str().unwrap(),
            &format!("http://127.0.0.1:{origin}/up/{name}"),
        ]);
        assert_ne!(status, 201, "{name} was stored through Squid");
        assert!(!root.join("up").join(name).exists(), "{name} reached nginx");
    }
    let unrelated = data("misc-images/c.png");
    let status = curl(&[
        "-x",
        &format!("http://127.0.0.1:{proxy}"),
        "-T",
        unrelated.to_str().unwrap(),
        &format!("http://127.0.0.1:{origin}/up/c.png"),
    ]);
    assert_eq!(status, 201);
    // RESPMOD: a listed picture already at the origin is not handed out whole.
    std::fs::create_dir_all(root.join("down")).unwrap();
    std::fs::copy(&made[0], root.join("down/q40.jpg")).unwrap();
    let fetched = Command::new("curl")
        .args(["-s", "-x", &format!("http://127.0.0.1:{proxy}")])
        .arg(format!("http://127.0.0.1:{origin}/down/q40.jpg"))
        .output()
        .unwrap();
    assert_ne!(
        fetched.stdout,
        std::fs::read(&made[0]).unwrap(),
        "the listed picture was downloaded whole"
    );
    let records = audit(&s, "icap-audit.log");
    let blocked = |method: &str| {
        records
            .iter()
            .filter(|r| r["algorithm"] == "pdq" && r["action"] == "block")
            .filter(|r| r["method"] == method)
            .count()
    };
    assert_eq!(blocked("PUT"), made.len(), "{records:?}");
    assert_eq!(blocked("GET"), 1, "{records:?}");
}
