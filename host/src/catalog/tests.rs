use super::*;
use crate::inspect::{Layer, Node, Problem, ProblemKind};
use rusqlite::Connection;

fn digests(seed: u8) -> Vec<Digest> {
    Algorithm::ALL
        .iter()
        .map(|&algorithm| Digest {
            algorithm,
            bytes: vec![seed; algorithm.digest_len()],
        })
        .collect()
}

fn full_entry() -> Entry {
    let mut entry = Entry::object(Kind::File, b"/srv/a.zip".to_vec(), 100, digests(1));
    entry.etag = Some("\"abc\"".into());
    entry.passed_by = Some(("nl-example".into(), 7));
    entry.stamp = Some(FileStamp {
        dev: 1,
        ino: 2,
        size: 100,
        mtime: 3,
        ctime: 4,
    });
    entry.members = vec![Node {
        member: vec!["photos/a.jpg".into(), "inner\n\u{0}name".into()],
        layers: vec![Layer::Zip, Layer::Gzip],
        size: 40,
        digests: digests(2),
        picture: None,
    }];
    entry.problems = vec![Problem {
        kind: ProblemKind::Encrypted,
        member: vec!["secret.txt".into()],
        layers: vec![Layer::Zip],
        detail: "encrypted member".into(),
    }];
    entry
}

#[test]
fn an_entry_reads_back_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut catalog = Catalog::open(&dir.path().join("sub/catalog.db")).unwrap();
    let entry = full_entry();
    catalog.put(std::slice::from_ref(&entry)).unwrap();
    assert_eq!(
        catalog.get(Kind::File, b"/srv/a.zip").unwrap(),
        Some(entry.clone())
    );
    // Same key, other kind: another row.
    assert_eq!(catalog.get(Kind::Object, b"/srv/a.zip").unwrap(), None);
    // A re-upload replaces the row and its members.
    let mut again = Entry::object(Kind::File, b"/srv/a.zip".to_vec(), 5, digests(9));
    again.stored = entry.stored;
    catalog.put(std::slice::from_ref(&again)).unwrap();
    assert_eq!(catalog.get(Kind::File, b"/srv/a.zip").unwrap(), Some(again));
    assert_eq!(catalog.count().unwrap(), 1);
    let members: i64 = catalog
        .connection()
        .query_row("SELECT count(*) FROM members", [], |r| r.get(0))
        .unwrap();
    assert_eq!(members, 0, "the old row's members go with it");
}

#[test]
fn files_under_a_root_are_found_and_the_gone_ones_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let mut catalog = Catalog::open(&dir.path().join("catalog.db")).unwrap();
    let keys: [&[u8]; 5] = [b"/srv", b"/srv/a", b"/srv/d/b", b"/srv0/c", b"/srvx"];
    let entries: Vec<Entry> = keys
        .iter()
        .map(|k| Entry::object(Kind::File, k.to_vec(), 1, digests(1)))
        .collect();
    catalog.put(&entries).unwrap();
    let found = catalog.files_under(&["/srv".into()]).unwrap();
    let mut found: Vec<&[u8]> = found.keys().map(|k| k.as_slice()).collect();
    found.sort();
    assert_eq!(found, [&b"/srv"[..], b"/srv/a", b"/srv/d/b"]);
    let present = [b"/srv/a".to_vec()].into_iter().collect();
    assert_eq!(catalog.retain_files(&["/srv".into()], &present).unwrap(), 2);
    assert_eq!(
        catalog.count().unwrap(),
        3,
        "/srv0/c and /srvx are not under /srv"
    );
    // Nested roots: each row once, its members once.
    catalog.put(&[full_entry()]).unwrap();
    let found = catalog
        .files_under(&["/srv".into(), "/srv/".into(), "/srv/a.zip".into()])
        .unwrap();
    assert_eq!(
        found[&b"/srv/a.zip".to_vec()],
        full_entry_as_put(&mut catalog)
    );
    assert!(catalog.remove(Kind::File, b"/srv/a").unwrap());
    assert!(!catalog.remove(Kind::File, b"/srv/a").unwrap());
}

