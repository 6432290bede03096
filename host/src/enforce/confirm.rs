//! Confirming filter hits with the authority (`docs/PROTOCOL.md`, "Confirmation").
//!
//! A filter hit is probable, not certain: anyone holding the filter can grind a file that
//! hits it. For the actions the operator wants only on a real match, the gateway sends
//! the first hex digits of the digest that hit to the authority's range API and compares
//! the full digests it gets back locally: the authority never sees clean traffic, and
//! never a full digest it does not list.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::AUTHORIZATION;
use hyper::{Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use crate::{Algorithm, Error};

/// What a hit turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Evidence {
    /// A filter hit that was not sent for confirmation (no action needed it).
    FilterHit,
    /// The authority lists the digest.
    Confirmed,
    /// The authority does not list it: a Bloom filter false positive.
    NotListed,
    /// The confirmer could not be asked (down, slow, refused us).
    Unavailable,
}

impl Evidence {
    /// The audit record's `evidence` value.
    pub fn label(self) -> &'static str {
        match self {
            Evidence::FilterHit => "filter-hit",
            Evidence::Confirmed => "confirmed",
            Evidence::NotListed => "not-listed",
            Evidence::Unavailable => "confirmation-unavailable",
        }
    }
}

/// What an action needs before it is taken.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Needs {
    /// A filter hit is enough.
    FilterHit,
    /// Only a confirmed match.
    #[default]
    Confirmed,
}

/// What an action that needs confirmation does when the confirmer cannot answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WhenUnavailable {
    /// Take the action anyway (fail closed).
    #[default]
    Act,
    /// Skip it (fail open for that action).
    Skip,
}

/// The `[confirm]` table of the config file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfirmConfig {
    /// Base URL of the authority's confirmation server.
    pub url: String,
    /// File holding the bearer token.
    pub token_file: Option<PathBuf>,
    /// Hex digits of the digest sent (default 5: about 1 in a million digests share it).
    pub prefix_hex: Option<usize>,
    /// Deadline of one query, in seconds (default 5).
    pub timeout_secs: Option<u64>,
    /// A private CA for an https confirmer.
    pub ca: Option<PathBuf>,
    /// What blocking needs (default `filter-hit`: block without waiting).
    #[serde(default = "filter_hit")]
    pub block: Needs,
    /// What keeping a quarantine copy needs (default `confirmed`).
    #[serde(default)]
    pub quarantine: Needs,
    /// What a report record needs (default `confirmed`).
    #[serde(default)]
    pub report: Needs,
    /// What an action needing confirmation does when none can be had (default `act`).
    #[serde(default)]
    pub on_unavailable: WhenUnavailable,
    /// Where report records go (JSON lines), meant to be forwarded to the authority.
    pub report_log: Option<PathBuf>,
}

fn filter_hit() -> Needs {
    Needs::FilterHit
}

impl ConfirmConfig {
    /// The defaults for a confirmer at `url`: block on the filter hit, quarantine and
    /// report only confirmed matches, act when the confirmer cannot answer.
    pub fn new(url: &str) -> ConfirmConfig {
        ConfirmConfig {
            url: url.to_string(),
            token_file: None,
            prefix_hex: None,
            timeout_secs: None,
            ca: None,
            block: Needs::FilterHit,
            quarantine: Needs::Confirmed,
            report: Needs::Confirmed,
            on_unavailable: WhenUnavailable::Act,
            report_log: None,
        }
    }

    /// Whether an action that `needs` this is taken for a hit with `evidence`.
    pub fn takes(&self, needs: Needs, evidence: Evidence) -> bool {
        match (needs, evidence) {
            (Needs::FilterHit, _) | (_, Evidence::Confirmed) => true,
            (Needs::Confirmed, Evidence::Unavailable) => {
                self.on_unavailable == WhenUnavailable::Act
            }
            (Needs::Confirmed, _) => false,
        }
    }

    /// Whether any action waits for confirmation (else no query is ever sent).
    pub fn asks(&self) -> bool {
        [self.block, self.quarantine, self.report].contains(&Needs::Confirmed)
    }
}

/// How long an answer is reused: the same listed (or falsely hitting) file uploaded
/// again and again costs one query.
const CACHE_TTL: Duration = Duration::from_secs(600);
const CACHE_MAX: usize = 10_000;
/// The largest answer read (a padded range is a few KiB).
const MAX_ANSWER: usize = 1 << 20;

