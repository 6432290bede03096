//! The digest catalog: what is stored, with the digests of every object and of every
//! member the inspection pipeline found in it, so that each new filter can be checked
//! against everything already stored without re-reading a byte.
//!
//! Lists grow daily and an entry is usually added after its file has spread: storage
//! holds files that were clean when they came and are listed now. The gateway records
//! every object it lets through ([`Recorder`], off the serving threads), `scan --catalog`
//! every file it reads; [`recheck`] runs a filter over every row (one guest call per
//! batch of thousands of digests, [`crate::FilterEngine::check_packed`]) and an
//! incremental scan takes the recorded digests of files whose inode, size and times have
//! not changed.
//!
//! The catalog is SQLite (through rusqlite, its bundled SQLite) in WAL mode: one file in
//! the state directory, readers (a re-check) beside the one writer, transactions that
//! survive a crash, a schema versioned by `PRAGMA user_version`. (redb, the other
//! embedded candidate, has no second process reading while one writes, and no SQL for an
//! operator's own questions.) Rows are compact: the object's own digests sit in its row;
//! members, rarer, in a table of their own.
//!
//! ```
//! use hashgate_host::catalog::{Catalog, Entry, Kind};
//! use hashgate_host::{Algorithm, Digest};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let mut catalog = Catalog::open(&dir.path().join("catalog.db")).unwrap();
//! let digest = Digest { algorithm: Algorithm::Sha256, bytes: vec![7; 32] };
//! let entry = Entry::object(Kind::Object, b"/photos/a.jpg".to_vec(), 5, vec![digest]);
//! catalog.put(&[entry]).unwrap();
//! assert_eq!(catalog.count().unwrap(), 1);
//! catalog.remove(Kind::Object, b"/photos/a.jpg").unwrap();
//! assert_eq!(catalog.count().unwrap(), 0);
//! ```

mod recheck;
mod recorder;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};

pub use recheck::{recheck, Recheck, RecheckError, RetroHit};
pub use recorder::{Recorder, RecorderStats};

use crate::inspect::{Layer, Node, Problem, ProblemKind, Report};
use crate::{Algorithm, Digest};

/// What kind of thing a row is; with its key, it names the row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A file at rest that `scan` read; the key is its absolute path (bytes, as the
    /// file system has them).
    File,
    /// An object the gateway let through; the key is the request path it was stored
    /// under, at the origin or in the embedded store.
    Object,
    /// An upload the gateway let through to a place the origin chose (a form `POST`):
    /// the key is the request path and the request id, so each is a row of its own. A
    /// re-check reports it; it cannot be deleted, as its place is not known.
    Posted,
}

impl Kind {
    fn code(self) -> i64 {
        match self {
            Kind::File => 0,
            Kind::Object => 1,
            Kind::Posted => 2,
        }
    }

    fn of(code: i64) -> Kind {
        match code {
            0 => Kind::File,
            2 => Kind::Posted,
            _ => Kind::Object,
        }
    }

    /// Its name in reports (`file`, `object`).
    pub fn name(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Object => "object",
            Kind::Posted => "posted",
        }
    }
}

/// A file's identity and times, which an incremental scan compares to tell an unchanged
/// file (whose recorded digests stand) from one to read again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStamp {
    /// Device.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime: i64,
    /// Status change time, nanoseconds since the epoch (a file rewritten with its
    /// mtime set back still changes this).
    pub ctime: i64,
}

impl FileStamp {
    /// The stamp of a file's metadata.
    pub fn of(m: &std::fs::Metadata) -> FileStamp {
        use std::os::unix::fs::MetadataExt;
        FileStamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.len(),
            mtime: m.mtime().saturating_mul(1_000_000_000) + m.mtime_nsec(),
            ctime: m.ctime().saturating_mul(1_000_000_000) + m.ctime_nsec(),
        }
    }
}

/// One stored object: where, what, when, passed by which filter, and its digests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// What kind of row.
    pub kind: Kind,
    /// Its key (see [`Kind`]).
    pub key: Vec<u8>,
    /// Its size in bytes, as stored.
    pub size: u64,
    /// For an object: the `Host` it was stored under (an S3 origin routes
    /// virtual-hosted buckets on it).
    pub host: Option<String>,
    /// The origin's ETag or version id for it, when the origin gave one.
    pub etag: Option<String>,
    /// When it was recorded, Unix seconds.
    pub stored: i64,
    /// The filter series and version that let it through, if one did.
    pub passed_by: Option<(String, u64)>,
    /// For a file at rest: its stamp when it was read.
    pub stamp: Option<FileStamp>,
    /// The object's own digests.
    pub digests: Vec<Digest>,
    /// What the inspection found in it, each with its digests.
    pub members: Vec<Node>,
    /// What the inspection could not look into (an incremental scan reports them again).
    pub problems: Vec<Problem>,
}

