//! Retroactive enforcement: what every front-end that keeps a digest catalog
//! ([`crate::catalog`]) shares.
//!
//! * **Record** — a front-end records each object it lets through ([`stored_entry`],
//!   [`row_key`]) on its [`Recorder`] (a bounded queue and a thread of its own, so an
//!   answer never waits for the catalog), hashing the catalog's algorithms besides the
//!   filter's ([`algorithms`]).
//! * **Re-check** — [`follow`] waits for every filter swap of the verdict core and
//!   checks every row against the new filter on a low-priority thread
//!   ([`crate::catalog::recheck`], thousands of digests per guest call); a newer swap
//!   stops it and starts it again; in a fleet sharing a PostgreSQL catalog, one gateway
//!   re-checks each version. Each stored object found listed gets an audit record
//!   (`evidence: "retroactive"`, when it was stored and by which filter it was passed),
//!   a metric, and the configured [`RetroAction`], as far as `[confirm]` allows: the
//!   front-end's [`Remedy`] quarantines or deletes it where it is stored.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::FilterSet;
use super::{AuditRecord, Context, Enforcer};
use crate::catalog::{self, Catalog, Claim, Entry, Kind, Location, Recheck, Recorder, RetroHit};
use crate::config::{FileConfig, RetroAction};
use crate::inspect::Report;
use crate::{Algorithm, Error, FilterEngine};

/// A front-end's digest catalog: where, what it records, what a re-check does.
#[derive(Clone, Debug)]
pub struct CatalogSettings {
    /// The SQLite file or the PostgreSQL database.
    pub location: Location,
    /// Digests recorded (hashed besides the filter's own).
    pub algorithms: Vec<Algorithm>,
    /// What a stored object a new filter lists gets.
    pub action: RetroAction,
    /// Rows queued for writing, at most.
    pub queue: usize,
    /// Objects are keyed by host and path ([`object_key`]).
    pub by_host: bool,
}

impl CatalogSettings {
    /// The settings of `file`'s `[catalog]` table, if it has one; the catalog defaults
    /// to `catalog.db` in the state directory.
    pub fn resolve(file: &FileConfig) -> Result<Option<CatalogSettings>, Error> {
        let Some(table) = &file.catalog else {
            return Ok(None);
        };
        let location = table.path.clone().unwrap_or_else(|| {
            let dir = file.state_dir.clone();
            let dir = dir.unwrap_or_else(|| "hashgate-state".into());
            Location::File(dir.join("catalog.db"))
        });
        location.check()?;
        Ok(Some(CatalogSettings {
            location,
            algorithms: table.algorithms()?,
            action: table.action.unwrap_or_default(),
            queue: table.queue.unwrap_or(65536).max(1),
            by_host: table.by_host.unwrap_or(false),
        }))
    }
}

/// Opens the catalog `settings` name and starts its recorder. A SQLite file that cannot
/// be opened stops the front-end from starting (a mistake in its configuration); a
/// PostgreSQL server is connected to on the recorder's thread, so one that is down
/// leaves the catalog degraded and the front-end serving.
pub fn recorder(settings: &CatalogSettings) -> Result<Arc<Recorder>, Error> {
    Ok(Arc::new(match &settings.location {
        Location::File(path) => Recorder::start(Catalog::open(path)?, settings.queue),
        Location::Postgres(_) => Recorder::connecting(settings.location.clone(), settings.queue),
    }))
}

/// The digests to compute for an object decided by `filter`: the filter's, and the
/// catalog's if one is kept (a later list may hold any).
pub fn algorithms<'f>(
    catalog: Option<&CatalogSettings>,
    filter: &'f FilterSet,
) -> Cow<'f, [Algorithm]> {
    let own = filter.algorithms();
    let Some(settings) = catalog else {
        return Cow::Borrowed(own);
    };
    if settings.algorithms.iter().all(|a| own.contains(a)) {
        return Cow::Borrowed(own);
    }
    Cow::Owned(
        Algorithm::ALL
            .into_iter()
            .filter(|a| own.contains(a) || settings.algorithms.contains(a))
            .collect(),
    )
}

