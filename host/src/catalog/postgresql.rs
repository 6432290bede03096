//! The shared catalog: a PostgreSQL database that a fleet of gateways writes to and
//! re-checks, each filter version once.
//!
//! Everything lives in the schema `hashgate`. Keys are request paths and file paths of
//! any length, longer than a B-tree entry may be: rows are unique by a hash of the key
//! (`key_hash`, a stored SHA-256), and a scan's range queries go through an index of the
//! key's first 512 bytes (a prefix keeps the order of what it is a prefix of).
//!
//! The client is the synchronous `postgres` crate, used from the catalog's own threads
//! (the recorder's, a re-check's, a scan's). It speaks plain TCP or a Unix socket; TLS to
//! the database is not built in (see README "Catalog").

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use postgres::{Client, NoTls, Statement};

use super::{
    digest_of, digests_from, key_range, last_of_each, member_names, member_of, problems_json,
    CatalogError, Claim, Columns, DigestRow, Entry, Kind, ObjectRecord, OBJECT_COLUMNS,
};
use crate::inspect::Node;
use crate::Algorithm;

/// The schema, one migration per version: the `n`th entry takes
/// `hashgate.schema_version` from `n` to `n + 1`. Released migrations are never edited,
/// only appended to.
const MIGRATIONS: &[&str] = &[
    // 1: as SQLite's 1 and 2, with keys unique by their hash and members by id.
    "CREATE TABLE hashgate.filters (
        id BIGSERIAL PRIMARY KEY,
        series TEXT NOT NULL,
        version BIGINT NOT NULL,
        UNIQUE (series, version)
    );
    CREATE TABLE hashgate.objects (
        id BIGSERIAL PRIMARY KEY,
        kind SMALLINT NOT NULL,
        key BYTEA NOT NULL,
        key_hash BYTEA NOT NULL GENERATED ALWAYS AS (sha256(key)) STORED,
        size BIGINT NOT NULL,
        stored BIGINT NOT NULL,
        passed_by BIGINT REFERENCES hashgate.filters (id),
        host TEXT,
        etag TEXT,
        dev BIGINT, ino BIGINT, mtime BIGINT, ctime BIGINT,
        md5 BYTEA, sha1 BYTEA, sha256 BYTEA,
        problems TEXT,
        UNIQUE (kind, key_hash)
    );
    CREATE INDEX objects_key_prefix ON hashgate.objects (kind, substring(key from 1 for 512));
    CREATE TABLE hashgate.members (
        id BIGSERIAL PRIMARY KEY,
        object BIGINT NOT NULL REFERENCES hashgate.objects (id) ON DELETE CASCADE,
        member TEXT NOT NULL,
        layers TEXT NOT NULL,
        size BIGINT NOT NULL,
        md5 BYTEA, sha1 BYTEA, sha256 BYTEA
    );
    CREATE INDEX members_object ON hashgate.members (object);
    CREATE TABLE hashgate.rechecks (
        series TEXT NOT NULL,
        version BIGINT NOT NULL,
        finished BIGINT NOT NULL,
        PRIMARY KEY (series, version)
    );",
];

/// Advisory lock keys (`hashgate` in ASCII, and one past it).
const MIGRATION_LOCK: i64 = 0x6861_7368_6761_7465;
const RECHECK_LOCK: i64 = MIGRATION_LOCK + 1;

/// How long a connection attempt may take when the URL does not say.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The rows of `objects` whose key is `$1` or within [`$2`, `$3`), by the prefix index.
const UNDER: &str = "(o.key = $1 OR (
        substring(o.key from 1 for 512) >= substring($2::bytea from 1 for 512)
        AND substring(o.key from 1 for 512) <= substring($3::bytea from 1 for 512)
        AND o.key >= $2 AND o.key < $3))";

