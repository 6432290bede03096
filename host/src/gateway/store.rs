//! The embedded object store: `PUT`/`POST` (inspected), `GET`, `HEAD`, `DELETE` of keys
//! under a data directory. An upload is written to a temporary file as it streams in and
//! becomes visible only by a rename after a clean verdict and an fsync: a blocked or
//! aborted upload leaves nothing behind.

use std::io;
use std::path::{Component, Path, PathBuf};

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::body::{full, ChannelBody, GatewayBody, Upload};
use super::shapes::{Objects, Shape};
use super::Gateway;
use crate::enforce::{Context, Outcome};

/// Where uploads are written until they are decided.
const TEMP_DIR: &str = ".hashgate-tmp";

pub async fn handle(
    gw: &Gateway,
    root: &Path,
    req: Request<Incoming>,
    ctx: &Context,
    inspected: bool,
) -> Response<GatewayBody> {
    let Some(path) = object_path(root, req.uri().path()) else {
        return gw.refusal(StatusCode::BAD_REQUEST, ctx, "invalid object key");
    };
    match *req.method() {
        Method::PUT | Method::POST => put(gw, root, &path, req, ctx, inspected).await,
        Method::GET | Method::HEAD => get(&path, req.method() == Method::HEAD).await,
        Method::DELETE => match tokio::fs::remove_file(&path).await {
            Ok(()) => status(StatusCode::NO_CONTENT),
            Err(e) if e.kind() == io::ErrorKind::NotFound => status(StatusCode::NOT_FOUND),
            Err(e) => server_error(&e),
        },
        _ => status(StatusCode::METHOD_NOT_ALLOWED),
    }
}

/// Maps a request path to a file under `root`, refusing anything that could leave it:
/// `..`, `.`, empty keys, NUL bytes, backslashes, and names that start with the temp dir.
pub(super) fn object_path(root: &Path, uri_path: &str) -> Option<PathBuf> {
    let key = uri_path.trim_start_matches('/');
    if key.is_empty() || key.ends_with('/') || key.contains(['\0', '\\']) {
        return None;
    }
    let mut path = root.to_path_buf();
    for segment in key.split('/') {
        if segment.is_empty()
            || segment == "."
            || segment == ".."
            || percent_decoded_is_dot(segment)
            || segment == TEMP_DIR
        {
            return None;
        }
        path.push(segment);
    }
    // Belt and braces: the result must still be a normal path below root.
    let below = path.strip_prefix(root).ok()?;
    below
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
        .then_some(path)
}

/// Whether a segment is `.` or `..` written with percent escapes (`%2e%2E`), which some
/// clients and proxies decode later.
fn percent_decoded_is_dot(segment: &str) -> bool {
    let lowered = segment.to_ascii_lowercase().replace("%2e", ".");
    lowered == "." || lowered == ".."
}

async fn put(
    gw: &Gateway,
    root: &Path,
    path: &Path,
    req: Request<Incoming>,
    ctx: &Context,
    inspected: bool,
) -> Response<GatewayBody> {
    if super::upload::content_length(req.headers()).is_some_and(|n| n > gw.config.max_body) {
        return gw.refusal(StatusCode::PAYLOAD_TOO_LARGE, ctx, "body too large");
    }
    let temp_dir = root.join(TEMP_DIR);
    if let Err(e) = tokio::fs::create_dir_all(&temp_dir).await {
        return server_error(&e);
    }
    let temp = temp_dir.join(&ctx.request_id);
    let shape = match Shape::of(req.headers()) {
        Ok(shape) => shape,
        Err(e) if inspected => return gw.uninspectable_envelope(ctx, &e),
        Err(_) => Shape::default(),
    };
    let mut copy = if inspected {
        gw.quarantine_copy(ctx).await
    } else {
        None
    };
    let filter = gw.enforcer.filter();
    let algorithms = gw.algorithms(&filter);
    let result = receive(
        gw,
        &temp,
        req.into_body(),
        (shape, crate::inspect::Hashes::with(&algorithms, &filter)),
        &mut copy,
        ctx,
    )
    .await;
    let objects = match result.map(Objects::finish) {
        Ok(finishing) => finishing.await.map_err(|why| gw.body_error(ctx, &why)),
        Err(response) => Err(response),
    };
    let objects = match objects {
        Ok(objects) => objects,
        Err(response) => {
            let _ = tokio::fs::remove_file(&temp).await;
            if let Some(copy) = copy {
                copy.discard().await;
            }
            return response;
        }
    };
    if inspected {
        let decision = gw.decide_with_copy(&filter, ctx, &objects, copy).await;
        if let Outcome::Block | Outcome::Unavailable = decision.outcome {
            let _ = tokio::fs::remove_file(&temp).await;
            return gw.refused_report(&decision, ctx);
        }
    }
    let publish = async {
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        tokio::fs::rename(&temp, path).await?;
        if let Some(parent) = path.parent() {
            tokio::fs::File::open(parent).await?.sync_all().await?;
        }
        Ok::<_, io::Error>(())
    };
    match publish.await {
        Ok(()) => {
            gw.record_stored(ctx, &objects, None, &filter);
            status(StatusCode::CREATED)
        }
        Err(e) => {
            let _ = tokio::fs::remove_file(&temp).await;
            server_error(&e)
        }
    }
}

