//! Nextcloud (and ownCloud Infinite Scale) chunked upload v2 (`nextcloud_spool_dir`):
//! chunks `PUT` into an upload folder are checked as the file they make before the
//! `MOVE` that assembles them is forwarded.
//!
//! The protocol, as Nextcloud's developer manual publishes it: `MKCOL
//! …/remote.php/dav/uploads/<user>/<id>`, then `PUT …/<id>/<n>` for chunks numbered 1
//! to 10000 (assembled in the order of their names), then `MOVE …/<id>/.file` with the
//! `Destination` and `OC-Total-Length` headers; `DELETE …/<id>` cancels. The gateway:
//!
//! * inspects each chunk as an upload of its own and spools it (the S3 part
//!   [`Spool`], one turn per chunk), kept if the origin stored it;
//! * holds the `MOVE`: the spooled chunks, in number order, must add up to
//!   `OC-Total-Length` (a chunk the gateway did not see fails that: 503), and are
//!   inspected as one file; a listed one is answered 451, never forwarded, and its
//!   upload folder deleted at the origin;
//! * refuses (400) what would let the server assemble bytes the gateway did not see or
//!   order differently: chunk names of different widths in one upload (`1` and `01`
//!   are two chunks to the server), other names in an upload folder, a `COPY` or
//!   `MOVE` whose `Destination` is inside an upload folder (a stored file copied in as
//!   a chunk), chunked upload v1 (`OC-Chunked`, assembled by the server from names),
//!   and upload-folder paths that are not in their plain form (`//`, `.`, `%2F`): the
//!   server may read those differently.
//!
//! Nextcloud itself cannot run here; tests/nextcloud.rs drives the documented request
//! shapes against a WebDAV origin that assembles chunks as the manual says.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header::HeaderMap;
use hyper::{Method, Request, Response, StatusCode};

use super::assembly::{self, Piece};
use super::s3::Spool;
use super::upload::{self, credentials, fetch, own_request, sent, BodySpool};
use super::Gateway;
use crate::enforce::{Context, Outcome};

/// Where upload folders live.
const MARKER: &str = "/remote.php/dav/uploads/";

/// What a request does to an upload folder.
#[derive(Debug, PartialEq, Eq)]
pub enum Op {
    /// `PUT` of chunk `number` (named with `width` digits) into `upload`.
    Chunk {
        /// The upload folder's path.
        upload: String,
        /// The chunk's number.
        number: u32,
        /// How many digits its name has.
        width: usize,
    },
    /// `MOVE` of `upload`'s `.file`: the assembly.
    Assemble {
        /// The upload folder's path.
        upload: String,
    },
    /// `DELETE` of the upload folder.
    Cancel {
        /// The upload folder's path.
        upload: String,
    },
    /// Anything else (`MKCOL`, `PROPFIND`, requests outside upload folders).
    Other,
}

/// Occurs when a request could make the server assemble something the gateway cannot
/// check; refused with 400.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Occurs when an upload folder's path is not in its plain form.
    #[error("the upload folder path is not in its plain form")]
    Path,
    /// Occurs when a `COPY` or `MOVE` targets an upload folder.
    #[error("a COPY or MOVE into an upload folder (stored bytes as a chunk) cannot be checked")]
    IntoFolder,
    /// Occurs when a chunk's name is not a number from 1 to 10000.
    #[error("chunks are named with a number from 1 to 10000")]
    Name,
    /// Occurs on chunked upload v1.
    #[error("chunked upload v1 (OC-Chunked) cannot be checked; use v2")]
    Version1,
}

/// `path` percent-decoded, with empty and `.` segments dropped and `..` applied.
fn plain(path: &str) -> String {
    let decoded = crate::inspect::percent_decode(path);
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::new();
    for s in segments {
        out.push('/');
        out.push_str(s);
    }
    if decoded.ends_with('/') && !out.is_empty() {
        out.push('/');
    }
    out
}