/// `url` with its password (in the user part or a `password=` parameter) replaced by
/// `***`, to name it in logs and errors.
pub(super) fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((user, host)) => match user.split_once(':') {
            Some((name, _)) => format!("{name}:***@{host}"),
            None => format!("{user}@{host}"),
        },
        None => authority.to_string(),
    };
    let path = match path.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some(("password", _)) => "password=***".to_string(),
                    _ => p.to_string(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => path.to_string(),
    };
    format!("{scheme}://{authority}{path}")
}

/// Checks that `url` is one the client takes.
pub(super) fn check(url: &str) -> Result<(), CatalogError> {
    let (config, tls) = settings(url)?;
    let remote = config.get_hosts().iter().any(|host| match host {
        postgres::config::Host::Tcp(name) => !is_loopback(name),
        postgres::config::Host::Unix(_) => false,
    });
    if remote && tls.is_none() {
        tracing::warn!(
            catalog = %redacted(url),
            "the catalog's connection is not encrypted: add sslmode=verify-full to its URL"
        );
    }
    Ok(())
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The client settings of a catalog URL, and its TLS configuration if it asks for TLS.
///
/// libpq's `sslmode=require`, `verify-ca` and `verify-full` all encrypt the connection
/// and verify the server's certificate and name (a catalog holds where every object is
/// stored and what it hashed to: a server that cannot prove its name gets none of it),
/// against the system's roots and the PEM certificates of `sslrootcert=FILE`, if given.
/// `prefer` (the default) and `disable` connect in the clear. The client library knows
/// neither `verify-*` nor `sslrootcert`, so they are taken out of the URL it parses.
fn settings(url: &str) -> Result<(postgres::Config, Option<rustls::ClientConfig>), CatalogError> {
    let location = redacted(url);
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    // Read as the client reads it (names and values percent-decoded, the last of a
    // name standing), and TLS taken from the mode the client parsed: a URL cannot ask
    // us for TLS while telling the client otherwise.
    let decode = crate::inspect::percent_decode;
    let (mut kept, mut ca) = (Vec::new(), None);
    for param in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = param.split_once('=').unwrap_or((param, ""));
        match (decode(name).as_str(), decode(value).as_str()) {
            ("sslrootcert", path) => ca = Some(path.to_string()),
            ("sslmode", "verify-ca" | "verify-full") => kept.push("sslmode=require"),
            _ => kept.push(param),
        }
    }
    let url = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let config: postgres::Config = url.parse().map_err(|error| CatalogError::Postgres {
        location: location.clone(),
        error,
    })?;
    if config.get_ssl_mode() != postgres::config::SslMode::Require {
        if ca.is_some() {
            return Err(CatalogError::Tls {
                location,
                reason: "sslrootcert without sslmode=verify-full (or require)".into(),
            });
        }
        return Ok((config, None));
    }
    let roots = ca.as_deref().map(Path::new);
    let client = crate::tls::client_config(roots).map_err(|e| CatalogError::Tls {
        location,
        reason: e.to_string(),
    })?;
    Ok((config, Some(client)))
}

/// A PostgreSQL catalog, connected.
pub(super) struct Store {
    /// The URL without its password.
    location: String,
    client: Client,
    /// Filter ids by series and version, as written.
    filters: HashMap<(String, u64), i64>,
    /// Statements prepared on this connection, by their text.
    statements: HashMap<&'static str, Statement>,
}

