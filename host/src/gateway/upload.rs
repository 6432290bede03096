//! Proxying to an origin: inspected uploads (hash, hold back, decide) and everything
//! else untouched.

use std::future::Future;
use std::io;

use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri};
use tokio::task::{JoinError, JoinHandle};

use super::body::{BodySender, ChannelBody, GatewayBody, Upload};
use super::copy::Copy;
use super::s3::PartCopy;
use super::shapes::{Objects, Shape};
use super::tus::PieceCopy;
use super::{Backend, Gateway};
use crate::enforce::{Context, Outcome};
use crate::inspect::{Hashes, HoldBack};

/// The origin's answer to a request being sent, on a task of its own (an inspected
/// upload's request runs while the handler reads the client's body).
pub(super) type Upstream =
    JoinHandle<Result<Response<Incoming>, hyper_util::client::legacy::Error>>;

/// Frames in flight towards the origin, besides the bytes held back.
const CHANNEL_DEPTH: usize = 2;

/// Hop-by-hop headers a proxy must not forward (RFC 9110 §7.6.1), plus `expect`: the
/// gateway answers `100 Continue` itself.
static HOP_BY_HOP: [HeaderName; 9] = [
    HeaderName::from_static("connection"),
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-authenticate"),
    HeaderName::from_static("proxy-authorization"),
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("te"),
    HeaderName::from_static("trailer"),
    HeaderName::from_static("upgrade"),
    HeaderName::from_static("expect"),
];

/// An inspected upload: forwarded as it arrives, minus its final bytes, until the verdict
/// (see [`HoldBack`]). `spool`, if given, gets a copy of the body, kept only if the origin
/// stores it (the S3 part spool).
///
/// The phases, in order (each runs once per request unless it says otherwise):
///
/// 1. **Envelope** — on the request head, before any body byte: `Shape::of` reads the
///    framing and the codings and media type. Gets the headers. Default: a plain body.
///    An error ends the request here: 413 (declared too large), 501 (unknown transfer
///    coding), 415 (unknown content coding), 400 (a multipart type without a boundary);
///    nothing reaches the origin.
/// 2. **Connect** — the head goes to the origin at once, the body through a bounded
///    channel (`ChannelBody`). Gets the head. The origin's answer is awaited later.
/// 3. **Frame** — for every body frame as it arrives: the frame is pushed into the
///    hold-back, whatever it releases is forwarded first (the origin takes it in while
///    it is inspected), then the frame is fed to the inspection (`Objects::update`) and
///    the quarantine and spool copies. A client that stalls, breaks off or sends too much
///    ends the request (408, 400, 413) with the upstream aborted; a broken aws-chunked
///    framing with 400.
/// 4. **Report** — at the end of the body: `Objects::finish` waits for the walk. Its
///    error (a failed worker or spool file) is 503; nothing unchecked passes.
/// 5. **Decide** — `Gateway::decide_with_copy`: every node and problem of the report
///    through the enforcer; the quarantine copy is kept if the decision says so.
/// 6. **Answer** — pass or monitor: the held bytes go on and the origin's answer is
///    relayed (the spool copy kept if it stored the part). Otherwise the upstream body is
///    aborted (the origin discards an incomplete upload) and the client gets
///    `ReportDecision::refusal`'s answer: 451, 422 or 503.
pub async fn inspect(
    gw: &Gateway,
    req: Request<Incoming>,
    ctx: &Context,
    mut spool: Option<BodySpool>,
) -> Response<GatewayBody> {
    let (mut parts, incoming) = req.into_parts();
    let declared = content_length(&parts.headers);
    if declared.is_some_and(|n| n > gw.config.max_body) {
        return gw.refusal(StatusCode::PAYLOAD_TOO_LARGE, ctx, "body too large");
    }
    let shape = match Shape::of(&parts.headers) {
        Ok(shape) => shape,
        Err(e) => return gw.uninspectable_envelope(ctx, &e),
    };
    let (tx, body) = ChannelBody::new(CHANNEL_DEPTH, declared);
    let upstream_req = match upstream_request(gw, &mut parts, body.boxed()) {
        Ok(r) => r,
        Err(response) => return response,
    };
    let upstream: Upstream = tokio::spawn(gw.client.request(upstream_req));
    let filter = gw.enforcer.filter();
    let algorithms = gw.algorithms(&filter);
    let hashes = Hashes::with(&algorithms, &filter);
    let mut objects = Objects::new(shape, hashes, gw.config.inspect.clone(), declared);
    let mut holdback = HoldBack::new(incoming.size_hint().exact(), HoldBack::TAIL);
    let mut origin_open = true;
    let mut copy = gw.quarantine_copy(ctx).await;
    let mut upload = Upload::new(incoming, gw.config.body_timeout, gw.config.max_body);
    loop {
        let data = match upload.next().await {
            Ok(Some(data)) => data,
            Ok(None) => break,
            Err(cut) => {
                // Nothing reaches the origin complete.
                give_up(tx, upstream, copy, spool).await;
                return gw.cut(&cut, ctx);
            }
        };
        // Forward before hashing: the origin takes the bytes in while they are hashed.
        holdback.push(data.clone());
        while let Some(ready) = holdback.release() {
            if !origin_open || tx.send(Ok(ready)).await.is_err() {
                // The origin answered early or went away; keep reading so the verdict is
                // still audited, then relay whatever it said.
                origin_open = false;
            } else if holdback.complete() {
                // Hashing and deciding follow without a pause: let the origin's
                // connection write first. (Earlier frames are written while this task
                // waits for the next one.)
                handed_over(&tx).await;
            }
        }
        if let Err(why) = objects.update(&data).await {
            give_up(tx, upstream, copy, spool).await;
            return gw.malformed(ctx, &why.to_string());
        }
        if let Some(copy) = &mut copy {
            copy.write(&data).await;
        }
        if let Some(spool) = &mut spool {
            spool.write(&data).await;
        }
    }
    let objects = match objects.finish().await {
        Ok(objects) => objects,
        Err(why) => {
            give_up(tx, upstream, copy, spool).await;
            return gw.body_error(ctx, &why);
        }
    };
    let decision = gw.decide_with_copy(&filter, ctx, &objects, copy).await;
    match decision.outcome {
        Outcome::Block | Outcome::Unavailable => {
            give_up(tx, upstream, None, spool).await;
            gw.refused_report(&decision, ctx)
        }
        Outcome::Pass | Outcome::Monitor => {
            for last in holdback.into_rest() {
                if !origin_open || tx.send(Ok(last)).await.is_err() {
                    break;
                }
            }
            drop(tx);
            let response = relay(gw, upstream).await;
            match spool {
                Some(spool) => {
                    let whole = spool.whole_at(&ctx.path, response.status(), response.headers());
                    spool.settle(response.status(), response.headers()).await;
                    if let Some(key) = whole {
                        gw.record_assembled(ctx, &key, &objects, &filter);
                    }
                }
                // A whole object, stored: recorded (a piece is recorded with its whole).
                None if response.status().is_success() => {
                    gw.record_stored(ctx, &objects, Some(response.headers()), &filter)
                }
                None => {}
            }
            response
        }
    }
}

