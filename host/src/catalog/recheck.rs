//! Re-checking: every recorded digest against a filter, thousands per guest call.

use std::collections::HashMap;
use std::sync::mpsc;

use super::{layers_of, Catalog, CatalogError, DigestRow, Kind};
use crate::{Algorithm, Digest, Error, FilterEngine, Hit};

/// Rows read per batch: each batch is one guest call per algorithm.
const BATCH: usize = 8192;

/// A stored object, or a member of one, that the filter lists now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetroHit {
    /// What kind of row.
    pub kind: Kind,
    /// Its key: the file's path, the object's request path.
    pub key: Vec<u8>,
    /// The member that hit (names joined with `!`), if not the object itself.
    pub member: Option<String>,
    /// Its layers (`zip>file`), if not the object itself.
    pub layers: Option<String>,
    /// Its size (decoded, for a member).
    pub size: u64,
    /// When the object was recorded, Unix seconds.
    pub stored: i64,
    /// The filter series and version that let it through, if one did.
    pub passed_by: Option<(String, u64)>,
    /// The origin's ETag for it, if it gave one.
    pub etag: Option<String>,
    /// The `Host` an object was stored under.
    pub host: Option<String>,
    /// The digests that hit.
    pub hits: Vec<Hit>,
    /// The object's own recorded digests (of the archive, for a member): what a remedy
    /// compares the bytes stored under its key with before it acts, since something else
    /// may be stored there now.
    pub object: Vec<Digest>,
}

/// What a re-check went over.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recheck {
    /// Objects checked.
    pub objects: u64,
    /// Members checked.
    pub members: u64,
    /// Digests checked.
    pub digests: u64,
    /// Rows (objects and members) that lack a digest of an algorithm the filter holds,
    /// by algorithm: recorded before it was configured, so not checked for it.
    pub unchecked: Vec<(Algorithm, u64)>,
    /// Whether it stopped before the end (`keep_going` said no).
    pub stopped: bool,
}

/// Occurs when a re-check cannot finish.
#[derive(Debug, thiserror::Error)]
pub enum RecheckError {
    /// The catalog could not be read.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The filter guest failed (trapped, refused a batch).
    #[error(transparent)]
    Filter(#[from] Error),
}

/// Checks every row of `catalog` against `filter`, calling `on_hit` for each object or
/// member that hits (in no particular order), and returns what it went over.
/// `keep_going` is asked between batches; when it says no, the re-check stops early
/// (a newer filter arrived) and returns what it did.
///
/// Rows are read on a thread of their own, through a connection of its own, a batch
/// ahead of the guest's checks: reading and checking take about as long each, and a
/// machine that re-checks has a core for each.
pub fn recheck(
    catalog: &mut Catalog,
    filter: &FilterEngine,
    on_hit: &mut dyn FnMut(RetroHit),
    keep_going: &dyn Fn() -> bool,
) -> Result<Recheck, RecheckError> {
    let algorithms = filter.info().algorithms.clone();
    let location = catalog.location().clone();
    let mut done = Recheck::default();
    let mut unchecked: HashMap<Algorithm, u64> = HashMap::new();
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::sync_channel(READ_AHEAD);
        let reader = std::thread::Builder::new()
            .name("hashgate-recheck-read".into())
            .spawn_scoped(scope, move || read_rows(&location, &tx))
            .map_err(|e| RecheckError::Catalog(CatalogError::Thread(e.to_string())))?;
        let checked = (|| -> Result<(), RecheckError> {
            for batch in &rx {
                if !keep_going() {
                    done.stopped = true;
                    return Ok(());
                }
                let (members, rows) = batch?;
                if members {
                    done.members += rows.len() as u64;
                } else {
                    done.objects += rows.len() as u64;
                }
                let hits = check_batch(filter, &algorithms, &rows, &mut unchecked, &mut done)?;
                for (index, hits) in hits {
                    on_hit(named(catalog, &rows[index], hits)?);
                }
            }
            // Every batch read: asked once more, so a re-check that a newer filter
            // overtook in its last batch is not taken for finished.
            done.stopped = !keep_going();
            Ok(())
        })();
        // The reader stops at its next send once the receiver is gone.
        drop(rx);
        let _ = reader.join();
        checked
    })?;
    Ok(finish(done, unchecked))
}