/// The row of an object stored under `key`, as `report` found it, passed by `filter`,
/// with the digests `settings` records; `etag` is the origin's, if it gave one.
pub fn stored_entry(
    settings: &CatalogSettings,
    (kind, key): (Kind, Vec<u8>),
    ctx: &Context,
    report: &Report,
    etag: Option<String>,
    filter: &FilterSet,
) -> Entry {
    let mut entry = Entry::of_report(kind, key, report, &settings.algorithms);
    entry.host = Some(ctx.host.clone()).filter(|h| !h.is_empty());
    entry.etag = etag;
    entry.passed_by = Some(filter.label());
    entry
}

/// The catalog row of an upload stored under `ctx`: a `PUT` (or anything the embedded
/// store writes, which stores under the path) is the object at its path, and a later
/// one replaces it; anything else sent to an origin (a form `POST`) is stored where the
/// origin chooses, so each is a row of its own, never one that the next upload to the
/// same URL would replace.
/// `by_host`: the origin serves several hosts ([`object_key`]).
pub fn row_key(in_store: bool, by_host: bool, ctx: &Context) -> (Kind, Vec<u8>) {
    let mut key = object_key(by_host && !in_store, &ctx.host, &ctx.path);
    if in_store || ctx.method == "PUT" {
        (Kind::Object, key)
    } else {
        key.extend_from_slice(format!(" {}", ctx.request_id).as_bytes());
        (Kind::Posted, key)
    }
}

/// The catalog key of the object at `path` under `host`. An origin that routes virtual
/// hosts (or S3 virtual-hosted buckets) on the `Host` holds two objects at two hosts'
/// `/index.html`, and their rows must not replace each other: with `by_host` the key
/// is the host, in lower case, then the path. Otherwise (an origin with one namespace,
/// which any `Host` reaches: a row must follow a `DELETE` or `MOVE` sent under another
/// name) and for a request without a host, the key is the path alone. (A host never
/// holds a `/`: the gateway refuses one that does, as nginx does.)
pub fn object_key(by_host: bool, host: &str, path: &str) -> Vec<u8> {
    if !by_host || host.is_empty() {
        return path.as_bytes().to_vec();
    }
    let mut key = host.to_ascii_lowercase().into_bytes();
    key.extend_from_slice(path.as_bytes());
    key
}

/// The path part of the key of an object or posted row ([`object_key`]): from its
/// first `/`. (A file's key is its path, whole.)
pub fn key_path(kind: Kind, key: &[u8]) -> &[u8] {
    match kind {
        Kind::File => key,
        Kind::Object | Kind::Posted => &key[key.iter().position(|b| *b == b'/').unwrap_or(0)..],
    }
}

/// A boxed future a [`Remedy`] returns (a trait object's methods cannot be `async`).
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// What a front-end does to a stored object a re-check found listed, beyond the audit
/// record every one gets: where the object is stored is the front-end's to know.
///
/// A row can be stale: the object may have been replaced under its key since, through
/// another spelling of the path, another protocol, or around the gateway. So a remedy
/// reads the object back and acts only when its bytes are still the ones recorded
/// ([`RetroHit::object`]); a clean object that took a listed one's place is left alone.
pub trait Remedy: Send + Sync {
    /// Deletes the object `hit` names, if it is still the one recorded.
    fn delete<'a>(&'a self, hit: &'a RetroHit) -> BoxFuture<'a, Result<Removal, String>>;
    /// Copies the object `hit` names, whole and fsynced, into the quarantine directory,
    /// then deletes it, if it is still the one recorded. An error leaves it in place.
    fn quarantine<'a>(&'a self, hit: &'a RetroHit) -> BoxFuture<'a, Result<Removal, String>>;
}

/// What a [`Remedy`] did with a stored object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Removal {
    /// It was read back, found to be the object recorded, and deleted (after its copy
    /// was kept at `quarantine`, when quarantined).
    Removed {
        /// Where the quarantine copy was kept.
        quarantine: Option<String>,
    },
    /// Nothing is stored under its key any more.
    Gone,
    /// Something else is stored under its key now: left alone.
    Replaced,
}

/// Which of `recorded`'s digests a read-back compares (the cheapest to hash that was
/// recorded), if any.
pub fn readback_digest(recorded: &[crate::Digest]) -> Option<&crate::Digest> {
    [Algorithm::Sha256, Algorithm::Sha1, Algorithm::Md5]
        .iter()
        .find_map(|a| recorded.iter().find(|d| d.algorithm == *a))
}