#[test]
fn a_catalog_from_a_newer_hashgate_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalog.db");
    drop(Catalog::open(&path).unwrap());
    {
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
    }
    let err = Catalog::open(&path).unwrap_err();
    assert!(
        matches!(err, CatalogError::NewerSchema { found: 99, .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("newer than this hashgate knows"),
        "{err}"
    );
}

#[test]
fn a_file_that_is_not_a_catalog_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalog.db");
    std::fs::write(&path, vec![0x5a; 8192]).unwrap();
    let err = Catalog::open(&path).unwrap_err();
    assert!(err.to_string().contains("catalog.db"), "{err}");
    assert!(err.to_string().contains("not a database"), "{err}");
}

#[test]
fn the_recorder_writes_in_the_background_and_counts_what_it_loses() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalog.db");
    let recorder = Recorder::start(Catalog::open(&path).unwrap(), 1000);
    for i in 0..100u32 {
        let key = format!("/k/{i}").into_bytes();
        recorder.record(Entry::object(Kind::Object, key, 1, digests(i as u8)));
    }
    recorder.remove(Kind::Object, b"/k/0".to_vec());
    assert!(recorder.flush(Duration::from_secs(10)));
    let stats = recorder.stats();
    assert_eq!((stats.written, stats.dropped, stats.failed), (101, 0, 0));
    assert!(!stats.degraded);
    let mut reader = Catalog::open(&path).unwrap();
    assert_eq!(reader.count().unwrap(), 99);

    // The database made read-only under it: the batch fails, is counted, and the
    // catalog is degraded until a batch is written again.
    reader
        .connection()
        .execute_batch("CREATE TRIGGER no_insert BEFORE INSERT ON objects BEGIN SELECT RAISE(FAIL, 'disk full'); END;")
        .unwrap();
    recorder.record(Entry::object(
        Kind::Object,
        b"/lost".to_vec(),
        1,
        digests(1),
    ));
    assert!(recorder.flush(Duration::from_secs(10)));
    let stats = recorder.stats();
    assert_eq!((stats.written, stats.failed), (101, 1));
    assert!(stats.degraded);
    reader
        .connection()
        .execute_batch("DROP TRIGGER no_insert;")
        .unwrap();
    recorder.record(Entry::object(
        Kind::Object,
        b"/back".to_vec(),
        1,
        digests(1),
    ));
    assert!(recorder.flush(Duration::from_secs(10)));
    let stats = recorder.stats();
    assert_eq!((stats.written, stats.failed), (102, 1));
    assert!(!stats.degraded, "recovered");
}

#[test]
fn a_full_queue_drops_rows_and_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalog.db");
    let catalog = Catalog::open(&path).unwrap();
    // Hold the write lock from another connection: the writer blocks on its first
    // batch, and the queue (room for 2) fills.
    let blocker = Connection::open(&path).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE;").unwrap();
    let recorder = Recorder::start(catalog, 2);
    for i in 0..50u32 {
        let key = format!("/k/{i}").into_bytes();
        recorder.record(Entry::object(Kind::Object, key, 1, digests(1)));
    }
    let stats = recorder.stats();
    assert!(stats.dropped >= 40, "{stats:?}");
    assert!(stats.degraded);
    blocker.execute_batch("COMMIT;").unwrap();
    assert!(recorder.flush(Duration::from_secs(30)));
    let stats = recorder.stats();
    assert_eq!(
        stats.written + stats.dropped + stats.failed,
        50,
        "{stats:?}"
    );
}

use std::time::Duration;

/// `full_entry()` as the catalog holds it (its recorded time).
fn full_entry_as_put(catalog: &mut Catalog) -> Entry {
    catalog.get(Kind::File, b"/srv/a.zip").unwrap().unwrap()
}
