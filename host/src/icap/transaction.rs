//! One ICAP connection: a loop of transactions (`OPTIONS`, `REQMOD`, `RESPMOD`), each
//! body hashed as it arrives and decided by the shared [`Enforcer`](crate::enforce).

use std::net::SocketAddr;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::echo::Echo;
use super::wire::{self, BodyKind, ChunkedBody, Encapsulated, Fault, Reader, RequestHead, Writer};
use super::IcapServer;
use crate::enforce::FilterSet;
use crate::enforce::{Context, Outcome, ReportDecision};
use crate::inspect::cache::{strong_etag, ObjectKey};
use crate::inspect::{Envelope, EnvelopeError, HoldBack, Inspection, Problem, ProblemKind};

/// Body data handed to the hasher at a time.
const PIECE: usize = 256 * 1024;
/// Bytes of an echo waiting in memory for the proxy to take them; more is spooled to
/// disk (see `echo.rs`).
const ECHO_MEMORY: usize = 4 << 20;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Service {
    Reqmod,
    Respmod,
}

impl Service {
    fn method(self) -> &'static str {
        match self {
            Service::Reqmod => "REQMOD",
            Service::Respmod => "RESPMOD",
        }
    }

    /// The prefix of its `Encapsulated` names (`req-hdr`, `res-body`, ...).
    fn part(self) -> &'static str {
        match self {
            Service::Reqmod => "req",
            Service::Respmod => "res",
        }
    }
}

/// What a finished transaction leaves the connection fit for.
enum Next {
    KeepAlive,
    Close,
}

struct Connection<'a> {
    server: &'a IcapServer,
    reader: Reader,
    writer: Option<Writer>,
    peer: SocketAddr,
    /// Whether this transaction's response has begun (an error can no longer be sent).
    answering: bool,
}

/// Serves transactions on one connection until either side closes it.
pub(super) async fn serve_connection(server: &IcapServer, stream: TcpStream, peer: SocketAddr) {
    let (r, w): (
        Box<dyn AsyncRead + Send + Unpin>,
        Box<dyn AsyncWrite + Send + Unpin>,
    ) = match &server.tls {
        None => {
            let (r, w) = stream.into_split();
            (Box::new(r), Box::new(w))
        }
        // ICAPS: the handshake is bounded like a request head.
        Some(acceptor) => {
            let timeout = server.config.header_timeout;
            match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let (r, w) = tokio::io::split(tls);
                    (Box::new(r), Box::new(w))
                }
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "ICAPS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "ICAPS handshake timed out");
                    return;
                }
            }
        }
    };
    let mut conn = Connection {
        server,
        reader: Reader::new(r),
        writer: Some(Writer::new(w)),
        peer,
        answering: false,
    };
    loop {
        // An idle connection that closes or times out is not an error.
        if conn
            .reader
            .await_request(server.config.idle_timeout)
            .await
            .is_err()
        {
            return;
        }
        let _in_flight = server.begin();
        conn.answering = false;
        match conn.transaction().await {
            Ok(Next::KeepAlive) => {}
            Ok(Next::Close) => return,
            Err(fault) => return conn.fail(fault).await,
        }
    }
}