impl Store {
    pub(super) fn connect(url: &str) -> Result<Store, CatalogError> {
        let location = redacted(url);
        let failed = |error| CatalogError::Postgres {
            location: location.clone(),
            error,
        };
        let (mut config, tls) = settings(url)?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("hashgate");
        }
        let connected = match tls {
            Some(tls) => config.connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls)),
            None => config.connect(NoTls),
        };
        let mut client = connected.map_err(failed)?;
        migrate(&mut client, &location)?;
        Ok(Store {
            location,
            client,
            filters: HashMap::new(),
            statements: HashMap::new(),
        })
    }

    fn failed(&self, error: postgres::Error) -> CatalogError {
        CatalogError::Postgres {
            location: self.location.clone(),
            error,
        }
    }

    /// `sql`, prepared once per connection.
    fn statement(&mut self, sql: &'static str) -> Result<Statement, CatalogError> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql).map_err(|e| self.failed(e))?;
        self.statements.insert(sql, statement.clone());
        Ok(statement)
    }

    pub(super) fn put(&mut self, entries: &[Entry]) -> Result<(), CatalogError> {
        // One row per key (a statement may not touch a row twice), in one order for
        // every gateway (two batches locking the same rows in other orders deadlock).
        let mut entries = last_of_each(entries);
        entries.sort_by(|a, b| (a.kind.code(), &a.key).cmp(&(b.kind.code(), &b.key)));
        let mut passed_by = Vec::with_capacity(entries.len());
        for entry in &entries {
            passed_by.push(match &entry.passed_by {
                Some((series, version)) => Some(self.filter_id(series, *version)?),
                None => None,
            });
        }
        let upsert = self.statement(UPSERT)?;
        let clear =
            self.statement("DELETE FROM hashgate.members WHERE object = ANY($1::bigint[])")?;
        let add = self.statement(ADD_MEMBERS)?;
        let columns = ObjectArrays::of(&entries, passed_by);
        let result = (|| {
            let mut tx = self.client.transaction()?;
            let rows = tx.query(&upsert, &columns.params())?;
            let mut ids: HashMap<(i16, Vec<u8>), i64> = HashMap::with_capacity(rows.len());
            for row in rows {
                ids.insert((row.try_get(1)?, row.try_get(2)?), row.try_get(0)?);
            }
            let all: Vec<i64> = ids.values().copied().collect();
            tx.execute(&clear, &[&all])?;
            let mut members = MemberArrays::default();
            for entry in &entries {
                if let Some(id) = ids.get(&(entry.kind.code() as i16, entry.key.clone())) {
                    for node in &entry.members {
                        members.push(*id, node);
                    }
                }
            }
            if !members.object.is_empty() {
                tx.execute(&add, &members.params())?;
            }
            tx.commit()
        })();
        result.map_err(|e| {
            // Ids cached in a rolled-back transaction may not exist.
            self.filters.clear();
            self.failed(e)
        })
    }

    fn filter_id(&mut self, series: &str, version: u64) -> Result<i64, CatalogError> {
        if let Some(id) = self.filters.get(&(series.to_string(), version)) {
            return Ok(*id);
        }
        // Committed on its own: an id another gateway may also use is never rolled back.
        // When another gateway inserts the same filter at the same moment, this
        // statement neither inserts it nor sees it (its snapshot is older than the other
        // insert): the next statement, with a newer snapshot, does.
        let mut found = None;
        for _ in 0..3 {
            found = self
                .client
                .query_opt(
                    "WITH added AS (
                         INSERT INTO hashgate.filters (series, version) VALUES ($1, $2)
                         ON CONFLICT DO NOTHING RETURNING id)
                     SELECT id FROM added
                     UNION ALL SELECT id FROM hashgate.filters WHERE series = $1 AND version = $2
                     LIMIT 1",
                    &[&series, &(version as i64)],
                )
                .map_err(|e| self.failed(e))?;
            if found.is_some() {
                break;
            }
        }
        let row = found.ok_or_else(|| CatalogError::FilterRow {
            location: self.location.clone(),
            series: series.to_string(),
            version,
        })?;
        let id = row.try_get(0).map_err(|e| self.failed(e))?;
        self.filters.insert((series.to_string(), version), id);
        Ok(id)
    }

    pub(super) fn remove(&mut self, kind: Kind, key: &[u8]) -> Result<bool, CatalogError> {
        self.client
            .execute(
                "DELETE FROM hashgate.objects WHERE kind = $1 AND key_hash = sha256($2)",
                &[&(kind.code() as i16), &key],
            )
            .map(|n| n > 0)
            .map_err(|e| self.failed(e))
    }

    pub(super) fn remove_files(&mut self, keys: &[Vec<u8>]) -> Result<u64, CatalogError> {
        self.client
            .execute(
                "DELETE FROM hashgate.objects WHERE kind = 0
                 AND key_hash IN (SELECT sha256(k) FROM unnest($1::bytea[]) AS k)",
                &[&keys],
            )
            .map_err(|e| self.failed(e))
    }

    pub(super) fn keys_under(
        &mut self,
        kind: Kind,
        roots: &[PathBuf],
    ) -> Result<Vec<Vec<u8>>, CatalogError> {
        let mut keys = Vec::new();
        for root in roots {
            let (root, below, end) = key_range(root);
            let rows = self
                .client
                .query(
                    &format!("SELECT o.key FROM hashgate.objects o WHERE o.kind = $4 AND {UNDER}"),
                    &[&root, &below, &end, &(kind.code() as i16)],
                )
                .map_err(|e| self.failed(e))?;
            for row in rows {
                keys.push(row.try_get(0).map_err(|e| self.failed(e))?);
            }
        }
        Ok(keys)
    }

    /// The recorded files at or under `root`, by row id.
    pub(super) fn file_rows(&mut self, root: &Path) -> Result<Vec<(i64, Entry)>, CatalogError> {
        let (root, below, end) = key_range(root);
        let rows = self
            .client
            .query(
                &format!(
                    "SELECT o.id, {OBJECT_COLUMNS}
                     FROM hashgate.objects o LEFT JOIN hashgate.filters f ON f.id = o.passed_by
                     WHERE o.kind = 0 AND {UNDER}"
                ),
                &[&root, &below, &end],
            )
            .map_err(|e| self.failed(e))?;
        let read = |row: &postgres::Row| -> Result<(i64, Entry), postgres::Error> {
            Ok((row.try_get(0)?, columns(row, 1)?.entry(Kind::File)))
        };
        rows.iter()
            .map(read)
            .collect::<Result<_, _>>()
            .map_err(|e| self.failed(e))
    }

    /// The members of the files at or under `root`, by their object's row id.
    pub(super) fn file_members(&mut self, root: &Path) -> Result<Vec<(i64, Node)>, CatalogError> {
        let (root, below, end) = key_range(root);
        let rows = self
            .client
            .query(
                &format!(
                    "SELECT m.member, m.layers, m.size, m.md5, m.sha1, m.sha256, m.object
                     FROM hashgate.members m JOIN hashgate.objects o ON o.id = m.object
                     WHERE o.kind = 0 AND {UNDER}"
                ),
                &[&root, &below, &end],
            )
            .map_err(|e| self.failed(e))?;
        let read = |row: &postgres::Row| -> Result<(i64, Node), postgres::Error> {
            Ok((row.try_get(6)?, member_node(row)?))
        };
        rows.iter()
            .map(read)
            .collect::<Result<_, _>>()
            .map_err(|e| self.failed(e))
    }

    pub(super) fn count(&mut self) -> Result<u64, CatalogError> {
        self.client
            .query_one("SELECT count(*) FROM hashgate.objects", &[])
            .and_then(|row| row.try_get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(|e| self.failed(e))
    }

    pub(super) fn get(&mut self, kind: Kind, key: &[u8]) -> Result<Option<Entry>, CatalogError> {
        let row = self
            .client
            .query_opt(
                &format!(
                    "SELECT o.id, {OBJECT_COLUMNS}
                     FROM hashgate.objects o LEFT JOIN hashgate.filters f ON f.id = o.passed_by
                     WHERE o.kind = $1 AND o.key_hash = sha256($2)"
                ),
                &[&(kind.code() as i16), &key],
            )
            .map_err(|e| self.failed(e))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let id: i64 = row.try_get(0).map_err(|e| self.failed(e))?;
        let mut entry = columns(&row, 1).map_err(|e| self.failed(e))?.entry(kind);
        let rows = self
            .client
            .query(
                "SELECT member, layers, size, md5, sha1, sha256 FROM hashgate.members
                 WHERE object = $1 ORDER BY id",
                &[&id],
            )
            .map_err(|e| self.failed(e))?;
        for row in rows {
            entry
                .members
                .push(member_node(&row).map_err(|e| self.failed(e))?);
        }
        Ok(Some(entry))
    }

    pub(super) fn claim_recheck(
        &mut self,
        series: &str,
        version: u64,
    ) -> Result<Claim, CatalogError> {
        let held: bool = self
            .client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&RECHECK_LOCK])
            .and_then(|row| row.try_get(0))
            .map_err(|e| self.failed(e))?;
        if !held {
            return Ok(Claim::Busy);
        }
        let done = self
            .client
            .query_opt(
                "SELECT 1 FROM hashgate.rechecks WHERE series = $1 AND version = $2",
                &[&series, &(version as i64)],
            )
            .map_err(|e| self.failed(e))?;
        if done.is_some() {
            self.unlock()?;
            return Ok(Claim::Done);
        }
        Ok(Claim::Run)
    }

    pub(super) fn end_recheck(
        &mut self,
        series: &str,
        version: u64,
        finished: bool,
    ) -> Result<(), CatalogError> {
        if finished {
            self.client
                .execute(
                    "INSERT INTO hashgate.rechecks (series, version, finished)
                     VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                    &[&series, &(version as i64), &super::now()],
                )
                .map_err(|e| self.failed(e))?;
        }
        self.unlock()
    }

    fn unlock(&mut self) -> Result<(), CatalogError> {
        self.client
            .execute("SELECT pg_advisory_unlock($1)", &[&RECHECK_LOCK])
            .map(drop)
            .map_err(|e| self.failed(e))
    }

    pub(super) fn digest_rows(
        &mut self,
        members: bool,
        after: i64,
        limit: usize,
    ) -> Result<Vec<DigestRow>, CatalogError> {
        let statement = self.statement(if members {
            "SELECT id, object, member, layers, size, md5, sha1, sha256 FROM hashgate.members
             WHERE id > $1 ORDER BY id LIMIT $2"
        } else {
            "SELECT id, id, NULL::text, NULL::text, size, md5, sha1, sha256 FROM hashgate.objects
             WHERE id > $1 ORDER BY id LIMIT $2"
        })?;
        let rows = self
            .client
            .query(&statement, &[&after, &(limit as i64)])
            .map_err(|e| self.failed(e))?;
        let read = |row: &postgres::Row| -> Result<DigestRow, postgres::Error> {
            let member: Option<String> = row.try_get(2)?;
            let layers: Option<String> = row.try_get(3)?;
            Ok(DigestRow {
                position: row.try_get(0)?,
                object: row.try_get(1)?,
                member: member.zip(layers),
                size: row.try_get::<_, i64>(4)? as u64,
                digests: digests_from([row.try_get(5)?, row.try_get(6)?, row.try_get(7)?]),
            })
        };
        rows.iter()
            .map(read)
            .collect::<Result<_, _>>()
            .map_err(|e| self.failed(e))
    }

    pub(super) fn object(&mut self, id: i64) -> Result<ObjectRecord, CatalogError> {
        let row = self
            .client
            .query_one(
                "SELECT o.kind, o.key, o.size, o.stored, o.etag, f.series, f.version, o.host,
                        o.md5, o.sha1, o.sha256
                 FROM hashgate.objects o LEFT JOIN hashgate.filters f ON f.id = o.passed_by
                 WHERE o.id = $1",
                &[&id],
            )
            .map_err(|e| self.failed(e))?;
        let read = || -> Result<ObjectRecord, postgres::Error> {
            let series: Option<String> = row.try_get(5)?;
            let version: Option<i64> = row.try_get(6)?;
            Ok(ObjectRecord {
                kind: Kind::of(row.try_get::<_, i16>(0)?.into()),
                key: row.try_get(1)?,
                size: row.try_get::<_, i64>(2)? as u64,
                stored: row.try_get(3)?,
                etag: row.try_get(4)?,
                passed_by: series.zip(version.map(|v| v as u64)),
                host: row.try_get(7)?,
                digests: super::digests_from([row.try_get(8)?, row.try_get(9)?, row.try_get(10)?]),
            })
        };
        read().map_err(|e| self.failed(e))
    }
}

