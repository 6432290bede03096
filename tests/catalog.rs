//! The digest catalog from the command line: `scan --catalog` records, `recheck` finds
//! what a later list names without reading a byte, an incremental scan reads only what
//! changed; all three agree with a full scan.

mod common;

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::procs::hashgate;
use md5::Digest as _;
use proptest::prelude::*;

/// (path, member, digest hex) of every hit line of `--json` output.
fn hits(out: &Output) -> BTreeSet<(String, Option<String>, String)> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["type"] == "hit")
        .map(|v| {
            (
                v["path"].as_str().unwrap().to_string(),
                v["member"].as_str().map(str::to_string),
                v["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn summary(out: &Output) -> serde_json::Value {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["type"] == "summary")
        .unwrap_or_else(|| panic!("no summary: {out:?}"))
}

/// A signing key and filters built from digest lists, in `dir`.
struct Authority {
    dir: PathBuf,
    version: u32,
}

impl Authority {
    fn new(dir: &Path) -> Authority {
        let key = dir.join("k");
        assert!(hashgate(&["keygen", "--out", key.to_str().unwrap()])
            .status
            .success());
        Authority {
            dir: dir.to_path_buf(),
            version: 0,
        }
    }

    fn key(&self) -> String {
        self.dir.join("k.pub").to_str().unwrap().to_string()
    }

    /// A filter listing `digests` (`algorithm:hex` lines) and a random SHA-256, so
    /// every filter has all three algorithms when asked.
    fn filter(&mut self, digests: &[String]) -> String {
        self.version += 1;
        let list = self.dir.join(format!("list{}.txt", self.version));
        let mut text = String::new();
        for (i, a) in ["md5", "sha1", "sha256"].iter().enumerate() {
            let width = [32, 40, 64][i];
            text.push_str(&format!("{a}:{},other\n", "e".repeat(width)));
        }
        for d in digests {
            text.push_str(&format!("{d},listed\n"));
        }
        std::fs::write(&list, text).unwrap();
        let out = self.dir.join(format!("f{}.hgf", self.version));
        let built = hashgate(&[
            "build",
            "--key",
            self.dir.join("k.key").to_str().unwrap(),
            "--series",
            "cat",
            "--version",
            &self.version.to_string(),
            "--out",
            out.to_str().unwrap(),
            list.to_str().unwrap(),
        ]);
        assert!(built.status.success(), "{built:?}");
        out.to_str().unwrap().to_string()
    }
}

fn digest_line(algorithm: usize, bytes: &[u8]) -> String {
    match algorithm {
        0 => format!("md5:{}", hex::encode(md5::Md5::digest(bytes))),
        1 => format!("sha1:{}", hex::encode(sha1::Sha1::digest(bytes))),
        _ => format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes))),
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

fn zip_of(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, bytes) in members {
        zip.start_file(*name, zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

/// One tree: files of random content, some of them gzipped or zipped, in `root`;
/// returns every object's bytes (files and what they hold), to pick listed ones from.
fn tree(root: &Path, seed: u64, files: usize) -> Vec<Vec<u8>> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut objects = Vec::new();
    for i in 0..files {
        let mut bytes = vec![0u8; rng.gen_range(0..5000)];
        rng.fill(&mut bytes[..]);
        let dir = root.join(format!("d{}", i % 3));
        std::fs::create_dir_all(&dir).unwrap();
        let (name, stored) = match i % 4 {
            0 => (format!("f{i}.gz"), gzip(&bytes)),
            1 => {
                let other = vec![i as u8; 100 + i];
                objects.push(other.clone());
                (
                    format!("f{i}.zip"),
                    zip_of(&[("a.bin", &bytes), ("b/c.bin", &other)]),
                )
            }
            _ => (format!("f{i}.bin"), bytes.clone()),
        };
        objects.push(bytes);
        objects.push(stored.clone());
        std::fs::write(dir.join(name), stored).unwrap();
    }
    objects
}

/// `catalog`: a SQLite file or a `postgres://` URL.
fn scan(filter: &str, key: &str, root: &Path, catalog: Option<&str>) -> Output {
    let mut args = vec!["scan", "--json", "--filter", filter, "--pub", key];
    if let Some(catalog) = catalog {
        args.extend(["--catalog", catalog]);
    }
    args.push(root.to_str().unwrap());
    hashgate(&args)
}

fn recheck(filter: &str, key: &str, catalog: &str) -> Output {
    hashgate(&[
        "recheck",
        "--json",
        "--catalog",
        catalog,
        "--filter",
        filter,
        "--pub",
        key,
    ])
}

/// Files recorded clean in `catalog`; then a list names some of them (or what they
/// hold): the re-check, an incremental scan and a full scan report the same hits; after
/// files change, are removed and added, the incremental scan reads exactly those and
/// still agrees, and the re-check no longer names the removed ones.
fn agree_with_a_full_scan(
    dir: &Path,
    catalog: &str,
    seed: u64,
    files: usize,
    picks: &[(prop::sample::Index, usize)],
) -> Result<(), TestCaseError> {
    let root = dir.join("data");
    let objects = tree(&root, seed, files);
    let mut authority = Authority::new(dir);
    let key = authority.key();
    let catalog = Some(catalog);

    // Stored before anything was listed: recorded clean.
    let before = authority.filter(&[]);
    let first = scan(&before, &key, &root, catalog);
    prop_assert_eq!(first.status.code(), Some(0), "{:?}", first);
    prop_assert_eq!(&summary(&first)["from_catalog"], 0);

    // Listed now, by any algorithm.
    let listed: Vec<String> = picks
        .iter()
        .map(|(i, a)| digest_line(*a, i.get::<Vec<u8>>(&objects)))
        .collect();
    let after = authority.filter(&listed);
    let full = scan(&after, &key, &root, None);
    prop_assert_eq!(full.status.code(), Some(1), "{:?}", full);
    let expected = hits(&full);
    prop_assert!(!expected.is_empty());

    let rechecked = recheck(&after, &key, catalog.unwrap());
    prop_assert_eq!(rechecked.status.code(), Some(1), "{:?}", rechecked);
    prop_assert_eq!(&hits(&rechecked), &expected);

    let incremental = scan(&after, &key, &root, catalog);
    prop_assert_eq!(incremental.status.code(), Some(1));
    prop_assert_eq!(&hits(&incremental), &expected);
    prop_assert_eq!(&summary(&incremental)["from_catalog"], files as u64);
    prop_assert_eq!(&summary(&incremental)["bytes"], 0);

    // Change one file (same size, new bytes), remove one, add one.
    let all = common::procs::walk(&root);
    let changed = &all[0];
    let len = std::fs::metadata(changed).unwrap().len() as usize;
    std::fs::write(changed, vec![0x42; len]).unwrap();
    std::fs::remove_file(&all[1]).unwrap();
    std::fs::write(root.join("new.bin"), i_of(&objects, 0)).unwrap();

    let full = scan(&after, &key, &root, None);
    let incremental = scan(&after, &key, &root, catalog);
    prop_assert_eq!(&hits(&incremental), &hits(&full));
    prop_assert_eq!(incremental.status.code(), full.status.code());
    prop_assert_eq!(&summary(&incremental)["from_catalog"], files as u64 - 2);
    // The removed file's row is gone: the re-check now agrees with the full scan.
    let rechecked = recheck(&after, &key, catalog.unwrap());
    prop_assert_eq!(&hits(&rechecked), &hits(&full));
    Ok(())
}

/// Random trees and lists, as [`agree_with_a_full_scan`] takes them.
fn cases() -> impl Strategy<Value = (u64, usize, Vec<(prop::sample::Index, usize)>)> {
    (
        any::<u64>(),
        4usize..14,
        proptest::collection::vec((any::<prop::sample::Index>(), 0usize..3), 1..6),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    #[test]
    fn recheck_and_incremental_scan_agree_with_a_full_scan((seed, files, picks) in cases()) {
        let dir = tempfile::tempdir().unwrap();
        let catalog = dir.path().join("state/catalog.db");
        agree_with_a_full_scan(dir.path(), catalog.to_str().unwrap(), seed, files, &picks)?;
    }
}

/// The same with a PostgreSQL catalog (a real server; a new database per case).
#[test]
fn with_postgres_recheck_and_incremental_scan_agree_with_a_full_scan() {
    let postgres = common::postgres::Postgres::start();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 4,
        ..ProptestConfig::default()
    });
    let n = std::sync::atomic::AtomicU32::new(0);
    runner
        .run(&cases(), |(seed, files, picks)| {
            let n = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir = tempfile::tempdir().unwrap();
            let catalog = postgres.new_database(&format!("case{n}"));
            agree_with_a_full_scan(dir.path(), &catalog, seed, files, &picks)
        })
        .unwrap();
}

fn i_of(objects: &[Vec<u8>], i: usize) -> Vec<u8> {
    objects[i].clone()
}

#[test]
fn a_catalog_recorded_without_an_algorithm_is_not_called_clean_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("a.bin"), b"stored before it was listed").unwrap();
    let mut authority = Authority::new(dir.path());
    let key = authority.key();
    let catalog = dir.path().join("catalog.db");
    let before = authority.filter(&[]);
    // The catalog records SHA-256 only (the filter hashes all three, but records
    // keep what the catalog is configured to).
    let out = hashgate(&[
        "scan",
        "--filter",
        &before,
        "--pub",
        &key,
        "--catalog",
        catalog.to_str().unwrap(),
        "--catalog-algorithms",
        "sha256",
        root.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let after = authority.filter(&[digest_line(0, b"stored before it was listed")]);
    let out = recheck(&after, &key, catalog.to_str().unwrap());
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(summary(&out)["unchecked"]["md5"], 1);
    // An incremental scan then reads the file again rather than trust a record that
    // lacks the digest: the hit is found.
    let out = scan(&after, &key, &root, catalog.to_str());
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(summary(&out)["from_catalog"], 0);
}

#[test]
fn a_corrupt_or_missing_catalog_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("a.bin"), b"x").unwrap();
    let mut authority = Authority::new(dir.path());
    let key = authority.key();
    let filter = authority.filter(&[]);
    let catalog = dir.path().join("catalog.db");
    std::fs::write(&catalog, vec![0x5a; 8192]).unwrap();
    let out = scan(&filter, &key, &root, catalog.to_str());
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("catalog.db") && stderr.contains("not a database"),
        "{stderr}"
    );
    let out = recheck(&filter, &key, catalog.to_str().unwrap());
    assert_eq!(out.status.code(), Some(2));
    let out = recheck(&filter, &key, dir.path().join("none.db").to_str().unwrap());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such catalog"));
    assert!(
        !dir.path().join("none.db").exists(),
        "a re-check creates nothing"
    );
}

#[test]
fn an_unreachable_postgres_catalog_is_a_clear_error_that_keeps_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("a.bin"), b"x").unwrap();
    let mut authority = Authority::new(dir.path());
    let key = authority.key();
    let filter = authority.filter(&[]);
    // Nothing listens there.
    let port = common::procs::free_port();
    let url = format!("postgres://hashgate:sekrit-pw@127.0.0.1:{port}/catalog");
    for out in [
        scan(&filter, &key, &root, Some(&url)),
        recheck(&filter, &key, &url),
    ] {
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("postgres://hashgate:***@127.0.0.1:{port}/catalog")),
            "{stderr}"
        );
        assert!(
            !stderr.contains("sekrit"),
            "the password is never printed: {stderr}"
        );
    }
}