impl Connection<'_> {
    async fn send(&mut self, bytes: &[u8]) -> Result<(), Fault> {
        match &mut self.writer {
            Some(w) => w.send(bytes).await,
            None => Err(Fault::Closed),
        }
    }

    fn count(&self, method: &str, answer: &str) {
        self.server.enforcer.metrics().count_icap(method, answer);
    }

    /// Ends a transaction that went wrong: an ICAP error status if the response has not
    /// begun, then the connection is closed (its framing can no longer be trusted).
    async fn fail(&mut self, fault: Fault) {
        let (status, reason) = match &fault {
            Fault::Closed | Fault::Io(_) => {
                tracing::debug!(peer = %self.peer, %fault, "ICAP client went away");
                (0, "")
            }
            Fault::Timeout => (408, "Request Timeout"),
            Fault::Malformed(_) | Fault::TooLarge => (400, "Bad Request"),
        };
        if status != 0 {
            tracing::info!(peer = %self.peer, %fault, "refusing an ICAP request");
            self.count("any", &status.to_string());
            if !self.answering {
                let _ = self.refuse(status, reason).await;
            }
        }
        if let Some(w) = self.writer.take() {
            w.abort().await;
        }
    }

    /// An ICAP error status; the connection closes after it.
    async fn refuse(&mut self, status: u16, reason: &str) -> Result<(), Fault> {
        let head = wire::response_head(
            status,
            reason,
            &self.server.istag(),
            &[
                ("Encapsulated", "null-body=0".into()),
                ("Connection", "close".into()),
            ],
        );
        self.send(head.as_bytes()).await
    }

    async fn transaction(&mut self) -> Result<Next, Fault> {
        let config = &self.server.config;
        // The ICAP head and the HTTP heads it encapsulates arrive within one deadline,
        // counted from the request's first byte.
        let deadline = tokio::time::Instant::now() + config.header_timeout;
        let head = self
            .reader
            .read_head(config.max_header_bytes, deadline)
            .await?;
        let head = match wire::parse_head(&head) {
            Ok(head) => head,
            Err(wire::HeadError::Version) => {
                self.count("any", "505");
                self.refuse(505, "ICAP Version Not Supported").await?;
                return Ok(Next::Close);
            }
            Err(wire::HeadError::Malformed(why)) => return Err(Fault::Malformed(why)),
        };
        let service = match head.service.as_str() {
            "/reqmod" => Service::Reqmod,
            "/respmod" => Service::Respmod,
            _ => {
                self.count(&head.method, "404");
                self.refuse(404, "ICAP Service Not Found").await?;
                return Ok(Next::Close);
            }
        };
        let next = match head.method.as_str() {
            "OPTIONS" => self.options(&head, service, deadline).await?,
            m if m == service.method() => self.modify(&head, service, deadline).await?,
            "REQMOD" | "RESPMOD" => {
                self.count(&head.method, "405");
                self.refuse(405, "Method Not Allowed For Service").await?;
                return Ok(Next::Close);
            }
            _ => {
                self.count(&head.method, "501");
                self.refuse(501, "Method Not Implemented").await?;
                return Ok(Next::Close);
            }
        };
        let close = head
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        Ok(if close { Next::Close } else { next })
    }

    /// `OPTIONS`: what the service does and how the client should talk to it.
    async fn options(
        &mut self,
        head: &RequestHead,
        service: Service,
        deadline: tokio::time::Instant,
    ) -> Result<Next, Fault> {
        // An OPTIONS body (`opt-body`) has no defined meaning; read past it, within the
        // head cap: the offset is what the client declares, so it is checked before a
        // byte is buffered, and the body is skipped as it streams, up to the same cap.
        if let Some(value) = head.header("encapsulated") {
            let enc = Encapsulated::parse(value).map_err(Fault::Malformed)?;
            let cap = self.server.config.max_header_bytes;
            if enc.body_offset > cap {
                return Err(Fault::TooLarge);
            }
            if enc.body != BodyKind::Null || enc.body_offset > 0 {
                let _ = self.reader.read_exact(enc.body_offset, deadline).await?;
                let timeout = self.server.config.body_timeout;
                if enc.body != BodyKind::Null {
                    let mut body = ChunkedBody::new();
                    let mut skipped = 0;
                    while let Some(data) = body.next(&mut self.reader, PIECE, timeout).await? {
                        skipped += data.len();
                        if skipped > cap {
                            return Err(Fault::TooLarge);
                        }
                    }
                }
            }
        }
        let config = &self.server.config;
        let answer = wire::response_head(
            200,
            "OK",
            &self.server.istag(),
            &[
                ("Methods", service.method().into()),
                ("Service", format!("hashgate/{}", env!("CARGO_PKG_VERSION"))),
                ("Max-Connections", config.max_connections.to_string()),
                ("Options-TTL", config.options_ttl.as_secs().to_string()),
                ("Allow", "204".into()),
                ("Preview", config.preview.to_string()),
                ("Transfer-Preview", "*".into()),
                ("Encapsulated", "null-body=0".into()),
            ],
        );
        self.count("OPTIONS", "200");
        self.send(answer.as_bytes()).await?;
        Ok(Next::KeepAlive)
    }

    /// `REQMOD` / `RESPMOD`: hash the body and answer as the module docs describe.
    async fn modify(
        &mut self,
        head: &RequestHead,
        service: Service,
        deadline: tokio::time::Instant,
    ) -> Result<Next, Fault> {
        let config = self.server.config.clone();
        let enc = head
            .header("encapsulated")
            .ok_or_else(|| Fault::Malformed("no Encapsulated header".into()))?;
        let enc = Encapsulated::parse(enc).map_err(Fault::Malformed)?;
        let fits = match service {
            Service::Reqmod => {
                enc.req_hdr.is_some()
                    && enc.res_hdr.is_none()
                    && matches!(enc.body, BodyKind::Request | BodyKind::Null)
            }
            Service::Respmod => {
                enc.res_hdr.is_some() && matches!(enc.body, BodyKind::Response | BodyKind::Null)
            }
        };
        if !fits {
            return Err(Fault::Malformed(format!(
                "Encapsulated parts do not fit {}",
                service.method()
            )));
        }
        if enc.body_offset > config.max_header_bytes {
            return Err(Fault::TooLarge);
        }
        let heads = self.reader.read_exact(enc.body_offset, deadline).await?;
        let req_hdr = enc.req_hdr.clone().map(|r| heads.slice(r));
        let res_hdr = enc.res_hdr.clone().map(|r| heads.slice(r));
        let ctx = self.context(head, req_hdr.as_deref());
        // The head the unmodified answer echoes: the request's in REQMOD, the response's in
        // RESPMOD (RFC 3507 §4.9: a RESPMOD answer carries no request head).
        let echo = match service {
            Service::Reqmod => req_hdr,
            Service::Respmod => res_hdr,
        }
        .expect("checked above");
        let method = service.method();

        if enc.body == BodyKind::Null {
            self.count(method, "no-body");
            if head.allows_204() {
                self.no_content().await?;
            } else {
                self.unmodified_head(service, &echo, true).await?;
            }
            return Ok(Next::KeepAlive);
        }

        // A body that is no container is hashed as it arrives (inline, or on a thread
        // while a core is spare); one that is goes through the inspection pipeline's
        // walk on a blocking thread. The envelope comes from the encapsulated HTTP head.
        let filter = self.server.enforcer.filter();
        let shown = match service {
            Service::Respmod => Some(Representation::of(&echo, &ctx, &self.server.responses)),
            Service::Reqmod => None,
        };
        // A part of an object not seen whole is known from the head alone: refused now,
        // before any of it is echoed (streamed and cut at the end, most of the part
        // would reach the client).
        if let Some(shown) = shown.as_ref().filter(|s| s.unseen_part()) {
            let report = crate::inspect::Report {
                nodes: Vec::new(),
                problems: vec![shown.problem()],
            };
            let decision = self
                .server
                .enforcer
                .decide_report_confirmed(&filter, &ctx, &report)
                .await;
            if !matches!(decision.outcome, Outcome::Pass | Outcome::Monitor) {
                self.answer_whole(method, decision, &ctx).await?;
                return Ok(Next::Close);
            }
        }
        let (envelope, refused) = match http_envelope(&echo) {
            Ok(envelope) => (envelope, None),
            Err(e) => (Envelope::default(), Some(e)),
        };
        let algorithms = crate::enforce::retro::algorithms(config.catalog.as_ref(), &filter);
        let hashes = crate::inspect::Hashes::with(&algorithms, &filter);
        let mut digester = Inspection::new(envelope, hashes, config.inspect.clone(), None);
        let mut held: Vec<Bytes> = Vec::new();
        if let Some(preview) = head.header("preview") {
            let announced: usize = preview
                .parse()
                .map_err(|_| Fault::Malformed(format!("bad Preview {preview:?}")))?;
            if announced > config.preview.max(1 << 20) {
                return Err(Fault::Malformed(format!(
                    "Preview {announced} is over the {} advertised",
                    config.preview
                )));
            }
            let mut body = ChunkedBody::new();
            let mut seen = 0;
            while let Some(data) = body
                .next(&mut self.reader, PIECE, config.body_timeout)
                .await?
            {
                seen += data.len();
                if seen > announced {
                    return Err(Fault::Malformed("preview longer than announced".into()));
                }
                digester.update(&data).await;
                held.push(data);
            }
            if body.ieof {
                // The preview was the whole body: a 204 is allowed whatever was offered.
                let decision = decide(self.server, &filter, digester, &ctx, refused, &shown).await;
                return self.answer_whole(method, decision, &ctx).await;
            }
            self.send(b"ICAP/1.0 100 Continue\r\n\r\n").await?;
        }

        let mut body = ChunkedBody::new();
        if head.allows_204() {
            // The client keeps its own copy: hash and forget.
            drop(held);
            while let Some(data) = body
                .next(&mut self.reader, PIECE, config.body_timeout)
                .await?
            {
                digester.update(&data).await;
            }
            let decision = decide(self.server, &filter, digester, &ctx, refused, &shown).await;
            return self.answer_whole(method, decision, &ctx).await;
        }

        // No 204 allowed: echo the message as it arrives, holding back its newest bytes.
        self.unmodified_head(service, &echo, false).await?;
        let hold = match service {
            Service::Reqmod => config.reqmod_hold_back,
            Service::Respmod => config.respmod_hold_back,
        };
        let mut held = {
            let preview = held;
            let mut h = HoldBack::new(None, hold);
            preview.into_iter().for_each(|chunk| h.push(chunk));
            h
        };
        let writer = self.writer.take().ok_or(Fault::Closed)?;
        let echoing = Echo::start(writer, ECHO_MEMORY, config.inspect.spool_dir.clone());
        let read = async {
            while let Some(ready) = held.release() {
                echoing.push(ready)?;
            }
            while let Some(data) = body
                .next(&mut self.reader, PIECE, config.body_timeout)
                .await?
            {
                digester.update(&data).await;
                held.push(data);
                while let Some(ready) = held.release() {
                    echoing.push(ready)?;
                }
            }
            Ok::<(), Fault>(())
        }
        .await;
        if let Err(fault) = read {
            self.writer = echoing.cancel().await;
            return Err(fault);
        }
        let decision = decide(self.server, &filter, digester, &ctx, refused, &shown).await;
        match decision.outcome {
            Outcome::Pass | Outcome::Monitor => {
                for last in held.into_rest() {
                    echoing.push(last)?;
                }
                self.writer = Some(echoing.finish().await?);
                self.send(b"0\r\n\r\n").await?;
                self.count(method, "200-unmodified");
                Ok(Next::KeepAlive)
            }
            Outcome::Block | Outcome::Unavailable => {
                tracing::warn!(
                    request_id = %ctx.request_id,
                    outcome = ?decision.outcome,
                    held_back = held.held(),
                    "cutting off a streamed {method} body before its last bytes"
                );
                self.count(method, "cut");
                self.server.enforcer.metrics().count_request("blocked");
                if let Some(w) = echoing.cancel().await {
                    w.abort().await;
                }
                Ok(Next::Close)
            }
        }
    }

    /// The answer once the whole body has been read: `204`, or a refusal.
    async fn answer_whole(
        &mut self,
        method: &str,
        decision: ReportDecision,
        ctx: &Context,
    ) -> Result<Next, Fault> {
        let metrics = self.server.enforcer.metrics();
        match decision.outcome {
            Outcome::Pass | Outcome::Monitor => {
                metrics.count_request("passed");
                self.count(method, "204");
                self.no_content().await?;
            }
            _ => {
                let (status, reason) = decision
                    .refusal(self.server.config.block_status)
                    .expect("a refused outcome");
                let (requests, answer) = match status {
                    422 => ("refused", "uninspectable"),
                    503 => ("error", "unavailable"),
                    _ => ("blocked", "blocked"),
                };
                metrics.count_request(requests);
                self.count(method, answer);
                let body = self.server.enforcer.decided_refusal_body(
                    &decision,
                    status,
                    reason,
                    &ctx.request_id,
                );
                self.http_refusal(status, body, ctx).await?;
            }
        }
        Ok(Next::KeepAlive)
    }

    async fn no_content(&mut self) -> Result<(), Fault> {
        self.answering = true;
        let head = wire::response_head(
            204,
            "No Content",
            &self.server.istag(),
            &[("Encapsulated", "null-body=0".into())],
        );
        self.send(head.as_bytes()).await
    }

    /// `200 OK` carrying the unmodified HTTP head; its body follows unless `null_body`.
    async fn unmodified_head(
        &mut self,
        service: Service,
        echo: &[u8],
        null_body: bool,
    ) -> Result<(), Fault> {
        let part = service.part();
        let body = if null_body { "null" } else { part };
        self.ok_with_http_head(
            format!("{part}-hdr=0, {body}-body={}", echo.len()),
            echo,
            b"",
        )
        .await
    }

    /// `200 OK` with `encapsulated`, then the encapsulated HTTP head and what follows it
    /// (`rest`: a chunked body, or nothing when the body is streamed after), in one write.
    async fn ok_with_http_head(
        &mut self,
        encapsulated: String,
        http_head: &[u8],
        rest: &[u8],
    ) -> Result<(), Fault> {
        self.answering = true;
        let mut out = wire::response_head(
            200,
            "OK",
            &self.server.istag(),
            &[("Encapsulated", encapsulated)],
        )
        .into_bytes();
        out.extend_from_slice(http_head);
        out.extend_from_slice(rest);
        self.send(&out).await
    }

    /// `200 OK` carrying an HTTP refusal (451, 403 or 503) with the shared JSON body.
    async fn http_refusal(
        &mut self,
        status: u16,
        body: String,
        ctx: &Context,
    ) -> Result<(), Fault> {
        let phrase = hyper::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Refused");
        let http = format!(
            "HTTP/1.1 {status} {phrase}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nCache-Control: no-store\r\nX-Request-Id: {}\r\n\
             Connection: close\r\n\r\n",
            body.len(),
            ctx.request_id
        );
        let chunked = format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
        self.ok_with_http_head(
            format!("res-hdr=0, res-body={}", http.len()),
            http.as_bytes(),
            chunked.as_bytes(),
        )
        .await
    }

    /// The audit context: the client the proxy names (`X-Client-IP`) or the proxy itself,
    /// and the encapsulated request's method, host and path.
    fn context(&self, head: &RequestHead, req_hdr: Option<&[u8]>) -> Context {
        let mut ctx = Context {
            request_id: uuid::Uuid::new_v4().to_string(),
            client: head
                .header("x-client-ip")
                .map_or_else(|| self.peer.ip().to_string(), str::to_string),
            ..Context::default()
        };
        let mut slots = [httparse::EMPTY_HEADER; 64];
        let mut request = httparse::Request::new(&mut slots);
        if let Some(Ok(httparse::Status::Complete(_))) = req_hdr.map(|h| request.parse(h)) {
            ctx.method = request.method.unwrap_or("").to_string();
            let target = request.path.unwrap_or("");
            // Proxies send absolute URIs: `PUT http://host/path HTTP/1.1`.
            let (host, path) = match target.split_once("://") {
                Some((_, rest)) => match rest.find('/') {
                    Some(i) => (&rest[..i], &rest[i..]),
                    None => (rest, "/"),
                },
                None => ("", target),
            };
            ctx.path = path.to_string();
            ctx.host = request
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("host"))
                .and_then(|h| std::str::from_utf8(h.value).ok())
                .unwrap_or(host)
                .to_string();
        }
        ctx
    }
}

