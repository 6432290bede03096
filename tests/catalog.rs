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
    let db = catalog;
    let catalog = Some(db);

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

    let rechecked = recheck(&after, &key, db);
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
    let rechecked = recheck(&after, &key, db);
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

/// A tree of one file in `dir`, a key and a filter that lists nothing in it.
fn one_file(dir: &Path) -> (PathBuf, String, String) {
    let root = dir.join("data");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("a.bin"), b"x").unwrap();
    let mut authority = Authority::new(dir);
    let key = authority.key();
    let filter = authority.filter(&[]);
    (root, key, filter)
}

#[test]
fn a_corrupt_or_missing_catalog_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (root, key, filter) = one_file(dir.path());
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
    let (root, key, filter) = one_file(dir.path());
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

/// The catalog's stores through the library: PostgreSQL holds what SQLite holds, and
/// what only a shared catalog needs (migrating once, one re-check per fleet,
/// reconnecting).
mod stores {
    use std::collections::HashSet;
    use std::path::PathBuf;
    use std::time::Duration;

    use hashgate_host::catalog::Recorder;
    use hashgate_host::catalog::{Catalog, CatalogError, Claim, Entry, FileStamp, Kind, Location};
    use hashgate_host::inspect::{Layer, Node, Problem, ProblemKind};
    use hashgate_host::{Algorithm, Digest};

    use crate::common::postgres::Postgres;
    use crate::common::procs::{wait_until, TestCa};

    fn digests(seed: u8) -> Vec<Digest> {
        Algorithm::ALL
            .iter()
            .map(|&algorithm| Digest {
                algorithm,
                bytes: vec![seed; algorithm.digest_len()],
            })
            .collect()
    }

    fn file(key: &[u8], seed: u8) -> Entry {
        let mut entry = Entry::object(Kind::File, key.to_vec(), 100, digests(seed));
        entry.etag = Some("\"abc\"".into());
        entry.passed_by = Some(("nl-example".into(), 7));
        entry.stamp = Some(FileStamp {
            dev: u64::MAX,
            ino: 2,
            size: 100,
            mtime: -3,
            ctime: 4,
        });
        entry.members = vec![
            Node {
                member: vec!["photos/a.jpg".into(), "inner\n\u{0}name".into()],
                layers: vec![Layer::Zip, Layer::Gzip],
                size: 40,
                digests: digests(seed.wrapping_add(1)),
                picture: None,
            },
            Node {
                member: vec!["b.txt".into()],
                layers: vec![Layer::Zip],
                size: 1,
                digests: digests(seed.wrapping_add(2))[2..].to_vec(),
                picture: None,
            },
        ];
        entry.problems = vec![Problem {
            kind: ProblemKind::Encrypted,
            member: vec!["secret.txt".into()],
            layers: vec![Layer::Zip],
            detail: "encrypted member".into(),
        }];
        entry
    }

