//! tus 1.0 resumable uploads (`tus_spool_dir`): an upload sent in pieces is checked as
//! the file it makes, before the request that completes it is forwarded.
//!
//! A request is tus when it carries `Tus-Resumable` (servers refuse any other, except
//! `OPTIONS` and `GET`, with 412). Then:
//!
//! * **`PATCH`** takes the upload's turn (another request for it meanwhile gets
//!   `423 Locked`, as from a tus server), asks the origin where the upload stands
//!   (`HEAD`, with the client's own credentials) and lines the [`pieces`] spool up with
//!   it. A `PATCH` that does not complete the upload is inspected as a body of its own,
//!   forwarded as it streams and spooled. The `PATCH` that completes it (its
//!   `Upload-Offset` plus `Content-Length` is the upload's `Upload-Length`) is read whole
//!   into the spool first, the upload is inspected from its pieces, and only a clean one
//!   is forwarded (from the spool); a listed one is answered 451 and **terminated** at the
//!   origin (`DELETE`), so its pieces do not stay. A completion whose earlier pieces this
//!   gateway did not see is refused with 503. A `PATCH` without `Content-Length` is
//!   refused (411): whether it completes the upload must be known before its last byte
//!   is forwarded.
//! * **`POST`** (creation): a body that is the whole upload is inspected like any
//!   upload; a shorter one (creation-with-upload) is spooled as the upload's first
//!   piece, named by the `Location` the origin answers with. A final upload of the
//!   concatenation extension (`Upload-Concat: final;…`) is held until the partial uploads
//!   it names have been inspected as one file, in its order.
//! * **`DELETE`** (termination) forgets the spool; `HEAD`, `GET`, `OPTIONS` pass.
//! * `X-HTTP-Method-Override` is refused (400): some servers honour it and some do not
//!   (@tus/server 2 does not), so a `POST` could be a `PATCH` to one and not the other.

mod pieces;

use std::io;
use std::sync::Arc;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::HeaderMap;
use hyper::{Method, Request, Response, StatusCode};
use tokio::io::AsyncReadExt;

pub use pieces::{PieceCopy, Uploads};

use super::assembly::{self, Piece};
use super::body::{full, ChannelBody, GatewayBody, Upload};
use super::upload::{
    self, content_length, credentials, fetch, own_request, relay, sent, upstream_request,
};
use super::Gateway;
use crate::enforce::{Context, Outcome};

/// Whether a request is a tus request (see the module documentation).
pub fn is_tus(headers: &HeaderMap) -> bool {
    headers.contains_key("tus-resumable")
}

/// Answers one tus request.
pub async fn handle(
    gw: &Gateway,
    uploads: &Arc<Uploads>,
    req: Request<Incoming>,
    ctx: &Context,
) -> Response<GatewayBody> {
    if req.headers().contains_key("x-http-method-override") {
        return gw.malformed(
            ctx,
            "X-HTTP-Method-Override on a tus request (servers differ on whether they honour it)",
        );
    }
    for name in [
        "upload-offset",
        "upload-length",
        "upload-concat",
        "content-length",
    ] {
        if req.headers().get_all(name).iter().count() > 1 {
            return gw.malformed(ctx, &format!("{name} given twice"));
        }
    }
    match *req.method() {
        Method::PATCH => patch(gw, uploads, req, ctx).await,
        Method::POST => create(gw, uploads, req, ctx).await,
        Method::DELETE => {
            uploads.forget(req.uri().path()).await;
            upload::pass_through(gw, req).await
        }
        _ => upload::pass_through(gw, req).await,
    }
}

/// A `Upload-*` header's number; `Err` if it is there but not a plain number.
fn number(headers: &HeaderMap, name: &str) -> Result<Option<u64>, String> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|t| t.parse().ok())
            .map(Some)
            .ok_or_else(|| format!("{name} is not a number")),
    }
}

/// Where an upload stands at the origin.
struct State {
    offset: u64,
    length: Option<u64>,
    partial: bool,
}

/// Asks the origin where the upload at `path` stands (`HEAD`); the answer to relay if
/// it cannot say.
#[allow(clippy::result_large_err)]
async fn state(
    gw: &Gateway,
    headers: &HeaderMap,
    path: &str,
    ctx: &Context,
) -> Result<State, Response<GatewayBody>> {
    let request = own_request(gw, Method::HEAD, path, credentials(headers))?;
    let response = fetch(gw, sent(gw.client.request(request))).await?;
    if !response.status().is_success() {
        // No such upload, not allowed, gone: what the origin would have said.
        return Err(Response::builder()
            .status(response.status())
            .body(full(bytes::Bytes::new()))
            .expect("valid response"));
    }
    let h = response.headers();
    let offset = number(h, "upload-offset").ok().flatten();
    let Some(offset) = offset else {
        tracing::warn!(request_id = %ctx.request_id, path, "the origin's HEAD gave no Upload-Offset");
        return Err(gw.refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            ctx,
            "the origin did not say where the upload stands",
        ));
    };
    Ok(State {
        offset,
        length: number(h, "upload-length").ok().flatten(),
        partial: h
            .get("upload-concat")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() == "partial"),
    })
}

