//! Pieces whose bytes never pass the gateway: `UploadPartCopy` and `CopyObject`. The
//! gateway reads the source itself (with the `[s3]` credentials), inspects it, and only
//! then lets the origin copy it; afterwards it checks that the origin copied what it
//! read (the ETag the origin answers with against the MD5 or ETag of what was read), so
//! a source swapped between the two reads is caught too.

use std::io;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use sha2::Digest as _;

use super::super::body::{full, GatewayBody, Upload};
use super::super::shapes::{Objects, Shape};
use super::super::upload::{fetch, sent, upstream_request};
use super::super::Gateway;
use super::ops::CopySource;
use super::origin::{self, OriginError, S3Credentials, Target};
use super::spool::{PartCopy, Spool};
use crate::enforce::{Context, Outcome};
use crate::inspect::{Hashes, Report};

/// Largest copy result body read (`CopyPartResult`, `CopyObjectResult`, or an error).
const MAX_RESULT: u64 = 64 << 10;

/// What the gateway read of a copy's source.
struct Read {
    report: Report,
    md5: String,
    etag: Option<String>,
}

/// Occurs when a copy's source cannot be read and inspected; the copy is then not
/// forwarded.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    /// Occurs when the origin answers the read with a client error a copy would get too
    /// (no such key, a failed precondition, a bad range): relayed.
    #[error("the origin answered {0}")]
    Relayed(StatusCode, Bytes),
    /// Occurs when the origin answers anything else, or the wrong range.
    #[error("the origin answered {0}")]
    Unreadable(String),
    /// Occurs when the request fails.
    #[error(transparent)]
    Origin(#[from] OriginError),
    /// Occurs when the source's body breaks off, stalls or is too large.
    #[error("reading the source broke off")]
    Cut,
    /// Occurs when the source cannot be inspected.
    #[error("inspecting the source: {0}")]
    Inspect(String),
}

/// The `x-amz-copy-source-*` conditions, as the read's own conditional headers.
fn conditions(headers: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    [
        ("x-amz-copy-source-if-match", hyper::header::IF_MATCH),
        (
            "x-amz-copy-source-if-none-match",
            hyper::header::IF_NONE_MATCH,
        ),
        (
            "x-amz-copy-source-if-modified-since",
            hyper::header::IF_MODIFIED_SINCE,
        ),
        (
            "x-amz-copy-source-if-unmodified-since",
            hyper::header::IF_UNMODIFIED_SINCE,
        ),
    ]
    .into_iter()
    .filter_map(|(from, to)| Some((to, headers.get(from)?.clone())))
    .collect()
}

/// `x-amz-copy-source-range`: `bytes=FIRST-LAST` or `bytes=FIRST-` (to the end), as
/// stores take it; `None` for anything else.
fn copy_range(value: &HeaderValue) -> Option<(u64, Option<u64>)> {
    let spec = value.to_str().ok()?.strip_prefix("bytes=")?;
    let (first, last) = spec.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(first) || !(last.is_empty() || digits(last)) {
        return None;
    }
    let first: u64 = first.parse().ok()?;
    let last = if last.is_empty() {
        None
    } else {
        Some(last.parse().ok()?)
    };
    (last.is_none_or(|l| l >= first)).then_some((first, last))
}

