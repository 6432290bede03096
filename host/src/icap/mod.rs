//! `hashgate icap`: an ICAP/1.0 server (RFC 3507) that lets an existing proxy (Squid,
//! e2guardian, a load balancer) hand hashgate the bodies it carries.
//!
//! Two services, each announced by `OPTIONS`:
//!
//! * `/reqmod`: request bodies (uploads) — a listed one is answered with an encapsulated
//!   HTTP `451` (or `403`), so the proxy refuses the upload and the origin gets nothing;
//! * `/respmod`: response bodies (downloads, cache fills) — a listed one is answered the
//!   same way instead of being delivered.
//!
//! Bodies are hashed as their chunks arrive and never held whole. How a transaction is
//! answered depends on what the client lets the server do:
//!
//! 1. the body fits in the **preview** (it ends with `ieof`) or the client offered
//!    `Allow: 204` → hashgate reads it all, then answers `204 No Content` (clean) or the
//!    refusal (listed);
//! 2. otherwise → after the preview (`100 Continue`), hashgate streams the unmodified
//!    message back as it arrives, **holding back its newest bytes** (1 MiB by default,
//!    and always the newest chunk); at the end it sends them (clean) or closes the
//!    connection without them (listed). The proxy then has an incomplete message: a
//!    listed body up to the hold-back size is never passed on at all, a longer one never
//!    whole.
//!
//! Squid offers `Allow: 204` only for bodies under 64 KiB and answers a `204` it did not
//! offer with an error, which is why case 2 exists (`docs/ARCHITECTURE.md`). Verdicts,
//! policy, audit records and metrics are the shared [`Enforcer`]'s.

mod echo;
mod transaction;
mod wire;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::enforce::Enforcer;
use crate::listener::{Core, Listener};
use crate::Error;

/// The ICAP server's settings.
#[derive(Clone, Debug)]
pub struct IcapConfig {
    /// Preview size advertised in `OPTIONS`: bodies up to this size are decided with a
    /// `204`/refusal whatever the client offered.
    pub preview: usize,
    /// HTTP status of the encapsulated refusal (451 or 403).
    pub block_status: u16,
    /// How long clients may cache the `OPTIONS` answer.
    pub options_ttl: Duration,
    /// Connections served at once, also advertised as `Max-Connections`.
    pub max_connections: usize,
    /// Bytes of an echoed request body (REQMOD, case 2) held back until the verdict: a
    /// listed upload up to this size never reaches the origin at all, a longer one never
    /// whole. Memory per transaction.
    pub reqmod_hold_back: usize,
    /// The same for response bodies (RESPMOD). Squid 5 stops feeding a RESPMOD service
    /// that holds back more than a little (bug 5352), so the default is 0: only the
    /// newest chunk is held.
    pub respmod_hold_back: usize,
    /// Largest head (ICAP fields plus the encapsulated HTTP heads).
    pub max_header_bytes: usize,
    /// How long an idle connection waits for its next request.
    pub idle_timeout: Duration,
    /// Time allowed to send a whole head once it has started.
    pub header_timeout: Duration,
    /// Longest pause allowed within a body.
    pub body_timeout: Duration,
    /// How long transactions in flight may run after a shutdown signal.
    pub shutdown_grace: Duration,
    /// Serve ICAPS (ICAP over TLS) with this reloadable certificate.
    pub tls: Option<Arc<crate::tls::CertStore>>,
    /// The inspection pipeline's bounds.
    pub inspect: Arc<crate::inspect::Limits>,
    /// Reports of responses seen whole (RESPMOD), kept by URL and strong ETag so a
    /// partial response can be judged by its whole: at most this many.
    pub response_cache_entries: usize,
    /// How long such a report is kept.
    pub response_cache_ttl: Duration,
    /// The digest catalog, if one is kept: every upload passed (REQMOD `PUT` and `POST`)
    /// is recorded, and each new filter re-checks them all. The ICAP server does not
    /// reach the storage, so a re-check can only report.
    pub catalog: Option<crate::enforce::retro::CatalogSettings>,
}

impl Default for IcapConfig {
    fn default() -> Self {
        IcapConfig {
            preview: 32 * 1024,
            block_status: 451,
            options_ttl: Duration::from_secs(300),
            max_connections: 1024,
            reqmod_hold_back: 1 << 20,
            respmod_hold_back: 0,
            max_header_bytes: 64 * 1024,
            idle_timeout: Duration::from_secs(300),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(30),
            tls: None,
            inspect: Default::default(),
            response_cache_entries: 10_000,
            response_cache_ttl: Duration::from_secs(300),
            catalog: None,
        }
    }
}