/// Finishes the inspection and asks the enforcer. A body that could not be inspected
/// (its head declares a coding the pipeline cannot undo, the inspection failed) is a
/// malformed problem, decided by the `uninspectable` policy. (A free function: the
/// connection's boxed streams are not `Sync`, so no `&Connection` may be held across
/// the await.)
async fn decide(
    server: &IcapServer,
    filter: &FilterSet,
    inspection: Inspection,
    ctx: &Context,
    refused: Option<EnvelopeError>,
    shown: &Option<Representation>,
) -> ReportDecision {
    let mut report = match inspection.finish().await {
        Ok(report) => report,
        Err(e) => {
            tracing::error!(request_id = %ctx.request_id, error = %e, "inspection failed");
            let mut report = crate::inspect::Report::default();
            report.problems.push(Problem::malformed(e.to_string()));
            report
        }
    };
    if let Some(e) = refused {
        report.problems.push(Problem::malformed(e.to_string()));
    }
    if let Some(shown) = shown {
        shown.judge(server, &mut report);
    }
    let decision = server
        .enforcer
        .decide_report_confirmed(filter, ctx, &report)
        .await;
    // An upload let through (REQMOD: no response shown) is recorded as the origin will
    // store it; whether the origin then took it, an ICAP server never learns.
    let passed = matches!(decision.outcome, Outcome::Pass | Outcome::Monitor);
    if let (true, None, Some(recorder), Some(settings)) =
        (passed, shown, &server.catalog, &server.config.catalog)
    {
        if ctx.method == "PUT" || ctx.method == "POST" {
            let row = crate::enforce::retro::row_key(false, settings.by_host, ctx);
            let entry =
                crate::enforce::retro::stored_entry(settings, row, ctx, &report, None, filter);
            recorder.record(entry);
        }
    }
    decision
}