/// Follows the filter swaps of `enforcer`, re-checking the catalog `settings` name on
/// each and acting on what it finds through `remedy`, and keeps the catalog metrics
/// (from `recorder`) current. Runs until the verdict core is dropped.
pub async fn follow(
    enforcer: Arc<Enforcer>,
    settings: CatalogSettings,
    recorder: Arc<Recorder>,
    remedy: Arc<dyn Remedy>,
) {
    let metrics_enforcer = enforcer.clone();
    let metrics_recorder = recorder.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            metrics_enforcer
                .metrics()
                .set_catalog(&metrics_recorder.stats());
        }
    });
    let mut swaps = enforcer.swaps();
    while swaps.changed().await.is_ok() {
        swaps.borrow_and_update();
        // Each authority's filter is re-checked on its own (a version already checked
        // is claimed as done and skipped).
        let set = enforcer.filter();
        for member in set.members() {
            let filter = member.engine.clone();
            let started = Instant::now();
            let (tx, rx) = tokio::sync::oneshot::channel();
            let (location, newer) = (settings.location.clone(), swaps.clone());
            let task_filter = filter.clone();
            // Two authorities may name their lists alike: each claims under its own name.
            let series = &filter.info().series;
            let claim = match &member.authority {
                Some(authority) => format!("{authority}/{series}"),
                None => series.clone(),
            };
            let spawned = std::thread::Builder::new()
                .name("hashgate-recheck".into())
                .spawn(move || recheck_thread(&location, &task_filter, &claim, &newer, tx));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start the catalog re-check");
                continue;
            }
            let metrics = enforcer.metrics();
            let info = filter.info();
            match rx.await {
                Ok(Ok(Rechecked::Ran { done, hits, acted })) => {
                    let rows = done.objects + done.members;
                    let mut listed = std::collections::HashMap::new();
                    for hit in hits {
                        act(
                            &enforcer,
                            &recorder,
                            &*remedy,
                            member,
                            settings.action,
                            hit,
                            &mut listed,
                        )
                        .await;
                    }
                    // Recorded as done (no other gateway of a fleet runs it again) once
                    // every row was checked and every hit acted on.
                    let _ = acted.send(!done.stopped);
                    let outcome = if done.stopped { "stopped" } else { "done" };
                    metrics.count_recheck(outcome, started.elapsed(), rows);
                    tracing::info!(
                        series = %info.series,
                        version = info.version,
                        objects = done.objects,
                        members = done.members,
                        listed = listed.len(),
                        outcome,
                        seconds = started.elapsed().as_secs_f64(),
                        "catalog re-checked"
                    );
                    for (algorithm, n) in done.unchecked {
                        tracing::warn!(
                            algorithm = algorithm.name(),
                            rows = n,
                            "catalog rows recorded without this algorithm were not checked for it"
                        );
                    }
                }
                Ok(Ok(Rechecked::Elsewhere)) => {
                    metrics.count_recheck("elsewhere", started.elapsed(), 0);
                    tracing::info!(
                        series = %info.series,
                        version = info.version,
                        "catalog re-checked by another gateway sharing it"
                    );
                }
                Ok(Ok(Rechecked::Superseded)) => {
                    metrics.count_recheck("stopped", started.elapsed(), 0);
                }
                Ok(Err(e)) => {
                    metrics.count_recheck("failed", started.elapsed(), 0);
                    tracing::error!(error = %e, "the catalog re-check failed");
                }
                Err(_) => {
                    metrics.count_recheck("failed", started.elapsed(), 0);
                    tracing::error!("the catalog re-check thread died");
                }
            }
        }
    }
}

/// What a re-check thread found.
enum Rechecked {
    /// It ran (to the end, or stopped by a newer filter): the hits to act on, and where
    /// to say whether they all were (the re-check is then recorded as done).
    Ran {
        done: Recheck,
        hits: Vec<RetroHit>,
        acted: std::sync::mpsc::Sender<bool>,
    },
    /// Another gateway sharing the catalog has re-checked this filter version.
    Elsewhere,
    /// A newer filter came while another gateway held the re-check.
    Superseded,
}

/// How often a gateway asks again for a re-check another one holds.
const CLAIM_RETRY: Duration = Duration::from_secs(1);