impl Entry {
    /// An entry of `size` bytes with `digests` and nothing else, recorded now.
    pub fn object(kind: Kind, key: Vec<u8>, size: u64, digests: Vec<Digest>) -> Entry {
        Entry {
            kind,
            key,
            size,
            host: None,
            etag: None,
            stored: now(),
            passed_by: None,
            stamp: None,
            digests,
            members: Vec::new(),
            problems: Vec::new(),
        }
    }

    /// The entry for an inspection's `report`: its root's digests, every other node as a
    /// member, its problems. Digests of algorithms not in `keep` are left out (the
    /// catalog records what it is configured to).
    pub fn of_report(kind: Kind, key: Vec<u8>, report: &Report, keep: &[Algorithm]) -> Entry {
        let kept = |digests: &[Digest]| -> Vec<Digest> {
            digests
                .iter()
                .filter(|d| keep.contains(&d.algorithm))
                .cloned()
                .collect()
        };
        let root = report.root();
        let mut entry = Entry::object(
            kind,
            key,
            root.map_or(0, |r| r.size),
            root.map(|r| kept(&r.digests)).unwrap_or_default(),
        );
        entry.members = report
            .nodes
            .iter()
            .filter(|n| !n.is_root())
            .map(|n| Node {
                digests: kept(&n.digests),
                ..n.clone()
            })
            .collect();
        entry.problems = report.problems.clone();
        entry
    }

    /// The inspection report this entry records (what a scan of it found).
    pub fn report(&self) -> Report {
        let mut nodes = self.members.clone();
        nodes.push(Node {
            member: Vec::new(),
            layers: Vec::new(),
            size: self.size,
            digests: self.digests.clone(),
        });
        Report {
            nodes,
            problems: self.problems.clone(),
        }
    }

    /// Whether the entry holds digests of every one of `algorithms`, for itself and for
    /// every member: only then can its recorded digests stand in for reading it.
    pub fn covers(&self, algorithms: &[Algorithm]) -> bool {
        let has = |digests: &[Digest]| {
            algorithms
                .iter()
                .all(|a| digests.iter().any(|d| d.algorithm == *a))
        };
        has(&self.digests) && self.members.iter().all(|m| has(&m.digests))
    }
}

/// Unix seconds now.
pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Occurs when the catalog cannot be opened, migrated, read or written.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// Occurs when SQLite fails: the file cannot be opened or created, is not a
    /// database (corrupt), is locked past the busy timeout, or the disk is full.
    #[error("catalog {}: {error}", path.display())]
    Sqlite {
        /// The catalog file.
        path: PathBuf,
        /// What SQLite said.
        error: rusqlite::Error,
    },
    /// Occurs when the catalog was written by a newer hashgate (its schema version is
    /// past the newest this build knows): nothing is changed.
    #[error("catalog {}: schema version {found} is newer than this hashgate knows ({known})", path.display())]
    NewerSchema {
        /// The catalog file.
        path: PathBuf,
        /// The version in the file.
        found: i64,
        /// The newest this build knows.
        known: i64,
    },
}

/// The schema, one migration per version: the `n`th entry takes `user_version` from
/// `n` to `n + 1`. Released migrations are never edited, only appended to.
const MIGRATIONS: &[&str] = &[
    // 1: objects with their own digests, members apart, the filters that passed them.
    "CREATE TABLE filters (
        id INTEGER PRIMARY KEY,
        series TEXT NOT NULL,
        version INTEGER NOT NULL,
        UNIQUE (series, version)
    );
    CREATE TABLE objects (
        id INTEGER PRIMARY KEY,
        kind INTEGER NOT NULL,
        key BLOB NOT NULL,
        size INTEGER NOT NULL,
        stored INTEGER NOT NULL,
        passed_by INTEGER,
        host TEXT,
        etag TEXT,
        dev INTEGER, ino INTEGER, mtime INTEGER, ctime INTEGER,
        md5 BLOB, sha1 BLOB, sha256 BLOB,
        problems TEXT,
        UNIQUE (kind, key)
    );
    CREATE TABLE members (
        object INTEGER NOT NULL,
        member TEXT NOT NULL,
        layers TEXT NOT NULL,
        size INTEGER NOT NULL,
        md5 BLOB, sha1 BLOB, sha256 BLOB
    );
    CREATE INDEX members_object ON members (object);",
];

