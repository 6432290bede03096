//! Retroactive enforcement, the gateway's part ([`crate::enforce::retro`] holds what
//! every front-end shares): it records every object it lets through (the origin answered
//! 2xx to an inspected upload, an S3 completion or copy, or the embedded store published
//! it), forgets those a `DELETE` removed, and is the [`Remedy`] a re-check acts through:
//! removal from the embedded store, or a `DELETE` to the origin (S3-signed with `[s3]`
//! in S3 mode), after a copy into the quarantine directory when told; in either case
//! only once the object, read back, is found to be still the one recorded.

use std::borrow::Cow;
use std::sync::Arc;

use hyper::header::HeaderMap;
use hyper::Method;

use super::{Backend, Gateway};
use crate::catalog::{Kind, RetroHit};
use crate::enforce::retro::{self, BoxFuture, Remedy, Removal};
use crate::enforce::Context;
use crate::enforce::FilterSet;
use crate::hashing::ObjectHasher;
use crate::inspect::Report;
use crate::Algorithm;

impl Gateway {
    /// The digests to compute for an object decided by `filter`: the filter's, and
    /// the catalog's if one is kept (a later list may hold any).
    pub(super) fn algorithms<'f>(&self, filter: &'f FilterSet) -> Cow<'f, [Algorithm]> {
        retro::algorithms(self.config.catalog.as_ref(), filter)
    }

    /// Records an object stored under `ctx`'s host and path, as `report` found it,
    /// passed by `filter`; `headers` are the origin's (its ETag).
    pub(super) fn record_stored(
        &self,
        ctx: &Context,
        report: &Report,
        headers: Option<&HeaderMap>,
        filter: &FilterSet,
    ) {
        let (Some(recorder), Some(settings)) = (&self.catalog, &self.config.catalog) else {
            return;
        };
        let in_store = matches!(self.config.backend, Backend::Store(_));
        let etag = headers
            .and_then(|h| h.get(hyper::header::ETAG))
            .and_then(|e| e.to_str().ok())
            .map(str::to_string);
        let row = retro::row_key(in_store, self.by_host(), ctx);
        recorder.record(retro::stored_entry(
            settings, row, ctx, report, etag, filter,
        ));
    }

    /// Records an object a protocol assembled at the origin's `key` (a tus upload's
    /// URL, a Nextcloud chunked upload's destination), as `report` found it.
    pub(super) fn record_assembled(
        &self,
        ctx: &Context,
        key: &str,
        report: &Report,
        filter: &FilterSet,
    ) {
        let (Some(recorder), Some(settings)) = (&self.catalog, &self.config.catalog) else {
            return;
        };
        let row = (Kind::Object, self.object_key(&ctx.host, key));
        recorder.record(retro::stored_entry(
            settings, row, ctx, report, None, filter,
        ));
    }

    /// Whether the catalog tells objects apart by host ([`retro::object_key`]): if the
    /// configuration says the origin serves several, and always in S3 mode (virtual-hosted
    /// buckets are hosts); never for the embedded store (one namespace).
    fn by_host(&self) -> bool {
        let asked = self.config.catalog.as_ref().is_some_and(|c| c.by_host);
        !matches!(self.config.backend, Backend::Store(_)) && (asked || self.spool.is_some())
    }

    /// The catalog key of the object at `path` under `host` ([`retro::object_key`]).
    fn object_key(&self, host: &str, path: &str) -> Vec<u8> {
        retro::object_key(self.by_host(), host, path)
    }

    /// Gives the rows at `ctx`'s host and path a place at `to` as well (`keep`: a
    /// `COPY`) or instead (a `MOVE`), once the origin has done so.
    pub(super) fn record_relocated(&self, ctx: &Context, to: &Relocation) {
        if let Some(recorder) = &self.catalog {
            let host = to.host.as_deref().unwrap_or(&ctx.host);
            recorder.relocate(
                self.object_key(&ctx.host, &ctx.path),
                self.object_key(host, &to.path),
                to.keep,
            );
        }
    }

    /// Whether a digest catalog is kept.
    pub(super) fn keeps_catalog(&self) -> bool {
        self.catalog.is_some()
    }

    /// Forgets the objects at `paths` under `ctx`'s host (an S3 `DeleteObjects`
    /// deleted them).
    pub(super) fn record_deleted(&self, ctx: &Context, paths: impl Iterator<Item = String>) {
        if let Some(recorder) = &self.catalog {
            for path in paths {
                recorder.remove(Kind::Object, self.object_key(&ctx.host, &path));
            }
        }
    }

    /// Forgets the object at `ctx`'s host and path (a `DELETE` succeeded).
    pub(super) fn record_removed(&self, ctx: &Context) {
        if let Some(recorder) = &self.catalog {
            recorder.remove(Kind::Object, self.object_key(&ctx.host, &ctx.path));
        }
    }
}