    /// The same steps on `catalog`; what it answered, for comparing stores.
    fn exercise(catalog: &mut Catalog) -> Vec<String> {
        let mut seen = Vec::new();
        let long = [b"/srv/".as_slice(), &vec![b'x'; 9000]].concat();
        let entries = [
            file(b"/srv/a.zip", 1),
            file(b"/srv/sub/b.zip", 3),
            file(b"/srv0/not-under", 5),
            file(&long, 7),
            Entry::object(Kind::Object, b"/srv/a.zip".to_vec(), 9, digests(9)),
        ];
        catalog.put(&entries).unwrap();
        for entry in &entries {
            let got = catalog.get(entry.kind, &entry.key).unwrap();
            assert_eq!(got.as_ref(), Some(entry), "reads back as written");
        }
        seen.push(format!("count {}", catalog.count().unwrap()));
        // A re-put replaces the row and its members; of two in one batch, the later.
        let mut again = Entry::object(Kind::File, b"/srv/a.zip".to_vec(), 5, digests(11));
        again.stored = entries[0].stored;
        catalog
            .put(&[file(b"/srv/a.zip", 13), again.clone()])
            .unwrap();
        assert_eq!(catalog.get(Kind::File, b"/srv/a.zip").unwrap(), Some(again));
        let mut under: Vec<Vec<u8>> = catalog
            .files_under(&[PathBuf::from("/srv"), PathBuf::from("/srv/sub")])
            .unwrap()
            .into_keys()
            .collect();
        under.sort();
        seen.push(format!(
            "under {:?}",
            under.iter().map(|k| k.len()).collect::<Vec<_>>()
        ));
        assert_eq!(under.len(), 3, "not /srv0/…, the long key is under /srv");
        let present: HashSet<Vec<u8>> = [b"/srv/a.zip".to_vec()].into_iter().collect();
        seen.push(format!(
            "dropped {}",
            catalog
                .retain_files(&[PathBuf::from("/srv")], &present)
                .unwrap()
        ));
        assert_eq!(catalog.get(Kind::File, &long).unwrap(), None);
        // A WebDAV MOVE or COPY: the rows follow, a collection's rows with it.
        let object = |key: &[u8], seed| Entry {
            kind: Kind::Object,
            ..file(key, seed)
        };
        let (x, y) = (object(b"/d/x", 20), object(b"/d/sub/y", 21));
        catalog.put(&[x.clone(), y, object(b"/d0", 22)]).unwrap();
        seen.push(format!(
            "moved {}",
            catalog.relocate(b"/d/", b"/e", false).unwrap()
        ));
        assert_eq!(catalog.get(Kind::Object, b"/d/x").unwrap(), None);
        let moved = catalog.get(Kind::Object, b"/e/x").unwrap();
        let expected = Entry {
            key: b"/e/x".to_vec(),
            ..x
        };
        assert_eq!(moved, Some(expected), "moved with its members");
        assert!(catalog.get(Kind::Object, b"/e/sub/y").unwrap().is_some());
        assert!(
            catalog.get(Kind::Object, b"/d0").unwrap().is_some(),
            "not under /d"
        );
        seen.push(format!(
            "copied {}",
            catalog.relocate(b"/e/x", b"/f/x", true).unwrap()
        ));
        for key in [b"/e/x".as_slice(), b"/f/x", b"/e/sub/y", b"/d0"] {
            assert!(catalog.remove(Kind::Object, key).unwrap(), "{key:?}");
        }
        assert!(catalog.remove(Kind::Object, b"/srv/a.zip").unwrap());
        assert!(!catalog.remove(Kind::Object, b"/srv/a.zip").unwrap());
        seen.push(format!("count {}", catalog.count().unwrap()));
        seen
    }

    #[test]
    fn a_postgres_catalog_holds_what_a_sqlite_one_holds() {
        let postgres = Postgres::start();
        let dir = tempfile::tempdir().unwrap();
        let mut sqlite = Catalog::open(&dir.path().join("catalog.db")).unwrap();
        let mut shared = Catalog::at(&Location::from(postgres.url().as_str())).unwrap();
        let expected = exercise(&mut sqlite);
        assert_eq!(
            expected,
            [
                "count 5",
                "under [10, 14, 9005]",
                "dropped 2",
                "moved 2",
                "copied 1",
                "count 2"
            ]
        );
        assert_eq!(exercise(&mut shared), expected);
    }

    /// A catalog across a network: `sslmode=verify-full` encrypts the connection and
    /// verifies the server against `sslrootcert`.
    #[test]
    fn a_postgres_catalog_over_tls_verifies_the_server() {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new(dir.path());
        let postgres = Postgres::start_tls(&ca);
        let with = |query: &str| Location::from(format!("{}?{query}", postgres.url()).as_str());
        let ca_pem = dir.path().join("ca.pem").display().to_string();
        let verified = with(&format!("sslmode=verify-full&sslrootcert={ca_pem}"));
        let mut catalog = Catalog::at(&verified).unwrap();
        catalog.put(&[file(b"/over/tls", 1)]).unwrap();
        assert!(catalog.get(Kind::File, b"/over/tls").unwrap().is_some());
        let encrypted = "SELECT string_agg(s.ssl::text, ',') FROM pg_stat_ssl s \
             JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'hashgate'";
        assert_eq!(postgres.psql(encrypted).as_deref(), Some("true"));
        drop(catalog);

        // A server the given CA did not certify is refused, as is one no root vouches for.
        let other = tempfile::tempdir().unwrap();
        TestCa::new(other.path());
        let other_pem = other.path().join("ca.pem").display().to_string();
        for refused in [
            with(&format!("sslmode=verify-full&sslrootcert={other_pem}")),
            with("sslmode=require"),
        ] {
            let error = Catalog::at(&refused).expect_err("refused");
            assert!(matches!(error, CatalogError::Postgres { .. }), "{error}");
        }
        // Settings that cannot be used are said so before connecting.
        for (query, says) in [
            (
                "sslrootcert=/nonexistent/ca.pem&sslmode=verify-full",
                "/nonexistent/ca.pem",
            ),
            (&format!("sslrootcert={ca_pem}") as &str, "without sslmode"),
            // Read as the client reads it: a later, percent-encoded `sslmode` stands.
            (
                &format!("sslmode=verify-full&sslrootcert={ca_pem}&sslm%6Fde=disable"),
                "without sslmode",
            ),
        ] {
            let error = with(query).check().expect_err("refused");
            assert!(matches!(error, CatalogError::Tls { .. }), "{error}");
            assert!(error.to_string().contains(says), "{error}");
        }
    }