impl IcapConfig {
    /// The settings `file`'s `[icap]` table (and its `[inspect]` table and response
    /// cache keys) make, on top of the defaults, checked ([`IcapConfig::validate`]).
    pub fn resolve(file: &crate::config::FileConfig) -> Result<IcapConfig, Error> {
        let table = file.icap.clone().unwrap_or_default();
        let secs = Duration::from_secs;
        let mut config = IcapConfig::default();
        if let Some(limits) = &file.inspect {
            config.inspect = Arc::new(limits.limits());
        }
        config.preview = table.preview_bytes.unwrap_or(config.preview);
        config.block_status = table.block_status.unwrap_or(config.block_status);
        config.options_ttl = table.options_ttl_secs.map_or(config.options_ttl, secs);
        config.max_connections = table.max_connections.unwrap_or(config.max_connections);
        config.max_header_bytes = table.max_header_bytes.unwrap_or(config.max_header_bytes);
        config.reqmod_hold_back = table
            .reqmod_hold_back_bytes
            .unwrap_or(config.reqmod_hold_back);
        config.respmod_hold_back = table
            .respmod_hold_back_bytes
            .unwrap_or(config.respmod_hold_back);
        config.header_timeout = table
            .header_timeout_secs
            .map_or(config.header_timeout, secs);
        config.body_timeout = table.body_timeout_secs.map_or(config.body_timeout, secs);
        config.shutdown_grace = table
            .shutdown_grace_secs
            .map_or(config.shutdown_grace, secs);
        (config.response_cache_entries, config.response_cache_ttl) =
            file.response_cache(config.response_cache_entries, config.response_cache_ttl);
        config.tls =
            crate::tls::CertStore::configured(table.tls_cert.as_deref(), table.tls_key.as_deref())?;
        config.catalog = crate::enforce::retro::CatalogSettings::resolve(file)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values a client would otherwise trip over.
    pub fn validate(&self) -> Result<(), Error> {
        if ![403, 451].contains(&self.block_status) {
            return Err(Error::Config(format!(
                "icap block_status must be 451 or 403, not {}",
                self.block_status
            )));
        }
        if self.max_connections == 0 || self.max_header_bytes < 1024 {
            return Err(Error::Config(
                "icap max_connections must be > 0 and max_header_bytes >= 1024".into(),
            ));
        }
        if let Some(catalog) = &self.catalog {
            if catalog.action != crate::config::RetroAction::Report {
                return Err(Error::Config(
                    "[catalog] action: the ICAP server can only report (it does not reach the storage; a gateway can quarantine or delete)".into(),
                ));
            }
        }
        Ok(())
    }
}

/// The ICAP server: settings, the verdict core, and the count of transactions in flight.
pub struct IcapServer {
    config: IcapConfig,
    tls: Option<tokio_rustls::TlsAcceptor>,
    enforcer: Arc<Enforcer>,
    /// Responses seen whole (see [`IcapConfig::response_cache_entries`]).
    responses: crate::inspect::cache::DigestCache,
    /// The digest catalog's writer, if a catalog is kept.
    catalog: Option<Arc<crate::catalog::Recorder>>,
    in_flight: AtomicUsize,
    idle: Notify,
}

impl IcapServer {
    /// A server deciding with `enforcer`.
    pub fn new(config: IcapConfig, enforcer: Arc<Enforcer>) -> Result<Arc<IcapServer>, Error> {
        config.validate()?;
        let tls = config
            .tls
            .as_ref()
            .map(|store| tokio_rustls::TlsAcceptor::from(store.server_config(&[])));
        let responses = crate::inspect::cache::DigestCache::new(
            config.response_cache_entries,
            config.response_cache_ttl,
        );
        let catalog = config
            .catalog
            .as_ref()
            .map(crate::enforce::retro::recorder)
            .transpose()?;
        Ok(Arc::new(IcapServer {
            tls,
            catalog,
            config,
            enforcer,
            responses,
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
        }))
    }

    /// The verdict core.
    pub fn enforcer(&self) -> &Arc<Enforcer> {
        &self.enforcer
    }

    /// Serves clients on `listener`, one thread per core (see [`crate::listener`]), until
    /// `shutdown` resolves; then lets transactions in flight finish for up to the grace
    /// period. Idle keep-alive connections are dropped.
    pub async fn serve(
        self: Arc<Self>,
        listener: Listener,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), Error> {
        if let (Some(settings), Some(recorder)) = (&self.config.catalog, &self.catalog) {
            tokio::spawn(crate::enforce::retro::follow(
                self.enforcer.clone(),
                settings.clone(),
                recorder.clone(),
                Arc::new(Reported),
            ));
        }
        let max = self.config.max_connections;
        crate::listener::on_cores(listener, max, shutdown, move |core| {
            self.clone().serve_core(core)
        })
        .await
    }

