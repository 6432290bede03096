//! The built `hashgate` binary, driven end to end as an authority and an operator would.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rand::RngCore;
use sha2::Digest as _;

mod common;

fn hashgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hashgate"))
        .args(args)
        .env("SOURCE_DATE_EPOCH", "1900000000")
        .output()
        .expect("run hashgate")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// An authority and an operator in a temporary directory.
struct World {
    dir: tempfile::TempDir,
    listed_a: PathBuf,
    listed_b: PathBuf,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let out = hashgate(&["keygen", "--out", p(&dir.path().join("auth"))]);
        assert!(out.status.success(), "{}", text(&out));
        let files = dir.path().join("files");
        std::fs::create_dir_all(files.join("sub/deeper")).unwrap();
        let mut rng = rand::thread_rng();
        let mut make = |name: &str, size: usize| {
            let mut bytes = vec![0u8; size];
            rng.fill_bytes(&mut bytes);
            let path = files.join(name);
            std::fs::write(&path, &bytes).unwrap();
            (path, bytes)
        };
        let (listed_a, a) = make("sub/listed-a.bin", 100_000);
        let (listed_b, b) = make("sub/deeper/listed-b.bin", 777);
        make("clean-1.bin", 5000);
        make("sub/clean-2.bin", 1);
        std::fs::write(files.join("empty"), b"").unwrap();
        let mut list = String::from("# generated test list\n\n");
        list += &format!("sha256:{},terror\n", hex::encode(sha2::Sha256::digest(&a)));
        list += &format!("  {}  \n", hex::encode(md5_of(&b)));
        for _ in 0..1000 {
            let mut d = [0u8; 20];
            rng.fill_bytes(&mut d);
            list += &format!("{},csam\n", hex::encode(d).to_uppercase());
        }
        std::fs::write(dir.path().join("list.txt"), list).unwrap();
        World {
            dir,
            listed_a,
            listed_b,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn build(&self, extra: &[&str]) -> Output {
        let mut args = vec![
            "build",
            "--key",
            p(&self.path("auth.key")).to_owned().leak(),
            "--series",
            "test-list",
            "--version",
            "7",
            "--out",
            p(&self.path("f.hgf")).to_owned().leak(),
        ];
        args.extend_from_slice(extra);
        args.push(p(&self.path("list.txt")).to_owned().leak());
        hashgate(&args)
    }

    fn scan(&self, filter: &Path, key: &Path, paths: &[&Path], json: bool) -> Output {
        let mut args = vec!["scan", "--filter", p(filter), "--pub", p(key)];
        if json {
            args.push("--json");
        }
        args.extend(paths.iter().map(|x| p(x)));
        hashgate(&args)
    }
}

fn md5_of(bytes: &[u8]) -> Vec<u8> {
    let mut h = hashgate_host::hashing::ObjectHasher::new(&[hashgate_host::Algorithm::Md5]);
    h.update(bytes);
    h.finish().remove(0).bytes
}

#[test]
fn errors_say_their_reason_once_and_keygen_creates_its_directory_like_build() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("new/dir/auth");
    let out = hashgate(&["keygen", "--out", p(&base)]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(dir.path().join("new/dir/auth.key").exists());
    let list = dir.path().join("list.txt");
    std::fs::write(&list, "d41d8cd98f00b204e9800998ecf8427e\n").unwrap();
    let missing = dir.path().join("missing");
    let key = dir.path().join("new/dir/auth.key");
    let public = dir.path().join("new/dir/auth.pub");
    let cases: Vec<Vec<&str>> = vec![
        vec![
            "build",
            "--key",
            p(&missing),
            "--series",
            "s",
            "--version",
            "1",
            "--out",
            "x",
            p(&list),
        ],
        vec![
            "build",
            "--key",
            p(&key),
            "--series",
            "s",
            "--version",
            "1",
            "--out",
            "x",
            p(&missing),
        ],
        vec!["inspect", "--pub", p(&public), p(&missing)],
        vec![
            "scan",
            "--filter",
            p(&missing),
            "--pub",
            p(&public),
            p(dir.path()),
        ],
        vec![
            "scan",
            "--filter",
            p(&missing),
            "--pub",
            p(&missing),
            p(dir.path()),
        ],
    ];
    for args in cases {
        let out = hashgate(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            stderr.matches("No such file or directory").count(),
            1,
            "{args:?}: {stderr}"
        );
        assert_eq!(stderr.matches(p(&missing)).count(), 1, "{args:?}: {stderr}");
    }
}

#[test]
fn keygen_writes_a_private_secret_key_and_refuses_to_overwrite() {
    let w = World::new();
    let mode = std::fs::metadata(w.path("auth.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(std::fs::read_to_string(w.path("auth.pub"))
        .unwrap()
        .contains("BEGIN PUBLIC KEY"));
    let again = hashgate(&["keygen", "--out", p(&w.path("auth"))]);
    assert_eq!(again.status.code(), Some(2));
    assert!(text(&again).contains("--force"));
}

#[test]
fn build_inspect_and_scan() {
    let w = World::new();
    let out = w.build(&[]);
    assert!(out.status.success(), "{}", text(&out));

    let out = hashgate(&[
        "inspect",
        "--pub",
        p(&w.path("auth.pub")),
        p(&w.path("f.hgf")),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("series:         test-list"), "{t}");
    assert!(t.contains("signature:      valid"), "{t}");
    let out = hashgate(&["inspect", "--json", p(&w.path("f.hgf"))]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["version"], 7);
    assert_eq!(report["hashes"], 30);
    // 1000 SHA-1 + 1 SHA-256 + 1 MD5 + 3 canaries.
    assert_eq!(report["entries"], 1005);
    assert_eq!(report["created"], 1_900_000_000u64);
    assert_eq!(report["expires"], 1_900_000_000u64 + 7 * 86400);
    assert_eq!(report["signature"]["status"], "unchecked");
    let fill = report["sections"][0]["fill"].as_f64().unwrap();
    assert!(fill > 0.0 && fill < 0.6);

    let files = w.path("files");
    let out = w.scan(&w.path("f.hgf"), &w.path("auth.pub"), &[&files], false);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains(&format!("HIT     {}  sha256:", w.listed_a.display())),
        "{t}"
    );
    assert!(t.contains("category terror"), "{t}");
    assert!(
        t.contains(&format!("HIT     {}  md5:", w.listed_b.display())),
        "{t}"
    );
    assert!(t.contains("scanned 5 files"), "{t}");
    assert!(t.contains("2 hit, 0 canary, 0 error"), "{t}");

    let out = w.scan(&w.path("f.hgf"), &w.path("auth.pub"), &[&files], true);
    assert_eq!(out.status.code(), Some(1));
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let hits: Vec<_> = lines.iter().filter(|l| l["type"] == "hit").collect();
    assert_eq!(hits.len(), 2);
    let summary = lines.last().unwrap();
    assert_eq!(summary["type"], "summary");
    assert_eq!(summary["files"], 5);
    assert_eq!(summary["hits"], 2);

    // Only clean files: exit 0.
    let clean = files.join("clean-1.bin");
    let out = w.scan(&w.path("f.hgf"), &w.path("auth.pub"), &[&clean], false);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn a_tampered_filter_or_the_wrong_key_is_refused() {
    let w = World::new();
    assert!(w.build(&[]).status.success());
    let mut bytes = std::fs::read(w.path("f.hgf")).unwrap();
    bytes[300] ^= 0x10;
    std::fs::write(w.path("tampered.hgf"), &bytes).unwrap();
    let files = w.path("files");
    let out = w.scan(
        &w.path("tampered.hgf"),
        &w.path("auth.pub"),
        &[&files],
        false,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("bad signature"), "{}", text(&out));
    let out = hashgate(&[
        "inspect",
        "--pub",
        p(&w.path("auth.pub")),
        p(&w.path("tampered.hgf")),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("INVALID"));

    let other = hashgate(&["keygen", "--out", p(&w.path("other"))]);
    assert!(other.status.success());
    let out = w.scan(&w.path("f.hgf"), &w.path("other.pub"), &[&files], false);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("not a trusted key"), "{}", text(&out));

    // A truncated filter too.
    let full = std::fs::read(w.path("f.hgf")).unwrap();
    std::fs::write(w.path("short.hgf"), &full[..full.len() / 2]).unwrap();
    let out = w.scan(&w.path("short.hgf"), &w.path("auth.pub"), &[&files], false);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_bad_list_line_is_named_and_nothing_is_written() {
    let w = World::new();
    let mut list = std::fs::read_to_string(w.path("list.txt")).unwrap();
    let line_no = list.lines().count() + 1;
    list += "sha256:not-hex-at-all\n";
    std::fs::write(w.path("list.txt"), list).unwrap();
    let out = w.build(&[]);
    assert_eq!(out.status.code(), Some(2));
    let t = text(&out);
    assert!(t.contains(&format!("list.txt:{line_no}:")), "{t}");
    assert!(!w.path("f.hgf").exists());
    let leftovers: Vec<_> = std::fs::read_dir(w.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn builds_are_reproducible() {
    let w = World::new();
    assert!(w.build(&[]).status.success());
    let first = std::fs::read(w.path("f.hgf")).unwrap();
    assert!(w.build(&[]).status.success());
    assert_eq!(first, std::fs::read(w.path("f.hgf")).unwrap());
}

#[test]
fn clamav_hash_signature_files_are_read() {
    let w = World::new();
    let bytes = std::fs::read(&w.listed_b).unwrap();
    let hdb = w.path("sigs.hdb");
    std::fs::write(
        &hdb,
        format!(
            "{}:{}:Test.Listed-B\n",
            hex::encode(md5_of(&bytes)),
            bytes.len()
        ),
    )
    .unwrap();
    let build_clam = |out: &str| {
        hashgate(&[
            "build",
            "--key",
            p(&w.path("auth.key")),
            "--series",
            "clam",
            "--version",
            "1",
            "--out",
            p(&w.path(out)),
            p(&hdb),
        ])
    };
    let out = build_clam("clam.hgf");
    assert!(out.status.success(), "{}", text(&out));
    let out = w.scan(
        &w.path("clam.hgf"),
        &w.path("auth.pub"),
        &[&w.path("files")],
        false,
    );
    assert_eq!(out.status.code(), Some(1));
    let t = text(&out);
    assert!(
        t.contains("listed-b.bin") && !t.contains("listed-a.bin"),
        "{t}"
    );

    std::fs::write(&hdb, "0123:12:Too.Short\n").unwrap();
    let out = build_clam("clam2.hgf");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("sigs.hdb:1:"));
}

/// Runs a checksum tool in `dir` over `names`; its standard output.
fn checksums(dir: &Path, tool: &[&str], names: &[&str]) -> String {
    let out = Command::new(tool[0])
        .args(&tool[1..])
        .args(names)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{tool:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn lists_made_by_checksum_tools_and_windows_editors_are_read() {
    let w = World::new();
    let sub = w.path("files/sub");
    // An odd name, as coreutils escapes it (a leading backslash).
    std::fs::copy(&w.listed_a, sub.join("odd\\name.bin")).unwrap();
    let mut list = String::from("\u{feff}");
    list += &checksums(&sub, &["sha256sum"], &["odd\\name.bin"]);
    list += &checksums(&sub, &["md5sum", "--tag"], &["deeper/listed-b.bin"]);
    list += &checksums(&sub, &["sha1sum", "-b"], &["clean-2.bin"]);
    assert!(list.contains("\\") && list.contains("MD5 (") && list.contains(" *"));
    let crlf = list.replace('\n', "\r\n");
    std::fs::write(w.path("list.txt"), crlf).unwrap();
    let out = w.build(&[]);
    assert!(out.status.success(), "{}", text(&out));
    let out = w.scan(
        &w.path("f.hgf"),
        &w.path("auth.pub"),
        &[&w.path("files")],
        false,
    );
    assert_eq!(out.status.code(), Some(1));
    let t = text(&out);
    for hit in ["listed-a.bin", "odd", "listed-b.bin", "clean-2.bin"] {
        assert!(t.contains(hit), "{hit}: {t}");
    }
    // A bad line among them is still named by its number.
    std::fs::write(w.path("list.txt"), format!("{list}SHA512 (x) = 00\n")).unwrap();
    let out = w.build(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("list.txt:4:"), "{}", text(&out));
}

#[test]
fn the_canary_is_reported_as_a_canary() {
    let w = World::new();
    assert!(w.build(&[]).status.success());
    let canary = w.path("files/canary.txt");
    let out = hashgate(&["canary", "--out", p(&canary)]);
    assert!(out.status.success());
    let out = w.scan(&w.path("f.hgf"), &w.path("auth.pub"), &[&canary], false);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("CANARY"), "{t}");
    assert!(t.contains("0 hit, 1 canary"), "{t}");
}

#[test]
fn an_unreadable_path_is_reported_and_the_scan_goes_on() {
    let w = World::new();
    assert!(w.build(&[]).status.success());
    let missing = w.path("no-such-dir");
    let out = w.scan(
        &w.path("f.hgf"),
        &w.path("auth.pub"),
        &[&missing, &w.path("files")],
        false,
    );
    let t = text(&out);
    assert!(t.contains("ERROR") && t.contains("no-such-dir"), "{t}");
    assert!(t.contains("scanned 5 files"), "{t}");
    assert_eq!(out.status.code(), Some(1), "hits take precedence: {t}");
    let clean = w.path("files/clean-1.bin");
    let out = w.scan(
        &w.path("f.hgf"),
        &w.path("auth.pub"),
        &[&missing, &clean],
        false,
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "errors without hits: {}",
        text(&out)
    );
}

#[test]
fn an_expired_filter_warns_loudly_and_still_enforces() {
    let w = World::new();
    let out = Command::new(env!("CARGO_BIN_EXE_hashgate"))
        .args([
            "build",
            "--key",
            p(&w.path("auth.key")),
            "--series",
            "old",
            "--version",
            "1",
        ])
        .args([
            "--expires",
            "1h",
            "--out",
            p(&w.path("old.hgf")),
            p(&w.path("list.txt")),
        ])
        .env("SOURCE_DATE_EPOCH", "1000000000")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let out = w.scan(
        &w.path("old.hgf"),
        &w.path("auth.pub"),
        &[&w.path("files")],
        false,
    );
    let t = text(&out);
    assert!(t.contains("WARNING") && t.contains("EXPIRED"), "{t}");
    assert_eq!(out.status.code(), Some(1), "{t}");
}

#[test]
fn help_exists_for_every_command() {
    for cmd in ["keygen", "build", "inspect", "scan", "canary", "demo"] {
        let out = hashgate(&[cmd, "--help"]);
        assert!(out.status.success(), "{cmd}");
        assert!(text(&out).contains("Usage"), "{cmd}");
    }
}

#[test]
fn the_demo_runs_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let out = hashgate(&["demo", "--scan-only", "--dir", p(dir.path())]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("2 hits, 1 canary, 0 errors"), "{t}");
}

#[test]
fn scan_honours_an_allow_list_and_writes_an_audit_log() {
    let w = World::new();
    assert!(w.build(&[]).status.success());
    let listed_a = std::fs::read(&w.listed_a).unwrap();
    std::fs::write(
        w.path("allow.txt"),
        format!(
            "# our own false positive\nsha256:{}\n",
            hex::encode(sha2::Sha256::digest(&listed_a))
        ),
    )
    .unwrap();
    let out = hashgate(&[
        "scan",
        "--filter",
        p(&w.path("f.hgf")),
        "--pub",
        p(&w.path("auth.pub")),
        "--allow-list",
        p(&w.path("allow.txt")),
        "--audit-log",
        p(&w.path("audit.jsonl")),
        p(&w.path("files")),
    ]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        !t.contains("listed-a.bin") && t.contains("listed-b.bin"),
        "{t}"
    );
    let audit = std::fs::read_to_string(w.path("audit.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 1, "{audit}");
    assert_eq!(records[0]["method"], "SCAN");
    assert!(records[0]["path"]
        .as_str()
        .unwrap()
        .ends_with("listed-b.bin"));
    assert_eq!(records[0]["action"], "monitor");
}

#[test]
fn times_no_date_can_hold_are_refused_before_writing_and_shown_as_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    assert!(hashgate(&["keygen", "--out", p(&key)]).status.success());
    let list = dir.path().join("list.txt");
    std::fs::write(&list, format!("{}\n", "ab".repeat(32))).unwrap();
    let out_file = dir.path().join("far.hgf");
    let out = hashgate(&[
        "build",
        "--key",
        p(&dir.path().join("k.key")),
        "--series",
        "far",
        "--version",
        "1",
        "--expires",
        "99999999999d",
        "--out",
        p(&out_file),
        p(&list),
    ]);
    assert!(!out.status.success());
    assert!(text(&out).contains("after the year 9999"), "{}", text(&out));
    assert!(!out_file.exists(), "nothing is written");
    // A filter from elsewhere may carry any time: `inspect` shows it as a number.
    let params = hashgate_guest::BuildParams::new("far", 1, 1_700_000_000, u64::MAX, 1e-6);
    let spec = hashgate_guest::SectionSpec {
        algorithm: hashgate_guest::Algorithm::Sha256,
        category: None,
        entries: 1,
    };
    let mut builder = hashgate_guest::FilterBuilder::new(&params, &[spec]).unwrap();
    builder
        .insert(hashgate_guest::Algorithm::Sha256, None, &[0xab; 32])
        .unwrap();
    let body = builder.finish().unwrap();
    std::fs::write(&out_file, common::sign(&body, &common::test_key())).unwrap();
    let out = hashgate(&["inspect", p(&out_file)]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(&format!("{} (Unix time, after the year 9999)", u64::MAX)));
}

/// Digest hex of `bytes` with `algorithm`.
fn hex_of(algorithm: hashgate_host::Algorithm, bytes: &[u8]) -> String {
    let mut h = hashgate_host::hashing::ObjectHasher::new(&[algorithm]);
    h.update(bytes);
    hex::encode(h.finish().remove(0).bytes)
}

#[test]
fn a_tree_hashed_side_by_side_finds_every_listed_file_by_every_algorithm() {
    use hashgate_host::Algorithm;
    let w = World::new();
    let tree = w.path("tree");
    std::fs::create_dir_all(&tree).unwrap();
    let mut rng = rand::thread_rng();
    let algorithms = [Algorithm::Md5, Algorithm::Sha1, Algorithm::Sha256];
    let mut list = String::new();
    let mut listed = Vec::new();
    // More files than the lanes hold, of sizes around the read chunks, a few gzipped.
    for i in 0..70usize {
        let size = [0, 1, 511, 512, 513, 65_535, 65_536, 65_537, 200_000][i % 9] + i;
        let mut bytes = vec![0u8; size];
        rng.fill_bytes(&mut bytes);
        let path = tree.join(format!("f{i:02}.bin"));
        if i % 5 == 0 {
            let algorithm = algorithms[(i / 5) % 3];
            list += &format!("{}\n", hex_of(algorithm, &bytes));
            listed.push((path.clone(), algorithm));
        }
        if i % 11 == 3 {
            // The listed file inside a gzip stream: the pipeline opens it.
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut gz, &bytes).unwrap();
            std::fs::write(&path, gz.finish().unwrap()).unwrap();
        } else {
            std::fs::write(&path, &bytes).unwrap();
        }
    }
    // A large file, last and alone in its own scan: its algorithms go to several cores.
    let mut big = vec![0u8; 5 << 20];
    rng.fill_bytes(&mut big);
    let big_path = w.path("big.bin");
    std::fs::write(&big_path, &big).unwrap();
    for algorithm in algorithms {
        list += &format!("{}\n", hex_of(algorithm, &big));
    }
    std::fs::write(w.path("list.txt"), list).unwrap();
    let out = w.build(&[]);
    assert!(out.status.success(), "{}", text(&out));

    let out = w.scan(&w.path("f.hgf"), &w.path("auth.pub"), &[&tree], true);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut hits: Vec<(String, String)> = lines
        .iter()
        .filter(|l| l["type"] == "hit")
        .map(|l| {
            let algorithm = l["algorithm"].as_str().unwrap_or_default();
            (l["path"].as_str().unwrap().to_owned(), algorithm.to_owned())
        })
        .collect();
    hits.sort();
    let mut expected: Vec<(String, String)> = listed
        .iter()
        .map(|(p, a)| (p.display().to_string(), a.to_string()))
        .collect();
    expected.sort();
    assert_eq!(hits, expected);
    let summary = lines.last().unwrap();
    assert_eq!(summary["files"], 70);
    assert_eq!(summary["errors"], 0);

    let out = w.scan(&w.path("f.hgf"), &w.path("auth.pub"), &[&big_path], true);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let mut found: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l["type"] == "hit")
        .map(|l| l["algorithm"].as_str().unwrap().to_owned())
        .collect();
    found.sort();
    assert_eq!(found, ["md5", "sha1", "sha256"]);
}

#[test]
fn a_path_named_is_scanned_through_a_link_and_never_vanishes_into_a_clean_result() {
    let w = World::new();
    let out = w.build(&[]);
    assert!(out.status.success(), "{}", text(&out));
    // A link to a listed file, named on the command line, is followed.
    let link = w.path("link");
    std::os::unix::fs::symlink(&w.listed_a, &link).unwrap();
    let out = w.scan(&w.path("f.hgf"), &w.path("auth.pub"), &[&link], false);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("HIT"), "{t}");
    // So is a link to a directory.
    let dir_link = w.path("dir-link");
    std::os::unix::fs::symlink(w.path("files"), &dir_link).unwrap();
    let out = w.scan(&w.path("f.hgf"), &w.path("auth.pub"), &[&dir_link], false);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("scanned 5 files"), "{t}");
    // A FIFO and a dangling link are errors (exit 2), not "0 files, 0 errors".
    let fifo = w.path("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let dangling = w.path("dangling");
    std::os::unix::fs::symlink(w.path("nowhere"), &dangling).unwrap();
    for odd in [&fifo, &dangling] {
        let out = w.scan(&w.path("f.hgf"), &w.path("auth.pub"), &[odd], false);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(2), "{}: {t}", odd.display());
        assert!(t.contains("1 error"), "{t}");
    }
}
