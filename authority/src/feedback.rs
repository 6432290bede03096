//! Operators' feedback reports ([`hashgate_trust::feedback`]), received and totalled:
//! a wrongly listed entry shows up here as hits from many operators and as their
//! allow-list entries, to the one party that can fix the list.
//!
//! Operators are registered as a directory of public keys, `NAME.pub` each. An
//! accepted report is kept as it came (signed) in `DIR/NAME/SEQUENCE.report`, and the
//! operator's last sequence in `DIR/NAME/last`: a report whose sequence is not above it
//! is a replay and refused.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use hashgate_trust::feedback::{self, Report};
use hashgate_trust::keys::PublicKey;

use crate::Error;

/// Why a report is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Occurs when no registered operator's key signed the report, or its bytes were
    /// changed after signing.
    Unsigned(String),
    /// Occurs when the report is not a well-formed report of its signer.
    Malformed(String),
    /// Occurs when the report's sequence is not above the operator's last: a replay,
    /// or a report already received.
    Replayed {
        /// The report's sequence.
        sequence: u64,
        /// The last one accepted.
        last: u64,
    },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Unsigned(m) => write!(f, "not signed by a registered operator: {m}"),
            Refusal::Malformed(m) => write!(f, "not a report: {m}"),
            Refusal::Replayed { sequence, last } => write!(
                f,
                "sequence {sequence} is not above {last}, the last accepted: a replay or already received"
            ),
        }
    }
}

/// Where reports arrive.
pub struct Inbox {
    operators: Vec<(String, PublicKey)>,
    dir: PathBuf,
    /// Serialises receipts, so two copies of one report cannot both pass the sequence
    /// check.
    lock: Mutex<()>,
}

impl Inbox {
    /// The operators registered in `operators` (`NAME.pub` files), reports kept in `dir`.
    ///
    /// Fails when the directory cannot be read, holds a key that does not parse, or
    /// holds none.
    pub fn open(operators: &Path, dir: &Path) -> Result<Inbox, Error> {
        let mut found = Vec::new();
        let entries = std::fs::read_dir(operators).map_err(|e| Error::io(operators, e))?;
        for entry in entries {
            let path = entry.map_err(|e| Error::io(operators, e))?.path();
            if path.extension().is_some_and(|x| x == "pub") {
                let name = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .filter(|s| {
                        s.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                    })
                    .ok_or_else(|| {
                        Error::Config(format!(
                            "{}: an operator's name is A-Z a-z 0-9 . _ -",
                            path.display()
                        ))
                    })?
                    .to_string();
                found.push((name, PublicKey::read(&path)?));
            }
        }
        if found.is_empty() {
            return Err(Error::Config(format!(
                "{}: no operator keys (NAME.pub) in it",
                operators.display()
            )));
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        Ok(Inbox {
            operators: found,
            dir: dir.to_path_buf(),
            lock: Mutex::new(()),
        })
    }

    /// Operators registered.
    pub fn operators(&self) -> usize {
        self.operators.len()
    }

    /// Checks and keeps one sealed report; the operator's name and the report.
    pub fn receive(&self, sealed: &[u8]) -> Result<Result<(String, Report), Refusal>, Error> {
        let keys: Vec<PublicKey> = self.operators.iter().map(|(_, k)| k.clone()).collect();
        let (key, report) = match feedback::open(sealed, &keys) {
            Ok(opened) => opened,
            Err(hashgate_trust::Error::Signature(m)) => return Ok(Err(Refusal::Unsigned(m))),
            Err(e) => return Ok(Err(Refusal::Malformed(e.to_string()))),
        };
        let name = self
            .operators
            .iter()
            .find(|(_, k)| *k == key)
            .map(|(n, _)| n.clone())
            .expect("opened with these keys");
        let _held = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let dir = self.dir.join(&name);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let last_path = dir.join("last");
        let last = match std::fs::read_to_string(&last_path) {
            Ok(text) => text.trim().parse().unwrap_or(u64::MAX),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(Error::io(&last_path, e)),
        };
        if report.sequence <= last {
            return Ok(Err(Refusal::Replayed {
                sequence: report.sequence,
                last,
            }));
        }
        let kept = dir.join(format!("{}.report", report.sequence));
        hashgate_trust::durable::write_atomically(&kept, sealed)?;
        hashgate_trust::durable::write_atomically(
            &last_path,
            format!("{}\n", report.sequence).as_bytes(),
        )?;
        Ok(Ok((name, report)))
    }
}

/// The audit checkpoints operator `name`'s reports carried, oldest first: the witness
/// `hashgate audit verify --witness` checks that operator's log against.
///
/// Fails when the operator's directory or a report cannot be read.
pub fn checkpoints(dir: &Path, name: &str) -> Result<Vec<String>, Error> {
    let mut found: Vec<(u64, String)> = kept_reports(&dir.join(name))?
        .into_iter()
        .filter_map(|r| Some((r.sequence, r.checkpoint?)))
        .collect();
    found.sort();
    found.dedup_by(|a, b| a.1 == b.1);
    Ok(found.into_iter().map(|(_, line)| line).collect())
}

/// The reports kept in one operator's directory (their bodies, already verified when
/// they were received).
fn kept_reports(operator: &Path) -> Result<Vec<Report>, Error> {
    let mut reports = Vec::new();
    for file in std::fs::read_dir(operator).map_err(|e| Error::io(operator, e))? {
        let path = file.map_err(|e| Error::io(operator, e))?.path();
        if path.extension().is_none_or(|x| x != "report") {
            continue;
        }
        let sealed = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let report = feedback::body(&sealed)
            .and_then(|b| serde_json::from_slice(b).ok())
            .ok_or_else(|| Error::Config(format!("{}: not a kept report", path.display())))?;
        reports.push(report);
    }
    Ok(reports)
}

/// One listed entry across every operator's reports.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Total {
    /// The entry.
    pub entry: String,
    /// Hits reported, all operators together.
    pub hits: u64,
    /// Operators that reported hits of it.
    pub operators: usize,
    /// Operators whose latest report allow-lists it.
    pub allowed_by: usize,
}

