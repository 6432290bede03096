//! `hashgate gateway`: a streaming reverse proxy (or a small object store) that hashes
//! uploads as they pass and decides before the object is stored complete.
//!
//! The data path for an inspected upload (PUT, POST, PATCH by default):
//!
//! 1. the request headers go to the origin at once, and each body frame is forwarded
//!    and hashed as it arrives, **except the final bytes**, which are held back (the
//!    completing frame's last 16 KiB with a `Content-Length`, the newest frame without);
//! 2. at the end of the body, the [`Enforcer`] decides;
//! 3. pass → the held bytes are sent, and the origin's response is relayed;
//!    block → the upstream body is aborted (the origin sees an incomplete request and
//!    discards it) and the client gets `451 Unavailable For Legal Reasons`.
//!
//! Memory per upload is bounded by a few frames. Everything else is proxied untouched.

mod assembly;
mod body;
mod config;
mod copy;
mod framing;
mod nextcloud;
mod response;
mod retro;
mod s3;
mod shapes;
mod store;
mod tus;
mod upload;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

pub use body::GatewayBody;
pub use config::{Backend, Config};
pub use s3::S3Credentials;

use crate::enforce::FilterSet;
use crate::enforce::{Context, Enforcer, Outcome, ReportDecision};
use crate::listener::{Core, Listener};
use crate::Error;

type OriginConnector = hyper_rustls::HttpsConnector<HttpConnector>;