/// The spool copy of a body that is one piece of a larger object.
pub enum BodySpool {
    /// An S3 part, kept under its ETag if the origin stored it.
    S3(PartCopy),
    /// A tus piece, kept whatever became of the request (the origin keeps what it got);
    /// where the upload is stored if this piece is all of it.
    Tus(PieceCopy, Whole),
    /// A Nextcloud chunk, kept if the origin stored it.
    Chunk(PartCopy),
    /// No copy: the body is a whole tus upload (its creation carried all of it).
    TusCreation,
}

/// Whether a tus body is a whole upload, and so recorded once the origin stored it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Whole {
    /// A piece of a larger one: recorded with its whole.
    No,
    /// All of it, at the request's URL (a `PATCH` from offset 0 to the end).
    Here,
}

impl BodySpool {
    async fn write(&mut self, data: &bytes::Bytes) {
        match self {
            BodySpool::S3(copy) | BodySpool::Chunk(copy) => copy.write(data).await,
            BodySpool::Tus(copy, _) => copy.write(data).await,
            BodySpool::TusCreation => {}
        }
    }

    /// Where the origin stored the whole object this body is, if it is one and the
    /// origin answered `status` (2xx) with `headers`: the request's `path`, or the new
    /// upload's `Location`.
    fn whole_at(&self, path: &str, status: StatusCode, headers: &HeaderMap) -> Option<String> {
        if !status.is_success() {
            return None;
        }
        match self {
            BodySpool::Tus(_, Whole::Here) => Some(path.to_string()),
            BodySpool::TusCreation => {
                let location = headers.get(hyper::header::LOCATION)?.to_str().ok()?;
                Some(
                    location
                        .parse::<hyper::Uri>()
                        .map_or(location.to_string(), |u| u.path().to_string()),
                )
            }
            BodySpool::Tus(_, Whole::No) | BodySpool::S3(_) | BodySpool::Chunk(_) => None,
        }
    }