/// Brings the schema up to date, under a lock: gateways that start together migrate
/// once, the others wait and find it done.
fn migrate(client: &mut Client, location: &str) -> Result<(), CatalogError> {
    let failed = |error| CatalogError::Postgres {
        location: location.to_string(),
        error,
    };
    let mut tx = client.transaction().map_err(failed)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(failed)?;
    tx.batch_execute(
        "CREATE SCHEMA IF NOT EXISTS hashgate;
         CREATE TABLE IF NOT EXISTS hashgate.schema_version (version INTEGER NOT NULL);",
    )
    .map_err(failed)?;
    let version: i32 = tx
        .query_opt("SELECT version FROM hashgate.schema_version", &[])
        .map_err(failed)?
        .map(|row| row.try_get(0))
        .transpose()
        .map_err(failed)?
        .unwrap_or(0);
    if version as usize > MIGRATIONS.len() {
        return Err(CatalogError::NewerSchema {
            location: location.to_string(),
            found: version.into(),
            known: MIGRATIONS.len() as i64,
        });
    }
    for sql in &MIGRATIONS[version as usize..] {
        tx.batch_execute(sql).map_err(failed)?;
    }
    tx.execute("DELETE FROM hashgate.schema_version", &[])
        .map_err(failed)?;
    tx.execute(
        "INSERT INTO hashgate.schema_version (version) VALUES ($1)",
        &[&(MIGRATIONS.len() as i32)],
    )
    .map_err(failed)?;
    tx.commit().map_err(failed)
}

