//! The admin listener: `/metrics` (Prometheus text), `/healthz`, `/readyz`. Plain HTTP on
//! its own address, never on the client listener.

use std::convert::Infallible;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::body::{full, GatewayBody};
use super::Gateway;

/// Serves the admin endpoints for `gateway` on `listener` until the task is dropped.
pub async fn serve_admin(listener: TcpListener, gateway: Arc<Gateway>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let gateway = gateway.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let gateway = gateway.clone();
                async move { Ok::<_, Infallible>(answer(&gateway, req.uri().path())) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn answer(gateway: &Gateway, path: &str) -> Response<GatewayBody> {
    let metrics = gateway.enforcer().metrics();
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
        .body(full(body))
        .expect("valid response")
}