    #[test]
    fn a_fleet_migrates_once_and_re_checks_each_version_once() {
        let postgres = Postgres::start();
        let location = Location::from(postgres.new_database("fleet").as_str());
        // Gateways starting together: one migrates, the others find it done.
        let opened: Vec<Catalog> = std::thread::scope(|s| {
            let starts: Vec<_> = (0..4).map(|_| s.spawn(|| Catalog::at(&location))).collect();
            starts
                .into_iter()
                .map(|t| t.join().unwrap().unwrap())
                .collect()
        });
        assert_eq!(
            postgres
                .psql_in("fleet", "SELECT version FROM hashgate.schema_version")
                .as_deref(),
            Some("1")
        );
        let [mut a, mut b, ..] = <[Catalog; 4]>::try_from(opened).unwrap();
        assert_eq!(a.claim_recheck("nl", 2).unwrap(), Claim::Run);
        assert_eq!(b.claim_recheck("nl", 2).unwrap(), Claim::Busy);
        a.end_recheck("nl", 2, true).unwrap();
        assert_eq!(b.claim_recheck("nl", 2).unwrap(), Claim::Done);
        // A gateway that dies while it re-checks lets another take it over.
        assert_eq!(a.claim_recheck("nl", 3).unwrap(), Claim::Run);
        assert_eq!(b.claim_recheck("nl", 3).unwrap(), Claim::Busy);
        drop(a);
        assert!(wait_until(Duration::from_secs(10), || b
            .claim_recheck("nl", 3)
            .unwrap()
            == Claim::Run));
        // Stopped early (a newer filter came): not recorded as done.
        b.end_recheck("nl", 3, false).unwrap();
        assert_eq!(b.claim_recheck("nl", 3).unwrap(), Claim::Run);
    }

    #[test]
    fn a_postgres_catalog_from_a_newer_hashgate_is_refused_untouched() {
        let postgres = Postgres::start();
        let location = Location::from(postgres.url().as_str());
        drop(Catalog::at(&location).unwrap());
        postgres
            .psql("UPDATE hashgate.schema_version SET version = 99")
            .unwrap();
        let err = Catalog::at(&location).unwrap_err();
        assert!(
            matches!(err, CatalogError::NewerSchema { found: 99, .. }),
            "{err}"
        );
        assert_eq!(
            postgres
                .psql("SELECT version FROM hashgate.schema_version")
                .as_deref(),
            Some("99")
        );
    }

    #[test]
    fn the_recorder_counts_what_a_stopped_postgres_loses_and_reconnects() {
        let mut postgres = Postgres::start();
        let location = Location::from(postgres.url().as_str());
        let recorder = Recorder::connecting(location.clone(), 1000);
        let put = |i: u32| {
            let key = format!("/k/{i}").into_bytes();
            recorder.record(Entry::object(Kind::Object, key, 1, digests(i as u8)));
        };
        for i in 0..10 {
            put(i);
        }
        assert!(recorder.flush(Duration::from_secs(20)));
        let stats = recorder.stats();
        assert_eq!(
            (stats.written, stats.failed, stats.degraded),
            (10, 0, false)
        );

        postgres.stop();
        for i in 10..15 {
            put(i);
        }
        assert!(recorder.flush(Duration::from_secs(20)));
        let stats = recorder.stats();
        assert_eq!((stats.written, stats.failed), (10, 5), "{stats:?}");
        assert!(stats.degraded);

        postgres.restart();
        let mut i = 15;
        assert!(
            wait_until(Duration::from_secs(20), || {
                put(i);
                i += 1;
                recorder.flush(Duration::from_secs(10)) && !recorder.stats().degraded
            }),
            "{:?}",
            recorder.stats()
        );
        let stats = recorder.stats();
        assert_eq!(
            stats.written + stats.failed,
            i as u64,
            "every row counted: {stats:?}"
        );
        let mut reader = Catalog::at(&location).unwrap();
        assert_eq!(reader.count().unwrap(), stats.written);
    }
}