/// Every object row of a batch, as arrays: one statement writes them all.
const UPSERT: &str = "INSERT INTO hashgate.objects (kind, key, size, stored, passed_by, etag,
        dev, ino, mtime, ctime, md5, sha1, sha256, problems, host)
    SELECT * FROM unnest($1::smallint[], $2::bytea[], $3::bigint[], $4::bigint[],
        $5::bigint[], $6::text[], $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[],
        $11::bytea[], $12::bytea[], $13::bytea[], $14::text[], $15::text[])
    ON CONFLICT (kind, key_hash) DO UPDATE SET key = excluded.key, size = excluded.size,
        stored = excluded.stored, passed_by = excluded.passed_by, etag = excluded.etag,
        dev = excluded.dev, ino = excluded.ino, mtime = excluded.mtime,
        ctime = excluded.ctime, md5 = excluded.md5, sha1 = excluded.sha1,
        sha256 = excluded.sha256, problems = excluded.problems, host = excluded.host
    RETURNING id, kind, key";

const ADD_MEMBERS: &str = "INSERT INTO hashgate.members (object, member, layers, size,
        md5, sha1, sha256)
    SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::bytea[],
        $6::bytea[], $7::bytea[])";

type Column<T> = Vec<Option<T>>;

/// The columns of [`UPSERT`].
struct ObjectArrays {
    kind: Vec<i16>,
    key: Vec<Vec<u8>>,
    size: Vec<i64>,
    stored: Vec<i64>,
    passed_by: Column<i64>,
    etag: Column<String>,
    dev: Column<i64>,
    ino: Column<i64>,
    mtime: Column<i64>,
    ctime: Column<i64>,
    md5: Column<Vec<u8>>,
    sha1: Column<Vec<u8>>,
    sha256: Column<Vec<u8>>,
    problems: Column<String>,
    host: Column<String>,
}

