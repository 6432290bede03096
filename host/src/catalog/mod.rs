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
//! Two stores hold it, behind one [`Catalog`]:
//! * **SQLite** (through rusqlite, its bundled SQLite), the default: one file in the
//!   state directory, in WAL mode (a re-check reads beside the one writer),
//!   transactions that survive a crash, a schema versioned by `PRAGMA user_version`.
//!   (redb, the other embedded candidate, has no second process reading while one
//!   writes, and no SQL for an operator's own questions.)
//! * **PostgreSQL** (through the `postgres` client), for fleets: one catalog shared by
//!   every gateway behind a balancer, in a schema of its own (`hashgate`), versioned in
//!   `hashgate.schema_version` and migrated under an advisory lock (gateways starting
//!   together migrate once). Each filter version is re-checked by one gateway of the
//!   fleet ([`Catalog::claim_recheck`]).
//!
//! Rows are compact: the object's own digests sit in its row; members, rarer, in a
//! table of their own.
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

mod postgresql;
mod recheck;
mod recorder;
mod sqlite;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

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
            // The catalog records digests only (a PDQ filter reads pictures again).
            picture: None,
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

/// Where a catalog is: a SQLite file (the default, one gateway or one scanning host),
/// or a PostgreSQL database that a fleet of gateways shares.
///
/// ```
/// use hashgate_host::catalog::Location;
///
/// let file = Location::from("/var/lib/hashgate/catalog.db");
/// assert!(matches!(file, Location::File(_)));
/// let shared = Location::from("postgres://hashgate:secret@db.example/hashgate");
/// assert!(matches!(shared, Location::Postgres(_)));
/// // Named in logs and errors without its password.
/// assert_eq!(shared.to_string(), "postgres://hashgate:***@db.example/hashgate");
/// ```
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(from = "PathBuf")]
pub enum Location {
    /// A SQLite file, created (with its directory) if missing.
    File(PathBuf),
    /// A PostgreSQL connection URL (`postgres://` or `postgresql://`; libpq's
    /// key-value form is not taken, to keep file names unambiguous).
    Postgres(String),
}

impl From<&str> for Location {
    fn from(s: &str) -> Location {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            Location::Postgres(s.to_string())
        } else {
            Location::File(PathBuf::from(s))
        }
    }
}

impl From<PathBuf> for Location {
    fn from(path: PathBuf) -> Location {
        match path.to_str() {
            Some(s) => Location::from(s),
            None => Location::File(path),
        }
    }
}

impl std::str::FromStr for Location {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Location, Self::Err> {
        Ok(Location::from(s))
    }
}

impl Location {
    /// Checks what can be checked without opening it: a PostgreSQL URL parses.
    pub fn check(&self) -> Result<(), CatalogError> {
        match self {
            Location::File(_) => Ok(()),
            Location::Postgres(url) => postgresql::check(url),
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::File(path) => write!(f, "{}", path.display()),
            Location::Postgres(url) => f.write_str(&postgresql::redacted(url)),
        }
    }
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
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
    /// Occurs when PostgreSQL fails: the server cannot be reached or refuses the login,
    /// the connection breaks, or a statement fails (the disk is full, a role lacks a
    /// grant).
    #[error("catalog {location}: {error}")]
    Postgres {
        /// The database, named without its password.
        location: String,
        /// What the client or the server said.
        error: ::postgres::Error,
    },
    /// Occurs when a PostgreSQL URL's TLS settings cannot be used: its `sslrootcert` is
    /// unreadable or holds no PEM certificate, no trust roots are found, or
    /// `sslrootcert` is given without `sslmode=verify-full`.
    #[error("catalog {location}: TLS: {reason}")]
    Tls {
        /// The database, named without its password.
        location: String,
        /// What is wrong.
        reason: String,
    },
    /// Occurs when the row of a passing filter can be neither added to a PostgreSQL
    /// catalog nor found in it (something removes rows of `hashgate.filters`).
    #[error("catalog {location}: the row of filter {series} version {version} vanished")]
    FilterRow {
        /// The database, named without its password.
        location: String,
        /// The filter's series.
        series: String,
        /// Its version.
        version: u64,
    },
    /// Occurs when a thread to read the catalog cannot be started.
    #[error("cannot start a catalog thread: {0}")]
    Thread(String),
    /// Occurs when the catalog was written by a newer hashgate (its schema version is
    /// past the newest this build knows): nothing is changed.
    #[error(
        "catalog {location}: schema version {found} is newer than this hashgate knows ({known})"
    )]
    NewerSchema {
        /// The catalog, named without a password.
        location: String,
        /// The version it holds.
        found: i64,
        /// The newest this build knows.
        known: i64,
    },
}