/// A client of the authority's range API.
pub struct Confirmer {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>,
    base: String,
    token: Option<String>,
    prefix_hex: usize,
    timeout: Duration,
    cache: Mutex<AnswerCache>,
}

/// Answers by range name (`sha256`, `pdq`, ...) and digest, with when they were had.
type AnswerCache = HashMap<(&'static str, Vec<u8>), (Evidence, Instant)>;

/// Hex digits of a PDQ range's prefix: one 16-bit window, whatever `prefix_hex` says.
const PDQ_PREFIX: usize = 4;

impl Confirmer {
    /// A client for the server at `config.url`.
    pub fn new(config: &ConfirmConfig) -> Result<Confirmer, Error> {
        let token = match &config.token_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| Error::io(path, e))?
                    .trim()
                    .to_string(),
            ),
            None => None,
        };
        let prefix_hex = config.prefix_hex.unwrap_or(5);
        if !(4..=16).contains(&prefix_hex) {
            return Err(Error::Config("confirm.prefix_hex must be 4 to 16".into()));
        }
        let uri = crate::tls::peer_url("confirm.url", &config.url)?;
        let timeout = Duration::from_secs(config.timeout_secs.unwrap_or(5));
        let connector = crate::tls::connector(&uri, config.ca.as_deref(), timeout)?;
        Ok(Confirmer {
            client: Client::builder(TokioExecutor::new()).build(connector),
            base: config.url.trim_end_matches('/').to_string(),
            token,
            prefix_hex,
            timeout,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Whether the authority lists `digest`: asks for its prefix's range and compares.
    pub async fn confirm(&self, algorithm: Algorithm, digest: &[u8]) -> Evidence {
        self.confirm_range(algorithm.name(), digest, self.prefix_hex)
            .await
    }

    /// Whether the authority still lists the PDQ hash `listed` (the one the filter
    /// matched a picture to): asks for the range of its first 16-bit window, so the
    /// authority never sees the picture's own hash.
    pub async fn confirm_pdq(&self, listed: &crate::perceptual::PdqHash) -> Evidence {
        self.confirm_range("pdq", &listed.0, PDQ_PREFIX).await
    }

    async fn confirm_range(&self, range: &'static str, digest: &[u8], prefix: usize) -> Evidence {
        let key = (range, digest.to_vec());
        if let Some(&(evidence, at)) = self
            .cache
            .lock()
            .expect("no panics under the lock")
            .get(&key)
        {
            if at.elapsed() < CACHE_TTL {
                return evidence;
            }
        }
        let asked = self.ask(range, digest, prefix);
        let evidence = match tokio::time::timeout(self.timeout, asked).await {
            Ok(Ok(true)) => Evidence::Confirmed,
            Ok(Ok(false)) => Evidence::NotListed,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "confirmation failed");
                Evidence::Unavailable
            }
            Err(_) => {
                tracing::warn!(timeout = ?self.timeout, "confirmation timed out");
                Evidence::Unavailable
            }
        };
        if evidence != Evidence::Unavailable {
            let mut cache = self.cache.lock().expect("no panics under the lock");
            if cache.len() >= CACHE_MAX {
                cache.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
                if cache.len() >= CACHE_MAX {
                    cache.clear();
                }
            }
            cache.insert(key, (evidence, Instant::now()));
        }
        evidence
    }

    async fn ask(&self, range: &str, digest: &[u8], prefix: usize) -> Result<bool, String> {
        let full = hex::encode(digest);
        let url = format!(
            "{}/v1/range/{range}/{}",
            self.base,
            &full[..prefix.min(full.len())]
        );
        let mut req = Request::get(&url);
        if let Some(token) = &self.token {
            req = req.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let req = req.body(Empty::new()).map_err(|e| e.to_string())?;
        let response = self
            .client
            .request(req)
            .await
            .map_err(|e| format!("{url}: {e:#}"))?;
        if response.status() != StatusCode::OK {
            return Err(format!(
                "{url}: the confirmer answered {}",
                response.status()
            ));
        }
        let body = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| format!("{url}: {e}"))?
            .to_bytes();
        let text = std::str::from_utf8(&body).map_err(|_| format!("{url}: not text"))?;
        Ok(text
            .lines()
            .any(|line| line.trim().eq_ignore_ascii_case(&full)))
    }
}