/// Everything a request handler needs. One per serving thread: the settings, verdict
/// core and caches are shared, the origin connection pool is the thread's own (so a
/// pooled connection is always driven by the thread that uses it).
pub struct Gateway {
    config: Arc<Config>,
    enforcer: Arc<Enforcer>,
    connector: OriginConnector,
    client: Client<OriginConnector, GatewayBody>,
    responses: Arc<crate::inspect::cache::DigestCache>,
    /// S3 mode: the part spool, shared by every serving thread.
    spool: Option<Arc<s3::Spool>>,
    /// tus mode: the piece spool, shared by every serving thread.
    tus: Option<Arc<tus::Uploads>>,
    /// Nextcloud mode: the chunk spool, shared by every serving thread.
    nextcloud: Option<Arc<s3::Spool>>,
    /// The digest catalog's writer, if a catalog is kept.
    catalog: Option<Arc<crate::catalog::Recorder>>,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Gateway {
    /// A gateway enforcing with `enforcer` as `config` says.
    ///
    /// Fails if the origin is https and no trust roots can be had (or the `origin_ca`
    /// file is unreadable).
    pub fn new(config: Config, enforcer: Arc<Enforcer>) -> Result<Arc<Gateway>, Error> {
        let origin = match &config.backend {
            Backend::Origin(uri) => uri.clone(),
            Backend::Store(_) => hyper::Uri::from_static("http://store.invalid"),
        };
        let connector =
            crate::tls::connector(&origin, config.origin_ca.as_deref(), config.origin_timeout)?;
        let responses = Arc::new(crate::inspect::cache::DigestCache::new(
            config.response_cache_entries,
            config.response_cache_ttl,
        ));
        let tls = config.tls.as_ref().map(|store| {
            tokio_rustls::TlsAcceptor::from(store.server_config(&[b"h2", b"http/1.1"]))
        });
        let spool = config
            .s3_spool
            .as_deref()
            .map(|dir| Arc::new(s3::Spool::open(dir)));
        let tus = config
            .tus_spool
            .as_deref()
            .map(|dir| Arc::new(tus::Uploads::open(dir)));
        let nextcloud = config
            .nextcloud_spool
            .as_deref()
            .map(|dir| Arc::new(s3::Spool::open(dir)));
        let catalog = config
            .catalog
            .as_ref()
            .map(crate::enforce::retro::recorder)
            .transpose()?;
        Ok(Arc::new(Gateway {
            catalog,
            client: pool(&connector),
            connector,
            config: Arc::new(config),
            enforcer,
            responses,
            spool,
            tus,
            nextcloud,
            tls,
        }))
    }

    /// The same gateway with an origin connection pool of its own, for another thread.
    fn for_core(&self) -> Gateway {
        Gateway {
            config: self.config.clone(),
            enforcer: self.enforcer.clone(),
            client: pool(&self.connector),
            connector: self.connector.clone(),
            responses: self.responses.clone(),
            spool: self.spool.clone(),
            tus: self.tus.clone(),
            nextcloud: self.nextcloud.clone(),
            catalog: self.catalog.clone(),
            tls: self.tls.clone(),
        }
    }

    /// The verdict core.
    pub fn enforcer(&self) -> &Arc<Enforcer> {
        &self.enforcer
    }

    /// Serves clients on `listener`, one thread per core (see [`crate::listener`]), until
    /// `shutdown` resolves; then lets in-flight requests finish for up to the configured
    /// grace period.
    pub async fn serve(
        self: Arc<Self>,
        listener: Listener,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), Error> {
        let max = self.config.max_connections;
        tokio::spawn(retro::follow(self.clone()));
        tokio::spawn(self.clone().expire_spools());
        crate::listener::on_cores(listener, max, shutdown, move |core| {
            Arc::new(self.for_core()).serve_core(core)
        })
        .await
    }

    /// Removes abandoned uploads from the spools, once at start and then a few times per
    /// `spool_expiry` (at most hourly), off the serving threads: without it a client
    /// that starts uploads and never ends them fills the spool's disk.
    async fn expire_spools(self: Arc<Self>) {
        let idle = self.config.spool_expiry;
        let every = (idle / 4).clamp(Duration::from_secs(1), Duration::from_secs(3600));
        let mut ticks = tokio::time::interval(every);
        loop {
            ticks.tick().await;
            let gw = self.clone();
            let swept = tokio::task::spawn_blocking(move || {
                [
                    ("s3", gw.spool.as_ref().map(|s| s.expire(idle))),
                    ("tus", gw.tus.as_ref().map(|s| s.expire(idle))),
                    ("nextcloud", gw.nextcloud.as_ref().map(|s| s.expire(idle))),
                ]
            })
            .await;
            for (spool, expired) in swept.into_iter().flatten() {
                let Some(expired) = expired.filter(|n| *n > 0) else {
                    continue;
                };
                tracing::info!(
                    spool,
                    expired,
                    idle_secs = idle.as_secs(),
                    "removed abandoned uploads from the spool"
                );
                self.enforcer
                    .metrics()
                    .count_spool_expired(spool, expired as u64);
            }
        }
    }

    /// One serving thread's accept loop and its graceful end.
    async fn serve_core(self: Arc<Self>, core: Core) {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        core.accept_until_stopped(|stream, peer| {
            let gateway = self.clone();
            let watcher = graceful.watcher();
            async move {
                let Some(acceptor) = gateway.tls.clone() else {
                    let (stream, framing) = framing::Watched::new(stream);
                    return gateway
                        .serve_connection(TokioIo::new(stream), framing, peer, watcher)
                        .await;
                };
                // The handshake is bounded like the request head that follows it.
                let timeout = gateway.config.header_timeout;
                match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let (tls, framing) = framing::Watched::new(tls);
                        gateway
                            .serve_connection(TokioIo::new(tls), framing, peer, watcher)
                            .await
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            }
        })
        .await;
        tracing::info!("shutting down: waiting for in-flight requests");
        tokio::select! {
            () = graceful.shutdown() => {}
            () = tokio::time::sleep(self.config.shutdown_grace) => {
                tracing::warn!("grace period over; dropping remaining connections");
            }
        }
    }

    /// Serves HTTP/1.1 and HTTP/2 on one accepted (and, with TLS, decrypted) connection.
    /// `framing` says which of its requests declared two lengths (see [`framing`]).
    async fn serve_connection<I>(
        self: Arc<Self>,
        io: I,
        framing: Arc<framing::Framing>,
        peer: SocketAddr,
        watcher: hyper_util::server::graceful::Watcher,
    ) where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let gateway = self.clone();
        // HTTP/1 hands requests to the service one at a time, in order: the count is
        // the request's index on the connection.
        let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let service = service_fn(move |req| {
            let gateway = gateway.clone();
            let index = requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let ambiguous = req.version() < hyper::Version::HTTP_2 && framing.ambiguous(index);
            async move { Ok::<_, Infallible>(gateway.handle(req, peer, ambiguous).await) }
        });
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.config.header_timeout);
        let connection = builder.serve_connection(io, service).into_owned();
        if let Err(e) = watcher.watch(connection).await {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    }

