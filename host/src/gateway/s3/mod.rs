//! S3 mode (`s3_spool_dir`): the pieces an S3 object is made of are checked as the
//! object they make, before the request that makes it visible is forwarded.
//!
//! Every request is first classified exactly as S3 routes it ([`ops`]); what stores may
//! read differently is refused (400). Then:
//!
//! 1. each `UploadPart` is inspected like any upload (a part that is itself a listed file
//!    is refused) and copied, as it streams, into the [`spool`], kept under the ETag the
//!    origin answered with; each `UploadPartCopy` is read from its source by the gateway
//!    (with its own `[s3]` credentials), inspected and spooled the same way, and copied
//!    by the origin only if it passes ([`copies`]);
//! 2. `CompleteMultipartUpload` is held: its body is read strictly ([`completion`]),
//!    the spooled parts it names are read back in its order (aws-chunked framing decoded)
//!    and inspected as one object, and only a clean object's completion is forwarded. A
//!    listed object's completion is answered `451` and never reaches the origin, so the
//!    object never becomes visible; the gateway then aborts the upload (with `[s3]`
//!    credentials) so its parts are deleted at once;
//! 3. `CopyObject` is forwarded only once the source has been read and passed;
//! 4. `AbortMultipartUpload` and a completion forget the spool;
//! 5. `DeleteObjects` is passed on, and the catalog forgets what the store deleted
//!    ([`deletes`]).
//!
//! A completion naming a part the gateway cannot vouch for (not seen: another gateway
//! took it, a restart lost it, its upload failed; another ETag than the one the gateway
//! checked) is refused with `503`, never forwarded unchecked.

mod completion;
mod copies;
mod deletes;
mod ops;
mod origin;
mod spool;

use bytes::BytesMut;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

pub use ops::Op;
pub use origin::{send, S3Credentials, Target};
pub use spool::{PartCopy, Spool};

use super::body::{full, GatewayBody, Upload};
use super::Gateway;
use crate::enforce::{Context, Outcome};

/// The character an XML reference stands for: a character reference or one of XML's
/// five predefined entities (S3 documents declare no others).
fn xml_reference(r: &quick_xml::events::BytesRef<'_>) -> Result<char, String> {
    if let Some(c) = r.resolve_char_ref().map_err(|e| e.to_string())? {
        return Ok(c);
    }
    match &*r
        .decode()
        .map_err(|_| "a reference is not UTF-8".to_string())?
    {
        "quot" => Ok('"'),
        "amp" => Ok('&'),
        "apos" => Ok('\''),
        "lt" => Ok('<'),
        "gt" => Ok('>'),
        other => Err(format!("unknown entity &{other};")),
    }
}

/// Largest `CompleteMultipartUpload` body accepted (10000 parts fit in well under this).
const MAX_COMPLETION: u64 = 2 << 20;

/// Answers one request of an operation [`Op::of`] singled out (not [`Op::Other`]).
pub async fn handle(
    gw: &Gateway,
    spool: &std::sync::Arc<Spool>,
    op: Op,
    req: Request<Incoming>,
    ctx: &Context,
) -> Response<GatewayBody> {
    match op {
        Op::UploadPart { upload, number } => {
            let aws =
                super::shapes::Shape::of(req.headers()).is_ok_and(|s| s.aws_chunked.is_some());
            let turn = match spool.begin_part(&upload, number).await {
                Ok(turn) => turn,
                Err(why) => return busy(gw, ctx, &why),
            };
            spool.hash_with(&gw.algorithms(&gw.enforcer.filter()));
            let copy = turn.copy(aws).await;
            super::upload::inspect(gw, req, ctx, Some(super::upload::BodySpool::S3(copy))).await
        }
        Op::UploadPartCopy {
            upload,
            number,
            source,
        } => copies::part(gw, spool, req, ctx, &upload, number, &source).await,
        Op::CopyObject { source } => copies::object(gw, req, ctx, &source).await,
        Op::Complete { upload } => complete(gw, spool, req, ctx, &upload).await,
        Op::Abort { upload } => {
            spool.forget(&upload).await;
            super::upload::pass_through(gw, req).await
        }
        Op::DeleteObjects => deletes::delete_objects(gw, req, ctx).await,
        // Nothing is stored (the object comes in parts): not an upload to record.
        Op::CreateUpload => super::upload::pass_through(gw, req).await,
        Op::Other => super::upload::inspect(gw, req, ctx, None).await,
    }
}