/// A catalog file, open. One writer at a time (the [`Recorder`] or a scan); readers
/// ([`recheck`]) open their own.
pub struct Catalog {
    path: PathBuf,
    conn: Connection,
    /// Filter ids by series and version, as written.
    filters: HashMap<(String, u64), i64>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog").field("path", &self.path).finish()
    }
}

impl Catalog {
    /// Opens the catalog at `path`, creating it (and its directory) if need be, and
    /// brings its schema up to date.
    pub fn open(path: &Path) -> Result<Catalog, CatalogError> {
        let failed = |error| CatalogError::Sqlite {
            path: path.to_path_buf(),
            error,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                failed(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                    Some(format!("creating {}: {e}", parent.display())),
                ))
            })?;
        }
        let mut conn = Connection::open(path).map_err(failed)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(failed)?;
        // WAL: a re-check reads while the recorder writes. NORMAL: a crash loses at
        // most the last transactions, never the file.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(failed)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(failed)?;
        migrate(&mut conn).map_err(|e| match e {
            Migration::Sqlite(e) => failed(e),
            Migration::Newer(found) => CatalogError::NewerSchema {
                path: path.to_path_buf(),
                found,
                known: MIGRATIONS.len() as i64,
            },
        })?;
        Ok(Catalog {
            path: path.to_path_buf(),
            conn,
            filters: HashMap::new(),
        })
    }

    /// The catalog's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn failed(&self, error: rusqlite::Error) -> CatalogError {
        CatalogError::Sqlite {
            path: self.path.clone(),
            error,
        }
    }

    /// Records `entries` in one transaction, each replacing any row of the same kind
    /// and key (a re-upload, a file read again).
    pub fn put(&mut self, entries: &[Entry]) -> Result<(), CatalogError> {
        if entries.is_empty() {
            return Ok(());
        }
        let tx = self.conn.transaction().map_err(|e| CatalogError::Sqlite {
            path: self.path.clone(),
            error: e,
        })?;
        let result = put_all(&tx, &mut self.filters, entries).and_then(|()| tx.commit());
        result.map_err(|e| {
            // Ids cached in the rolled-back transaction may not exist.
            self.filters.clear();
            self.failed(e)
        })
    }

    /// Removes the row of `kind` and `key`, if there is one (a `DELETE` through the
    /// gateway). Returns whether there was.
    pub fn remove(&mut self, kind: Kind, key: &[u8]) -> Result<bool, CatalogError> {
        let tx = self.conn.transaction().map_err(|e| CatalogError::Sqlite {
            path: self.path.clone(),
            error: e,
        })?;
        let removed = remove_row(&tx, kind, key).and_then(|n| tx.commit().map(|()| n));
        removed.map_err(|e| self.failed(e))
    }

    /// Removes the rows of files under `roots` that are not in `present` (a scan drops
    /// the rows of files that are gone). Returns how many were removed.
    pub fn retain_files(
        &mut self,
        roots: &[PathBuf],
        present: &std::collections::HashSet<Vec<u8>>,
    ) -> Result<u64, CatalogError> {
        let gone: Vec<Vec<u8>> = self
            .file_keys_under(roots)?
            .into_iter()
            .filter(|k| !present.contains(k))
            .collect();
        let tx = self.conn.transaction().map_err(|e| CatalogError::Sqlite {
            path: self.path.clone(),
            error: e,
        })?;
        let mut removed = 0;
        for key in gone {
            removed += remove_row(&tx, Kind::File, &key).map_err(|e| CatalogError::Sqlite {
                path: self.path.clone(),
                error: e,
            })? as u64;
        }
        tx.commit().map_err(|e| self.failed(e))?;
        Ok(removed)
    }

    /// The keys of the recorded files under `roots` (absolute paths).
    fn file_keys_under(&self, roots: &[PathBuf]) -> Result<Vec<Vec<u8>>, CatalogError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT key FROM objects
                 WHERE kind = 0 AND (key = ?1 OR (key >= ?2 AND key < ?3))",
            )
            .map_err(|e| self.failed(e))?;
        let mut keys = Vec::new();
        for root in roots {
            let (root, below, end) = key_range(root);
            let rows = stmt
                .query_map(params![root, below, end], |row| row.get(0))
                .map_err(|e| self.failed(e))?;
            for key in rows {
                keys.push(key.map_err(|e| self.failed(e))?);
            }
        }
        Ok(keys)
    }

    /// The recorded files under `roots` (absolute paths), by key.
    pub fn files_under(&self, roots: &[PathBuf]) -> Result<HashMap<Vec<u8>, Entry>, CatalogError> {
        let mut found = HashMap::new();
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT o.id, o.key, o.size, o.stored, f.series, f.version, o.etag,
                        o.dev, o.ino, o.mtime, o.ctime, o.md5, o.sha1, o.sha256, o.problems, o.host
                 FROM objects o LEFT JOIN filters f ON f.id = o.passed_by
                 WHERE o.kind = 0 AND (o.key = ?1 OR (o.key >= ?2 AND o.key < ?3))",
            )
            .map_err(|e| self.failed(e))?;
        // Members of the same rows in one query, not one per row.
        let mut members = self
            .conn
            .prepare_cached(
                "SELECT m.member, m.layers, m.size, m.md5, m.sha1, m.sha256, m.object
                 FROM members m JOIN objects o ON o.id = m.object
                 WHERE o.kind = 0 AND (o.key = ?1 OR (o.key >= ?2 AND o.key < ?3))",
            )
            .map_err(|e| self.failed(e))?;
        let mut keys: HashMap<i64, Vec<u8>> = HashMap::new();
        for root in roots {
            let (root, below, end) = key_range(root);
            let rows = stmt
                .query_map(params![root, below, end], |row| {
                    Ok((row.get::<_, i64>(0)?, row_entry(row, Kind::File, 1)?))
                })
                .map_err(|e| self.failed(e))?;
            // Rows met under an earlier root (roots may nest) have their members.
            let mut fresh = std::collections::HashSet::new();
            for row in rows {
                let (id, entry) = row.map_err(|e| self.failed(e))?;
                if keys.insert(id, entry.key.clone()).is_none() {
                    fresh.insert(id);
                    found.insert(entry.key.clone(), entry);
                }
            }
            let rows = members
                .query_map(params![root, below, end], |row| {
                    Ok((row.get::<_, i64>(6)?, member_node(row)?))
                })
                .map_err(|e| self.failed(e))?;
            for row in rows {
                let (id, node) = row.map_err(|e| self.failed(e))?;
                if !fresh.contains(&id) {
                    continue;
                }
                if let Some(entry) = keys.get(&id).and_then(|k| found.get_mut(k)) {
                    entry.members.push(node);
                }
            }
        }
        Ok(found)
    }

    /// The rows there are.
    pub fn count(&self) -> Result<u64, CatalogError> {
        self.conn
            .query_row("SELECT count(*) FROM objects", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(|e| self.failed(e))
    }

    /// The row of `kind` and `key`, if any, with its members.
    pub fn get(&self, kind: Kind, key: &[u8]) -> Result<Option<Entry>, CatalogError> {
        let row = self
            .conn
            .query_row(
                "SELECT o.id, o.key, o.size, o.stored, f.series, f.version, o.etag,
                        o.dev, o.ino, o.mtime, o.ctime, o.md5, o.sha1, o.sha256, o.problems, o.host
                 FROM objects o LEFT JOIN filters f ON f.id = o.passed_by
                 WHERE o.kind = ?1 AND o.key = ?2",
                params![kind.code(), key],
                |row| Ok((row.get::<_, i64>(0)?, row_entry(row, kind, 1)?)),
            )
            .optional()
            .map_err(|e| self.failed(e))?;
        let Some((id, mut entry)) = row else {
            return Ok(None);
        };
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT member, layers, size, md5, sha1, sha256 FROM members WHERE object = ?1",
            )
            .map_err(|e| self.failed(e))?;
        let rows = stmt
            .query_map([id], member_node)
            .map_err(|e| self.failed(e))?;
        for node in rows {
            entry.members.push(node.map_err(|e| self.failed(e))?);
        }
        Ok(Some(entry))
    }

    pub(crate) fn connection(&self) -> &Connection {
        &self.conn
    }
}

