//! The confirmation server (`docs/PROTOCOL.md`, "Confirmation"): answers
//! `GET /v1/range/{algorithm}/{prefix}` with every listed digest that starts with the hex
//! prefix, so a gateway can tell a true match from a Bloom filter false positive without
//! ever sending a full digest (k-anonymity, as Pwned Passwords' range API).
//!
//! Every answer is padded with made-up digests sharing the prefix up to a multiple of
//! [`PAD`] lines, all lines of one length: its size says nothing about how many listed
//! digests share the prefix. The padding is derived from the prefix with a keyed PRF
//! (HMAC-SHA-256 under the server's pad key), not drawn afresh: two answers for one
//! prefix are the same, so intersecting them strips nothing, and an entry added to the
//! list displaces one pad line while the others stay. The server answers prefixes of one
//! length only: a pad line of a 5-digit answer could otherwise be told from a listed
//! digest by asking for a longer prefix of it.
//!
//! Listed PDQ hashes are served the same way under `GET /v1/range/pdq/{prefix}`, always by
//! a prefix of [`PDQ_PREFIX`] hex digits: one 16-bit window, as the guest's index uses. A
//! gateway asks for the first window of the *listed* hash the filter matched, so the
//! authority learns only that a picture was near one of the hashes sharing it (about one
//! in 65,536 of the list, or a pad line), never the picture's own hash.
//!
//! Access needs a bearer token from the token file; each token is rate-limited (429 with
//! `Retry-After`), and every request is audited (who, from where, which prefix, what
//! answer) as one JSON line.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hmac::{KeyInit, Mac};
use http_body_util::Full;
use hyper::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH, RETRY_AFTER};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;

use hashgate_guest::Algorithm;

use crate::{list, Error};

/// Answers are padded to a multiple of this many lines.
pub const PAD: usize = 32;
/// The shortest prefix length a server may be set to answer, in hex digits: shorter
/// ones would hand out the list in a few requests.
pub const MIN_PREFIX: usize = 4;
/// The longest prefix length a server may be set to answer, in hex digits.
pub const MAX_PREFIX: usize = 16;
/// The prefix length answered by default (the gateways' default `prefix_hex`).
pub const DEFAULT_PREFIX: usize = 5;
/// The prefix length of PDQ ranges, in hex digits: one 16-bit window.
pub const PDQ_PREFIX: usize = 4;

/// What a range is of: digests of one algorithm, or PDQ hashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ranged {
    /// Digests of this algorithm.
    Digest(Algorithm),
    /// PDQ hashes (32 bytes).
    Pdq,
}

impl Ranged {
    fn slot(self) -> usize {
        match self {
            Ranged::Digest(Algorithm::Md5) => 0,
            Ranged::Digest(Algorithm::Sha1) => 1,
            Ranged::Digest(Algorithm::Sha256) => 2,
            Ranged::Pdq => 3,
        }
    }

    /// Its name in the path (`md5`, `sha1`, `sha256`, `pdq`).
    pub fn name(self) -> &'static str {
        match self {
            Ranged::Digest(a) => a.name(),
            Ranged::Pdq => "pdq",
        }
    }

    fn len(self) -> usize {
        match self {
            Ranged::Digest(a) => a.digest_len(),
            Ranged::Pdq => 32,
        }
    }

    /// The prefix length a server answering digests by `prefix_hex` digits answers.
    fn prefix_hex(self, prefix_hex: usize) -> usize {
        match self {
            Ranged::Digest(a) => prefix_hex.min(a.digest_len() * 2),
            Ranged::Pdq => PDQ_PREFIX,
        }
    }
}

impl std::str::FromStr for Ranged {
    type Err = String;

    fn from_str(s: &str) -> Result<Ranged, String> {
        if s == "pdq" {
            return Ok(Ranged::Pdq);
        }
        s.parse::<Algorithm>()
            .map(Ranged::Digest)
            .map_err(|e| e.to_string())
    }
}

/// The listed digests, sorted per algorithm, and the listed PDQ hashes, sorted.
pub struct RangeIndex {
    digests: [Vec<Vec<u8>>; 4],
}

impl RangeIndex {
    /// Reads the lists (the same files `publish` reads).
    pub fn load(lists: &[PathBuf]) -> Result<RangeIndex, Error> {
        let mut digests: [Vec<Vec<u8>>; 4] = Default::default();
        for path in lists {
            list::read(path, None, &mut |entry| {
                let ranged = match entry.kind {
                    list::Kind::Digest(algorithm) => Ranged::Digest(algorithm),
                    list::Kind::Pdq => Ranged::Pdq,
                };
                digests[ranged.slot()].push(entry.digest.to_vec());
                Ok(())
            })?;
        }
        for d in &mut digests {
            d.sort_unstable();
            d.dedup();
        }
        Ok(RangeIndex { digests })
    }