/// Re-checks the catalog at `location` against `filter` on this (low-priority) thread,
/// unless another gateway sharing it does (the re-check of its version is claimed as
/// `series`); stops when `newer` sees another swap.
fn recheck_thread(
    location: &Location,
    filter: &FilterEngine,
    series: &str,
    newer: &tokio::sync::watch::Receiver<u64>,
    tx: tokio::sync::oneshot::Sender<Result<Rechecked, catalog::RecheckError>>,
) {
    lower_priority();
    let superseded = || newer.has_changed().unwrap_or(true);
    let info = filter.info();
    let claimed = (|| {
        let mut catalog = Catalog::at(location)?;
        loop {
            match catalog.claim_recheck(series, info.version)? {
                Claim::Run => return Ok(Some(catalog)),
                Claim::Done => return Ok(None),
                Claim::Busy if superseded() => return Err(None),
                Claim::Busy => std::thread::sleep(CLAIM_RETRY),
            }
        }
    })();
    let mut catalog = match claimed {
        Ok(Some(catalog)) => catalog,
        Ok(None) => {
            let _ = tx.send(Ok(Rechecked::Elsewhere));
            return;
        }
        Err(None) => {
            let _ = tx.send(Ok(Rechecked::Superseded));
            return;
        }
        Err(Some(e)) => {
            let _ = tx.send(Err(catalog::RecheckError::from(e)));
            return;
        }
    };
    let mut hits = Vec::new();
    let done = catalog::recheck(&mut catalog, filter, &mut |h| hits.push(h), &|| {
        !superseded()
    });
    let finished = match done {
        Ok(done) => {
            let (acted, answer) = std::sync::mpsc::channel();
            let _ = tx.send(Ok(Rechecked::Ran { done, hits, acted }));
            answer.recv().unwrap_or(false)
        }
        Err(e) => {
            let _ = tx.send(Err(e));
            false
        }
    };
    if let Err(e) = catalog.end_recheck(series, info.version, finished) {
        tracing::error!(error = %e, "cannot record the catalog re-check");
    }
}

/// A re-check competes with uploads for the cores: it yields to them.
fn lower_priority() {
    // SAFETY: setpriority on this thread's own id (Linux applies nice per thread).
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 19);
    }
}

