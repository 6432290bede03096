//! The download path (`scan_responses`, for CDN cache fills and download gateways): a
//! `200` response to a `GET` is hashed as it streams to the client.
//!
//! * Up to `response_buffer_bytes` (declared `Content-Length`), the body is read whole
//!   first: a listed one is answered `451` and the client receives none of it.
//! * Larger (or of unknown length), it streams with **its last frame held back**; a
//!   listed body is cut off before it (the client sees a broken transfer, never the whole
//!   object).
//!
//! To hash the object itself, the gateway asks the origin for all of it, unencoded: it
//! drops `Range`, `If-Range` and `Accept-Encoding` from the request (the client then gets
//! a `200` with the whole, identity-encoded object, which HTTP allows). A response the
//! origin encodes anyway is hashed as it comes.
//!
//! Digests (not verdicts) are cached per (URL, strong ETag, length) for a bounded time, so a
//! hot object is not hashed again on every request while every request is still decided
//! by the current filter and policy, and audited.

use std::io;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper::header::{ACCEPT_ENCODING, CONTENT_LENGTH, ETAG, IF_RANGE, RANGE};
use hyper::{Request, Response, StatusCode};

use super::body::{ChannelBody, GatewayBody, Upload};
use super::shapes::{Objects, Shape};
use super::upload::{fetch, upstream_request};
use super::Gateway;
use crate::enforce::FilterSet;
use crate::enforce::{Context, Enforcer, Outcome, ReportDecision};
use crate::inspect::cache::{strong_etag, ObjectKey};
use crate::inspect::{Hashes, Problem, Report};

/// A `GET` to the origin whose response is inspected.
pub async fn scan(gw: &Gateway, req: Request<Incoming>, ctx: &Context) -> Response<GatewayBody> {
    let (mut parts, incoming) = req.into_parts();
    for name in [RANGE, IF_RANGE, ACCEPT_ENCODING] {
        parts.headers.remove(name);
    }
    let url = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let body = incoming.map_err(io::Error::other).boxed();
    let upstream_req = match upstream_request(gw, &mut parts, body) {
        Ok(r) => r,
        Err(answer) => return answer,
    };
    let response = match fetch(gw, super::upload::sent(gw.client.request(upstream_req))).await {
        Ok(r) => r,
        Err(answer) => return answer,
    };
    if response.status() != StatusCode::OK {
        return response.map(|b| b.map_err(io::Error::other).boxed());
    }
    let (head, body) = response.into_parts();
    let length = super::upload::content_length(&head.headers);
    let key =
        strong_etag(head.headers.get(ETAG).and_then(|e| e.to_str().ok())).map(|etag| ObjectKey {
            url,
            etag: etag.to_string(),
            length,
        });

    let filter = gw.enforcer.filter();
    if let Some(report) = key.as_ref().and_then(|k| gw.responses.get(k)) {
        gw.enforcer.metrics().count_response_cache_hit();
        let decision = decide(&gw.enforcer, &filter, ctx, &report).await;
        return match decision.outcome {
            Outcome::Pass | Outcome::Monitor => {
                Response::from_parts(head, body.map_err(io::Error::other).boxed())
            }
            _ => gw.refused_report(&decision, ctx),
        };
    }

    // What the response's own headers say (a `Content-Encoding` the origin applied
    // anyway, a multipart body); a coding that cannot be undone is a malformed problem.
    let (shape, refused) = match Shape::of(&head.headers) {
        Ok(shape) => (shape, None),
        Err(e) => (Shape::default(), Some(e.to_string())),
    };
    let mut hasher = Objects::new(
        shape,
        Hashes::of(&filter),
        gw.config.inspect.clone(),
        length,
    );
    let mut source = Upload::new(body, gw.config.body_timeout, u64::MAX);
    if length.is_some_and(|n| n <= gw.config.response_buffer_bytes) {
        let mut frames = Vec::new();
        loop {
            match source.next().await {
                Ok(Some(data)) => {
                    let _ = hasher.update(&data).await;
                    frames.push(data);
                }
                Ok(None) => break,
                Err(cut) => {
                    tracing::warn!(request_id = %ctx.request_id, ?cut, "origin response broke off");
                    gw.enforcer.metrics().count_origin_error();
                    return super::upload::plain(
                        StatusCode::BAD_GATEWAY,
                        "origin response incomplete\n",
                    );
                }
            }
        }
        let report = finish(hasher, refused).await;
        let decision = decide(&gw.enforcer, &filter, ctx, &report).await;
        if let Some(key) = key {
            gw.responses.insert(key, report);
        }
        return match decision.outcome {
            Outcome::Pass | Outcome::Monitor => {
                let frames = futures_util::stream::iter(
                    frames
                        .into_iter()
                        .map(|b| Ok::<_, io::Error>(Frame::data(b))),
                );
                Response::from_parts(head, http_body_util::StreamBody::new(frames).boxed())
            }
            _ => gw.refused_report(&decision, ctx),
        };
    }

    // Stream, one frame behind, and decide at the end.
    let (tx, client_body) = ChannelBody::new(2, length);
    let enforcer = gw.enforcer.clone();
    let cache = gw.responses.clone();
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let mut held: Option<Bytes> = None;
        let mut client_open = true;
        loop {
            match source.next().await {
                Ok(Some(data)) => {
                    let _ = hasher.update(&data).await;
                    if let Some(previous) = held.replace(data) {
                        client_open = client_open && tx.send(Ok(previous)).await.is_ok();
                    }
                }
                Ok(None) => break,
                Err(cut) => {
                    tracing::warn!(request_id = %ctx.request_id, ?cut, "origin response broke off");
                    let _ = tx
                        .send(Err(io::Error::other("origin response incomplete")))
                        .await;
                    return;
                }
            }
        }
        let report = finish(hasher, refused).await;
        let outcome = decide(&enforcer, &filter, &ctx, &report).await.outcome;
        if let Some(key) = key {
            cache.insert(key, report);
        }
        match outcome {
            Outcome::Pass | Outcome::Monitor => {
                if let (Some(last), true) = (held, client_open) {
                    let _ = tx.send(Ok(last)).await;
                }
            }
            outcome => {
                tracing::warn!(request_id = %ctx.request_id, ?outcome, "cutting off a listed response before its last bytes");
                let _ = tx
                    .send(Err(io::Error::other("response refused by hashgate")))
                    .await;
            }
        }
    });
    let mut head = head;
    if length.is_none() {
        head.headers.remove(CONTENT_LENGTH);
    }
    Response::from_parts(head, client_body.boxed())
}

/// The response's report; an inspection that could not finish, or a coding that could
/// not be undone, is a malformed problem in it (decided by the `uninspectable` policy).
async fn finish(objects: Objects, refused: Option<String>) -> Report {
    let mut report = match objects.finish().await {
        Ok(report) => report,
        Err(e) => Report {
            problems: vec![Problem::malformed(e.to_string())],
            ..Report::default()
        },
    };
    report.problems.extend(refused.map(Problem::malformed));
    report
}

async fn decide(
    enforcer: &Enforcer,
    filter: &FilterSet,
    ctx: &Context,
    report: &Report,
) -> ReportDecision {
    enforcer.decide_report_confirmed(filter, ctx, report).await
}