/// What a RESPMOD response head says about the object it carries: whether it is the
/// whole (`200`) or a part (`206`), and which object (URL and strong ETag).
///
/// Pieces fetched with `Range` are each clean, but may join into a listed file; the
/// last few bytes of a download that was cut may complete it. So a `206` is judged with
/// the report of its whole, kept from when the whole passed through here; a `206` of an
/// object not seen whole is a [`ProblemKind::Partial`] problem (`[uninspectable]
/// partial`, blocked by default), decided from the head. The piece itself is hashed as
/// well (a range may cut a listed file out of a clean one).
struct Representation {
    /// URL and strong ETag, when both are known.
    object: Option<(String, String)>,
    /// A `206`.
    partial: bool,
    /// For a `206`: the report of its whole, if seen (same URL, ETag and total length).
    whole_report: Option<crate::inspect::Report>,
    /// A `200`: the whole object, remembered once hashed.
    whole: bool,
}

impl Representation {
    fn of(
        res_hdr: &[u8],
        ctx: &Context,
        seen: &crate::inspect::cache::DigestCache,
    ) -> Representation {
        let mut slots = [httparse::EMPTY_HEADER; 128];
        let mut response = httparse::Response::new(&mut slots);
        let code = match response.parse(res_hdr) {
            Ok(httparse::Status::Complete(_)) => response.code.unwrap_or(0),
            _ => 0,
        };
        let field = |name: &str| {
            response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .and_then(|h| std::str::from_utf8(h.value).ok())
        };
        let url = format!("{}{}", ctx.host, ctx.path);
        let object = strong_etag(field("etag"))
            .filter(|_| !ctx.path.is_empty())
            .map(|etag| (url, etag.to_string()));
        // `bytes 0-1023/4096` → 4096; `*` and `multipart/byteranges` give no total.
        let total: Option<u64> = field("content-range")
            .and_then(|r| r.rsplit_once('/'))
            .and_then(|(_, total)| total.trim().parse().ok());
        let partial = code == 206;
        let whole_report = match (&object, total) {
            (Some((url, etag)), Some(total)) if partial => seen.get(&ObjectKey {
                url: url.clone(),
                etag: etag.clone(),
                length: Some(total),
            }),
            _ => None,
        };
        Representation {
            object,
            partial,
            whole_report,
            whole: code == 200,
        }
    }

