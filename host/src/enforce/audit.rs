//! The audit log: one JSON line per hit or failed verdict, appended and fsynced before
//! the client gets its answer.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::Context;
use crate::{Error, Hit};

/// One audit record.
#[derive(Clone, Debug, Serialize)]
pub struct AuditRecord {
    /// Unix time in seconds, with milliseconds.
    pub time: f64,
    /// Request id.
    pub request_id: String,
    /// Client address.
    pub client: String,
    /// HTTP method.
    pub method: String,
    /// Host.
    pub host: String,
    /// Path.
    pub path: String,
    /// The member the object was, if not the whole body: names from the body down,
    /// joined with `!` (a form part's file name, an archive member's path:
    /// `upload.zip!photos/a.jpg`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub part: Option<String>,
    /// The layers the object's bytes went through (`multipart>zip>file`), if not the
    /// body as sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layers: Option<String>,
    /// Why the object could not be inspected (`uninspectable-block` and
    /// `uninspectable-pass` records): its kind and the detail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// Object size in bytes.
    pub size: u64,
    /// Algorithm of the digest that hit, if any.
    pub algorithm: Option<String>,
    /// Hex digest that hit, if any.
    pub digest: Option<String>,
    /// Category of the hit.
    pub category: Option<String>,
    /// Whether the hit is the canary file.
    pub canary: bool,
    /// What the hit rests on: `filter-hit` (probable, not sent for confirmation),
    /// `confirmed`, `not-listed` (a false positive) or `confirmation-unavailable`.
    pub evidence: Option<&'static str>,
    /// Filter series.
    pub filter_series: String,
    /// Filter version.
    pub filter_version: u64,
    /// `block`, `monitor`, `fail-closed`, `fail-open`, `uninspectable-block` or
    /// `uninspectable-pass`.
    pub action: String,
    /// The quarantine copy of the blocked body, if one was kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quarantine: Option<String>,
}

impl AuditRecord {
    /// A record for `hit` (or a failed verdict when `None`).
    pub fn new(
        ctx: &Context,
        size: u64,
        hit: Option<&Hit>,
        action: &str,
        series: &str,
        version: u64,
    ) -> AuditRecord {
        let time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| (d.as_millis() as f64) / 1000.0)
            .unwrap_or(0.0);
        AuditRecord {
            time,
            request_id: ctx.request_id.clone(),
            client: ctx.client.clone(),
            method: ctx.method.clone(),
            host: ctx.host.clone(),
            path: ctx.path.clone(),
            part: ctx.part.clone(),
            layers: ctx.layers.clone(),
            problem: None,
            size,
            algorithm: hit.map(|h| h.algorithm.name().to_string()),
            digest: hit.map(|h| hex::encode(&h.bytes)),
            category: hit.and_then(|h| h.category.clone()),
            canary: hit.is_some_and(|h| h.is_canary()),
            evidence: hit.map(|_| "filter-hit"),
            filter_series: series.to_string(),
            filter_version: version,
            action: action.to_string(),
            quarantine: ctx.quarantine.clone().filter(|_| action == "block"),
        }
    }
}

/// An append-only JSON-lines file.
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<File>,
}

impl AuditLog {
    /// Opens (creating if needed) the log for appending.
    pub fn open(path: &Path) -> Result<AuditLog, Error> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        Ok(AuditLog {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        })
    }

    /// Appends one record and fsyncs it.
    pub fn append(&self, record: &AuditRecord) -> Result<(), Error> {
        let mut line = serde_json::to_vec(record).expect("records serialize");
        line.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        file.write_all(&line)
            .and_then(|()| file.sync_data())
            .map_err(|e| Error::io(&self.path, e))
    }
}