impl Op {
    /// Reads what a request does to an upload folder.
    pub fn of(method: &Method, path: &str, headers: &HeaderMap) -> Result<Op, Refused> {
        if headers.contains_key("oc-chunked") {
            return Err(Refused::Version1);
        }
        if let Some(destination) = headers.get("destination") {
            let destination = destination.to_str().unwrap_or("");
            let destination = match destination.parse::<hyper::Uri>() {
                Ok(uri) if uri.scheme().is_some() => uri.path().to_string(),
                _ => destination.to_string(),
            };
            if plain(&destination).contains(MARKER) {
                return Err(Refused::IntoFolder);
            }
        }
        let normal = plain(path);
        let Some(at) = normal.find(MARKER) else {
            return Ok(Op::Other);
        };
        if normal != path && normal.trim_end_matches('/') != path.trim_end_matches('/') {
            return Err(Refused::Path);
        }
        let rest: Vec<&str> = normal[at + MARKER.len()..]
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        let upload = |n: usize| normal[..at + MARKER.len()].to_string() + &rest[..n].join("/");
        match (method.as_str(), rest.as_slice()) {
            ("DELETE", [_, _]) => Ok(Op::Cancel { upload: upload(2) }),
            ("MOVE", [_, _, ".file"]) => Ok(Op::Assemble { upload: upload(2) }),
            ("PUT", [_, _, name]) => {
                let number = name
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=10_000).contains(n) && name.len() <= 5)
                    .filter(|_| name.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or(Refused::Name)?;
                Ok(Op::Chunk {
                    upload: upload(2),
                    number,
                    width: name.len(),
                })
            }
            ("PUT", _) => Err(Refused::Name),
            _ => Ok(Op::Other),
        }
    }
}

/// Answers a request [`Op::of`] singled out.
pub async fn handle(
    gw: &Gateway,
    spool: &Arc<Spool>,
    op: Op,
    req: Request<Incoming>,
    ctx: &Context,
) -> Response<GatewayBody> {
    match op {
        Op::Chunk {
            upload,
            number,
            width,
        } => {
            match spool.same_width(&upload, width).await {
                Ok(true) => {}
                Ok(false) => {
                    return gw.malformed(ctx, "chunk names of one upload must have one width")
                }
                Err(e) => {
                    tracing::error!(request_id = %ctx.request_id, error = %e, "the chunk spool cannot be written");
                    return gw.refusal(
                        StatusCode::SERVICE_UNAVAILABLE,
                        ctx,
                        "the chunk cannot be spooled",
                    );
                }
            }
            let turn = match spool.begin_part(&upload, number).await {
                Ok(turn) => turn,
                Err(why) => {
                    return gw.refusal(StatusCode::SERVICE_UNAVAILABLE, ctx, &why.to_string())
                }
            };
            spool.hash_with(&gw.algorithms(&gw.enforcer.filter()));
            let copy = turn.copy(false).await;
            upload::inspect(gw, req, ctx, Some(BodySpool::Chunk(copy))).await
        }
        Op::Assemble { upload } => assemble(gw, spool, req, ctx, &upload).await,
        Op::Cancel { upload } => {
            spool.forget(&upload).await;
            upload::pass_through(gw, req).await
        }
        Op::Other => upload::pass_through(gw, req).await,
    }
}

use super::body::GatewayBody;