/// Terminates a refused upload at the origin (`DELETE`), so its pieces do not stay. A
/// failure is logged: the upload is incomplete either way.
async fn terminate(gw: &Gateway, headers: &HeaderMap, path: &str, ctx: &Context) {
    let Ok(request) = own_request(gw, Method::DELETE, path, credentials(headers)) else {
        return;
    };
    match fetch(gw, sent(gw.client.request(request))).await {
        Ok(r) if r.status().is_success() => {
            tracing::info!(request_id = %ctx.request_id, path, "terminated the refused tus upload")
        }
        Ok(r) => {
            tracing::warn!(request_id = %ctx.request_id, path, status = %r.status(), "terminating the refused tus upload failed; it stays incomplete")
        }
        Err(_) => {
            tracing::warn!(request_id = %ctx.request_id, path, "terminating the refused tus upload failed; it stays incomplete")
        }
    }
}

/// What a `PATCH` is, once checked against where its upload stands.
struct Patch {
    turn: pieces::Turn,
    path: String,
    client: HeaderMap,
    stands: State,
    offset: u64,
    size: u64,
    completing: bool,
}

/// Checks a `PATCH` against where its upload stands; the answer if it goes no further.
#[allow(clippy::result_large_err)]
async fn prepare(
    gw: &Gateway,
    uploads: &Arc<Uploads>,
    req: &Request<Incoming>,
    ctx: &Context,
) -> Result<Patch, Response<GatewayBody>> {
    let path = req.uri().path().to_string();
    let headers = req.headers();
    let (offset, declared_length) = match (
        number(headers, "upload-offset"),
        number(headers, "upload-length"),
    ) {
        (Ok(Some(o)), Ok(l)) => (o, l),
        (Ok(None), _) => return Err(gw.malformed(ctx, "a tus PATCH without Upload-Offset")),
        (Err(why), _) | (_, Err(why)) => return Err(gw.malformed(ctx, &why)),
    };
    let Some(size) = content_length(headers) else {
        return Err(gw.refusal(
            StatusCode::LENGTH_REQUIRED,
            ctx,
            "a tus PATCH needs a Content-Length (whether it completes the upload must be known)",
        ));
    };
    let turn = uploads
        .begin(&path)
        .map_err(|why| gw.refusal(StatusCode::LOCKED, ctx, &why.to_string()))?;
    let client = headers.clone();
    let stands = state(gw, &client, &path, ctx).await?;
    if offset != stands.offset {
        return Err(gw.refusal(
            StatusCode::CONFLICT,
            ctx,
            &format!(
                "Upload-Offset is not where the upload stands ({})",
                stands.offset
            ),
        ));
    }
    let covered = turn.reconcile(offset).map_err(|e| {
        tracing::error!(request_id = %ctx.request_id, error = %e, "the tus spool cannot be read");
        gw.refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            ctx,
            "the upload cannot be checked",
        )
    })?;
    let length = stands.length.or(declared_length);
    if length.is_some_and(|l| offset + size > l) {
        return Err(gw.refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            ctx,
            "the PATCH goes past Upload-Length",
        ));
    }
    let completing = length == Some(offset + size);
    if completing && offset > 0 && covered < offset {
        tracing::warn!(request_id = %ctx.request_id, path, covered, offset, "a tus upload's earlier pieces were not seen here");
        return Err(gw.refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            ctx,
            "this gateway did not see the upload's earlier pieces; not completing it",
        ));
    }
    Ok(Patch {
        turn,
        path,
        client,
        stands,
        offset,
        size,
        completing,
    })
}

/// Reads a refused request's body (up to its declared length and `max_body_bytes`) so
/// that the client, still sending, gets the answer rather than a reset connection.
async fn drained(gw: &Gateway, req: Request<Incoming>) {
    let limit = content_length(req.headers())
        .unwrap_or(0)
        .min(gw.config.max_body);
    let mut reader = Upload::new(req.into_body(), gw.config.body_timeout, limit);
    while let Ok(Some(_)) = reader.next().await {}
}