/// Streams the body into `temp` while hashing it; fsyncs at the end.
// The error is the response to send instead: large, but built once per request.
#[allow(clippy::result_large_err)]
async fn receive(
    gw: &Gateway,
    temp: &Path,
    body: Incoming,
    (shape, hashes): (Shape, crate::inspect::Hashes<'_>),
    copy: &mut Option<super::copy::Copy>,
    ctx: &Context,
) -> Result<Objects, Response<GatewayBody>> {
    let mut file = tokio::fs::File::create(temp)
        .await
        .map_err(|e| server_error(&e))?;
    let expected = hyper::body::Body::size_hint(&body).exact();
    let mut objects = Objects::new(shape, hashes, gw.config.inspect.clone(), expected);
    let mut upload = Upload::new(body, gw.config.body_timeout, gw.config.max_body);
    loop {
        let data = match upload.next().await {
            Ok(Some(data)) => data,
            Ok(None) => break,
            Err(cut) => return Err(gw.cut(&cut, ctx)),
        };
        objects
            .update(&data)
            .await
            .map_err(|why| gw.malformed(ctx, &why.to_string()))?;
        file.write_all(&data).await.map_err(|e| server_error(&e))?;
        if let Some(copy) = copy {
            copy.write(&data).await;
        }
    }
    file.sync_all().await.map_err(|e| server_error(&e))?;
    Ok(objects)
}

async fn get(path: &Path, head: bool) -> Response<GatewayBody> {
    let mut file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return status(StatusCode::NOT_FOUND),
        Err(e) => return server_error(&e),
    };
    let len = match file.metadata().await {
        Ok(m) if m.is_file() => m.len(),
        Ok(_) => return status(StatusCode::NOT_FOUND),
        Err(e) => return server_error(&e),
    };
    let builder = Response::builder()
        .status(StatusCode::OK)
        .header(hyper::header::CONTENT_LENGTH, len)
        .header(hyper::header::CONTENT_TYPE, "application/octet-stream");
    if head {
        return builder.body(full(Bytes::new())).expect("valid response");
    }
    let (tx, body) = ChannelBody::new(2, Some(len));
    tokio::spawn(async move {
        const CHUNK: usize = 256 * 1024;
        let mut buf = BytesMut::with_capacity(CHUNK);
        loop {
            // Each chunk is read into its own buffer and handed over without a copy.
            buf.reserve(CHUNK);
            match file.read_buf(&mut buf).await {
                Ok(0) => break,
                Ok(_) => {
                    if tx.send(Ok(buf.split().freeze())).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    break;
                }
            }
        }
    });
    builder.body(body.boxed()).expect("valid response")
}

fn status(code: StatusCode) -> Response<GatewayBody> {
    Response::builder()
        .status(code)
        .body(full(Bytes::new()))
        .expect("valid response")
}

fn server_error(e: &io::Error) -> Response<GatewayBody> {
    tracing::error!(error = %e, "store I/O failed");
    let code = if e.raw_os_error() == Some(28) {
        StatusCode::INSUFFICIENT_STORAGE
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    Response::builder()
        .status(code)
        .body(full(format!("storage error: {e}\n")))
        .expect("valid response")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_escape_the_store() {
        let root = Path::new("/data");
        assert_eq!(
            object_path(root, "/a/b.bin"),
            Some(PathBuf::from("/data/a/b.bin"))
        );
        for bad in [
            "/",
            "/../etc/passwd",
            "/a/../../x",
            "/a/./b",
            "/a//b",
            "/%2e%2E/x",
            "/a\\b",
            "/.hashgate-tmp/x",
            "/dir/",
        ] {
            assert_eq!(object_path(root, bad), None, "{bad}");
        }
    }
}