impl CatalogError {
    /// Whether the catalog is worth reconnecting to: its connection broke (the
    /// server went away), as opposed to a statement failing on a live connection.
    fn lost_connection(&self) -> bool {
        match self {
            CatalogError::Postgres { error, .. } => {
                error.is_closed() || error.as_db_error().is_none()
            }
            CatalogError::Sqlite { .. }
            | CatalogError::Tls { .. }
            | CatalogError::FilterRow { .. }
            | CatalogError::NewerSchema { .. }
            | CatalogError::Thread(_) => false,
        }
    }
}

/// One row a re-check reads: an object's own digests, or a member's.
pub(crate) struct DigestRow {
    /// The row's place in its table (re-checks page by it).
    pub position: i64,
    /// The object it is, or is a member of.
    pub object: i64,
    /// For a member: its names (JSON) and layers, as stored.
    pub member: Option<(String, String)>,
    /// Its size.
    pub size: u64,
    /// Its digests.
    pub digests: Vec<Digest>,
}

/// What names an object a re-check found listed.
pub(crate) struct ObjectRecord {
    pub kind: Kind,
    pub key: Vec<u8>,
    pub size: u64,
    pub stored: i64,
    pub etag: Option<String>,
    pub passed_by: Option<(String, u64)>,
    pub host: Option<String>,
    pub digests: Vec<Digest>,
}

/// Whether a re-check of one filter version is this catalog user's to run
/// ([`Catalog::claim_recheck`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// Run it, then [`Catalog::end_recheck`].
    Run,
    /// Another gateway sharing the catalog has run it to the end already.
    Done,
    /// Another gateway is running it now: ask again later.
    Busy,
}

enum Store {
    Sqlite(sqlite::Store),
    Postgres(Box<postgresql::Store>),
}

/// One statement for both stores: `each!(self, s => s.method(args))`.
macro_rules! each {
    ($self:ident, $s:ident => $call:expr) => {
        match &mut $self.store {
            Store::Sqlite($s) => $call,
            Store::Postgres($s) => $call,
        }
    };
}

/// A catalog, open. One writer at a time per process (the [`Recorder`] or a scan);
/// readers ([`recheck`]) open their own. Several gateways may share one PostgreSQL
/// catalog.
pub struct Catalog {
    location: Location,
    store: Store,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("location", &self.location)
            .finish()
    }
}