    /// After the origin's answer.
    async fn settle(self, status: StatusCode, headers: &HeaderMap) {
        match self {
            BodySpool::S3(copy) => copy.settle(status, headers).await,
            BodySpool::Chunk(copy) => copy.settle_unbound(status).await,
            BodySpool::Tus(copy, _) => {
                let location = headers
                    .get(hyper::header::LOCATION)
                    .and_then(|l| l.to_str().ok());
                copy.keep(location.filter(|_| status.is_success())).await
            }
            BodySpool::TusCreation => {}
        }
    }

    /// When the request did not complete.
    async fn discard(self) {
        match self {
            BodySpool::S3(copy) | BodySpool::Chunk(copy) => copy.discard().await,
            BodySpool::Tus(copy, _) => copy.keep(None).await,
            BodySpool::TusCreation => {}
        }
    }
}

/// Yields until the origin's connection has taken every frame sent to it (it writes them
/// as it takes them), a few turns at most: the origin then takes the bytes in on another
/// core while this task hashes them. The first frame takes two turns (the request task
/// hands the request to the connection, which then writes); a slow origin stops the
/// waiting, and the frame waits in the channel as before.
async fn handed_over(tx: &BodySender) {
    for _ in 0..3 {
        if tx.capacity() == tx.max_capacity() {
            return;
        }
        tokio::task::yield_now().await;
    }
}

/// Ends an upload that will not complete: the upstream request aborted (nothing reaches
/// the origin complete) and the copies of its body (quarantine, S3 spool) deleted.
async fn give_up(tx: BodySender, upstream: Upstream, copy: Option<Copy>, spool: Option<BodySpool>) {
    abort(tx, upstream).await;
    if let Some(copy) = copy {
        copy.discard().await;
    }
    if let Some(spool) = spool {
        spool.discard().await;
    }
}

/// A request that is not inspected: headers and body streamed to the origin as they come.
pub async fn pass_through(gw: &Gateway, req: Request<Incoming>) -> Response<GatewayBody> {
    let (mut parts, incoming) = req.into_parts();
    let body = incoming.map_err(io::Error::other).boxed();
    let upstream_req = match upstream_request(gw, &mut parts, body) {
        Ok(r) => r,
        Err(response) => return response,
    };
    relay(gw, sent(gw.client.request(upstream_req))).await
}

/// Ends the upstream request without completing its body: the origin sees a connection
/// closed mid-body and discards what it received.
async fn abort(tx: BodySender, upstream: Upstream) {
    let _ = tx.try_send(Err(io::Error::other("upload refused by hashgate")));
    drop(tx);
    upstream.abort();
    let _ = upstream.await;
}

/// The outcome of a request sent on the handler's own task ([`sent`]) or on a task of
/// its own ([`Upstream`]).
type Sent = Result<Result<Response<Incoming>, hyper_util::client::legacy::Error>, JoinError>;

/// `request` awaited on the handler's own task: when nothing else has to run meanwhile,
/// a task of its own would only add a spawn and a wake-up.
pub(super) async fn sent(
    request: impl Future<Output = Result<Response<Incoming>, hyper_util::client::legacy::Error>>,
) -> Sent {
    Ok(request.await)
}

pub(super) async fn relay(
    gw: &Gateway,
    upstream: impl Future<Output = Sent>,
) -> Response<GatewayBody> {
    match fetch(gw, upstream).await {
        Ok(response) => response.map(|body| body.map_err(io::Error::other).boxed()),
        Err(answer) => answer,
    }
}

/// The origin's response, hop-by-hop headers removed; or the answer to send instead
/// (502 or 504) if it failed or did not answer in time.
// The error is the response to send instead: large, but built once per request.
#[allow(clippy::result_large_err)]
pub(super) async fn fetch(
    gw: &Gateway,
    upstream: impl Future<Output = Sent>,
) -> Result<Response<Incoming>, Response<GatewayBody>> {
    let result = tokio::time::timeout(gw.config.origin_timeout, upstream).await;
    let response = match result {
        Ok(Ok(Ok(response))) => response,
        Ok(Ok(Err(e))) => {
            tracing::warn!(error = %e, "origin request failed");
            gw.enforcer.metrics().count_origin_error();
            return Err(plain(
                StatusCode::BAD_GATEWAY,
                "origin unreachable or failed\n",
            ));
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "origin task failed");
            return Err(plain(StatusCode::BAD_GATEWAY, "origin request failed\n"));
        }
        Err(_) => {
            gw.enforcer.metrics().count_origin_error();
            return Err(plain(
                StatusCode::GATEWAY_TIMEOUT,
                "origin did not answer in time\n",
            ));
        }
    };
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(parts, body))
}