    /// Listed digests (or PDQ hashes) whose hex form starts with `prefix` (lowercase).
    pub fn range(&self, ranged: Ranged, prefix: &str) -> Vec<&[u8]> {
        let all = &self.digests[ranged.slot()];
        // Digests are sorted, so those with the prefix are contiguous: find the first
        // whose hex is not below the prefix.
        let start =
            all.partition_point(|d| hex::encode(&d[..prefix.len().div_ceil(2)]).as_str() < prefix);
        all[start..]
            .iter()
            .take_while(|d| hex::encode(&d[..prefix.len().div_ceil(2)]).starts_with(prefix))
            .map(Vec::as_slice)
            .collect()
    }

    /// Entries per algorithm.
    pub fn len(&self) -> usize {
        self.digests.iter().map(Vec::len).sum()
    }

    /// Whether no digest is listed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The bearer tokens allowed to query, kept as SHA-256 so comparing them takes the same
/// time whichever token is close.
pub struct Tokens(Vec<[u8; 32]>);

impl Tokens {
    /// One token per line; blank lines and `#` comments are ignored.
    pub fn read(path: &Path) -> Result<Tokens, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let tokens: Vec<[u8; 32]> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|t| Sha256::digest(t.as_bytes()).into())
            .collect();
        if tokens.is_empty() {
            return Err(Error::io(
                path,
                std::io::Error::other("no tokens in the file"),
            ));
        }
        Ok(Tokens(tokens))
    }

    /// The token's SHA-256 if it is one of the file's.
    fn allows(&self, token: &str) -> Option<[u8; 32]> {
        let h: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let known = self
            .0
            .iter()
            .fold(0u8, |any, t| any | t.ct_eq(&h).unwrap_u8());
        (known == 1).then_some(h)
    }
}

/// The secret that derives an answer's padding: 32 bytes in a file of its own (0600),
/// made on first use. Keep it across restarts and list versions: a new key gives every
/// prefix new padding, and two answers for one prefix under two keys intersect in the
/// listed digests.
pub struct PadKey([u8; 32]);