/// Reports (and, as configured and confirmed, quarantines or deletes) one stored object
/// a re-check found listed; `acted` holds the keys already acted on (an archive with two
/// listed members is acted on once).
async fn act(
    enforcer: &Enforcer,
    recorder: &Recorder,
    remedy: &dyn Remedy,
    member: &super::Member,
    action: RetroAction,
    hit: RetroHit,
    acted: &mut std::collections::HashMap<Vec<u8>, (&'static str, Option<String>)>,
) {
    let listed: Vec<&crate::Hit> = hit
        .hits
        .iter()
        .filter(|h| !h.is_canary() && !enforcer.allowed(h))
        .collect();
    if listed.is_empty() {
        return;
    }
    // With confirmation configured, the authority is asked before anything is deleted:
    // an action is taken when one listed digest meets what it needs; else the object is
    // only reported.
    let needs: fn(&super::confirm::ConfirmConfig) -> super::confirm::Needs = match action {
        RetroAction::Quarantine => |r| r.quarantine,
        RetroAction::Delete | RetroAction::Report => |r| r.block,
    };
    let mut evidence = Vec::with_capacity(listed.len());
    let mut taken = false;
    for h in &listed {
        let (e, takes) = enforcer.confirm_stored(member, h, needs).await;
        evidence.push(e);
        taken |= takes;
    }
    let action = if taken { action } else { RetroAction::Report };
    let key = String::from_utf8_lossy(&hit.key).into_owned();
    let failed = |what: &str, why: String| {
        tracing::error!(
            key,
            why,
            "{what} a stored object a new filter lists failed: left in place"
        );
    };
    let (name, quarantined) = match (action, hit.kind) {
        (RetroAction::Report, _) | (_, Kind::File | Kind::Posted) => ("report", None),
        // An archive with two listed members is acted on once.
        (_, Kind::Object) if acted.contains_key(&hit.key) => acted[&hit.key].clone(),
        (RetroAction::Delete, Kind::Object) => match remedy.delete(&hit).await {
            Ok(removal) => outcome("delete", removal),
            Err(why) => {
                failed("deleting", why);
                ("delete-failed", None)
            }
        },
        (RetroAction::Quarantine, Kind::Object) => match remedy.quarantine(&hit).await {
            Ok(removal) => outcome("quarantine", removal),
            Err(why) => {
                failed("quarantining", why);
                ("quarantine-failed", None)
            }
        },
    };
    acted.insert(hit.key.clone(), (name, quarantined.clone()));
    // The row no longer describes what is stored under its key.
    if matches!(name, "delete" | "quarantine" | "gone" | "replaced") {
        recorder.remove(Kind::Object, hit.key.clone());
    }
    let ctx = Context {
        request_id: uuid::Uuid::new_v4().to_string(),
        method: "RECHECK".into(),
        host: hit.host.clone().unwrap_or_default(),
        path: String::from_utf8_lossy(key_path(hit.kind, &hit.key)).into_owned(),
        part: hit.member.clone(),
        layers: hit.layers.clone(),
        ..Context::default()
    };
    let info = member.engine.info();
    for (h, e) in listed.into_iter().zip(evidence) {
        enforcer.metrics().count_retroactive(name);
        let mut record =
            AuditRecord::new(&ctx, hit.size, Some(h), name, &info.series, info.version);
        record.authority = member.authority.as_deref().map(str::to_string);
        record.evidence = Some("retroactive");
        record.confirmation = e.map(|e| e.label());
        record.quarantine = quarantined.clone();
        record.stored = Some(serde_json::json!({
            "time": hit.stored,
            "kind": hit.kind.name(),
            "etag": hit.etag,
            "passed_by": hit.passed_by.as_ref().map(|(s, v)| serde_json::json!({"series": s, "version": v})),
        }));
        tracing::warn!(
            key = %ctx.path,
            member = ?hit.member,
            action = name,
            "a stored object is listed by the new filter"
        );
        enforcer.audit_record(&record).await;
    }
}

/// The audit action for a `removal` by `action` (`delete` or `quarantine`), and the
/// quarantine copy's path.
fn outcome(action: &'static str, removal: Removal) -> (&'static str, Option<String>) {
    match removal {
        Removal::Removed { quarantine } => (action, quarantine),
        Removal::Gone => ("gone", None),
        Removal::Replaced => ("replaced", None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploads_to_a_place_the_origin_chooses_are_rows_of_their_own() {
        let ctx = |method: &str, id: &str| Context {
            method: method.into(),
            path: "/upload".into(),
            request_id: id.into(),
            ..Context::default()
        };
        assert_eq!(
            row_key(false, false, &ctx("PUT", "a")),
            (Kind::Object, b"/upload".to_vec())
        );
        assert_eq!(
            row_key(true, false, &ctx("POST", "a")),
            (Kind::Object, b"/upload".to_vec())
        );
        let first = row_key(false, false, &ctx("POST", "a"));
        let second = row_key(false, false, &ctx("POST", "b"));
        assert_eq!(first.0, Kind::Posted);
        assert_ne!(
            first.1, second.1,
            "a second form upload does not replace the first"
        );
    }

    #[test]
    fn objects_of_two_hosts_are_two_rows() {
        let ctx = |host: &str| Context {
            method: "PUT".into(),
            host: host.into(),
            path: "/index.html".into(),
            ..Context::default()
        };
        let a = row_key(false, true, &ctx("a.s3.example"));
        let b = row_key(false, true, &ctx("b.s3.example"));
        assert_ne!(a, b, "one bucket's upload does not replace another's row");
        assert_eq!(a.1, b"a.s3.example/index.html");
        assert_eq!(
            row_key(false, true, &ctx("A.S3.example")),
            a,
            "hosts have no case"
        );
        assert_eq!(key_path(Kind::Object, &a.1), b"/index.html");
        // One namespace: any name reaches the object. The embedded store has one;
        // rows of old have no host.
        assert_eq!(
            row_key(false, false, &ctx("a.s3.example")).1,
            b"/index.html"
        );
        assert_eq!(row_key(true, true, &ctx("a.s3.example")).1, b"/index.html");
        assert_eq!(key_path(Kind::Object, b"/index.html"), b"/index.html");
        let post = Context {
            method: "POST".into(),
            ..ctx("a")
        };
        let posted = row_key(false, true, &post);
        assert!(key_path(Kind::Posted, &posted.1).starts_with(b"/index.html "));
        assert_eq!(key_path(Kind::File, b"tree/a"), b"tree/a");
    }
}
