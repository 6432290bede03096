//! The admin listener shared by every front-end: `/metrics` (Prometheus text),
//! `/healthz`, `/readyz`. Plain HTTP on its own address, never on a client listener.

use std::convert::Infallible;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use bytes::Bytes;
use http_body_util::Full;

use crate::enforce::Enforcer;

/// Serves the admin endpoints for `enforcer` on `listener` until the task is dropped.
pub async fn serve_admin(listener: TcpListener, enforcer: Arc<Enforcer>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let enforcer = enforcer.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let enforcer = enforcer.clone();
                async move { Ok::<_, Infallible>(answer(&enforcer, req.uri().path())) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn answer(enforcer: &Enforcer, path: &str) -> Response<Full<Bytes>> {
    let metrics = enforcer.metrics();
    let (status, kind, body) = match path {
        "/metrics" => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.render(),
        ),
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        "/readyz" if metrics.filter_is_stale() => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "stale: the enforced filter has expired (still enforcing it)\n".to_string(),
        ),
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
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, kind)
        .body(Full::new(Bytes::from(body)))
        .expect("valid response")
}
