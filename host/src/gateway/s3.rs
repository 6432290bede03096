//! S3 multipart uploads (`s3_spool_dir`). Parts arrive in any order, in parallel, over
//! several connections, so the whole object's digest exists only once the client sends
//! `CompleteMultipartUpload`. The gateway therefore:
//!
//! 1. inspects each `UploadPart` like any upload (a part that is itself a listed file is
//!    refused) and copies it, as it streams, into a spool directory for its upload id,
//!    kept only if the origin stored the part;
//! 2. holds `CompleteMultipartUpload`: it hashes the spooled parts in the order the
//!    completion lists them (decoding aws-chunked framing), and only a clean object's
//!    completion is forwarded. A listed object's completion is answered `451` and never
//!    reaches the origin, so the object never becomes visible;
//! 3. forgets the spool on `AbortMultipartUpload` and after a completion.
//!
//! The window of exposure is none: before completion S3 serves no object, only the parts'
//! holder can list them. A completion whose parts this gateway did not all see (another
//! gateway instance, a restart that lost the spool) is refused with `503`, never
//! forwarded unchecked. With credentials configured (`[s3_abort]`), the gateway then
//! aborts a refused upload (`AbortMultipartUpload`, SigV4-signed with `aws-sigv4`), so
//! its parts are deleted at once; without them the upload stays incomplete until the
//! bucket's lifecycle rule (`AbortIncompleteMultipartUpload`) removes it.

use std::io::Read;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use sha2::Digest as _;

use super::body::{full, GatewayBody, Upload};
use super::copy::Copy;
use super::Gateway;
use crate::enforce::{Context, Outcome};
use crate::inspect::{AwsChunkedDecoder, Envelope, Limits, Report};
use crate::Algorithm;

/// The S3 operations the gateway treats specially.
#[derive(Debug, PartialEq, Eq)]
pub enum Op {
    /// `PUT ?partNumber=N&uploadId=ID`.
    UploadPart {
        /// The upload id.
        upload: String,
        /// The part number (1 to 10000).
        number: u32,
    },
    /// `POST ?uploadId=ID`.
    Complete {
        /// The upload id.
        upload: String,
    },
    /// `DELETE ?uploadId=ID`.
    Abort {
        /// The upload id.
        upload: String,
    },
    /// Anything else.
    Other,
}

impl Op {
    /// Reads the operation off a request's method and query.
    pub fn of(method: &Method, query: Option<&str>) -> Op {
        let mut upload = None;
        let mut number = None;
        for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match &*name {
                "uploadId" => upload = Some(value.into_owned()),
                "partNumber" => number = value.parse().ok(),
                _ => {}
            }
        }
        let Some(upload) = upload else {
            return Op::Other;
        };
        match (method, number) {
            (&Method::PUT, Some(number)) => Op::UploadPart { upload, number },
            (&Method::POST, None) => Op::Complete { upload },
            (&Method::DELETE, None) => Op::Abort { upload },
            _ => Op::Other,
        }
    }
}

/// The spool directory of one upload (named by a hash: upload ids are client-chosen text).
pub fn upload_dir(spool: &Path, upload: &str) -> PathBuf {
    spool.join(hex::encode(sha2::Sha256::digest(upload.as_bytes())))
}

fn part_path(dir: &Path, number: u32, aws_chunked: bool) -> PathBuf {
    let kind = if aws_chunked { "aws" } else { "raw" };
    dir.join(format!("part-{number:05}.{kind}"))
}

/// Starts the spool copy of one part.
/// `aws` says whether the part comes framed as aws-chunked (spooled as it came, decoded
/// when the parts are inspected).
pub async fn part_copy(spool: &Path, upload: &str, number: u32, aws: bool) -> Option<Copy> {
    let dir = upload_dir(spool, upload);
    if let Err(e) = tokio::fs::create_dir_all(&dir).await {
        tracing::error!(dir = %dir.display(), error = %e, "cannot create the part spool");
        return None;
    }
    // A part sent again replaces the earlier one, whatever its framing was.
    let _ = tokio::fs::remove_file(part_path(&dir, number, !aws)).await;
    let temp = dir.join(format!(".part-{number:05}.{}", uuid::Uuid::new_v4()));
    Some(Copy::at(temp, part_path(&dir, number, aws)).await)
}

/// Forgets an upload's spool.
pub async fn forget(spool: &Path, upload: &str) {
    let _ = tokio::fs::remove_dir_all(upload_dir(spool, upload)).await;
}

/// Largest `CompleteMultipartUpload` body accepted (10000 parts fit in well under this).
const MAX_COMPLETION: u64 = 2 << 20;