async fn patch(
    gw: &Gateway,
    uploads: &Arc<Uploads>,
    req: Request<Incoming>,
    ctx: &Context,
) -> Response<GatewayBody> {
    let Patch {
        turn,
        path,
        client,
        stands,
        offset,
        size,
        completing,
    } = match prepare(gw, uploads, &req, ctx).await {
        Ok(patch) => patch,
        Err(answer) => {
            drained(gw, req).await;
            return answer;
        }
    };
    if !completing || offset == 0 {
        // Not the end (or the whole upload in one body): inspected as it streams.
        let piece = turn.piece(offset).await;
        let whole = if completing && !stands.partial {
            upload::Whole::Here
        } else {
            upload::Whole::No
        };
        let spool = upload::BodySpool::Tus(piece, whole);
        let response = upload::inspect(gw, req, ctx, Some(spool)).await;
        if response.status() == StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS {
            terminate(gw, &client, &path, ctx).await;
            uploads.forget(&path).await;
        } else if completing && response.status().is_success() && !stands.partial {
            uploads.forget(&path).await;
        }
        return response;
    }
    // The completing piece: read whole, the upload checked from its pieces, then sent on.
    let (mut parts, body) = req.into_parts();
    let mut piece = turn.piece(offset).await;
    let piece_path = piece
        .path()
        .expect("a PATCH's piece is named")
        .to_path_buf();
    let mut reader = Upload::new(body, gw.config.body_timeout, size);
    let mut read = 0u64;
    loop {
        match reader.next().await {
            Ok(Some(data)) => {
                read += data.len() as u64;
                piece.write(&data).await;
            }
            Ok(None) => break,
            Err(cut) => {
                piece.keep(None).await;
                return gw.cut(&cut, ctx);
            }
        }
    }
    piece.keep(None).await;
    if read != size {
        return gw.malformed(ctx, "the body is shorter than its Content-Length");
    }
    let mut pieces = match turn.pieces(offset) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(request_id = %ctx.request_id, error = %e, "the tus spool cannot be read");
            return gw.refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                ctx,
                "the upload cannot be checked",
            );
        }
    };
    pieces.push(Piece {
        path: piece_path.clone(),
        aws_chunked: false,
        length: Some(size),
    });
    let (decision, report, filter) = match decide(gw, ctx, pieces).await {
        Ok(d) => d,
        Err(answer) => return answer,
    };
    if matches!(decision.outcome, Outcome::Block | Outcome::Unavailable) {
        terminate(gw, &client, &path, ctx).await;
        uploads.forget(&path).await;
        return gw.refused_report(&decision, ctx);
    }
    let body = match file_body(&piece_path, size).await {
        Ok(body) => body,
        Err(e) => {
            tracing::error!(request_id = %ctx.request_id, error = %e, "the spooled piece cannot be read");
            return gw.refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                ctx,
                "the upload cannot be sent on",
            );
        }
    };
    let response = match upstream_request(gw, &mut parts, body) {
        Ok(request) => relay(gw, sent(gw.client.request(request))).await,
        Err(answer) => answer,
    };
    if response.status().is_success() && !stands.partial {
        uploads.forget(&path).await;
        // The whole upload, stored at its URL (a tus server deletes it there).
        gw.record_assembled(ctx, &path, &report, &filter);
    }
    response
}

/// What [`decide`] found: the decision, the report it rests on, the filter that made it.
type Decided = (
    crate::enforce::ReportDecision,
    crate::inspect::Report,
    std::sync::Arc<crate::enforce::FilterSet>,
);

/// Inspects an upload from its pieces and decides on it; the answer to send if that
/// fails (503: nothing unchecked passes).
#[allow(clippy::result_large_err)]
async fn decide(
    gw: &Gateway,
    ctx: &Context,
    pieces: Vec<Piece>,
) -> Result<Decided, Response<GatewayBody>> {
    let filter = gw.enforcer.filter();
    let algorithms = gw.algorithms(&filter).into_owned();
    let limits = gw.config.inspect.clone();
    let report = assembly::inspect_blocking(pieces, algorithms, &filter, limits).await;
    match report {
        Ok(report) => Ok((gw.decide(&filter, ctx, &report).await, report, filter)),
        Err(why) => {
            tracing::error!(request_id = %ctx.request_id, why, "a tus upload cannot be inspected");
            Err(gw.refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                ctx,
                "the upload could not be inspected",
            ))
        }
    }
}