/// The answer to a request that arrived while another of its upload holds the turn.
fn busy(gw: &Gateway, ctx: &Context, why: &spool::Busy) -> Response<GatewayBody> {
    let mut answer = gw.refusal(StatusCode::SERVICE_UNAVAILABLE, ctx, &why.to_string());
    answer.headers_mut().insert(
        hyper::header::RETRY_AFTER,
        hyper::header::HeaderValue::from_static("1"),
    );
    answer
}

/// Holds a completion until the assembled object is checked.
async fn complete(
    gw: &Gateway,
    spool: &std::sync::Arc<Spool>,
    req: Request<Incoming>,
    ctx: &Context,
    upload: &str,
) -> Response<GatewayBody> {
    let _turn = match spool.begin_completion(upload) {
        Ok(turn) => turn,
        Err(why) => return busy(gw, ctx, &why),
    };
    let (mut parts, body) = req.into_parts();
    let mut reader = Upload::new(body, gw.config.body_timeout, MAX_COMPLETION);
    let mut xml = BytesMut::new();
    loop {
        match reader.next().await {
            Ok(Some(data)) => xml.extend_from_slice(&data),
            Ok(None) => break,
            Err(cut) => return gw.cut(&cut, ctx),
        }
    }
    let xml = xml.freeze();
    let listed = match completion::parts(&xml) {
        Ok(listed) => listed,
        Err(why) => return gw.malformed(ctx, &why.to_string()),
    };
    let filter = gw.enforcer.filter();
    let algorithms = gw.algorithms(&filter).into_owned();
    let limits = gw.config.inspect.clone();
    // Parts 1, 2, … were hashed while later ones arrived: only the rest is hashed now.
    let numbered: Vec<(u32, Option<String>)> =
        listed.iter().map(|l| (l.number, l.etag.clone())).collect();
    let ahead = spool.report_ahead(upload, &numbered, &algorithms).await;
    let hashed = match ahead {
        Some(report) => {
            tracing::debug!(request_id = %ctx.request_id, upload, "the parts were hashed ahead");
            Ok(report)
        }
        None => {
            let (task_spool, task_upload) = (spool.clone(), upload.to_string());
            let pictures = filter.holds_pdq();
            tokio::task::spawn_blocking(move || {
                let hashes = crate::inspect::Hashes {
                    algorithms: &algorithms,
                    pictures,
                };
                completion::inspect(&task_spool, &task_upload, &listed, hashes, &limits)
            })
            .await
            .unwrap_or_else(|e| Err(completion::AssemblyError::Task(e.to_string())))
        }
    };
    let object = match hashed {
        Ok(object) => object,
        Err(why) => {
            tracing::warn!(request_id = %ctx.request_id, upload, %why, "cannot check a multipart upload");
            return gw.refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                ctx,
                &format!("this gateway cannot check the whole object ({why}); not completing it"),
            );
        }
    };
    let decision = gw.decide(&filter, ctx, &object).await;
    match decision.outcome {
        Outcome::Block | Outcome::Unavailable => {
            spool.forget(upload).await;
            origin::abort(gw, &parts, upload, &ctx.request_id).await;
            gw.refused_report(&decision, ctx)
        }
        Outcome::Pass | Outcome::Monitor => {
            let response = match super::upload::upstream_request(gw, &mut parts, full(xml)) {
                Ok(request) => {
                    super::upload::relay(gw, super::upload::sent(gw.client.request(request))).await
                }
                Err(answer) => answer,
            };
            if response.status().is_success() {
                spool.forget(upload).await;
                gw.record_stored(ctx, &object, Some(response.headers()), &filter);
            }
            response
        }
    }
}