    /// Answers one request. `ambiguous`: it declared both `Content-Length` and
    /// `Transfer-Encoding`, and is refused unread.
    async fn handle(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        ambiguous: bool,
    ) -> Response<GatewayBody> {
        let _in_flight = self.enforcer.metrics().in_flight();
        let ctx = Context {
            request_id: uuid::Uuid::new_v4().to_string(),
            client: peer.ip().to_string(),
            method: req.method().to_string(),
            host: request_host(req.uri(), req.headers())
                .unwrap_or("")
                .to_string(),
            path: req.uri().path().to_string(),
            ..Context::default()
        };
        // An object deleted (not an S3 upload aborted, `DELETE ?uploadId=`): its
        // catalog row goes too.
        let deletes = req.method() == Method::DELETE && req.uri().query().is_none();
        let inspected = self
            .config
            .inspect_methods
            .iter()
            .any(|m| m.eq_ignore_ascii_case(req.method().as_str()));
        let s3_op = match &self.spool {
            Some(_) => s3::Op::of(req.method(), req.uri().query(), req.headers()),
            None => Ok(s3::Op::Other),
        };
        let chunking = match &self.nextcloud {
            Some(_) => nextcloud::Op::of(req.method(), req.uri().path(), req.headers()),
            None => Ok(nextcloud::Op::Other),
        };
        // A WebDAV `MOVE` or `COPY` the origin carries out: the rows follow the object
        // (a Nextcloud chunked upload's `MOVE` is recorded as the assembly it is).
        let relocates = retro::relocation(&req).filter(|_| {
            chunking
                .as_ref()
                .is_ok_and(|op| *op == nextcloud::Op::Other)
        });
        let response = match &self.config.backend {
            // Refusals close the connection: nothing after this head is read as a request.
            _ if ambiguous => self.refusal(
                StatusCode::BAD_REQUEST,
                &ctx,
                "both Content-Length and Transfer-Encoding",
            ),
            _ if let Some(Err(why)) = relocates => self.refusal(StatusCode::BAD_REQUEST, &ctx, why),
            // A host with a path in it: nginx refuses it, others may route on a part of
            // it, and the catalog keys objects by host and path. Userinfo (`u@host`, from
            // an absolute-form target) is not a host either (RFC 9110 §4.2.4): origins
            // read it differently, so it is refused rather than passed on.
            _ if ctx.host.contains(['/', '\\', '@']) => self.refusal(
                StatusCode::BAD_REQUEST,
                &ctx,
                "a Host with /, \\ or @ in it",
            ),
            // A partial write lands on bytes the gateway has not seen (and some WebDAV
            // servers take it): the whole object cannot be checked.
            _ if inspected && req.headers().contains_key(hyper::header::CONTENT_RANGE) => self
                .refusal(
                    StatusCode::BAD_REQUEST,
                    &ctx,
                    "Content-Range on an upload (a partial write) cannot be checked",
                ),
            Backend::Store(dir) => store::handle(self, dir, req, &ctx, inspected).await,
            Backend::Origin(_) if chunking.is_err() => {
                let why = chunking.err().map(|e| e.to_string()).unwrap_or_default();
                self.malformed(&ctx, &why)
            }
            Backend::Origin(_)
                if chunking
                    .as_ref()
                    .is_ok_and(|op| *op != nextcloud::Op::Other) =>
            {
                let spool = self.nextcloud.as_ref().expect("Nextcloud mode");
                let op = chunking.unwrap_or(nextcloud::Op::Other);
                nextcloud::handle(self, spool, op, req, &ctx).await
            }
            Backend::Origin(_) if self.tus.is_some() && tus::is_tus(req.headers()) => {
                let uploads = self.tus.as_ref().expect("tus mode");
                tus::handle(self, uploads, req, &ctx).await
            }
            Backend::Origin(_) if s3_op.is_err() => {
                let why = s3_op.err().map(|e| e.to_string()).unwrap_or_default();
                tracing::info!(request_id = %ctx.request_id, why, "S3 request not classifiable");
                self.refusal(StatusCode::BAD_REQUEST, &ctx, &why)
            }
            Backend::Origin(_) if s3_op.as_ref().is_ok_and(|op| *op != s3::Op::Other) => {
                let spool = self.spool.as_ref().expect("S3 mode");
                let op = s3_op.unwrap_or(s3::Op::Other);
                s3::handle(self, spool, op, req, &ctx).await
            }
            Backend::Origin(_) if inspected => upload::inspect(self, req, &ctx, None).await,
            Backend::Origin(_) if self.config.scan_responses && req.method() == Method::GET => {
                response::scan(self, req, &ctx).await
            }
            Backend::Origin(_) => upload::pass_through(self, req).await,
        };
        let outcome = match response.status() {
            StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS => "blocked",
            s if s.is_server_error() => "error",
            s if s.is_client_error() => "refused",
            _ => "passed",
        };
        self.enforcer.metrics().count_request(outcome);
        if deletes && response.status().is_success() {
            self.record_removed(&ctx);
        }
        if let Some(Ok(to)) = relocates.filter(|_| response.status().is_success()) {
            self.record_relocated(&ctx, &to);
        }
        let mut response = response;
        if let Ok(id) = ctx.request_id.parse() {
            response.headers_mut().insert("x-request-id", id);
        }
        response
    }