/// Holds a completion until the assembled object is checked.
pub async fn complete(
    gw: &Gateway,
    req: Request<Incoming>,
    ctx: &Context,
    spool: &Path,
    upload: &str,
) -> Response<GatewayBody> {
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
    let numbers = match part_numbers(&xml) {
        Ok(n) => n,
        Err(why) => return gw.malformed(ctx, &why.0),
    };
    let dir = upload_dir(spool, upload);
    let filter = gw.enforcer.filter();
    let algorithms = filter.info().algorithms.clone();
    let limits = gw.config.inspect.clone();
    let hashed =
        tokio::task::spawn_blocking(move || inspect_parts(&dir, &numbers, &algorithms, &limits))
            .await
            .unwrap_or_else(|e| Err(AssemblyError::Task(e.to_string())));
    let object = match hashed {
        Ok(object) => object,
        Err(why) => {
            tracing::warn!(request_id = %ctx.request_id, upload, %why, "cannot check a multipart upload");
            return gw.refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                ctx,
                "this gateway cannot check the whole object (parts it did not see); not completing it",
            );
        }
    };
    let decision = gw.decide(&filter, ctx, &object).await;
    match decision.outcome {
        Outcome::Block | Outcome::Unavailable => {
            forget(spool, upload).await;
            if let Some(credentials) = &gw.config.s3_abort {
                abort(gw, credentials, parts.uri.path(), upload, ctx).await;
            }
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
                forget(spool, upload).await;
            }
            response
        }
    }
}

/// Credentials the gateway signs `AbortMultipartUpload` with.
#[derive(Clone, Debug)]
pub struct AbortCredentials {
    /// Access key id.
    pub access_key: String,
    /// Secret access key.
    pub secret_key: String,
    /// Region the origin signs for (`us-east-1` for most S3-compatible stores).
    pub region: String,
}

/// Sends `AbortMultipartUpload` for a refused upload, so its parts are deleted now. A
/// failure is logged: the upload is invisible either way.
async fn abort(
    gw: &Gateway,
    credentials: &AbortCredentials,
    path: &str,
    upload: &str,
    ctx: &Context,
) {
    let result = async {
        let super::Backend::Origin(origin) = &gw.config.backend else {
            return Err("no origin".to_string());
        };
        let authority = origin.authority().map(|a| a.as_str()).unwrap_or("");
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("uploadId", upload)
            .finish();
        let uri = format!(
            "{}://{authority}{path}?{query}",
            origin.scheme_str().unwrap_or("http")
        );
        let mut request = Request::delete(&uri)
            .header(hyper::header::HOST, authority)
            .body(full(Bytes::new()))
            .map_err(|e| e.to_string())?;
        sign(&mut request, credentials).map_err(|e| format!("signing: {e}"))?;
        let response = gw
            .client
            .request(request)
            .await
            .map_err(|e| e.to_string())?;
        match response.status() {
            s if s.is_success() => Ok(()),
            s => Err(format!("the origin answered {s}")),
        }
    };
    match tokio::time::timeout(gw.config.origin_timeout, result).await {
        Ok(Ok(())) => {
            tracing::info!(request_id = %ctx.request_id, upload, "aborted the refused multipart upload")
        }
        Ok(Err(e)) => {
            tracing::warn!(request_id = %ctx.request_id, upload, error = %e, "aborting the refused multipart upload failed; it stays incomplete and invisible")
        }
        Err(_) => {
            tracing::warn!(request_id = %ctx.request_id, upload, "aborting the refused multipart upload timed out")
        }
    }
}

fn sign(
    request: &mut Request<GatewayBody>,
    credentials: &AbortCredentials,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    use aws_sigv4::http_request::{
        sign, PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings,
    };
    let identity = aws_credential_types::Credentials::new(
        &credentials.access_key,
        &credentials.secret_key,
        None,
        None,
        "hashgate-config",
    )
    .into();
    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(&credentials.region)
        .name("s3")
        .time(std::time::SystemTime::now())
        .settings(settings)
        .build()?
        .into();
    let uri = request.uri().to_string();
    let headers: Vec<(&str, &str)> = request
        .headers()
        .iter()
        .filter_map(|(n, v)| Some((n.as_str(), v.to_str().ok()?)))
        .collect();
    let signable = SignableRequest::new(
        request.method().as_str(),
        &uri,
        headers.into_iter(),
        SignableBody::Bytes(&[]),
    )?;
    let (instructions, _) = sign(signable, &params)?.into_parts();
    instructions.apply_to_request_http1x(request);
    Ok(())
}

/// The part numbers a `CompleteMultipartUpload` body lists, in order.
fn part_numbers(xml: &[u8]) -> Result<Vec<u32>, BadCompletion> {
    let text = std::str::from_utf8(xml)
        .map_err(|_| BadCompletion("completion body is not UTF-8".into()))?;
    let mut numbers = Vec::new();
    for piece in text.split("<PartNumber>").skip(1) {
        let (number, _) = piece
            .split_once("</PartNumber>")
            .ok_or_else(|| BadCompletion("completion body: unterminated PartNumber".into()))?;
        let number: u32 = number
            .trim()
            .parse()
            .map_err(|_| BadCompletion(format!("completion body: bad PartNumber {number:?}")))?;
        numbers.push(number);
    }
    if numbers.is_empty() {
        return Err(BadCompletion("completion body lists no parts".into()));
    }
    Ok(numbers)
}