/// A body streamed from a spooled file of `size` bytes.
async fn file_body(path: &std::path::Path, size: u64) -> io::Result<GatewayBody> {
    let mut file = tokio::fs::File::open(path).await?;
    let (tx, body) = ChannelBody::new(2, Some(size));
    tokio::spawn(async move {
        let mut left = size;
        while left > 0 {
            let mut buf = vec![0u8; (256 << 10).min(left as usize)];
            match file.read(&mut buf).await {
                Ok(0) => {
                    let _ = tx
                        .send(Err(io::Error::other("spooled piece ended early")))
                        .await;
                    return;
                }
                Ok(n) => {
                    buf.truncate(n);
                    left -= n as u64;
                    if tx.send(Ok(buf.into())).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        }
    });
    Ok(body.boxed())
}

async fn create(
    gw: &Gateway,
    uploads: &Arc<Uploads>,
    req: Request<Incoming>,
    ctx: &Context,
) -> Response<GatewayBody> {
    let headers = req.headers();
    if let Some(concat) = headers.get("upload-concat") {
        let concat = concat.to_str().unwrap_or("").trim().to_string();
        if let Some(list) = concat.strip_prefix("final;") {
            return concatenation(gw, uploads, req, ctx, list).await;
        }
        if concat != "partial" {
            return gw.malformed(ctx, "Upload-Concat is neither partial nor final;…");
        }
    }
    let length = match number(headers, "upload-length") {
        Ok(l) => l,
        Err(why) => return gw.malformed(ctx, &why),
    };
    let declared = content_length(headers);
    let chunked = headers.contains_key(hyper::header::TRANSFER_ENCODING);
    if declared.unwrap_or(0) == 0 && !chunked {
        return upload::pass_through(gw, req).await;
    }
    // The whole upload in its creation, recorded at its new URL. Not a partial upload:
    // that is spooled below like any first piece, since the concatenation made of it
    // reads it back (and it is recorded as part of that).
    if length.is_some() && length == declared && !headers.contains_key("upload-concat") {
        return upload::inspect(gw, req, ctx, Some(upload::BodySpool::TusCreation)).await;
    }
    let piece = uploads.unnamed().await;
    upload::inspect(
        gw,
        req,
        ctx,
        Some(upload::BodySpool::Tus(piece, upload::Whole::No)),
    )
    .await
}

/// A final upload (`Upload-Concat: final;/files/a /files/b`): the partial uploads it
/// names, in order, inspected as one file before it is forwarded.
async fn concatenation(
    gw: &Gateway,
    uploads: &Arc<Uploads>,
    req: Request<Incoming>,
    ctx: &Context,
    list: &str,
) -> Response<GatewayBody> {
    let paths: Vec<String> = list
        .split_whitespace()
        .map(|u| match u.parse::<hyper::Uri>() {
            Ok(uri) => uri.path().to_string(),
            Err(_) => u.to_string(),
        })
        .collect();
    if paths.is_empty() {
        return gw.malformed(ctx, "Upload-Concat: final names no uploads");
    }
    let client = credentials(req.headers());
    let mut turns = Vec::new();
    let mut pieces = Vec::new();
    for path in &paths {
        let turn = match uploads.begin(path) {
            Ok(turn) => turn,
            Err(why) => return gw.refusal(StatusCode::LOCKED, ctx, &why.to_string()),
        };
        let stands = match state(gw, &client, path, ctx).await {
            Ok(s) => s,
            Err(answer) => return answer,
        };
        if stands.length != Some(stands.offset) {
            return gw.refusal(
                StatusCode::BAD_REQUEST,
                ctx,
                "a partial upload is not complete",
            );
        }
        match turn.reconcile(stands.offset) {
            Ok(covered) if covered == stands.offset => {}
            _ => {
                return gw.refusal(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ctx,
                    "this gateway did not see all of a partial upload; not concatenating it",
                )
            }
        }
        match turn.pieces(stands.offset) {
            Ok(p) => pieces.extend(p),
            Err(_) => {
                return gw.refusal(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ctx,
                    "the upload cannot be checked",
                )
            }
        }
        turns.push(turn);
    }
    let (decision, report, filter) = match decide(gw, ctx, pieces).await {
        Ok(d) => d,
        Err(answer) => return answer,
    };
    if matches!(decision.outcome, Outcome::Block | Outcome::Unavailable) {
        for path in &paths {
            terminate(gw, &client, path, ctx).await;
            uploads.forget(path).await;
        }
        return gw.refused_report(&decision, ctx);
    }
    let response = upload::pass_through(gw, req).await;
    // The concatenation is a new upload, at the URL the server answers with.
    let stored = response
        .headers()
        .get(hyper::header::LOCATION)
        .and_then(|l| l.to_str().ok())
        .map(|l| {
            l.parse::<hyper::Uri>()
                .map_or(l.to_string(), |u| u.path().to_string())
        });
    if let (true, Some(key)) = (response.status().is_success(), stored) {
        gw.record_assembled(ctx, &key, &report, &filter);
    }
    response
}