impl PadKey {
    /// Reads the key at `path`, or makes one there if no file exists.
    pub fn open_or_create(path: &Path) -> Result<PadKey, Error> {
        match std::fs::read(path) {
            Ok(bytes) => <[u8; 32]>::try_from(bytes.as_slice())
                .map(PadKey)
                .map_err(|_| {
                    Error::io(
                        path,
                        std::io::Error::other(format!(
                            "a pad key is 32 bytes, this file has {}",
                            bytes.len()
                        )),
                    )
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut key);
                crate::keys::write_secret(path, &key)?;
                Ok(PadKey(key))
            }
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// The `i`-th pad line for `prefix` of `ranged`: the prefix, then hex digits of
    /// HMAC-SHA-256(key, its name, prefix, i), one digest (or PDQ hash) long.
    fn line(&self, ranged: Ranged, prefix: &str, i: u32) -> String {
        let mut mac = hmac::Hmac::<Sha256>::new_from_slice(&self.0).expect("any key length");
        mac.update(b"hashgate confirmation padding v1\0");
        mac.update(ranged.name().as_bytes());
        mac.update(b"\0");
        mac.update(prefix.as_bytes());
        mac.update(&i.to_be_bytes());
        let tag = mac.finalize().into_bytes();
        let mut line = prefix.to_string();
        line.push_str(&hex::encode(&tag[..ranged.len()])[prefix.len()..]);
        line
    }
}

/// How the server answers: one prefix length, a rate per token, and where the audit goes.
pub struct Policy {
    /// The only prefix length answered, in hex digits ([`MIN_PREFIX`]..=[`MAX_PREFIX`]).
    pub prefix_hex: usize,
    /// Requests per minute each token may make, sustained.
    pub per_minute: u32,
    /// Requests a token may make at once before the rate applies.
    pub burst: u32,
    /// Derives the padding.
    pub pad_key: PadKey,
    /// Gets one JSON line per request.
    pub audit: Box<dyn std::io::Write + Send>,
}

/// The range API's state: the index, who may ask, and how much.
pub struct Server {
    index: RangeIndex,
    tokens: Tokens,
    prefix_hex: usize,
    per_minute: u32,
    burst: u32,
    pad_key: PadKey,
    /// Token buckets, by token hash: as many as tokens in the file.
    buckets: Mutex<HashMap<[u8; 32], Bucket>>,
    audit: Mutex<Box<dyn std::io::Write + Send>>,
    /// Where operators' feedback reports go (`POST /v1/feedback`), if they are taken.
    inbox: Option<crate::feedback::Inbox>,
}

/// The largest feedback report taken.
const MAX_REPORT: usize = 16 << 20;

/// One token's allowance.
struct Bucket {
    left: f64,
    at: Instant,
}

impl Server {
    /// A server over `index` for `tokens`, answering as `policy` says.
    pub fn new(index: RangeIndex, tokens: Tokens, policy: Policy) -> Result<Server, Error> {
        if !(MIN_PREFIX..=MAX_PREFIX).contains(&policy.prefix_hex) {
            return Err(Error::Config(format!(
                "the prefix length must be {MIN_PREFIX} to {MAX_PREFIX} hex digits, not {}",
                policy.prefix_hex
            )));
        }
        if policy.per_minute == 0 || policy.burst == 0 {
            return Err(Error::Config(
                "the rate and the burst must be at least 1".into(),
            ));
        }
        Ok(Server {
            index,
            tokens,
            prefix_hex: policy.prefix_hex,
            per_minute: policy.per_minute,
            burst: policy.burst,
            pad_key: policy.pad_key,
            buckets: Mutex::new(HashMap::new()),
            audit: Mutex::new(policy.audit),
            inbox: None,
        })
    }

    /// Takes operators' feedback reports at `POST /v1/feedback` into `inbox`.
    pub fn with_feedback(mut self, inbox: crate::feedback::Inbox) -> Server {
        self.inbox = Some(inbox);
        self
    }

    /// Answers `POST /v1/feedback`: a sealed report, authenticated by its signature (no
    /// bearer token), kept if it is new. 200 when kept, 403 when no registered
    /// operator signed it, 409 for a replay, 400 malformed, 413 too large.
    async fn feedback(
        &self,
        req: Request<hyper::body::Incoming>,
        peer: SocketAddr,
    ) -> Response<Full<Bytes>> {
        use http_body_util::BodyExt;
        let path = req.uri().path().to_string();
        let response = match &self.inbox {
            None => text(StatusCode::NOT_FOUND, "this authority takes no feedback\n"),
            Some(_) if req.method() != Method::POST => {
                text(StatusCode::METHOD_NOT_ALLOWED, "POST a sealed report\n")
            }
            Some(inbox) => {
                match http_body_util::Limited::new(req.into_body(), MAX_REPORT)
                    .collect()
                    .await
                {
                    Err(_) => text(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "a report is at most 16 MiB\n",
                    ),
                    Ok(body) => match inbox.receive(&body.to_bytes()) {
                        Ok(Ok((name, report))) => {
                            tracing::info!(operator = %name, sequence = report.sequence, entries = report.hits.len(), "feedback report kept");
                            text(
                                StatusCode::OK,
                                format!("kept report {} of {name}\n", report.sequence),
                            )
                        }
                        Ok(Err(refusal)) => {
                            let status = match refusal {
                                crate::feedback::Refusal::Unsigned(_) => StatusCode::FORBIDDEN,
                                crate::feedback::Refusal::Malformed(_) => StatusCode::BAD_REQUEST,
                                crate::feedback::Refusal::Replayed { .. } => StatusCode::CONFLICT,
                            };
                            text(status, format!("{refusal}\n"))
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "a feedback report could not be kept");
                            text(
                                StatusCode::SERVICE_UNAVAILABLE,
                                "the report could not be kept; send it again\n",
                            )
                        }
                    },
                }
            }
        };
        self.record(peer, None, &path, response.status());
        response
    }

    /// Listed digests in the index.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Takes one request from `token`'s allowance; how long to wait if none is left.
    fn take(&self, token: [u8; 32]) -> Result<(), Duration> {
        let per_second = f64::from(self.per_minute) / 60.0;
        let burst = f64::from(self.burst);
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = buckets.entry(token).or_insert(Bucket {
            left: burst,
            at: now,
        });
        bucket.left =
            (bucket.left + now.duration_since(bucket.at).as_secs_f64() * per_second).min(burst);
        bucket.at = now;
        if bucket.left >= 1.0 {
            bucket.left -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.left) / per_second))
        }
    }

    fn record(&self, peer: SocketAddr, token: Option<[u8; 32]>, path: &str, status: StatusCode) {
        let time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let line = serde_json::json!({
            "time": time,
            "peer": peer.ip().to_string(),
            // Which token asked, without the token: the first 8 bytes of its SHA-256.
            "token": token.map(|t| hex::encode(&t[..8])),
            "path": path,
            "status": status.as_u16(),
        });
        let mut audit = self.audit.lock().unwrap_or_else(|e| e.into_inner());
        if writeln!(audit, "{line}")
            .and_then(|()| audit.flush())
            .is_err()
        {
            tracing::error!("the confirmation audit cannot be written");
        }
    }

    /// Answers one request from `peer`, and audits it.
    fn answer<B>(&self, req: &Request<B>, peer: SocketAddr) -> Response<Full<Bytes>> {
        let path = req.uri().path();
        if path == "/healthz" {
            return text(StatusCode::OK, "ok\n");
        }
        let token = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .and_then(|t| self.tokens.allows(t.trim()));
        let response = match token {
            None => {
                let mut r = text(
                    StatusCode::UNAUTHORIZED,
                    "a valid bearer token is required\n",
                );
                r.headers_mut()
                    .insert("www-authenticate", "Bearer".parse().expect("valid"));
                r
            }
            Some(token) => match self.take(token) {
                Err(wait) => {
                    let mut r = text(StatusCode::TOO_MANY_REQUESTS, "too many requests\n");
                    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
                    r.headers_mut().insert(RETRY_AFTER, secs.into());
                    r
                }
                Ok(()) => self.range(req),
            },
        };
        self.record(peer, token, path, response.status());
        response
    }

    /// The answer to an authorised, allowed request.
    fn range<B>(&self, req: &Request<B>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET {
            return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
        }
        let parts: Vec<&str> = req.uri().path().split('/').collect();
        let ["", "v1", "range", algorithm, prefix] = parts.as_slice() else {
            return text(
                StatusCode::NOT_FOUND,
                "GET /v1/range/{algorithm}/{hex prefix}\n",
            );
        };
        let Ok(ranged) = algorithm.parse::<Ranged>() else {
            return text(
                StatusCode::NOT_FOUND,
                "algorithm must be md5, sha1, sha256 or pdq\n",
            );
        };
        let prefix = prefix.to_ascii_lowercase();
        let want = ranged.prefix_hex(self.prefix_hex);
        if prefix.len() != want || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            return text(
                StatusCode::BAD_REQUEST,
                format!("this server answers prefixes of exactly {want} hex digits\n"),
            );
        }
        let mut lines: Vec<String> = self
            .index
            .range(ranged, &prefix)
            .into_iter()
            .map(hex::encode)
            .collect();
        let listed = lines.len();
        let padded = listed.div_ceil(PAD).max(1) * PAD;
        let mut i = 0u32;
        while lines.len() < padded {
            let line = self.pad_key.line(ranged, &prefix, i);
            i += 1;
            // A pad equal to a listed digest would shorten the answer by one line.
            if !lines[..listed].contains(&line) {
                lines.push(line);
            }
        }
        lines.sort_unstable();
        let mut body = lines.join("\n");
        body.push('\n');
        // The same prefix of the same list gives the same bytes: cacheable by the
        // asker (private: it is an authorised answer), revalidated by its tag.
        let etag = format!(
            "\"{}\"",
            hex::encode(&Sha256::digest(body.as_bytes())[..16])
        );
        let matches = req
            .headers()
            .get(IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
        let mut response = if matches {
            text(StatusCode::NOT_MODIFIED, Bytes::new())
        } else {
            text(StatusCode::OK, body)
        };
        let headers = response.headers_mut();
        headers.insert(
            CACHE_CONTROL,
            "private, max-age=600".parse().expect("valid"),
        );
        headers.insert(ETAG, etag.parse().expect("valid"));
        response
    }
}

/// Serves the range API on `listener` (through `tls` if given) until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    server: Arc<Server>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let (server, tls) = (server.clone(), tls.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let server = server.clone();
                async move {
                    if req.uri().path() == "/v1/feedback" {
                        return Ok::<_, Infallible>(server.feedback(req, peer).await);
                    }
                    Ok(server.answer(&req, peer))
                }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let _ = match tls {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(s) => builder.serve_connection(TokioIo::new(s), service).await,
                    Err(_) => return,
                },
                None => {
                    builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await
                }
            };
        });
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(CACHE_CONTROL, "no-store")
        .body(Full::new(body.into()))
        .expect("a valid response")
}
