//! The embedded catalog: one SQLite file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};

use super::{
    digest_of, digests_from, key_range, member_names, member_of, problems_json, CatalogError,
    Claim, Columns, DigestRow, Entry, Kind, ObjectRecord, OBJECT_COLUMNS,
};
use crate::inspect::Node;
use crate::Algorithm;

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
    // 2: the filter versions re-checked to the end.
    "CREATE TABLE rechecks (
        series TEXT NOT NULL,
        version INTEGER NOT NULL,
        finished INTEGER NOT NULL,
        PRIMARY KEY (series, version)
    );",
];

/// A SQLite catalog, open.
pub(super) struct Store {
    path: PathBuf,
    conn: Connection,
    /// Filter ids by series and version, as written.
    filters: HashMap<(String, u64), i64>,
}

impl Store {
    pub(super) fn open(path: &Path) -> Result<Store, CatalogError> {
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
                location: path.display().to_string(),
                found,
                known: MIGRATIONS.len() as i64,
            },
        })?;
        Ok(Store {
            path: path.to_path_buf(),
            conn,
            filters: HashMap::new(),
        })
    }

    fn failed(&self, error: rusqlite::Error) -> CatalogError {
        CatalogError::Sqlite {
            path: self.path.clone(),
            error,
        }
    }

    pub(super) fn put(&mut self, entries: &[Entry]) -> Result<(), CatalogError> {
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

    pub(super) fn remove(&mut self, kind: Kind, key: &[u8]) -> Result<bool, CatalogError> {
        let tx = self.conn.transaction().map_err(|e| CatalogError::Sqlite {
            path: self.path.clone(),
            error: e,
        })?;
        let removed = remove_row(&tx, kind, key).and_then(|n| tx.commit().map(|()| n));
        removed.map_err(|e| self.failed(e))
    }

    pub(super) fn remove_files(&mut self, keys: &[Vec<u8>]) -> Result<u64, CatalogError> {
        let tx = self.conn.transaction().map_err(|e| CatalogError::Sqlite {
            path: self.path.clone(),
            error: e,
        })?;
        let mut removed = 0;
        for key in keys {
            removed += remove_row(&tx, Kind::File, key).map_err(|e| CatalogError::Sqlite {
                path: self.path.clone(),
                error: e,
            })? as u64;
        }
        tx.commit().map_err(|e| self.failed(e))?;
        Ok(removed)
    }

    pub(super) fn keys_under(
        &mut self,
        kind: Kind,
        roots: &[PathBuf],
    ) -> Result<Vec<Vec<u8>>, CatalogError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT key FROM objects
                 WHERE kind = ?4 AND (key = ?1 OR (key >= ?2 AND key < ?3))",
            )
            .map_err(|e| self.failed(e))?;
        let mut keys = Vec::new();
        for root in roots {
            let (root, below, end) = key_range(root);
            let rows = stmt
                .query_map(params![root, below, end, kind.code()], |row| row.get(0))
                .map_err(|e| self.failed(e))?;
            for key in rows {
                keys.push(key.map_err(|e| self.failed(e))?);
            }
        }
        Ok(keys)
    }

    /// The recorded files at or under `root`, by row id.
    pub(super) fn file_rows(&mut self, root: &Path) -> Result<Vec<(i64, Entry)>, CatalogError> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT o.id, {OBJECT_COLUMNS}
                 FROM objects o LEFT JOIN filters f ON f.id = o.passed_by
                 WHERE o.kind = 0 AND (o.key = ?1 OR (o.key >= ?2 AND o.key < ?3))"
            ))
            .map_err(|e| self.failed(e))?;
        let (root, below, end) = key_range(root);
        let rows = stmt
            .query_map(params![root, below, end], |row| {
                Ok((row.get::<_, i64>(0)?, columns(row, 1)?.entry(Kind::File)))
            })
            .map_err(|e| self.failed(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.failed(e))
    }

    /// The members of the files at or under `root`, by their object's row id (one
    /// query for all, not one per file).
    pub(super) fn file_members(&mut self, root: &Path) -> Result<Vec<(i64, Node)>, CatalogError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT m.member, m.layers, m.size, m.md5, m.sha1, m.sha256, m.object
                 FROM members m JOIN objects o ON o.id = m.object
                 WHERE o.kind = 0 AND (o.key = ?1 OR (o.key >= ?2 AND o.key < ?3))",
            )
            .map_err(|e| self.failed(e))?;
        let (root, below, end) = key_range(root);
        let rows = stmt
            .query_map(params![root, below, end], |row| {
                Ok((row.get::<_, i64>(6)?, member_node(row)?))
            })
            .map_err(|e| self.failed(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.failed(e))
    }

    pub(super) fn count(&mut self) -> Result<u64, CatalogError> {
        self.conn
            .query_row("SELECT count(*) FROM objects", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(|e| self.failed(e))
    }

    pub(super) fn get(&mut self, kind: Kind, key: &[u8]) -> Result<Option<Entry>, CatalogError> {
        let row = self
            .conn
            .query_row(
                &format!(
                    "SELECT o.id, {OBJECT_COLUMNS}
                     FROM objects o LEFT JOIN filters f ON f.id = o.passed_by
                     WHERE o.kind = ?1 AND o.key = ?2"
                ),
                params![kind.code(), key],
                |row| Ok((row.get::<_, i64>(0)?, columns(row, 1)?.entry(kind))),
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

    pub(super) fn claim_recheck(
        &mut self,
        series: &str,
        version: u64,
    ) -> Result<Claim, CatalogError> {
        let done = self
            .conn
            .query_row(
                "SELECT 1 FROM rechecks WHERE series = ?1 AND version = ?2",
                params![series, version as i64],
                |_| Ok(()),
            )
            .optional()
            .map_err(|e| self.failed(e))?;
        Ok(if done.is_some() {
            Claim::Done
        } else {
            Claim::Run
        })
    }

    pub(super) fn end_recheck(
        &mut self,
        series: &str,
        version: u64,
        finished: bool,
    ) -> Result<(), CatalogError> {
        if !finished {
            return Ok(());
        }
        self.conn
            .execute(
                "INSERT OR IGNORE INTO rechecks (series, version, finished) VALUES (?1, ?2, ?3)",
                params![series, version as i64, super::now()],
            )
            .map(drop)
            .map_err(|e| self.failed(e))
    }

    pub(super) fn digest_rows(
        &mut self,
        members: bool,
        after: i64,
        limit: usize,
    ) -> Result<Vec<DigestRow>, CatalogError> {
        let sql = if members {
            "SELECT object, member, layers, size, md5, sha1, sha256, rowid FROM members
             WHERE rowid > ?1 ORDER BY rowid LIMIT ?2"
        } else {
            "SELECT id, NULL, NULL, size, md5, sha1, sha256, id FROM objects
             WHERE id > ?1 ORDER BY id LIMIT ?2"
        };
        let mut stmt = self.conn.prepare_cached(sql).map_err(|e| self.failed(e))?;
        let rows = stmt
            .query_map(params![after, limit as i64], |row| {
                let member: Option<String> = row.get(1)?;
                let layers: Option<String> = row.get(2)?;
                Ok(DigestRow {
                    object: row.get(0)?,
                    member: member.zip(layers),
                    size: row.get::<_, i64>(3)? as u64,
                    digests: digests_from([row.get(4)?, row.get(5)?, row.get(6)?]),
                    position: row.get(7)?,
                })
            })
            .map_err(|e| self.failed(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.failed(e))
    }

    pub(super) fn object(&mut self, id: i64) -> Result<ObjectRecord, CatalogError> {
        self.conn
            .query_row(
                "SELECT o.kind, o.key, o.size, o.stored, o.etag, f.series, f.version, o.host,
                        o.md5, o.sha1, o.sha256
                 FROM objects o LEFT JOIN filters f ON f.id = o.passed_by WHERE o.id = ?1",
                [id],
                |r| {
                    let series: Option<String> = r.get(5)?;
                    let version: Option<i64> = r.get(6)?;
                    Ok(ObjectRecord {
                        kind: Kind::of(r.get(0)?),
                        key: r.get(1)?,
                        size: r.get::<_, i64>(2)? as u64,
                        stored: r.get(3)?,
                        etag: r.get(4)?,
                        passed_by: series.zip(version.map(|v| v as u64)),
                        host: r.get(7)?,
                        digests: super::digests_from([r.get(8)?, r.get(9)?, r.get(10)?]),
                    })
                },
            )
            .map_err(|e| self.failed(e))
    }

    #[cfg(test)]
    pub(super) fn connection(&self) -> &Connection {
        &self.conn
    }
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
            member.execute(params![
                id,
                member_names(node),
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

/// [`Columns`] from a row whose object columns ([`OBJECT_COLUMNS`]) start at `first`.
fn columns(row: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Columns> {
    let c = |i: usize| first + i;
    Ok(Columns {
        key: row.get(c(0))?,
        size: row.get(c(1))?,
        stored: row.get(c(2))?,
        series: row.get(c(3))?,
        version: row.get(c(4))?,
        etag: row.get(c(5))?,
        dev: row.get(c(6))?,
        ino: row.get(c(7))?,
        mtime: row.get(c(8))?,
        ctime: row.get(c(9))?,
        digests: [row.get(c(10))?, row.get(c(11))?, row.get(c(12))?],
        problems: row.get(c(13))?,
        host: row.get(c(14))?,
    })
}

/// A member node from a row of `member, layers, size, md5, sha1, sha256`.
fn member_node(row: &rusqlite::Row<'_>) -> rusqlite::Result<Node> {
    let names: String = row.get(0)?;
    let layers: String = row.get(1)?;
    Ok(member_of(
        &names,
        &layers,
        row.get(2)?,
        digests_from([row.get(3)?, row.get(4)?, row.get(5)?]),
    ))
}
