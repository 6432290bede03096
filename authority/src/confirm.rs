//! The confirmation server (`docs/PROTOCOL.md`, "Confirmation"): answers
//! `GET /v1/range/{algorithm}/{prefix}` with every listed digest that starts with the hex
//! prefix, so a gateway can tell a true match from a Bloom filter false positive without
//! ever sending a full digest (k-anonymity, as Pwned Passwords' range API).
//!
//! Every answer is padded with random digests sharing the prefix up to a multiple of
//! [`PAD`] lines, all lines of one length: its size says nothing about how many listed
//! digests share the prefix. Access needs a bearer token from the token file.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;

use hashgate_guest::Algorithm;

use crate::{list, Error};

/// Answers are padded to a multiple of this many lines.
pub const PAD: usize = 32;
/// The shortest prefix served, in hex digits: shorter ones would hand out the list in
/// a few requests.
pub const MIN_PREFIX: usize = 4;
/// The longest prefix served, in hex digits.
pub const MAX_PREFIX: usize = 16;

/// The listed digests, sorted per algorithm.
pub struct RangeIndex {
    digests: [Vec<Vec<u8>>; 3],
}

fn slot(a: Algorithm) -> usize {
    match a {
        Algorithm::Md5 => 0,
        Algorithm::Sha1 => 1,
        Algorithm::Sha256 => 2,
    }
}

impl RangeIndex {
    /// Reads the lists (the same files `publish` reads).
    pub fn load(lists: &[PathBuf]) -> Result<RangeIndex, Error> {
        let mut digests: [Vec<Vec<u8>>; 3] = Default::default();
        for path in lists {
            list::read(path, None, &mut |entry| {
                digests[slot(entry.algorithm)].push(entry.digest.to_vec());
                Ok(())
            })?;
        }
        for d in &mut digests {
            d.sort_unstable();
            d.dedup();
        }
        Ok(RangeIndex { digests })
    }

    /// Listed digests of `algorithm` whose hex form starts with `prefix` (lowercase).
    pub fn range(&self, algorithm: Algorithm, prefix: &str) -> Vec<&[u8]> {
        let all = &self.digests[slot(algorithm)];
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

    fn allows(&self, token: &str) -> bool {
        let h: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.0
            .iter()
            .fold(0u8, |any, t| any | t.ct_eq(&h).unwrap_u8())
            == 1
    }
}

/// Serves the range API on `listener` (through `tls` if given) until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    index: Arc<RangeIndex>,
    tokens: Arc<Tokens>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (index, tokens, tls) = (index.clone(), tokens.clone(), tls.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let answer = answer(&index, &tokens, &req);
                async move { Ok::<_, Infallible>(answer) }
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

fn answer<B>(index: &RangeIndex, tokens: &Tokens, req: &Request<B>) -> Response<Full<Bytes>> {
    if req.uri().path() == "/healthz" {
        return text(StatusCode::OK, "ok\n");
    }
    let token = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !token.is_some_and(|t| tokens.allows(t.trim())) {
        let mut r = text(
            StatusCode::UNAUTHORIZED,
            "a valid bearer token is required\n",
        );
        r.headers_mut()
            .insert("www-authenticate", "Bearer".parse().expect("valid"));
        return r;
    }
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
    let Ok(algorithm) = algorithm.parse::<Algorithm>() else {
        return text(
            StatusCode::NOT_FOUND,
            "algorithm must be md5, sha1 or sha256\n",
        );
    };
    let prefix = prefix.to_ascii_lowercase();
    let max = MAX_PREFIX.min(algorithm.digest_len() * 2);
    if !(MIN_PREFIX..=max).contains(&prefix.len()) || !prefix.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return text(
            StatusCode::BAD_REQUEST,
            format!("the prefix must be {MIN_PREFIX} to {max} hex digits\n"),
        );
    }
    let mut lines: Vec<String> = index
        .range(algorithm, &prefix)
        .into_iter()
        .map(hex::encode)
        .collect();
    let padded = lines.len().div_ceil(PAD).max(1) * PAD;
    let mut rng = rand::thread_rng();
    while lines.len() < padded {
        let mut random = vec![0u8; algorithm.digest_len()];
        rng.fill_bytes(&mut random);
        let mut line = prefix.clone();
        line.push_str(&hex::encode(random)[prefix.len()..]);
        lines.push(line);
    }
    lines.sort_unstable();
    let mut body = lines.join("\n");
    body.push('\n');
    text(StatusCode::OK, body)
}