/// Reads `target` (the `range` of it, if given) and inspects it, writing it into
/// `spool` as it streams.
async fn read(
    gw: &Gateway,
    credentials: &S3Credentials,
    target: &Target,
    range: Option<(u64, Option<u64>)>,
    mut headers: Vec<(HeaderName, HeaderValue)>,
    mut spool: Option<&mut PartCopy>,
) -> Result<Read, ReadError> {
    if let Some((first, last)) = range {
        let spec = format!(
            "bytes={first}-{}",
            last.map(|l| l.to_string()).unwrap_or_default()
        );
        headers.push((
            hyper::header::RANGE,
            HeaderValue::from_str(&spec).expect("ascii"),
        ));
    }
    // The object as stored: no coding applied on the way.
    headers.push((
        hyper::header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    ));
    let response = origin::send(gw, credentials, Method::GET, target, &headers).await?;
    let status = response.status();
    let expected = if range.is_some() {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    if status != expected {
        let relayed = match status {
            StatusCode::NOT_MODIFIED => Some(StatusCode::PRECONDITION_FAILED),
            StatusCode::NOT_FOUND
            | StatusCode::PRECONDITION_FAILED
            | StatusCode::RANGE_NOT_SATISFIABLE => Some(status),
            _ => None,
        };
        let body = read_small(gw, response.into_body())
            .await
            .unwrap_or_default();
        return Err(match relayed {
            Some(s) => ReadError::Relayed(s, body),
            None => ReadError::Unreadable(status.to_string()),
        });
    }
    let (head, body) = response.into_parts();
    if let Some((first, last)) = range {
        // The origin must have sent exactly the range the copy will take.
        let sent = head
            .headers
            .get(hyper::header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("bytes "))
            .and_then(|v| v.split_once('/'))
            .and_then(|(r, _)| r.split_once('-'))
            .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)));
        match sent {
            Some((a, b)) if a == first && last.is_none_or(|l| l == b) => {}
            _ => {
                return Err(ReadError::Unreadable(
                    "a range other than the one asked for".into(),
                ))
            }
        }
    }
    let shape = if range.is_some() {
        Shape::default()
    } else {
        Shape::of(&head.headers).map_err(|e| ReadError::Inspect(e.to_string()))?
    };
    let etag = head
        .headers
        .get(hyper::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let length = super::super::upload::content_length(&head.headers);
    let filter = gw.enforcer.filter();
    let algorithms = gw.algorithms(&filter);
    let hashes = Hashes::with(&algorithms, &filter);
    let mut objects = Objects::new(shape, hashes, gw.config.inspect.clone(), length);
    let mut md5 = md5::Md5::new();
    let mut reader = Upload::new(body, gw.config.body_timeout, gw.config.max_body);
    loop {
        match reader.next().await {
            Ok(Some(data)) => {
                md5.update(&data);
                objects
                    .update(&data)
                    .await
                    .map_err(|e| ReadError::Inspect(e.to_string()))?;
                if let Some(spool) = spool.as_deref_mut() {
                    spool.write(&data).await;
                }
            }
            Ok(None) => break,
            Err(_) => return Err(ReadError::Cut),
        }
    }
    let report = objects
        .finish()
        .await
        .map_err(|e| ReadError::Inspect(e.to_string()))?;
    Ok(Read {
        report,
        md5: hex::encode(md5.finalize()),
        etag,
    })
}

/// A small body read whole (a copy's result, an error), bounded in size and time.
async fn read_small(gw: &Gateway, body: Incoming) -> Option<Bytes> {
    let mut reader = Upload::new(body, gw.config.body_timeout, MAX_RESULT);
    let mut out = BytesMut::new();
    loop {
        match reader.next().await {
            Ok(Some(data)) => out.extend_from_slice(&data),
            Ok(None) => return Some(out.freeze()),
            Err(_) => return None,
        }
    }
}

/// The text of the first `<ETag>` in a copy result.
fn result_etag(xml: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(xml).ok()?;
    let (_, rest) = text.split_once("<ETag>")?;
    let (etag, _) = rest.split_once("</ETag>")?;
    Some(etag.replace("&quot;", "\"").replace("&#34;", "\""))
}

fn bare(etag: &str) -> &str {
    etag.trim().trim_matches('"')
}

/// The answer to a copy whose source could not be read and inspected.
fn unread(gw: &Gateway, ctx: &Context, why: &ReadError) -> Response<GatewayBody> {
    tracing::warn!(request_id = %ctx.request_id, error = %why, "cannot read a copy's source; not copying");
    match why {
        ReadError::Relayed(status, body) => Response::builder()
            .status(*status)
            .header(hyper::header::CONTENT_TYPE, "application/xml")
            .body(full(body.clone()))
            .expect("valid response"),
        _ => gw.refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            ctx,
            "the gateway cannot read the copy's source to check it; not copying",
        ),
    }
}