/// Where a WebDAV `MOVE` or `COPY` puts an object: its `Destination`, an absolute URI
/// or a path, as sent.
#[derive(Debug)]
pub(super) struct Relocation {
    /// The destination's host, when the `Destination` names one.
    host: Option<String>,
    /// The destination's path.
    path: String,
    /// The source stays (a `COPY`).
    keep: bool,
}

/// Where a WebDAV `MOVE` or `COPY` puts its object; `None` for other requests and for
/// one without a `Destination` (the origin refuses it). A `Destination` this cannot
/// read is an error: the origin may read it and move the object where the catalog
/// would not follow.
pub(super) fn relocation<B>(req: &hyper::Request<B>) -> Option<Result<Relocation, &'static str>> {
    let keep = match req.method().as_str() {
        "MOVE" => false,
        "COPY" => true,
        _ => return None,
    };
    let destination = req.headers().get("destination")?;
    let uri = destination
        .to_str()
        .ok()
        .and_then(|d| d.parse::<hyper::Uri>().ok());
    Some(match uri {
        Some(uri) => Ok(Relocation {
            host: uri.authority().map(|a| a.as_str().to_string()),
            path: uri.path().to_string(),
            keep,
        }),
        None => Err("a Destination the gateway cannot read"),
    })
}

/// Follows the filter swaps of `gw`'s verdict core, re-checking its catalog on each
/// ([`retro::follow`]) with the gateway as the remedy. Returns at once if no catalog is
/// kept.
pub(super) async fn follow(gw: Arc<Gateway>) {
    let (Some(settings), Some(recorder)) = (gw.config.catalog.clone(), gw.catalog.clone()) else {
        return;
    };
    let enforcer = gw.enforcer.clone();
    retro::follow(enforcer, settings, recorder, Arc::new(Stored(gw))).await;
}

/// The gateway as a re-check's [`Remedy`]: the objects are in its store or at its origin.
struct Stored(Arc<Gateway>);

impl Remedy for Stored {
    fn delete<'a>(&'a self, hit: &'a RetroHit) -> BoxFuture<'a, Result<Removal, String>> {
        Box::pin(remove(&self.0, hit, None))
    }

    fn quarantine<'a>(&'a self, hit: &'a RetroHit) -> BoxFuture<'a, Result<Removal, String>> {
        Box::pin(async move {
            let dir = self
                .0
                .config
                .quarantine
                .as_ref()
                .ok_or("no quarantine_dir")?;
            let copy = super::copy::Copy::start(dir, &uuid::Uuid::new_v4().to_string()).await;
            remove(&self.0, hit, Some(copy)).await
        })
    }
}