    /// A `206` of an object not seen whole.
    fn unseen_part(&self) -> bool {
        self.partial && self.whole_report.is_none()
    }

    fn problem(&self) -> Problem {
        Problem {
            kind: ProblemKind::Partial,
            member: Vec::new(),
            layers: Vec::new(),
            detail: "a 206 of an object not seen whole here (no strong ETag and total \
                     length, or not in the response cache)"
                .into(),
        }
    }

    /// Adds to a part's `report` what its whole's says; remembers a whole one's.
    fn judge(&self, server: &IcapServer, report: &mut crate::inspect::Report) {
        if let Some(whole) = &self.whole_report {
            report.nodes.extend(whole.nodes.iter().cloned());
            report.problems.extend(whole.problems.iter().cloned());
        } else if let (true, Some((url, etag))) = (self.whole, &self.object) {
            let key = ObjectKey {
                url: url.clone(),
                etag: etag.clone(),
                length: report.root().map(|n| n.size),
            };
            server.responses.insert(key, report.clone());
        }
    }
}

/// The envelope of an encapsulated HTTP head (a request's or a response's): its
/// transfer and content codings and media type.
fn http_envelope(head: &[u8]) -> Result<Envelope, EnvelopeError> {
    // Past the start line: the field block is the same for requests and responses.
    let fields = match memchr::memchr(b'\n', head) {
        Some(i) => &head[i + 1..],
        None => return Ok(Envelope::default()),
    };
    let mut slots = [httparse::EMPTY_HEADER; 128];
    let parsed = match httparse::parse_headers(fields, &mut slots) {
        Ok(httparse::Status::Complete((_, h))) => h,
        _ => return Ok(Envelope::default()),
    };
    let joined = |name: &str| {
        let values: Vec<String> = parsed
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).into_owned())
            .collect();
        (!values.is_empty()).then(|| values.join(","))
    };
    Envelope::http(
        joined("transfer-encoding").as_deref(),
        joined("content-encoding").as_deref(),
        joined("content-type").as_deref(),
    )
}