// The error is the response to send instead: large, but built once per request.
#[allow(clippy::result_large_err)]
fn credentials<'a>(
    gw: &'a Gateway,
    ctx: &Context,
) -> Result<&'a S3Credentials, Response<GatewayBody>> {
    gw.config.s3.as_ref().ok_or_else(|| {
        gw.refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            ctx,
            "copies need the gateway's own [s3] credentials to read the source; not copying",
        )
    })
}

/// Forwards the client's copy request and reads the origin's (small) result.
#[allow(clippy::result_large_err)]
async fn forward(
    gw: &Gateway,
    parts: &mut hyper::http::request::Parts,
    body: Incoming,
) -> Result<(hyper::http::response::Parts, Bytes), Response<GatewayBody>> {
    let request: Request<GatewayBody> =
        upstream_request(gw, parts, body.map_err(io::Error::other).boxed())?;
    let response = fetch(gw, sent(gw.client.request(request))).await?;
    let (head, body) = response.into_parts();
    match read_small(gw, body).await {
        Some(body) => Ok((head, body)),
        None => Err(super::super::upload::plain(
            StatusCode::BAD_GATEWAY,
            "the origin's copy result broke off or is too large\n",
        )),
    }
}

/// `UploadPartCopy`: the part is read from its source, inspected as an object of its
/// own, spooled as part `number`, and copied by the origin only if it passes; it is kept
/// under the origin's ETag only if that ETag is the MD5 of what was read.
#[allow(clippy::too_many_arguments)]
pub async fn part(
    gw: &Gateway,
    spool: &std::sync::Arc<Spool>,
    req: Request<Incoming>,
    ctx: &Context,
    upload: &str,
    number: u32,
    source: &CopySource,
) -> Response<GatewayBody> {
    let credentials = match credentials(gw, ctx) {
        Ok(c) => c,
        Err(answer) => return answer,
    };
    let (mut parts, body) = req.into_parts();
    let range = match parts.headers.get("x-amz-copy-source-range") {
        None => None,
        Some(v) => match copy_range(v) {
            Some(r) => Some(r),
            None => return gw.malformed(ctx, "x-amz-copy-source-range is not bytes=FIRST-LAST"),
        },
    };
    let turn = match spool.begin_part(upload, number).await {
        Ok(turn) => turn,
        Err(busy) => return super::busy(gw, ctx, &busy),
    };
    spool.hash_with(&gw.algorithms(&gw.enforcer.filter()));
    let mut copy = turn.copy(false).await;
    let target = Target::source(gw, source);
    let read = match read(
        gw,
        credentials,
        &target,
        range,
        conditions(&parts.headers),
        Some(&mut copy),
    )
    .await
    {
        Ok(read) => read,
        Err(why) => {
            copy.discard().await;
            return unread(gw, ctx, &why);
        }
    };
    let filter = gw.enforcer.filter();
    let decision = gw.decide(&filter, ctx, &read.report).await;
    if matches!(decision.outcome, Outcome::Block | Outcome::Unavailable) {
        copy.discard().await;
        tracing::info!(request_id = %ctx.request_id, source = %target.path_and_query, "refused a listed part copy");
        origin::abort(gw, &parts, upload, &ctx.request_id).await;
        return gw.refused_report(&decision, ctx);
    }
    let (head, result) = match forward(gw, &mut parts, body).await {
        Ok(r) => r,
        Err(answer) => {
            copy.discard().await;
            return answer;
        }
    };
    if head.status.is_success() {
        match result_etag(&result) {
            Some(etag) if bare(&etag).eq_ignore_ascii_case(&read.md5) => copy.keep(&etag).await,
            etag => {
                copy.discard().await;
                tracing::warn!(request_id = %ctx.request_id, ?etag, md5 = %read.md5, "the origin copied other bytes than the gateway read");
                return gw.refusal(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ctx,
                    "the origin's copy is not the bytes the gateway checked (the source changed, or the store's ETags are not MD5s); the part will not complete",
                );
            }
        }
    } else {
        copy.discard().await;
    }
    Response::from_parts(head, full(result))
}