impl Catalog {
    /// Opens the SQLite catalog at `path`, creating it (and its directory) if need be,
    /// and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Catalog, CatalogError> {
        Catalog::at(&Location::File(path.to_path_buf()))
    }

    /// Opens (or connects to) the catalog at `location` and brings its schema up to
    /// date. A PostgreSQL catalog must not be opened on a thread that runs async tasks
    /// (its client blocks on a runtime of its own).
    pub fn at(location: &Location) -> Result<Catalog, CatalogError> {
        let store = match location {
            Location::File(path) => Store::Sqlite(sqlite::Store::open(path)?),
            Location::Postgres(url) => Store::Postgres(Box::new(postgresql::Store::connect(url)?)),
        };
        Ok(Catalog {
            location: location.clone(),
            store,
        })
    }

    /// Where the catalog is.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// Records `entries` in one transaction, each replacing any row of the same kind
    /// and key (a re-upload, a file read again; of two in `entries`, the later).
    pub fn put(&mut self, entries: &[Entry]) -> Result<(), CatalogError> {
        if entries.is_empty() {
            return Ok(());
        }
        each!(self, s => s.put(entries))
    }

    /// Removes the row of `kind` and `key`, if there is one (a `DELETE` through the
    /// gateway). Returns whether there was.
    pub fn remove(&mut self, kind: Kind, key: &[u8]) -> Result<bool, CatalogError> {
        each!(self, s => s.remove(kind, key))
    }

    /// Gives the object rows at `from`, and under it when it is a collection (`from/…`),
    /// the same place under `to`: a WebDAV `MOVE` (`keep` false) or `COPY` (`keep` true)
    /// the origin carried out. Rows already at the destination are replaced. Returns
    /// how many rows it gave a new place.
    pub fn relocate(&mut self, from: &[u8], to: &[u8], keep: bool) -> Result<u64, CatalogError> {
        use std::os::unix::ffi::OsStrExt as _;
        let trim = |key: &[u8]| -> Vec<u8> {
            let mut key = key.to_vec();
            while key.len() > 1 && key.ends_with(b"/") {
                key.pop();
            }
            key
        };
        let (from, to) = (trim(from), trim(to));
        let root = PathBuf::from(std::ffi::OsStr::from_bytes(&from));
        let keys = each!(self, s => s.keys_under(Kind::Object, &[root]))?;
        let mut moved = Vec::with_capacity(keys.len());
        for key in &keys {
            let Some(mut entry) = self.get(Kind::Object, key)? else {
                continue;
            };
            entry.key = [to.as_slice(), &key[from.len()..]].concat();
            moved.push(entry);
        }
        self.put(&moved)?;
        if !keep {
            for key in &keys {
                self.remove(Kind::Object, key)?;
            }
        }
        Ok(moved.len() as u64)
    }

    /// Removes the rows of files under `roots` that are not in `present` (a scan drops
    /// the rows of files that are gone). Returns how many were removed.
    pub fn retain_files(
        &mut self,
        roots: &[PathBuf],
        present: &std::collections::HashSet<Vec<u8>>,
    ) -> Result<u64, CatalogError> {
        let gone: Vec<Vec<u8>> = each!(self, s => s.keys_under(Kind::File, roots))?
            .into_iter()
            .filter(|k| !present.contains(k))
            .collect();
        self.remove_files(&gone)
    }

    /// Removes the rows of the files at `keys` (gone since they were recorded).
    /// Returns how many there were.
    pub fn remove_files(&mut self, keys: &[Vec<u8>]) -> Result<u64, CatalogError> {
        if keys.is_empty() {
            return Ok(0);
        }
        each!(self, s => s.remove_files(keys))
    }

    /// The recorded files under `roots` (absolute paths), by key, with their members.
    pub fn files_under(
        &mut self,
        roots: &[PathBuf],
    ) -> Result<HashMap<Vec<u8>, Entry>, CatalogError> {
        let mut found = HashMap::new();
        let mut keys: HashMap<i64, Vec<u8>> = HashMap::new();
        for root in roots {
            // Rows met under an earlier root (roots may nest) have their members.
            let mut fresh = std::collections::HashSet::new();
            for (id, entry) in each!(self, s => s.file_rows(root))? {
                if keys.insert(id, entry.key.clone()).is_none() {
                    fresh.insert(id);
                    found.insert(entry.key.clone(), entry);
                }
            }
            for (id, node) in each!(self, s => s.file_members(root))? {
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
    pub fn count(&mut self) -> Result<u64, CatalogError> {
        each!(self, s => s.count())
    }

    /// The row of `kind` and `key`, if any, with its members.
    pub fn get(&mut self, kind: Kind, key: &[u8]) -> Result<Option<Entry>, CatalogError> {
        each!(self, s => s.get(kind, key))
    }

    /// Asks whether the re-check of filter `series` `version` is this caller's to run.
    /// A fleet sharing a PostgreSQL catalog runs each re-check once: the first gateway
    /// to ask holds it (a session lock, so a gateway that dies lets the next one take
    /// it over) until [`Catalog::end_recheck`]. A SQLite catalog has one gateway, and
    /// answers [`Claim::Done`] only for a version it has re-checked already.
    pub fn claim_recheck(&mut self, series: &str, version: u64) -> Result<Claim, CatalogError> {
        each!(self, s => s.claim_recheck(series, version))
    }

    /// Ends a re-check this caller claimed: records it as done when `finished` (every
    /// row checked and every hit acted on), and lets it go.
    pub fn end_recheck(
        &mut self,
        series: &str,
        version: u64,
        finished: bool,
    ) -> Result<(), CatalogError> {
        each!(self, s => s.end_recheck(series, version, finished))
    }

    /// Up to `limit` rows of objects (or of members) past `after`, in order.
    pub(crate) fn digest_rows(
        &mut self,
        members: bool,
        after: i64,
        limit: usize,
    ) -> Result<Vec<DigestRow>, CatalogError> {
        each!(self, s => s.digest_rows(members, after, limit))
    }

    /// The record of object `id`.
    pub(crate) fn object(&mut self, id: i64) -> Result<ObjectRecord, CatalogError> {
        each!(self, s => s.object(id))
    }

    #[cfg(test)]
    pub(crate) fn connection(&self) -> &rusqlite::Connection {
        match &self.store {
            Store::Sqlite(s) => s.connection(),
            Store::Postgres(_) => panic!("not a SQLite catalog"),
        }
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

fn digest_of(digests: &[Digest], algorithm: Algorithm) -> Option<&[u8]> {
    digests
        .iter()
        .find(|d| d.algorithm == algorithm)
        .map(|d| d.bytes.as_slice())
}

/// Digests from the `md5`, `sha1`, `sha256` columns (each possibly null).
pub(crate) fn digests_from(columns: [Option<Vec<u8>>; 3]) -> Vec<Digest> {
    [Algorithm::Md5, Algorithm::Sha1, Algorithm::Sha256]
        .into_iter()
        .zip(columns)
        .filter_map(|(algorithm, bytes)| {
            Some(Digest {
                algorithm,
                bytes: bytes?,
            })
        })
        .collect()
}

/// The members' names as stored (JSON).
fn member_names(node: &Node) -> String {
    serde_json::to_string(&node.member).expect("strings serialize")
}

/// A member node from its stored columns.
fn member_of(names: &str, layers: &str, size: i64, digests: Vec<Digest>) -> Node {
    Node {
        member: serde_json::from_str(names).unwrap_or_default(),
        layers: layers_of(layers),
        size: size as u64,
        digests,
        picture: None,
    }
}

/// Of entries with the same kind and key, the last (it replaces the others).
fn last_of_each(entries: &[Entry]) -> Vec<&Entry> {
    let mut seen = std::collections::HashSet::new();
    let mut kept: Vec<&Entry> = entries
        .iter()
        .rev()
        .filter(|e| seen.insert((e.kind, e.key.as_slice())))
        .collect();
    kept.reverse();
    kept
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

/// An object row's columns, as either store reads them (members apart).
struct Columns {
    key: Vec<u8>,
    size: i64,
    stored: i64,
    series: Option<String>,
    version: Option<i64>,
    etag: Option<String>,
    dev: Option<i64>,
    ino: Option<i64>,
    mtime: Option<i64>,
    ctime: Option<i64>,
    digests: [Option<Vec<u8>>; 3],
    problems: Option<String>,
    host: Option<String>,
}

/// The columns every object query selects, in [`Columns`]' order, from `objects o`
/// joined with `filters f`.
const OBJECT_COLUMNS: &str = "o.key, o.size, o.stored, f.series, f.version, o.etag, o.dev, \
     o.ino, o.mtime, o.ctime, o.md5, o.sha1, o.sha256, o.problems, o.host";

impl Columns {
    fn entry(self, kind: Kind) -> Entry {
        let stamp = match (self.dev, self.ino, self.mtime, self.ctime) {
            (Some(dev), Some(ino), Some(mtime), Some(ctime)) => Some(FileStamp {
                dev: dev as u64,
                ino: ino as u64,
                size: self.size as u64,
                mtime,
                ctime,
            }),
            _ => None,
        };
        Entry {
            kind,
            key: self.key,
            size: self.size as u64,
            host: self.host,
            etag: self.etag,
            stored: self.stored,
            passed_by: self.series.zip(self.version.map(|v| v as u64)),
            stamp,
            digests: digests_from(self.digests),
            members: Vec::new(),
            problems: self
                .problems
                .as_deref()
                .map(problems_of)
                .unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests;
