//! The admin listener shared by every front-end. Plain HTTP on its own address, never on
//! a client listener; keep it off the public network.
//!
//! | endpoint | what it answers |
//! | --- | --- |
//! | `GET /metrics` | Prometheus text |
//! | `GET /healthz` | `ok` while the process serves |
//! | `GET /readyz` | 200 `ready` (or `ready; catalog degraded`), 503 `stale: …` naming the feeds whose filter has expired |
//! | `GET /readyz/FEED` | the same for one feed (a `[[feed]]` table's name; `default` for the one unnamed feed), 404 for a feed not followed |
//! | `GET /storms` | JSON: the listed entries in a hit storm and the hottest ones ([`crate::enforce::storm`]) |
//! | `GET /allow-list` | JSON: the entries added here |
//! | `PUT /allow-list/ENTRY` | adds `ENTRY` (`sha256:HEX`, `md5:HEX`, `pdq:HEX`, ...) to the allow-list, in force for the next object |
//! | `DELETE /allow-list/ENTRY` | removes it |
//!
//! The two writes need `Authorization: Bearer TOKEN`, the token in `admin_token_file`:
//! without one configured they are refused (403), a wrong or missing token is 401. A
//! write is logged, and kept in `allow_list_local` if that is set.

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use bytes::Bytes;
use http_body_util::Full;

use crate::enforce::{AllowEntry, Enforcer};
use crate::Error;

/// Reads the admin bearer token from `path` (surrounding white space dropped).
///
/// Fails when the file cannot be read or holds no token.
pub fn read_token(path: &Path) -> Result<String, Error> {
    let token = std::fs::read_to_string(path)
        .map_err(|e| Error::io(path, e))?
        .trim()
        .to_string();
    if token.is_empty() {
        return Err(Error::Config(format!(
            "{}: no admin token in it",
            path.display()
        )));
    }
    Ok(token)
}

/// Serves the admin endpoints for `enforcer` on `listener` until the task is dropped;
/// writes need `token` (none: writes are off).
pub async fn serve_admin(listener: TcpListener, enforcer: Arc<Enforcer>, token: Option<String>) {
    let token: Arc<Option<String>> = Arc::new(token);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let enforcer = enforcer.clone();
        let token = token.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let enforcer = enforcer.clone();
                let token = token.clone();
                async move { Ok::<_, Infallible>(route(&enforcer, token.as_deref(), &req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn route<B>(enforcer: &Enforcer, token: Option<&str>, req: &Request<B>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let json = |status: StatusCode, value: serde_json::Value| {
        respond(status, "application/json", format!("{value}\n"))
    };
    match (req.method(), path) {
        (&Method::GET, "/storms") => {
            let storms = enforcer.storms();
            let now = std::time::Instant::now();
            let hottest = storms.hottest(20, now);
            let storming: Vec<_> = storms
                .hottest(usize::MAX, now)
                .into_iter()
                .filter(|h| h.storming)
                .collect();
            json(
                StatusCode::OK,
                serde_json::json!({
                    "config": {
                        "clients": storms.config().clients,
                        "window_secs": storms.config().window_secs,
                        "on_storm": storms.config().on_storm,
                        "cooldown_secs": storms.config().cooldown_secs,
                    },
                    "storming": storming,
                    "hottest": hottest,
                }),
            )
        }
        (&Method::GET, "/allow-list") => {
            let entries: Vec<String> = enforcer
                .local_allow_list()
                .iter()
                .map(|e| e.to_string())
                .collect();
            json(StatusCode::OK, serde_json::json!({ "entries": entries }))
        }
        (m, p) if p.starts_with("/allow-list/") && (m == Method::PUT || m == Method::DELETE) => {
            let Some(expected) = token else {
                return json(
                    StatusCode::FORBIDDEN,
                    serde_json::json!({"error": "admin writes are off: set admin_token_file"}),
                );
            };
            if !authorized(req, expected) {
                return json(
                    StatusCode::UNAUTHORIZED,
                    serde_json::json!({"error": "a bearer token is needed"}),
                );
            }
            // The one character of an entry a client may percent-encode: `:`.
            let named = p["/allow-list/".len()..]
                .replace("%3A", ":")
                .replace("%3a", ":");
            let entry: AllowEntry = match named.parse() {
                Ok(e) => e,
                Err(why) => {
                    return json(StatusCode::BAD_REQUEST, serde_json::json!({ "error": why }))
                }
            };
            match enforcer.change_local_allow_list(entry.clone(), m == Method::PUT) {
                Ok((changed, kept)) => json(
                    StatusCode::OK,
                    serde_json::json!({
                        "entry": entry.to_string(),
                        "changed": changed,
                        "kept": kept,
                    }),
                ),
                Err(e) => json(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    serde_json::json!({"error": format!("not kept, not changed: {e}")}),
                ),
            }
        }
        (&Method::GET | &Method::HEAD, _) => answer(enforcer, path),
        _ => respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed\n".into(),
        ),
    }
}

/// Whether `req` carries `Authorization: Bearer <expected>` (compared in constant time).
fn authorized<B>(req: &Request<B>, expected: &str) -> bool {
    let Some(given) = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let (a, b) = (given.trim().as_bytes(), expected.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn respond(status: StatusCode, kind: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, kind)
        .body(Full::new(Bytes::from(body)))
        .expect("valid response")
}

fn answer(enforcer: &Enforcer, path: &str) -> Response<Full<Bytes>> {
    let metrics = enforcer.metrics();
    let (status, kind, body) = match path {
        "/metrics" => {
            enforcer.refresh_gauges();
            (
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                metrics.render(),
            )
        }
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        "/readyz" if metrics.filter_is_stale() => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            format!(
                "stale: the enforced filter has expired (still enforcing it): feed {}\n",
                metrics.stale_feeds().join(", ")
            ),
        ),
        _ if path.starts_with("/readyz/") => {
            let feed = &path["/readyz/".len()..];
            let known = enforcer.filter().members().iter().any(|m| m.label() == feed);
            if !known {
                (StatusCode::NOT_FOUND, "text/plain", format!("no feed {feed:?}\n"))
            } else if metrics.stale_feeds().iter().any(|f| f == feed) {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "stale: this feed's filter has expired (still enforcing it)\n".to_string(),
                )
            } else {
                (StatusCode::OK, "text/plain", "ready\n".to_string())
            }
        }
        // Uploads are still served and checked: ready, but say what is lost.
        "/readyz" if metrics.catalog_is_degraded() => (
            StatusCode::OK,
            "text/plain",
            "ready; catalog degraded: stored objects are not all being recorded (see hashgate_catalog_rows)\n".to_string(),
        ),
        "/readyz" => (StatusCode::OK, "text/plain", "ready\n".to_string()),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_string(),
        ),
    };
    respond(status, kind, body)
}