/// The keys of `root` itself and of everything below it: `root`, and the range from
/// `root/` up to (not including) `root0` (`/` raised by one): everything that starts
/// with `root/`.
fn key_range(root: &Path) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    use std::os::unix::ffi::OsStrExt;
    let root = root.as_os_str().as_bytes().to_vec();
    let mut below = root.clone();
    if !below.ends_with(b"/") {
        below.push(b'/');
    }
    let mut end = below.clone();
    *end.last_mut().expect("not empty") = b'0';
    (root, below, end)
}

enum Migration {
    Sqlite(rusqlite::Error),
    Newer(i64),
}

fn migrate(conn: &mut Connection) -> Result<(), Migration> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(Migration::Sqlite)?;
    let version: i64 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(Migration::Sqlite)?;
    if version > MIGRATIONS.len() as i64 {
        return Err(Migration::Newer(version));
    }
    for (n, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.execute_batch(sql).map_err(Migration::Sqlite)?;
        tx.pragma_update(None, "user_version", n as i64 + 1)
            .map_err(Migration::Sqlite)?;
    }
    tx.commit().map_err(Migration::Sqlite)
}

fn digest_of(digests: &[Digest], algorithm: Algorithm) -> Option<&[u8]> {
    digests
        .iter()
        .find(|d| d.algorithm == algorithm)
        .map(|d| d.bytes.as_slice())
}

