//! Retroactive enforcement: the gateway's side of the digest catalog
//! ([`crate::catalog`]).
//!
//! * **Record** — when an object is stored (the origin answered 2xx to an inspected
//!   upload, an S3 completion or copy, or the embedded store published it), its
//!   digests and those of every member go to the catalog's [`Recorder`]: a bounded queue
//!   and a thread of its own, so the answer never waits for the disk. A `DELETE` that
//!   succeeded removes the row; a re-upload replaces it.
//! * **Re-check** — every time the feed swaps in a new filter, every row is checked
//!   against it on a low-priority thread ([`crate::catalog::recheck`], thousands of
//!   digests per guest call). A newer swap stops it and starts it again. Each stored
//!   object found listed gets an audit record (`evidence: "retroactive"`, with when it was
//!   stored and by which filter it was passed), a metric, and the configured action:
//!   `report`, or `delete` (a `DELETE` to the origin, S3-signed with `[s3]` in S3 mode;
//!   or removal from the embedded store).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::header::HeaderMap;
use hyper::Method;

use super::{Backend, Gateway};
use crate::catalog::{self, Catalog, Claim, Entry, Kind, Location, Recheck, Recorder, RetroHit};
use crate::config::RetroAction;
use crate::enforce::{AuditRecord, Context};
use crate::inspect::Report;
use crate::{Algorithm, FilterEngine};

/// Opens the catalog `settings` name and starts its recorder. A SQLite file that cannot
/// be opened stops the gateway from starting (a mistake in its configuration); a
/// PostgreSQL server is connected to on the recorder's thread, so one that is down
/// leaves the catalog degraded and the gateway serving.
pub(super) fn recorder(
    settings: &super::config::CatalogSettings,
) -> Result<Arc<Recorder>, crate::Error> {
    settings.location.check()?;
    Ok(Arc::new(match &settings.location {
        Location::File(path) => Recorder::start(Catalog::open(path)?, settings.queue),
        Location::Postgres(_) => Recorder::connecting(settings.location.clone(), settings.queue),
    }))
}

impl Gateway {
    /// The digests to compute for an object decided by `filter`: the filter's, and
    /// the catalog's if one is kept (a later list may hold any).
    pub(super) fn algorithms<'f>(&self, filter: &'f FilterEngine) -> Cow<'f, [Algorithm]> {
        let own = &filter.info().algorithms;
        let Some(settings) = &self.config.catalog else {
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

    /// Records an object stored under `ctx`'s host and path, as `report` found it,
    /// passed by `filter`; `headers` are the origin's (its ETag).
    pub(super) fn record_stored(
        &self,
        ctx: &Context,
        report: &Report,
        headers: Option<&HeaderMap>,
        filter: &FilterEngine,
    ) {
        let (Some(recorder), Some(settings)) = (&self.catalog, &self.config.catalog) else {
            return;
        };
        let in_store = matches!(self.config.backend, Backend::Store(_));
        let (kind, key) = row_key(in_store, ctx);
        let mut entry = Entry::of_report(kind, key, report, &settings.algorithms);
        entry.host = Some(ctx.host.clone()).filter(|h| !h.is_empty());
        entry.etag = headers
            .and_then(|h| h.get(hyper::header::ETAG))
            .and_then(|e| e.to_str().ok())
            .map(str::to_string);
        let info = filter.info();
        entry.passed_by = Some((info.series.clone(), info.version));
        recorder.record(entry);
    }

    /// Forgets the object at `ctx`'s path (a `DELETE` succeeded).
    pub(super) fn record_removed(&self, ctx: &Context) {
        if let Some(recorder) = &self.catalog {
            recorder.remove(Kind::Object, ctx.path.as_bytes().to_vec());
        }
    }
}

/// The catalog row of an upload stored under `ctx`: a `PUT` (or anything the embedded
/// store writes, which stores under the path) is the object at its path, and a later
/// one replaces it; anything else sent to an origin (a form `POST`) is stored where the
/// origin chooses, so each is a row of its own, never one that the next upload to the
/// same URL would replace.
fn row_key(in_store: bool, ctx: &Context) -> (Kind, Vec<u8>) {
    if in_store || ctx.method == "PUT" {
        (Kind::Object, ctx.path.as_bytes().to_vec())
    } else {
        let key = format!("{} {}", ctx.path, ctx.request_id);
        (Kind::Posted, key.into_bytes())
    }
}