    /// One serving thread's accept loop, then the wait for every thread's transactions
    /// (each thread's runtime must live until its own are done).
    async fn serve_core(self: Arc<Self>, core: Core) {
        core.accept_until_stopped(|stream, peer| {
            let server = self.clone();
            async move { transaction::serve_connection(&server, stream, peer).await }
        })
        .await;
        tracing::info!("shutting down: waiting for ICAP transactions in flight");
        let drained = async {
            loop {
                let notified = self.idle.notified();
                if self.in_flight.load(Ordering::SeqCst) == 0 {
                    break;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(self.config.shutdown_grace, drained)
            .await
            .is_err()
        {
            tracing::warn!("grace period over; dropping remaining ICAP transactions");
        }
    }

    /// The service tag: changes whenever any enforced filter does, so proxies that
    /// cache verdicts by `ISTag` re-ask after an update. At most 32 characters, quoted.
    fn istag(&self) -> String {
        let (series, version) = self.enforcer.filter().label();
        let series = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(series.as_bytes()));
        format!("\"hg-{}-{}\"", version, &series[..12])
    }

    fn begin(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight {
            server: self,
            _counted: self.enforcer.metrics().in_flight(),
        }
    }
}

/// The ICAP server as a re-check's remedy: it does not reach the storage behind the
/// proxy, so it reports (its configuration refuses any other action).
struct Reported;

impl crate::enforce::retro::Remedy for Reported {
    fn delete<'a>(
        &'a self,
        _: &'a crate::catalog::RetroHit,
    ) -> crate::enforce::retro::BoxFuture<'a, Result<crate::enforce::retro::Removal, String>> {
        Box::pin(async { Err("the ICAP server does not reach the storage".to_string()) })
    }

    fn quarantine<'a>(
        &'a self,
        _: &'a crate::catalog::RetroHit,
    ) -> crate::enforce::retro::BoxFuture<'a, Result<crate::enforce::retro::Removal, String>> {
        Box::pin(async { Err("the ICAP server does not reach the storage".to_string()) })
    }
}

/// Marks one transaction in flight until dropped (graceful shutdown waits for these;
/// `/metrics` shows them).
struct InFlight<'a> {
    server: &'a IcapServer,
    _counted: crate::enforce::metrics::InFlight,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.server.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.server.idle.notify_waiters();
        }
    }
}

/// Entry points for the fuzz targets in `fuzz/` (the wire format's parsers); not an API.
#[doc(hidden)]
pub mod fuzzing {
    /// Parses `head` as a request head is parsed; whether it was accepted.
    pub fn parse_head(head: &[u8]) -> bool {
        super::wire::parse_head(head).is_ok()
    }

    /// Parses an `Encapsulated` value; the heads' ranges and the body's offset if
    /// accepted, which must be in order and within the offset.
    pub fn parse_encapsulated(value: &str) -> Option<(Vec<std::ops::Range<usize>>, usize)> {
        let e = super::wire::Encapsulated::parse(value).ok()?;
        let heads = [e.req_hdr, e.res_hdr].into_iter().flatten().collect();
        Some((heads, e.body_offset))
    }

    /// Reads one request (head, encapsulated heads, chunked body) from `bytes` as a
    /// connection reads it; `Ok(body bytes)` or the fault's text.
    pub fn read_request(bytes: &[u8]) -> Result<usize, String> {
        use super::wire::{ChunkedBody, Encapsulated, Reader};
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| e.to_string())?;
        let stream: Box<dyn tokio::io::AsyncRead + Send + Unpin> =
            Box::new(std::io::Cursor::new(bytes.to_vec()));
        runtime.block_on(async move {
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
            let mut reader = Reader::new(stream);
            let head = reader
                .read_head(65536, deadline)
                .await
                .map_err(|e| e.to_string())?;
            let head = super::wire::parse_head(&head).map_err(|e| format!("{e:?}"))?;
            let enc = head.header("encapsulated").ok_or("no Encapsulated")?;
            let enc = Encapsulated::parse(enc)?;
            if enc.body_offset > 65536 {
                return Err("heads over the cap".into());
            }
            reader
                .read_exact(enc.body_offset, deadline)
                .await
                .map_err(|e| e.to_string())?;
            let mut body = ChunkedBody::new();
            let mut n = 0;
            while let Some(data) = body
                .next(&mut reader, 65536, std::time::Duration::from_secs(5))
                .await
                .map_err(|e| e.to_string())?
            {
                n += data.len();
            }
            Ok(n)
        })
    }
}