/// Batches read ahead of the checks.
const READ_AHEAD: usize = 2;

/// One batch the reader sends: whether it is of members, and its rows.
type Batch = Result<(bool, Vec<DigestRow>), CatalogError>;

/// Reads every object row, then every member row, in batches, into `tx`, until done,
/// failed, or nobody listens.
fn read_rows(location: &super::Location, tx: &mpsc::SyncSender<Batch>) {
    let mut catalog = match Catalog::at(location) {
        Ok(catalog) => catalog,
        Err(e) => {
            let _ = tx.send(Err(e));
            return;
        }
    };
    for members in [false, true] {
        let mut after = 0i64;
        loop {
            let rows = match catalog.digest_rows(members, after, BATCH) {
                Ok(rows) => rows,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let Some(last) = rows.last() else { break };
            after = last.position;
            if tx.send(Ok((members, rows))).is_err() {
                return;
            }
        }
    }
}

fn finish(mut done: Recheck, unchecked: HashMap<Algorithm, u64>) -> Recheck {
    let mut unchecked: Vec<(Algorithm, u64)> = unchecked.into_iter().collect();
    unchecked.sort_by_key(|(a, _)| Algorithm::ALL.iter().position(|x| x == a));
    done.unchecked = unchecked;
    done
}

/// One guest call per algorithm for the whole batch; the hits by row.
fn check_batch(
    filter: &FilterEngine,
    algorithms: &[Algorithm],
    rows: &[DigestRow],
    unchecked: &mut HashMap<Algorithm, u64>,
    done: &mut Recheck,
) -> Result<Vec<(usize, Vec<Hit>)>, Error> {
    let mut by_row: HashMap<usize, Vec<Hit>> = HashMap::new();
    for &algorithm in algorithms {
        let width = algorithm.digest_len();
        let mut packed = Vec::with_capacity(rows.len() * width);
        // Which row each packed digest is of.
        let mut owners = Vec::with_capacity(rows.len());
        for (i, row) in rows.iter().enumerate() {
            match row.digests.iter().find(|d| d.algorithm == algorithm) {
                Some(d) if d.bytes.len() == width => {
                    packed.extend_from_slice(&d.bytes);
                    owners.push(i);
                }
                _ => *unchecked.entry(algorithm).or_default() += 1,
            }
        }
        if owners.is_empty() {
            continue;
        }
        done.digests += owners.len() as u64;
        for (index, category) in filter.check_packed(algorithm, &packed)? {
            let bytes = packed[index * width..(index + 1) * width].to_vec();
            by_row.entry(owners[index]).or_default().push(Hit {
                algorithm,
                bytes,
                category,
            });
        }
    }
    let mut hits: Vec<(usize, Vec<Hit>)> = by_row.into_iter().collect();
    hits.sort_by_key(|(i, _)| *i);
    Ok(hits)
}

/// A hit row with its object's key and record.
fn named(catalog: &mut Catalog, row: &DigestRow, hits: Vec<Hit>) -> Result<RetroHit, CatalogError> {
    let object = catalog.object(row.object)?;
    let (member, layers) = match &row.member {
        Some((names, layers)) => {
            let names: Vec<String> = serde_json::from_str(names).unwrap_or_default();
            let layers = crate::inspect::layers_label(&layers_of(layers));
            ((!names.is_empty()).then(|| names.join("!")), Some(layers))
        }
        None => (None, None),
    };
    Ok(RetroHit {
        kind: object.kind,
        key: object.key,
        member,
        layers,
        size: if row.member.is_some() {
            row.size
        } else {
            object.size
        },
        stored: object.stored,
        passed_by: object.passed_by,
        etag: object.etag,
        host: object.host,
        hits,
        object: object.digests,
    })
}
