//! Publishing a feed (`docs/PROTOCOL.md`): the next version of a series as static files
//! any web server, bucket or CDN can serve.
//!
//! ```text
//! FEED/manifest.json                 signed manifest (written last: never names a missing file)
//! FEED/roots/N.json                  every root, so gateways can follow rotations
//! FEED/snapshots/SERIES-V.hgf        signed snapshots of the last few versions
//! FEED/deltas/SERIES-FROM-TO.hgd     a delta from each of those to the newest
//! FEED/guests/SHA.wasm               a guest component, if one is shipped
//! ```
//!
//! Section sizes carry over from the previous version while the lists fit them (with
//! [`Publish::headroom`] reserved when a section is first sized), so unchanged entries
//! keep their bits and a delta holds only the churn. A list that did not change gives no
//! new version: the manifest is only re-signed with a later expiry.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hashgate_guest::{delta, section_bits, BuildParams, Header};
use hashgate_trust::feed::{DeltaRef, Envelope, FileRef, Manifest, TrustedRoot, MAX_DOCUMENT};
use hashgate_trust::keys::{SecretKey, TRAILER_LEN};
use sha2::{Digest, Sha256};

use crate::build::{build_body, write_atomically, Request};
use crate::Error;

/// What to publish.
pub struct Publish {
    /// The feed directory.
    pub feed: PathBuf,
    /// The series.
    pub series: String,
    /// The digest lists.
    pub lists: Vec<PathBuf>,
    /// Category for entries whose line names none.
    pub default_category: Option<String>,
    /// Target false-positive rate.
    pub fp_rate: f64,
    /// The root in force (its file); copied into the feed.
    pub root: PathBuf,
    /// Keys that sign the manifest (at least the root's manifest threshold of them);
    /// the first also signs the snapshot's trailer.
    pub keys: Vec<SecretKey>,
    /// Unix seconds now.
    pub now: u64,
    /// How long the manifest vouches for freshness.
    pub manifest_lifetime: u64,
    /// How long a snapshot is valid on its own (used without a feed).
    pub snapshot_lifetime: u64,
    /// Hosts poll no more often than this.
    pub min_poll_seconds: u64,
    /// How many earlier versions get a delta to the new one.
    pub keep: u64,
    /// Extra room when a section is sized anew, as a fraction of its entries.
    pub headroom: f64,
    /// A guest component to ship (else the previous manifest's, if any).
    pub guest: Option<PathBuf>,
}

/// What was published.
#[derive(Debug)]
pub struct Published {
    /// The manifest's version.
    pub version: u64,
    /// Whether the list was unchanged and only the manifest re-signed.
    pub resigned: bool,
    /// The snapshot file's length.
    pub snapshot_len: u64,
    /// Each delta: from which version, its length.
    pub deltas: Vec<(u64, u64)>,
}