/// Occurs when a `CompleteMultipartUpload` body is not one: what is wrong with it, for
/// the client's 400.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct BadCompletion(String);

/// Inspects the spooled parts, in order, as one object (a zip uploaded in parts is
/// opened like any other).
fn inspect_parts(
    dir: &Path,
    numbers: &[u32],
    algorithms: &[Algorithm],
    limits: &Limits,
) -> Result<Report, AssemblyError> {
    let mut files = Vec::with_capacity(numbers.len());
    let mut total = 0;
    for &number in numbers {
        let (path, aws) = [false, true]
            .into_iter()
            .map(|aws| (part_path(dir, number, aws), aws))
            .find(|(p, _)| p.exists())
            .ok_or(AssemblyError::Unseen(number))?;
        let file = std::fs::File::open(&path)?;
        total += file.metadata()?.len();
        files.push((file, aws.then(AwsChunkedDecoder::default)));
    }
    let mut parts = Parts {
        files: files.into(),
        pending: Bytes::new(),
        buf: vec![0u8; 1 << 20],
    };
    crate::inspect::inspect_reader(
        &mut parts,
        &Envelope::default(),
        algorithms,
        limits,
        Some(total),
    )
    .map_err(AssemblyError::Inspect)
}

/// Why the parts of an upload cannot be checked as one object (the completion is then
/// refused with 503, not forwarded).
#[derive(Debug, thiserror::Error)]
enum AssemblyError {
    /// Occurs when the completion names a part this gateway did not spool (it went to
    /// another gateway, or was never sent).
    #[error("part {0} was not seen")]
    Unseen(u32),
    /// Occurs when a spooled part cannot be read.
    #[error("reading a spooled part: {0}")]
    Io(#[from] std::io::Error),
    /// Occurs when the inspection of the assembled parts fails.
    #[error("inspecting the parts: {0}")]
    Inspect(crate::inspect::InspectError),
    /// Occurs when the blocking task that reads the parts panicked or was cancelled.
    #[error("the assembly task failed: {0}")]
    Task(String),
}

/// The spooled parts read one after the other, aws-chunked ones decoded.
struct Parts {
    files: std::collections::VecDeque<(std::fs::File, Option<AwsChunkedDecoder>)>,
    pending: Bytes,
    buf: Vec<u8>,
}

impl Read for Parts {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        while self.pending.is_empty() {
            let Some((file, decoder)) = self.files.front_mut() else {
                return Ok(0);
            };
            let Some(d) = decoder else {
                // Raw parts go straight into the caller's buffer: no copy of our own.
                match file.read(out)? {
                    0 => {
                        self.files.pop_front();
                        continue;
                    }
                    n => return Ok(n),
                }
            };
            let n = file.read(&mut self.buf)?;
            if n == 0 {
                d.finish().map_err(std::io::Error::other)?;
                self.files.pop_front();
                continue;
            }
            let data = Bytes::copy_from_slice(&self.buf[..n]);
            let mut joined = BytesMut::new();
            for piece in d.push(&data).map_err(std::io::Error::other)? {
                joined.extend_from_slice(&piece);
            }
            self.pending = joined.freeze();
        }
        let n = out.len().min(self.pending.len());
        out[..n].copy_from_slice(&self.pending.split_to(n));
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_are_told_apart_by_method_and_query() {
        let op = |m: Method, q: &str| Op::of(&m, Some(q));
        assert_eq!(
            op(Method::PUT, "partNumber=3&uploadId=a%2Fb"),
            Op::UploadPart {
                upload: "a/b".into(),
                number: 3
            }
        );
        assert_eq!(
            op(Method::POST, "uploadId=x"),
            Op::Complete { upload: "x".into() }
        );
        assert_eq!(
            op(Method::DELETE, "uploadId=x"),
            Op::Abort { upload: "x".into() }
        );
        assert_eq!(op(Method::POST, "uploads"), Op::Other);
        assert_eq!(op(Method::PUT, "x-id=PutObject"), Op::Other);
        assert_eq!(op(Method::GET, "uploadId=x"), Op::Other);
    }

    #[test]
    fn completion_bodies_give_their_part_numbers_in_order() {
        let xml = b"<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Part><ETag>\"a\"</ETag><PartNumber>2</PartNumber></Part><Part><PartNumber> 1 </PartNumber><ETag>\"b\"</ETag></Part></CompleteMultipartUpload>";
        assert_eq!(part_numbers(xml).unwrap(), [2, 1]);
        assert!(part_numbers(b"<CompleteMultipartUpload/>").is_err());
        assert!(part_numbers(b"<Part><PartNumber>x</PartNumber></Part>").is_err());
        assert!(part_numbers(b"<Part><PartNumber>1</Part>").is_err());
    }
}