    /// The answer to a body that ended early.
    fn cut(&self, cut: &body::BodyCut, ctx: &Context) -> Response<GatewayBody> {
        match cut {
            body::BodyCut::Stalled => {
                self.refusal(StatusCode::REQUEST_TIMEOUT, ctx, "request body stalled")
            }
            body::BodyCut::Broken(e) => {
                tracing::info!(request_id = %ctx.request_id, error = %e, "upload aborted by the client");
                self.refusal(StatusCode::BAD_REQUEST, ctx, "request body incomplete")
            }
            body::BodyCut::TooLarge => {
                self.refusal(StatusCode::PAYLOAD_TOO_LARGE, ctx, "body too large")
            }
        }
    }

    /// Decides on every object of a body's inspection report (see
    /// [`Enforcer::decide_report`]). Also says whether a quarantine copy is to be kept.
    async fn decide(
        &self,
        filter: &FilterSet,
        ctx: &Context,
        report: &crate::inspect::Report,
    ) -> ReportDecision {
        self.enforcer
            .decide_report_confirmed(filter, ctx, report)
            .await
    }

    /// A quarantine copy for this request, if a quarantine directory is configured.
    async fn quarantine_copy(&self, ctx: &Context) -> Option<copy::Copy> {
        match &self.config.quarantine {
            Some(dir) => Some(copy::Copy::start(dir, &ctx.request_id).await),
            None => None,
        }
    }

    /// [`Gateway::decide`], keeping the quarantine copy (named in the audit records of
    /// the block) if the body is blocked and discarding it otherwise.
    async fn decide_with_copy(
        &self,
        filter: &FilterSet,
        ctx: &Context,
        objects: &crate::inspect::Report,
        copy: Option<copy::Copy>,
    ) -> ReportDecision {
        let Some(copy) = copy else {
            return self.decide(filter, ctx, objects).await;
        };
        let ctx = Context {
            quarantine: copy.path(),
            ..ctx.clone()
        };
        let decision = self.decide(filter, &ctx, objects).await;
        if decision.outcome == Outcome::Block && decision.quarantine {
            copy.keep().await;
        } else {
            copy.discard().await;
        }
        decision
    }