/// Follows the filter swaps of `gw`'s verdict core, re-checking the catalog on each,
/// and keeps the catalog metrics current. Returns at once if no catalog is kept.
pub(super) async fn follow(gw: Arc<Gateway>) {
    let (Some(settings), Some(recorder)) = (gw.config.catalog.clone(), gw.catalog.clone()) else {
        return;
    };
    let metrics_gw = gw.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            metrics_gw.enforcer.metrics().set_catalog(&recorder.stats());
        }
    });
    let mut swaps = gw.enforcer.swaps();
    while swaps.changed().await.is_ok() {
        swaps.borrow_and_update();
        let filter = gw.enforcer.filter();
        let started = Instant::now();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (location, newer) = (settings.location.clone(), swaps.clone());
        let task_filter = filter.clone();
        let spawned = std::thread::Builder::new()
            .name("hashgate-recheck".into())
            .spawn(move || recheck_thread(&location, &task_filter, &newer, tx));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the catalog re-check");
            continue;
        }
        let metrics = gw.enforcer.metrics();
        let info = filter.info();
        match rx.await {
            Ok(Ok(Rechecked::Ran { done, hits, acted })) => {
                let rows = done.objects + done.members;
                let mut listed = std::collections::HashSet::new();
                for hit in hits {
                    act(&gw, &filter, settings.action, hit, &mut listed).await;
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
/// unless another gateway sharing it does; stops when `newer` sees another swap.
fn recheck_thread(
    location: &Location,
    filter: &FilterEngine,
    newer: &tokio::sync::watch::Receiver<u64>,
    tx: tokio::sync::oneshot::Sender<Result<Rechecked, catalog::RecheckError>>,
) {
    lower_priority();
    let superseded = || newer.has_changed().unwrap_or(true);
    let info = filter.info();
    let claimed = (|| {
        let mut catalog = Catalog::at(location)?;
        loop {
            match catalog.claim_recheck(&info.series, info.version)? {
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
    if let Err(e) = catalog.end_recheck(&info.series, info.version, finished) {
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

/// Reports (and, if configured, deletes) one stored object a re-check found listed;
/// `acted` holds the keys already deleted (an archive with two listed members is
/// deleted once).
async fn act(
    gw: &Gateway,
    filter: &FilterEngine,
    action: RetroAction,
    hit: RetroHit,
    acted: &mut std::collections::HashSet<Vec<u8>>,
) {
    let enforcer = &gw.enforcer;
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
    let needs: fn(&crate::enforce::confirm::ConfirmConfig) -> crate::enforce::confirm::Needs =
        match action {
            RetroAction::Quarantine => |r| r.quarantine,
            RetroAction::Delete | RetroAction::Report => |r| r.block,
        };
    let mut evidence = Vec::with_capacity(listed.len());
    let mut taken = false;
    for h in &listed {
        let (e, takes) = enforcer.confirm_stored(h, needs).await;
        evidence.push(e);
        taken |= takes;
    }
    let action = if taken { action } else { RetroAction::Report };
    let mut quarantined = None;
    let name = match (action, hit.kind) {
        (RetroAction::Report, _) | (_, Kind::File | Kind::Posted) => "report",
        // An archive with two listed members is acted on once.
        (RetroAction::Delete, Kind::Object) if acted.contains(&hit.key) => "delete",
        (RetroAction::Quarantine, Kind::Object) if acted.contains(&hit.key) => "quarantine",
        (RetroAction::Delete, Kind::Object) => match delete(gw, &hit).await {
            Ok(()) => "delete",
            Err(why) => {
                tracing::error!(key = %String::from_utf8_lossy(&hit.key), why, "deleting a stored object a new filter lists failed");
                "delete-failed"
            }
        },
        (RetroAction::Quarantine, Kind::Object) => match quarantine(gw, &hit).await {
            Ok(path) => {
                quarantined = path;
                match delete(gw, &hit).await {
                    Ok(()) => "quarantine",
                    Err(why) => {
                        tracing::error!(key = %String::from_utf8_lossy(&hit.key), why, "deleting a quarantined object failed");
                        "quarantine-failed"
                    }
                }
            }
            Err(why) => {
                tracing::error!(key = %String::from_utf8_lossy(&hit.key), why, "quarantining a stored object a new filter lists failed: left in place");
                "quarantine-failed"
            }
        },
    };
    acted.insert(hit.key.clone());
    if name == "delete" || name == "quarantine" {
        if let Some(recorder) = &gw.catalog {
            recorder.remove(Kind::Object, hit.key.clone());
        }
    }
    let ctx = Context {
        request_id: uuid::Uuid::new_v4().to_string(),
        method: "RECHECK".into(),
        host: hit.host.clone().unwrap_or_default(),
        path: String::from_utf8_lossy(&hit.key).into_owned(),
        part: hit.member.clone(),
        layers: hit.layers.clone(),
        ..Context::default()
    };
    let info = filter.info();
    for (h, e) in listed.into_iter().zip(evidence) {
        enforcer.metrics().count_retroactive(name);
        let mut record =
            AuditRecord::new(&ctx, hit.size, Some(h), name, &info.series, info.version);
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

/// Copies the stored object `hit` names into the quarantine directory, whole and
/// fsynced, as `<request id>.body`: read from the embedded store, or with a `GET` to the
/// origin (S3-signed in S3 mode with `[s3]`). Returns its path, or `None` when the
/// object is gone already.
async fn quarantine(gw: &Gateway, hit: &RetroHit) -> Result<Option<String>, String> {
    use http_body_util::BodyExt as _;
    use tokio::io::AsyncReadExt as _;
    let dir = gw.config.quarantine.as_ref().ok_or("no quarantine_dir")?;
    let key = String::from_utf8_lossy(&hit.key).into_owned();
    let mut copy = super::copy::Copy::start(dir, &uuid::Uuid::new_v4().to_string()).await;
    let mut copied = 0u64;
    match &gw.config.backend {
        Backend::Store(root) => {
            let path = super::store::object_path(root, &key).ok_or("not a store key")?;
            let mut file = match tokio::fs::File::open(&path).await {
                Ok(file) => file,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    copy.discard().await;
                    return Ok(None);
                }
                Err(e) => return Err(e.to_string()),
            };
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let n = file.read(&mut buf).await.map_err(|e| e.to_string())?;
                if n == 0 {
                    break;
                }
                copied += n as u64;
                copy.write(&bytes::Bytes::copy_from_slice(&buf[..n])).await;
            }
        }
        Backend::Origin(_) => {
            let response = origin_request(gw, hit, Method::GET).await?;
            let status = response.status();
            if status == hyper::StatusCode::NOT_FOUND {
                copy.discard().await;
                return Ok(None);
            }
            if !status.is_success() {
                copy.discard().await;
                return Err(format!("the origin answered {status} to the GET"));
            }
            let mut body = response.into_body();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| e.to_string())?;
                if let Ok(data) = frame.into_data() {
                    copied += data.len() as u64;
                    copy.write(&data).await;
                }
            }
        }
    }
    // The evidence is kept before anything is deleted: a copy that failed, or is not
    // the object recorded (its size changed), leaves the object where it is.
    if copied != hit.size && hit.member.is_none() {
        copy.discard().await;
        return Err(format!(
            "read {copied} bytes of an object recorded with {}",
            hit.size
        ));
    }
    let Some(path) = copy.path() else {
        return Err("the quarantine copy could not be written".into());
    };
    copy.keep().await;
    if tokio::fs::metadata(&path).await.is_err() {
        return Err("the quarantine copy could not be kept".into());
    }
    Ok(Some(path))
}

/// Sends `method` for the stored object `hit` names to the origin: S3-signed in S3 mode
/// with `[s3]`, else with the `Host` it was stored under.
async fn origin_request(
    gw: &Gateway,
    hit: &RetroHit,
    method: Method,
) -> Result<hyper::Response<hyper::body::Incoming>, String> {
    let key = String::from_utf8_lossy(&hit.key).into_owned();
    let host = hit.host.clone().unwrap_or_default();
    match (&gw.config.s3, &gw.spool) {
        (Some(credentials), Some(_)) => {
            let target = super::s3::Target {
                host,
                path_and_query: key,
            };
            super::s3::send(gw, credentials, method, &target, &[])
                .await
                .map_err(|e| e.to_string())
        }
        _ => {
            let mut headers = HeaderMap::new();
            if let Ok(value) = host.parse() {
                headers.insert(hyper::header::HOST, value);
            }
            let request = super::upload::own_request(gw, method, &key, headers)
                .map_err(|_| "cannot build the request".to_string())?;
            let sent = gw.client.request(request);
            match tokio::time::timeout(gw.config.origin_timeout, sent).await {
                Ok(result) => result.map_err(|e| e.to_string()),
                Err(_) => Err("the origin did not answer in time".into()),
            }
        }
    }
}

/// Deletes the stored object `hit` names: from the embedded store, or with a `DELETE`
/// to the origin (S3-signed in S3 mode with `[s3]`).
async fn delete(gw: &Gateway, hit: &RetroHit) -> Result<(), String> {
    let key = String::from_utf8_lossy(&hit.key).into_owned();
    match &gw.config.backend {
        Backend::Store(root) => {
            let path = super::store::object_path(root, &key).ok_or("not a store key")?;
            match tokio::fs::remove_file(&path).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e.to_string()),
            }
        }
        Backend::Origin(_) => {
            let response = origin_request(gw, hit, Method::DELETE).await?;
            let status = response.status();
            // Gone already is what was wanted.
            if status.is_success() || status == hyper::StatusCode::NOT_FOUND {
                Ok(())
            } else {
                Err(format!("the origin answered {status}"))
            }
        }
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
            row_key(false, &ctx("PUT", "a")),
            (Kind::Object, b"/upload".to_vec())
        );
        assert_eq!(
            row_key(true, &ctx("POST", "a")),
            (Kind::Object, b"/upload".to_vec())
        );
        let first = row_key(false, &ctx("POST", "a"));
        let second = row_key(false, &ctx("POST", "b"));
        assert_eq!(first.0, Kind::Posted);
        assert_ne!(
            first.1, second.1,
            "a second form upload does not replace the first"
        );
    }
}