fn put_all(
    tx: &rusqlite::Transaction<'_>,
    filters: &mut HashMap<(String, u64), i64>,
    entries: &[Entry],
) -> rusqlite::Result<()> {
    let mut insert = tx.prepare_cached(
        // One statement whether the row is new or replaced (a re-upload): the row keeps
        // its id, its old members go below.
        "INSERT INTO objects (kind, key, size, stored, passed_by, etag, dev, ino, mtime, ctime,
                              md5, sha1, sha256, problems, host)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
         ON CONFLICT (kind, key) DO UPDATE SET size = excluded.size, stored = excluded.stored,
             passed_by = excluded.passed_by, etag = excluded.etag, dev = excluded.dev,
             ino = excluded.ino, mtime = excluded.mtime, ctime = excluded.ctime,
             md5 = excluded.md5, sha1 = excluded.sha1, sha256 = excluded.sha256,
             problems = excluded.problems, host = excluded.host
         RETURNING id",
    )?;
    let mut old_members = tx.prepare_cached("DELETE FROM members WHERE object = ?1")?;
    let mut member = tx.prepare_cached(
        "INSERT INTO members (object, member, layers, size, md5, sha1, sha256)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for entry in entries {
        let passed_by = match &entry.passed_by {
            Some((series, version)) => Some(filter_id(tx, filters, series, *version)?),
            None => None,
        };
        let stamp = entry.stamp;
        let problems = (!entry.problems.is_empty()).then(|| problems_json(&entry.problems));
        let id: i64 = insert.query_row(
            params![
                entry.kind.code(),
                entry.key,
                entry.size as i64,
                entry.stored,
                passed_by,
                entry.etag,
                stamp.map(|s| s.dev as i64),
                stamp.map(|s| s.ino as i64),
                stamp.map(|s| s.mtime),
                stamp.map(|s| s.ctime),
                digest_of(&entry.digests, Algorithm::Md5),
                digest_of(&entry.digests, Algorithm::Sha1),
                digest_of(&entry.digests, Algorithm::Sha256),
                problems,
                entry.host,
            ],
            |r| r.get(0),
        )?;
        old_members.execute([id])?;
        for node in &entry.members {
            let names = serde_json::to_string(&node.member).expect("strings serialize");
            member.execute(params![
                id,
                names,
                crate::inspect::layers_label(&node.layers),
                node.size as i64,
                digest_of(&node.digests, Algorithm::Md5),
                digest_of(&node.digests, Algorithm::Sha1),
                digest_of(&node.digests, Algorithm::Sha256),
            ])?;
        }
    }
    Ok(())
}

fn filter_id(
    tx: &rusqlite::Transaction<'_>,
    filters: &mut HashMap<(String, u64), i64>,
    series: &str,
    version: u64,
) -> rusqlite::Result<i64> {
    if let Some(id) = filters.get(&(series.to_string(), version)) {
        return Ok(*id);
    }
    tx.execute(
        "INSERT OR IGNORE INTO filters (series, version) VALUES (?1, ?2)",
        params![series, version as i64],
    )?;
    let id = tx.query_row(
        "SELECT id FROM filters WHERE series = ?1 AND version = ?2",
        params![series, version as i64],
        |r| r.get(0),
    )?;
    filters.insert((series.to_string(), version), id);
    Ok(id)
}