/// Per-entry totals over every report kept in `dir`, most hits first (then the most
/// allow-listed).
///
/// Fails when the directory or a report cannot be read.
pub fn totals(dir: &Path) -> Result<Vec<Total>, Error> {
    let mut by_entry: BTreeMap<String, (u64, std::collections::BTreeSet<String>, usize)> =
        BTreeMap::new();
    let operators = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for operator in operators {
        let operator = operator.map_err(|e| Error::io(dir, e))?.path();
        if !operator.is_dir() {
            continue;
        }
        let name = operator
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let mut latest: Option<Report> = None;
        for report in kept_reports(&operator)? {
            for count in &report.hits {
                let e = by_entry.entry(count.entry.clone()).or_default();
                e.0 += count.hits;
                e.1.insert(name.clone());
            }
            if latest.as_ref().is_none_or(|l| l.sequence < report.sequence) {
                latest = Some(report);
            }
        }
        for entry in latest.map(|r| r.allowed).unwrap_or_default() {
            by_entry.entry(entry).or_default().2 += 1;
        }
    }
    let mut all: Vec<Total> = by_entry
        .into_iter()
        .map(|(entry, (hits, ops, allowed_by))| Total {
            entry,
            hits,
            operators: ops.len(),
            allowed_by,
        })
        .collect();
    all.sort_by(|a, b| {
        (b.hits, b.allowed_by)
            .cmp(&(a.hits, a.allowed_by))
            .then_with(|| a.entry.cmp(&b.entry))
    });
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hashgate_trust::feedback::{seal, EntryCount};
    use hashgate_trust::keys::SecretKey;

    #[test]
    fn reports_are_taken_once_in_order_from_registered_operators_only() {
        let dir = tempfile::tempdir().unwrap();
        let ops = dir.path().join("operators");
        std::fs::create_dir(&ops).unwrap();
        let (a, b) = (
            SecretKey::from_seed(&[1; 32]),
            SecretKey::from_seed(&[2; 32]),
        );
        std::fs::write(ops.join("alpha.pub"), a.public_key().to_pem()).unwrap();
        std::fs::write(ops.join("beta.pub"), b.public_key().to_pem()).unwrap();
        let inbox = Inbox::open(&ops, &dir.path().join("in")).unwrap();
        let report = |key: &SecretKey, seq: u64, hits: u64, allowed: &[&str]| {
            let r = Report {
                hits: vec![EntryCount {
                    entry: "sha256:aa".into(),
                    hits,
                }],
                allowed: allowed.iter().map(|s| s.to_string()).collect(),
                ..Report::new(&key.public_key(), seq)
            };
            seal(&r, key)
        };
        let first = report(&a, 10, 3, &[]);
        assert_eq!(inbox.receive(&first).unwrap().unwrap().0, "alpha");
        assert!(matches!(
            inbox.receive(&first).unwrap(),
            Err(Refusal::Replayed {
                sequence: 10,
                last: 10
            })
        ));
        assert!(matches!(
            inbox.receive(&report(&a, 9, 1, &[])).unwrap(),
            Err(Refusal::Replayed { .. })
        ));
        inbox.receive(&report(&a, 11, 2, &[])).unwrap().unwrap();
        inbox
            .receive(&report(&b, 5, 4, &["sha256:aa", "md5:bb"]))
            .unwrap()
            .unwrap();
        let stranger = SecretKey::from_seed(&[3; 32]);
        assert!(matches!(
            inbox.receive(&report(&stranger, 99, 1, &[])).unwrap(),
            Err(Refusal::Unsigned(_))
        ));
        let mut forged = report(&b, 6, 1000, &[]);
        let at = forged.iter().position(|&c| c == b'1').unwrap();
        forged[at] = b'9';
        assert!(matches!(
            inbox.receive(&forged).unwrap(),
            Err(Refusal::Unsigned(_))
        ));
        let totals = totals(&dir.path().join("in")).unwrap();
        assert_eq!(
            totals[0],
            Total {
                entry: "sha256:aa".into(),
                hits: 9,
                operators: 2,
                allowed_by: 1
            }
        );
        assert_eq!(
            totals[1],
            Total {
                entry: "md5:bb".into(),
                hits: 0,
                operators: 0,
                allowed_by: 1
            }
        );
    }
}