impl ObjectArrays {
    fn of(entries: &[&Entry], passed_by: Vec<Option<i64>>) -> ObjectArrays {
        let digest = |e: &Entry, a| digest_of(&e.digests, a).map(<[u8]>::to_vec);
        ObjectArrays {
            kind: entries.iter().map(|e| e.kind.code() as i16).collect(),
            key: entries.iter().map(|e| e.key.clone()).collect(),
            size: entries.iter().map(|e| e.size as i64).collect(),
            stored: entries.iter().map(|e| e.stored).collect(),
            passed_by,
            etag: entries.iter().map(|e| e.etag.clone()).collect(),
            dev: entries
                .iter()
                .map(|e| e.stamp.map(|s| s.dev as i64))
                .collect(),
            ino: entries
                .iter()
                .map(|e| e.stamp.map(|s| s.ino as i64))
                .collect(),
            mtime: entries.iter().map(|e| e.stamp.map(|s| s.mtime)).collect(),
            ctime: entries.iter().map(|e| e.stamp.map(|s| s.ctime)).collect(),
            md5: entries.iter().map(|e| digest(e, Algorithm::Md5)).collect(),
            sha1: entries.iter().map(|e| digest(e, Algorithm::Sha1)).collect(),
            sha256: entries
                .iter()
                .map(|e| digest(e, Algorithm::Sha256))
                .collect(),
            problems: entries
                .iter()
                .map(|e| (!e.problems.is_empty()).then(|| problems_json(&e.problems)))
                .collect(),
            host: entries.iter().map(|e| e.host.clone()).collect(),
        }
    }