/// `CopyObject`: the source is read and inspected, and the copy forwarded only if it
/// passes. If the origin's result then names another ETag than the source had (the
/// source changed in between), the new object is read back and inspected, and deleted
/// if it does not pass.
pub async fn object(
    gw: &Gateway,
    req: Request<Incoming>,
    ctx: &Context,
    source: &CopySource,
) -> Response<GatewayBody> {
    let credentials = match credentials(gw, ctx) {
        Ok(c) => c,
        Err(answer) => return answer,
    };
    let (mut parts, body) = req.into_parts();
    let target = Target::source(gw, source);
    let read = match read(
        gw,
        credentials,
        &target,
        None,
        conditions(&parts.headers),
        None,
    )
    .await
    {
        Ok(read) => read,
        Err(why) => return unread(gw, ctx, &why),
    };
    let filter = gw.enforcer.filter();
    let decision = gw.decide(&filter, ctx, &read.report).await;
    if matches!(decision.outcome, Outcome::Block | Outcome::Unavailable) {
        tracing::info!(request_id = %ctx.request_id, source = %target.path_and_query, "refused a listed object copy");
        return gw.refused_report(&decision, ctx);
    }
    let destination = Target::of_request(gw, &parts, "");
    let (head, result) = match forward(gw, &mut parts, body).await {
        Ok(r) => r,
        Err(answer) => return answer,
    };
    if !head.status.is_success() {
        return Response::from_parts(head, full(result));
    }
    let copied = result_etag(&result);
    let same = copied.as_deref().is_some_and(|c| {
        read.etag.as_deref().is_some_and(|e| bare(e) == bare(c))
            || bare(c).eq_ignore_ascii_case(&read.md5)
    });
    if same {
        gw.record_stored(ctx, &read.report, None, &filter);
        return Response::from_parts(head, full(result));
    }
    // The origin copied something else than was read: check what it made.
    tracing::warn!(request_id = %ctx.request_id, ?copied, "the copy's ETag is not the source's; reading the new object back");
    let again = read_back(gw, credentials, &destination, ctx).await;
    match again {
        Some(outcome) if !matches!(outcome.outcome, Outcome::Block | Outcome::Unavailable) => {
            Response::from_parts(head, full(result))
        }
        decision => {
            let deleted = origin::send(gw, credentials, Method::DELETE, &destination, &[]).await;
            let deleted = deleted.is_ok_and(|r| r.status().is_success());
            if !deleted {
                tracing::error!(request_id = %ctx.request_id, object = %destination.path_and_query, "a copy that did not pass could not be deleted");
                gw.enforcer.metrics().count_origin_error();
            }
            match decision {
                Some(decision) => gw.refused_report(&decision, ctx),
                None => gw.refusal(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ctx,
                    "the copy could not be checked and was removed",
                ),
            }
        }
    }
}

/// Reads an object back and decides on it; `None` if it cannot be read.
async fn read_back(
    gw: &Gateway,
    credentials: &S3Credentials,
    target: &Target,
    ctx: &Context,
) -> Option<crate::enforce::ReportDecision> {
    let read = read(gw, credentials, target, None, Vec::new(), None)
        .await
        .ok()?;
    let filter = gw.enforcer.filter();
    Some(gw.decide(&filter, ctx, &read.report).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_ranges_are_read_as_stores_read_them() {
        let r = |s: &'static str| copy_range(&HeaderValue::from_static(s));
        assert_eq!(r("bytes=0-9"), Some((0, Some(9))));
        assert_eq!(r("bytes=5-"), Some((5, None)));
        for bad in [
            "bytes=-5",
            "bytes=9-0",
            "bytes=0-9,20-30",
            "bytes= 0-9",
            "items=0-9",
            "bytes=+1-2",
        ] {
            assert_eq!(r(bad), None, "{bad}");
        }
        assert_eq!(
            result_etag(b"<CopyPartResult><ETag>&quot;abc&quot;</ETag></CopyPartResult>")
                .as_deref(),
            Some("\"abc\"")
        );
    }
}
