//! Feedback to the authority: hits per listed entry, counted as they happen and sent
//! every `interval_secs` in a report signed with the operator's key
//! ([`hashgate_trust::feedback`]), with the operator's allow-listed entries and the
//! filters in force. By digest only: no paths, no addresses, no times of single hits.
//!
//! Sending never holds up enforcement: the tally is touched only on hits, and the
//! sender is a task of its own. A report that cannot be sent is sent again (the same
//! report, the same sequence) with a growing pause, while the hits after it gather for
//! the next one; the authority answering 409 (it has that sequence already: an earlier
//! attempt got through and only its answer was lost) counts as delivered.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use hashgate_trust::feedback::{self, EntryCount, FilterInForce, Report};

use super::Enforcer;
use crate::trust::SecretKey;
use crate::Error;

/// The `[feedback]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedbackConfig {
    /// The authority's feedback endpoint (`https://…/v1/feedback`).
    pub url: String,
    /// The operator's secret key (`hashgate keygen`), registered with the authority.
    pub key: PathBuf,
    /// Seconds between reports (default 3600).
    pub interval_secs: Option<u64>,
    /// Deadline of one attempt, in seconds (default 10).
    pub timeout_secs: Option<u64>,
    /// A private CA to trust for an https endpoint.
    pub ca: Option<PathBuf>,
}

/// Entries counted one by one; hits of any more are counted together.
const TALLY_MAX: usize = 100_000;

/// Hits per listed entry since the last report taken.
#[derive(Default)]
pub struct Tally {
    counts: Mutex<(HashMap<String, u64>, u64)>,
}

impl Tally {
    /// Counts a hit of `entry`.
    pub fn count(&self, entry: &str) {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = c.0.get_mut(entry) {
            *n += 1;
        } else if c.0.len() < TALLY_MAX {
            c.0.insert(entry.to_string(), 1);
        } else {
            c.1 += 1;
        }
    }

    /// Takes the counts, leaving the tally empty.
    fn take(&self) -> (HashMap<String, u64>, u64) {
        std::mem::take(&mut *self.counts.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Sends the authority at `index` a report every interval, until the task is dropped:
/// the hits of its filter, the allow-list entries it lists, its filter in force.
pub async fn report(enforcer: Arc<Enforcer>, config: FeedbackConfig, index: usize) {
    let sender = match Sender::new(&config) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "feedback is configured but cannot be sent");
            return;
        }
    };
    let interval = Duration::from_secs(config.interval_secs.unwrap_or(3600).max(1));
    let mut from = unix_now();
    let mut sequence = 0;
    loop {
        tokio::time::sleep(interval).await;
        let Some(tally) = enforcer.tally(index) else {
            return;
        };
        let (counts, uncounted) = tally.take();
        sequence = (unix_now_ms()).max(sequence + 1);
        let to = unix_now();
        let mut hits: Vec<EntryCount> = counts
            .into_iter()
            .map(|(entry, hits)| EntryCount { entry, hits })
            .collect();
        hits.sort_by(|a, b| b.hits.cmp(&a.hits).then_with(|| a.entry.cmp(&b.entry)));
        let filters = enforcer
            .filter()
            .members()
            .get(index)
            .map(|m| FilterInForce {
                series: m.engine.info().series.clone(),
                version: m.engine.info().version,
            })
            .into_iter()
            .collect();
        let report = Report {
            from,
            to,
            filters,
            hits,
            uncounted,
            allowed: enforcer.allowed_entries_of(index),
            checkpoint: enforcer.last_checkpoint(),
            ..Report::new(&sender.key.public_key(), sequence)
        };
        from = to;
        let sealed = Bytes::from(feedback::seal(&report, &sender.key));
        let mut pause = Duration::from_secs(1);
        loop {
            match sender.send(sealed.clone()).await {
                Ok(()) => {
                    enforcer.metrics().count_feedback("sent");
                    tracing::info!(
                        sequence,
                        entries = report.hits.len(),
                        "feedback report sent"
                    );
                    break;
                }
                Err(e) => {
                    enforcer.metrics().count_feedback("failed");
                    tracing::warn!(error = %e, retry_in = ?pause, "feedback report not sent");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(interval);
                }
            }
        }
    }
}

struct Sender {
    client: Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        Full<Bytes>,
    >,
    url: hyper::Uri,
    key: SecretKey,
    timeout: Duration,
}

impl Sender {
    fn new(config: &FeedbackConfig) -> Result<Sender, Error> {
        let url = crate::tls::peer_url("feedback.url", &config.url)?;
        let timeout = Duration::from_secs(config.timeout_secs.unwrap_or(10).max(1));
        let connector = crate::tls::connector(&url, config.ca.as_deref(), timeout)?;
        Ok(Sender {
            client: Client::builder(TokioExecutor::new()).build(connector),
            url,
            key: SecretKey::read(&config.key)?,
            timeout,
        })
    }

    async fn send(&self, sealed: Bytes) -> Result<(), String> {
        let req = Request::post(self.url.clone())
            .header(hyper::header::CONTENT_TYPE, "application/octet-stream")
            .body(Full::new(sealed))
            .map_err(|e| e.to_string())?;
        let sent = async {
            let response = self
                .client
                .request(req)
                .await
                .map_err(|e| format!("{e:#}"))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            match status {
                // 409: the authority has this sequence already (an earlier attempt).
                StatusCode::OK | StatusCode::CONFLICT => Ok(()),
                s => Err(format!(
                    "the authority answered {s}: {}",
                    String::from_utf8_lossy(&body).trim()
                )),
            }
        };
        match tokio::time::timeout(self.timeout, sent).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