    fn params(&self) -> [&(dyn postgres::types::ToSql + Sync); 15] {
        [
            &self.kind,
            &self.key,
            &self.size,
            &self.stored,
            &self.passed_by,
            &self.etag,
            &self.dev,
            &self.ino,
            &self.mtime,
            &self.ctime,
            &self.md5,
            &self.sha1,
            &self.sha256,
            &self.problems,
            &self.host,
        ]
    }
}

/// The columns of [`ADD_MEMBERS`].
#[derive(Default)]
struct MemberArrays {
    object: Vec<i64>,
    member: Vec<String>,
    layers: Vec<String>,
    size: Vec<i64>,
    md5: Column<Vec<u8>>,
    sha1: Column<Vec<u8>>,
    sha256: Column<Vec<u8>>,
}

impl MemberArrays {
    fn push(&mut self, object: i64, node: &Node) {
        let digest = |a| digest_of(&node.digests, a).map(<[u8]>::to_vec);
        self.object.push(object);
        self.member.push(member_names(node));
        self.layers.push(crate::inspect::layers_label(&node.layers));
        self.size.push(node.size as i64);
        self.md5.push(digest(Algorithm::Md5));
        self.sha1.push(digest(Algorithm::Sha1));
        self.sha256.push(digest(Algorithm::Sha256));
    }

    fn params(&self) -> [&(dyn postgres::types::ToSql + Sync); 7] {
        [
            &self.object,
            &self.member,
            &self.layers,
            &self.size,
            &self.md5,
            &self.sha1,
            &self.sha256,
        ]
    }
}

/// [`Columns`] from a row whose object columns ([`OBJECT_COLUMNS`]) start at `first`.
fn columns(row: &postgres::Row, first: usize) -> Result<Columns, postgres::Error> {
    let c = |i: usize| first + i;
    Ok(Columns {
        key: row.try_get(c(0))?,
        size: row.try_get(c(1))?,
        stored: row.try_get(c(2))?,
        series: row.try_get(c(3))?,
        version: row.try_get(c(4))?,
        etag: row.try_get(c(5))?,
        dev: row.try_get(c(6))?,
        ino: row.try_get(c(7))?,
        mtime: row.try_get(c(8))?,
        ctime: row.try_get(c(9))?,
        digests: [
            row.try_get(c(10))?,
            row.try_get(c(11))?,
            row.try_get(c(12))?,
        ],
        problems: row.try_get(c(13))?,
        host: row.try_get(c(14))?,
    })
}

/// A member node from a row of `member, layers, size, md5, sha1, sha256`.
fn member_node(row: &postgres::Row) -> Result<Node, postgres::Error> {
    let names: String = row.try_get(0)?;
    let layers: String = row.try_get(1)?;
    Ok(member_of(
        &names,
        &layers,
        row.try_get(2)?,
        digests_from([row.try_get(3)?, row.try_get(4)?, row.try_get(5)?]),
    ))
}