pub(super) fn plain(status: StatusCode, text: &'static str) -> Response<GatewayBody> {
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, "text/plain")
        .body(super::body::full(text))
        .expect("valid response")
}

/// The request to send to the origin for the client's request `parts`, with `body`: the
/// same method and target on the origin's scheme and authority, and the client's headers
/// (taken out of `parts`, not copied) minus the hop-by-hop ones, with `Host` naming the
/// target's authority when the client named one (HTTP/2, absolute form).
// The error is the response to send instead: large, but built once per request.
#[allow(clippy::result_large_err)]
pub(super) fn upstream_request(
    gw: &Gateway,
    parts: &mut hyper::http::request::Parts,
    body: GatewayBody,
) -> Result<Request<GatewayBody>, Response<GatewayBody>> {
    let Backend::Origin(origin) = &gw.config.backend else {
        unreachable!("only called with an origin backend")
    };
    let mut target = hyper::http::uri::Parts::default();
    target.scheme = origin.scheme().cloned();
    target.authority = origin.authority().cloned();
    target.path_and_query = Some(
        parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| hyper::http::uri::PathAndQuery::from_static("/")),
    );
    let uri = Uri::from_parts(target)
        .map_err(|_| plain(StatusCode::BAD_REQUEST, "bad request target\n"))?;
    let mut request = Request::builder()
        .method(parts.method.clone())
        .uri(uri)
        .body(body)
        .expect("valid request");
    *request.headers_mut() = std::mem::take(&mut parts.headers);
    strip_hop_by_hop(request.headers_mut());
    // An HTTP/2 client names the host in `:authority`, not `Host`, and an absolute-form
    // target's authority overrides `Host`; the origin gets the host the gateway checked,
    // or hyper would name the origin's own authority, and an origin routing on `Host`
    // (virtual hosts, virtual-hosted S3) would store the object under another host.
    if let Some(authority) = parts.uri.authority() {
        let host = hyper::header::HeaderValue::from_str(authority.as_str())
            .map_err(|_| plain(StatusCode::BAD_REQUEST, "bad request authority\n"))?;
        request.headers_mut().insert(hyper::header::HOST, host);
    }
    Ok(request)
}

/// The client's headers for a request of the gateway's own about the same upload (its
/// credentials, `Tus-Resumable`; nothing about a body).
pub(super) fn credentials(headers: &HeaderMap) -> HeaderMap {
    let mut kept = headers.clone();
    for name in [
        "content-length",
        "content-type",
        "content-encoding",
        "transfer-encoding",
        "upload-offset",
        "upload-length",
        "upload-concat",
        "upload-metadata",
        "upload-checksum",
        "expect",
    ] {
        kept.remove(name);
    }
    kept
}

/// A request of the gateway's own to the origin, `method` on `path` with `headers`.
#[allow(clippy::result_large_err)]
pub(super) fn own_request(
    gw: &Gateway,
    method: Method,
    path: &str,
    headers: HeaderMap,
) -> Result<Request<GatewayBody>, Response<GatewayBody>> {
    let (mut parts, ()) = Request::builder()
        .method(method)
        .uri(path)
        .body(())
        .map_err(|_| plain(StatusCode::BAD_REQUEST, "bad upload URL\n"))?
        .into_parts();
    parts.headers = headers;
    upstream_request(gw, &mut parts, super::body::full(bytes::Bytes::new()))
}

fn strip_hop_by_hop(headers: &mut HeaderMap<HeaderValue>) {
    let named: Vec<HeaderName> = headers
        .get_all(hyper::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| name.trim().parse().ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

pub(super) fn content_length(headers: &HeaderMap<HeaderValue>) -> Option<u64> {
    content_length_named(headers, "content-length")
}

/// A length header's value (`Content-Length`, `OC-Total-Length`), if it is one number.
pub(super) fn content_length_named(headers: &HeaderMap<HeaderValue>, name: &str) -> Option<u64> {
    let mut values = headers.get_all(name).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    value.to_str().ok().and_then(|v| v.parse().ok())
}