fn feed_error(m: impl Into<String>) -> Error {
    Error::Trust(hashgate_trust::Error::Document(m.into()))
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

/// The body of a signed snapshot file (its trailer is the snapshot's own signature; the
/// manifest's hash is what gateways check).
fn body_of(file: &[u8]) -> &[u8] {
    &file[..file.len().saturating_sub(TRAILER_LEN)]
}

/// The previous manifest in the feed, if any (the feed's own file: read, not verified).
fn previous(feed: &Path) -> Result<Option<Manifest>, Error> {
    let path = feed.join("manifest.json");
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    let payload = Envelope::parse(&bytes)?.payload()?;
    serde_json::from_slice(&payload)
        .map(Some)
        .map_err(|e| feed_error(format!("{}: {e}", path.display())))
}

fn file_ref(rel: String, bytes: &[u8]) -> FileRef {
    FileRef {
        path: rel,
        length: bytes.len() as u64,
        sha256: hex::encode(Sha256::digest(bytes)),
    }
}

/// Publishes the next version of the series (or re-signs the current one).
pub fn publish(p: &Publish) -> Result<Published, Error> {
    let root_bytes = read(&p.root)?;
    let root = TrustedRoot::bootstrap(&root_bytes)?;
    let previous = previous(&p.feed)?;
    if let Some(prev) = &previous {
        if prev.series != p.series {
            return Err(feed_error(format!(
                "{} publishes series {:?}, not {:?}",
                p.feed.display(),
                prev.series,
                p.series
            )));
        }
    }
    let prev_body = match &previous {
        Some(prev) => {
            let file = read(&p.feed.join(&prev.snapshot.path))?;
            let body = body_of(&file).to_vec();
            if hex::encode(Sha256::digest(&body)) != prev.state_sha256 {
                return Err(feed_error(
                    "the previous snapshot in the feed is not the state its manifest names",
                ));
            }
            Some(body)
        }
        None => None,
    };
    let version = previous.as_ref().map_or(1, |m| m.version + 1);
    let mut params = BuildParams::new(
        &p.series,
        version,
        p.now,
        p.now + p.snapshot_lifetime.max(1),
        p.fp_rate,
    );
    if let Some(body) = &prev_body {
        let header = Header::parse(body)?;
        params.min_bits = header
            .sections
            .iter()
            .map(|s| (s.algorithm, s.category.clone(), s.bits))
            .collect();
        params.min_pdq_slots = header
            .pdq
            .iter()
            .map(|s| (s.category.clone(), s.slots))
            .collect();
    }
    let request = Request {
        lists: p.lists.clone(),
        default_category: p.default_category.clone(),
        params: params.clone(),
    };
    let mut body = build_body(&request)?;
    if params.min_bits.is_empty() || geometry_grew(&body, prev_body.as_deref())? {
        // A section sized anew gets headroom, so that growth does not change the
        // geometry (and force full downloads) at every version.
        (params.min_bits, params.min_pdq_slots) = headroom(&body, p.headroom, p.fp_rate)?;
        body = build_body(&Request { params, ..request })?;
    }

    let guest = match &p.guest {
        Some(path) => {
            let bytes = read(path)?;
            let rel = format!("guests/{}.wasm", hex::encode(Sha256::digest(&bytes)));
            write_atomically(&p.feed.join(&rel), &[&bytes])?;
            Some(file_ref(rel, &bytes))
        }
        None => previous.as_ref().and_then(|m| m.guest.clone()),
    };

    // Unchanged list (everything but version and times equal) and guest: re-sign only.
    let unchanged = match (&previous, &prev_body) {
        (Some(prev), Some(prev_body)) => {
            prev_body.len() == body.len() && prev_body[104..] == body[104..] && prev.guest == guest
        }
        _ => false,
    };
    let root_rel = format!("roots/{}.json", root.root.version);
    write_atomically(&p.feed.join(&root_rel), &[&root_bytes])?;

    let (manifest, published) = if unchanged {
        let prev = previous
            .clone()
            .expect("unchanged implies a previous version");
        let m = Manifest {
            published: p.now,
            expires: p.now + p.manifest_lifetime.max(1),
            root_version: root.root.version,
            min_poll_seconds: p.min_poll_seconds,
            ..prev
        };
        let published = Published {
            version: m.version,
            resigned: true,
            snapshot_len: m.snapshot.length,
            deltas: m.deltas.iter().map(|d| (d.from, d.file.length)).collect(),
        };
        (m, published)
    } else {
        let state_sha256 = hex::encode(Sha256::digest(&body));
        let mut file = body.clone();
        p.keys
            .first()
            .ok_or_else(|| feed_error("no signing key"))?
            .sign_append(&mut file);
        let snapshot_rel = format!("snapshots/{}-{version}.hgf", p.series);
        write_atomically(&p.feed.join(&snapshot_rel), &[&file])?;
        let mut deltas = Vec::new();
        for from in version.saturating_sub(p.keep).max(1)..version {
            let old_path = p.feed.join(format!("snapshots/{}-{from}.hgf", p.series));
            let Ok(old_file) = std::fs::read(&old_path) else {
                continue;
            };
            let old = body_of(&old_file);
            match delta::diff(old, &body) {
                Ok(d) => {
                    let rel = format!("deltas/{}-{from}-{version}.hgd", p.series);
                    write_atomically(&p.feed.join(&rel), &[&d])?;
                    deltas.push(DeltaRef {
                        from,
                        to: version,
                        from_sha256: hex::encode(Sha256::digest(old)),
                        file: file_ref(rel, &d),
                    });
                }
                Err(hashgate_guest::Error::DeltaMismatch(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let m = Manifest {
            kind: "hashgate-manifest".into(),
            series: p.series.clone(),
            version,
            root_version: root.root.version,
            published: p.now,
            expires: p.now + p.manifest_lifetime.max(1),
            min_poll_seconds: p.min_poll_seconds,
            state_sha256,
            snapshot: file_ref(snapshot_rel, &file),
            deltas,
            guest,
        };
        let published = Published {
            version,
            resigned: false,
            snapshot_len: file.len() as u64,
            deltas: m.deltas.iter().map(|d| (d.from, d.file.length)).collect(),
        };
        (m, published)
    };

    let mut envelope = manifest.envelope();
    for key in &p.keys {
        envelope.sign(key)?;
    }
    let bytes = envelope.to_bytes();
    if bytes.len() > MAX_DOCUMENT {
        return Err(feed_error(format!(
            "the manifest would be {} bytes, over the {MAX_DOCUMENT}-byte cap (fewer deltas?)",
            bytes.len()
        )));
    }
    // Refuse to publish what gateways would refuse.
    root.manifest(&bytes)?;
    write_atomically(&p.feed.join("manifest.json"), &[&bytes])?;
    prune(&p.feed, &manifest);
    Ok(published)
}

/// Whether some section of `body` needs more bits (or slots) than the previous version
/// gave it.
fn geometry_grew(body: &[u8], previous: Option<&[u8]>) -> Result<bool, Error> {
    let Some(previous) = previous else {
        return Ok(true);
    };
    let (new, old) = (Header::parse(body)?, Header::parse(previous)?);
    let old_bits: BTreeMap<_, _> = old
        .sections
        .iter()
        .map(|s| ((s.algorithm, s.category.clone()), s.bits))
        .collect();
    let old_slots: BTreeMap<_, _> = old
        .pdq
        .iter()
        .map(|s| (s.category.clone(), s.slots))
        .collect();
    Ok(new
        .sections
        .iter()
        .any(|s| old_bits.get(&(s.algorithm, s.category.clone())) != Some(&s.bits))
        || new
            .pdq
            .iter()
            .any(|s| old_slots.get(&s.category) != Some(&s.slots)))
}

/// The sizes to give the sections of `body` so that they take `headroom` more entries
/// before the geometry has to change: bits per digest section, slots per PDQ section.
#[allow(clippy::type_complexity)]
fn headroom(
    body: &[u8],
    headroom: f64,
    fp_rate: f64,
) -> Result<
    (
        Vec<(hashgate_guest::Algorithm, Option<String>, u64)>,
        Vec<(Option<String>, u64)>,
    ),
    Error,
> {
    let header = Header::parse(body)?;
    let room = |entries: u64| (entries as f64 * (1.0 + headroom.max(0.0))).ceil() as u64;
    let bits = header
        .sections
        .iter()
        .map(|s| {
            (
                s.algorithm,
                s.category.clone(),
                section_bits(room(s.entries), fp_rate),
            )
        })
        .collect();
    let slots = header
        .pdq
        .iter()
        .map(|s| {
            (
                s.category.clone(),
                hashgate_guest::pdq_slots(room(s.entries)),
            )
        })
        .collect();
    Ok((bits, slots))
}

/// Removes snapshots and deltas the manifest no longer names.
fn prune(feed: &Path, manifest: &Manifest) {
    let oldest = manifest
        .deltas
        .iter()
        .map(|d| d.from)
        .min()
        .unwrap_or(manifest.version);
    let named: Vec<&str> = std::iter::once(manifest.snapshot.path.as_str())
        .chain(manifest.deltas.iter().map(|d| d.file.path.as_str()))
        .collect();
    for dir in ["snapshots", "deltas"] {
        let Ok(entries) = std::fs::read_dir(feed.join(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let rel = format!("{dir}/{}", entry.file_name().to_string_lossy());
            let keep = named.contains(&rel.as_str())
                || (dir == "snapshots" && snapshot_version(&rel).is_some_and(|v| v >= oldest));
            if !keep {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

fn snapshot_version(rel: &str) -> Option<u64> {
    rel.strip_suffix(".hgf")?.rsplit('-').next()?.parse().ok()
}