async fn assemble(
    gw: &Gateway,
    spool: &Arc<Spool>,
    req: Request<Incoming>,
    ctx: &Context,
    upload: &str,
) -> Response<GatewayBody> {
    let Some(total) = upload::content_length_named(req.headers(), "oc-total-length") else {
        return gw.malformed(ctx, "the assembling MOVE needs OC-Total-Length");
    };
    let _turn = match spool.begin_completion(upload) {
        Ok(turn) => turn,
        Err(why) => return gw.refusal(StatusCode::SERVICE_UNAVAILABLE, ctx, &why.to_string()),
    };
    let unvouched = |why: &str| {
        tracing::warn!(request_id = %ctx.request_id, upload, why, "cannot check a chunked upload");
        gw.refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            ctx,
            "this gateway did not see the upload's chunks; not assembling it",
        )
    };
    let numbers = match spool.numbers(upload) {
        Ok(n) if !n.is_empty() => n,
        _ => return unvouched("no chunks spooled"),
    };
    let mut pieces = Vec::with_capacity(numbers.len());
    let mut size = 0;
    for &number in &numbers {
        match spool.vouch(upload, number, None) {
            Ok(spooled) => {
                size += std::fs::metadata(&spooled.path).map_or(0, |m| m.len());
                pieces.push(Piece {
                    path: spooled.path,
                    aws_chunked: false,
                    length: None,
                });
            }
            Err(e) => return unvouched(&e.to_string()),
        }
    }
    if size != total {
        return unvouched("the chunks seen do not add up to OC-Total-Length");
    }
    let filter = gw.enforcer.filter();
    let algorithms = gw.algorithms(&filter).into_owned();
    let limits = gw.config.inspect.clone();
    // Chunks 1, 2, … were hashed while later ones arrived (as for S3 parts).
    let numbered: Vec<(u32, Option<String>)> = numbers.iter().map(|n| (*n, None)).collect();
    let ahead = spool.report_ahead(upload, &numbered, &algorithms).await;
    let report = match ahead {
        Some(report) => Ok(report),
        None => assembly::inspect_blocking(pieces, algorithms, &filter, limits).await,
    };
    let report = match report {
        Ok(r) => r,
        Err(why) => return unvouched(&why),
    };
    let decision = gw.decide(&filter, ctx, &report).await;
    if matches!(decision.outcome, Outcome::Block | Outcome::Unavailable) {
        if let Ok(request) = own_request(gw, Method::DELETE, upload, credentials(req.headers())) {
            match fetch(gw, sent(gw.client.request(request))).await {
                Ok(r) if r.status().is_success() => {
                    tracing::info!(request_id = %ctx.request_id, upload, "deleted the refused upload's chunks")
                }
                _ => {
                    tracing::warn!(request_id = %ctx.request_id, upload, "deleting the refused upload's chunks failed; the server expires them")
                }
            }
        }
        spool.forget(upload).await;
        return gw.refused_report(&decision, ctx);
    }
    // The assembled file is stored at the MOVE's destination.
    let destination = req
        .headers()
        .get("destination")
        .and_then(|d| d.to_str().ok())
        .map(|d| {
            d.parse::<hyper::Uri>()
                .map_or(d.to_string(), |u| u.path().to_string())
        });
    let response = upload::pass_through(gw, req).await;
    if response.status().is_success() {
        spool.forget(upload).await;
        if let Some(destination) = destination {
            gw.record_assembled(ctx, &destination, &report, &filter);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(m: &str, path: &str) -> Result<Op, Refused> {
        Op::of(&m.parse().unwrap(), path, &HeaderMap::new())
    }

    #[test]
    fn upload_folder_requests_are_read_as_the_protocol_says() {
        let folder = "/remote.php/dav/uploads/alice/u1";
        assert_eq!(
            op("PUT", &format!("{folder}/00002")),
            Ok(Op::Chunk {
                upload: folder.into(),
                number: 2,
                width: 5
            })
        );
        assert_eq!(
            op("MOVE", &format!("{folder}/.file")),
            Ok(Op::Assemble {
                upload: folder.into()
            })
        );
        assert_eq!(
            op("DELETE", &format!("{folder}/")),
            Ok(Op::Cancel {
                upload: folder.into()
            })
        );
        assert_eq!(op("MKCOL", folder), Ok(Op::Other));
        assert_eq!(
            op("PUT", "/remote.php/dav/files/alice/a.bin"),
            Ok(Op::Other)
        );
        for bad in [
            format!("{folder}/0"),
            format!("{folder}/10001"),
            format!("{folder}/000001"),
            format!("{folder}/x1"),
            format!("{folder}/a/1"),
            "/remote.php/dav//uploads/alice/u1/1".to_string(),
            "/remote.php/dav/uploads/alice/./u1/1".to_string(),
            "/remote.php/dav/uploads/alice/u1%2F1".to_string(),
        ] {
            assert!(op("PUT", &bad).is_err(), "{bad}");
        }
        let mut h = HeaderMap::new();
        h.insert(
            "destination",
            "http://cloud/remote.php/dav/uploads/alice/u1/1"
                .parse()
                .unwrap(),
        );
        assert_eq!(
            Op::of(
                &"COPY".parse().unwrap(),
                "/remote.php/dav/files/alice/a",
                &h
            ),
            Err(Refused::IntoFolder)
        );
        let mut h = HeaderMap::new();
        h.insert("oc-chunked", "1".parse().unwrap());
        assert_eq!(
            Op::of(&Method::PUT, "/remote.php/dav/files/a-chunking-1-2-0", &h),
            Err(Refused::Version1)
        );
    }
}