/// Reads the object `hit` names back (into `copy` too, when quarantining) and, if it is
/// still the object recorded, keeps the copy and deletes the object.
async fn remove(
    gw: &Gateway,
    hit: &RetroHit,
    mut copy: Option<super::copy::Copy>,
) -> Result<Removal, String> {
    // Something else, nothing, or a failed read: nothing to remove.
    if let Some(answer) = read_back(gw, hit, copy.as_mut()).await.transpose() {
        if let Some(copy) = copy {
            copy.discard().await;
        }
        return answer;
    }
    // The evidence is kept before anything is deleted: a copy that failed leaves the
    // object where it is.
    let mut quarantine = None;
    if let Some(copy) = copy {
        let path = copy
            .path()
            .ok_or("the quarantine copy could not be written")?;
        copy.keep().await;
        if tokio::fs::metadata(&path).await.is_err() {
            return Err("the quarantine copy could not be kept".into());
        }
        quarantine = Some(path);
    }
    delete(gw, hit).await?;
    Ok(Removal::Removed { quarantine })
}

/// Reads the object stored under `hit`'s key, whole, from the embedded store or with a
/// `GET` to the origin (S3-signed in S3 mode with `[s3]`), writing it to `copy`, and
/// compares its digest with the one recorded: `None` when it is the object recorded,
/// else why it is not to be removed (`Gone`, `Replaced`).
async fn read_back(
    gw: &Gateway,
    hit: &RetroHit,
    copy: Option<&mut super::copy::Copy>,
) -> Result<Option<Removal>, String> {
    use http_body_util::BodyExt as _;
    use tokio::io::AsyncReadExt as _;
    let recorded = retro::readback_digest(&hit.object).ok_or("no digest of it was recorded")?;
    let mut sink = Sink {
        hasher: ObjectHasher::new(&[recorded.algorithm]),
        copy,
    };
    let key = String::from_utf8_lossy(&hit.key).into_owned();
    match &gw.config.backend {
        Backend::Store(root) => {
            let path = super::store::object_path(root, &key).ok_or("not a store key")?;
            let mut file = match tokio::fs::File::open(&path).await {
                Ok(file) => file,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Ok(Some(Removal::Gone))
                }
                Err(e) => return Err(e.to_string()),
            };
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let n = file.read(&mut buf).await.map_err(|e| e.to_string())?;
                if n == 0 {
                    break;
                }
                sink.take(bytes::Bytes::copy_from_slice(&buf[..n])).await;
            }
        }
        Backend::Origin(_) => {
            let response = origin_request(gw, hit, Method::GET).await?;
            let status = response.status();
            if status == hyper::StatusCode::NOT_FOUND {
                return Ok(Some(Removal::Gone));
            }
            if !status.is_success() {
                return Err(format!("the origin answered {status} to the GET"));
            }
            let mut body = response.into_body();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| e.to_string())?;
                if let Ok(data) = frame.into_data() {
                    sink.take(data).await;
                }
            }
        }
    }
    let read = sink.hasher.finish();
    let same = read.first().map(|d| &d.bytes) == Some(&recorded.bytes);
    Ok((!same).then_some(Removal::Replaced))
}
/// Where the bytes read back go: hashed, and copied when quarantining.
struct Sink<'c> {
    hasher: ObjectHasher,
    copy: Option<&'c mut super::copy::Copy>,
}

impl Sink<'_> {
    async fn take(&mut self, data: bytes::Bytes) {
        self.hasher.update(&data);
        if let Some(copy) = self.copy.as_deref_mut() {
            copy.write(&data).await;
        }
    }
}

/// Sends `method` for the stored object `hit` names to the origin: S3-signed in S3 mode
/// with `[s3]`, else with the `Host` it was stored under.
async fn origin_request(
    gw: &Gateway,
    hit: &RetroHit,
    method: Method,
) -> Result<hyper::Response<hyper::body::Incoming>, String> {
    let key = String::from_utf8_lossy(retro::key_path(hit.kind, &hit.key)).into_owned();
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
/// to the origin (S3-signed in S3 mode with `[s3]`). Gone already is what was wanted.
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
            if status.is_success() || status == hyper::StatusCode::NOT_FOUND {
                Ok(())
            } else {
                Err(format!("the origin answered {status}"))
            }
        }
    }
}