    /// The answer to a body the verdict on its report refused, as
    /// [`ReportDecision::refusal`] maps it (451, 422, 503), naming the filter that
    /// decided.
    fn refused_report(&self, decision: &ReportDecision, ctx: &Context) -> Response<GatewayBody> {
        let (status, reason) = decision
            .refusal(451)
            .unwrap_or((503, "no verdict could be reached"));
        let body = self
            .enforcer
            .decided_refusal_body(decision, status, reason, &ctx.request_id);
        json_refusal(
            StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN),
            body,
        )
    }

    /// The answer to a body whose inspection could not finish: broken framing (400), or
    /// a failed worker or spool file (503: nothing unchecked passes).
    fn body_error(&self, ctx: &Context, why: &shapes::BodyError) -> Response<GatewayBody> {
        match why {
            shapes::BodyError::Inspect(e) => {
                tracing::error!(request_id = %ctx.request_id, error = %e, "inspection failed");
                self.refusal(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ctx,
                    "the upload could not be inspected",
                )
            }
            other => self.malformed(ctx, &other.to_string()),
        }
    }

    /// The answer to a request whose headers declare what cannot be undone: 501 for an
    /// unknown transfer coding (RFC 9112 §6.1), 415 for an unknown content coding, 400
    /// for a multipart type without a usable boundary. Counted and logged as an
    /// uninspectable body; never passed uninspected.
    fn uninspectable_envelope(
        &self,
        ctx: &Context,
        why: &crate::inspect::EnvelopeError,
    ) -> Response<GatewayBody> {
        use crate::inspect::EnvelopeError;
        let status = match why {
            EnvelopeError::UnknownTransferCoding(_) => StatusCode::NOT_IMPLEMENTED,
            EnvelopeError::UnknownContentCoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            EnvelopeError::NoBoundary(_) => StatusCode::BAD_REQUEST,
        };
        tracing::info!(request_id = %ctx.request_id, error = %why, "upload not inspectable");
        self.refusal(status, ctx, &why.to_string())
    }

    /// The answer to a body whose framing is broken (multipart, aws-chunked).
    fn malformed(&self, ctx: &Context, why: &str) -> Response<GatewayBody> {
        tracing::info!(request_id = %ctx.request_id, why, "malformed upload body");
        self.refusal(StatusCode::BAD_REQUEST, ctx, why)
    }

    /// The JSON answer to a refused upload.
    fn refusal(&self, status: StatusCode, ctx: &Context, reason: &str) -> Response<GatewayBody> {
        let body = self
            .enforcer
            .refusal_body(status.as_u16(), reason, &ctx.request_id);
        json_refusal(status, body)
    }
}

/// The host a request names: the authority of its target when it has one (HTTP/2's
/// `:authority`, an HTTP/1.1 absolute-form target, which RFC 9112 puts before `Host`),
/// else its `Host`. The origin is sent this host ([`upload::upstream_request`]), so that
/// it stores the object under the host the gateway checked and catalogued.
fn request_host<'a>(uri: &'a hyper::Uri, headers: &'a hyper::HeaderMap) -> Option<&'a str> {
    uri.authority().map(|a| a.as_str()).or_else(|| {
        headers
            .get(hyper::header::HOST)
            .and_then(|h| h.to_str().ok())
    })
}

fn json_refusal(status: StatusCode, body: String) -> Response<GatewayBody> {
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::CONNECTION, "close")
        .body(body::full(body))
        .expect("valid response")
}

/// An origin connection pool on `connector`.
fn pool(connector: &OriginConnector) -> Client<OriginConnector, GatewayBody> {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector.clone())
}