fn remove_row(tx: &rusqlite::Transaction<'_>, kind: Kind, key: &[u8]) -> rusqlite::Result<bool> {
    let id: Option<i64> = tx
        .prepare_cached("SELECT id FROM objects WHERE kind = ?1 AND key = ?2")?
        .query_row(params![kind.code(), key], |r| r.get(0))
        .optional()?;
    let Some(id) = id else {
        return Ok(false);
    };
    tx.prepare_cached("DELETE FROM members WHERE object = ?1")?
        .execute([id])?;
    tx.prepare_cached("DELETE FROM objects WHERE id = ?1")?
        .execute([id])?;
    Ok(true)
}

/// Problems as JSON: `[{"kind":…,"member":[…],"layers":"…","detail":"…"}]`.
fn problems_json(problems: &[Problem]) -> String {
    let list: Vec<serde_json::Value> = problems
        .iter()
        .map(|p| {
            serde_json::json!({
                "kind": p.kind.name(),
                "member": p.member,
                "layers": crate::inspect::layers_label(&p.layers),
                "detail": p.detail,
            })
        })
        .collect();
    serde_json::Value::Array(list).to_string()
}

fn problems_of(json: &str) -> Vec<Problem> {
    let Ok(serde_json::Value::Array(list)) = serde_json::from_str(json) else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|p| {
            let kind = ProblemKind::from_name(p.get("kind")?.as_str()?)?;
            let member = serde_json::from_value(p.get("member")?.clone()).ok()?;
            let layers = layers_of(p.get("layers")?.as_str()?);
            let detail = p.get("detail")?.as_str()?.to_string();
            Some(Problem {
                kind,
                member,
                layers,
                detail,
            })
        })
        .collect()
}

fn layers_of(label: &str) -> Vec<Layer> {
    label
        .split('>')
        .filter(|l| *l != "file")
        .filter_map(Layer::from_name)
        .collect()
}

fn digests_of(row: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Vec<Digest>> {
    let mut digests = Vec::new();
    for (i, algorithm) in [Algorithm::Md5, Algorithm::Sha1, Algorithm::Sha256]
        .into_iter()
        .enumerate()
    {
        if let Some(bytes) = row.get::<_, Option<Vec<u8>>>(first + i)? {
            digests.push(Digest { algorithm, bytes });
        }
    }
    Ok(digests)
}

/// An entry from a row of `key, size, stored, series, version, etag, dev, ino, mtime,
/// ctime, md5, sha1, sha256, problems, host` starting at column `first` (members not read).
fn row_entry(row: &rusqlite::Row<'_>, kind: Kind, first: usize) -> rusqlite::Result<Entry> {
    let c = |i: usize| first + i;
    let series: Option<String> = row.get(c(3))?;
    let version: Option<i64> = row.get(c(4))?;
    let dev: Option<i64> = row.get(c(6))?;
    let stamp = match dev {
        Some(dev) => Some(FileStamp {
            dev: dev as u64,
            ino: row.get::<_, i64>(c(7))? as u64,
            size: row.get::<_, i64>(c(1))? as u64,
            mtime: row.get(c(8))?,
            ctime: row.get(c(9))?,
        }),
        None => None,
    };
    let problems: Option<String> = row.get(c(13))?;
    Ok(Entry {
        kind,
        host: row.get(c(14))?,
        key: row.get(c(0))?,
        size: row.get::<_, i64>(c(1))? as u64,
        stored: row.get(c(2))?,
        passed_by: series.zip(version.map(|v| v as u64)),
        etag: row.get(c(5))?,
        stamp,
        digests: digests_of(row, c(10))?,
        members: Vec::new(),
        problems: problems.as_deref().map(problems_of).unwrap_or_default(),
    })
}

/// A member node from a row of `member, layers, size, md5, sha1, sha256`.
fn member_node(row: &rusqlite::Row<'_>) -> rusqlite::Result<Node> {
    let names: String = row.get(0)?;
    let layers: String = row.get(1)?;
    Ok(Node {
        member: serde_json::from_str(&names).unwrap_or_default(),
        layers: layers_of(&layers),
        size: row.get::<_, i64>(2)? as u64,
        digests: digests_of(row, 3)?,
    })
}

#[cfg(test)]
mod tests;
