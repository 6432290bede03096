//! Checking an audit log's chain ([`super::chain`]): `hashgate audit verify`.
//!
//! [`verify`] reads one or more files of one log, oldest first (`audit.jsonl.2`,
//! `audit.jsonl.1`, `audit.jsonl`; gzipped ones are read through), and proves that between the first record given and
//! the last checkpoint no record was removed, edited, reordered or inserted; it names
//! the first line where that is not so. What it cannot prove, it reports: records
//! after the last checkpoint (unsigned until the writer's next one), and records before
//! the first file given (rotated away).
//!
//! ```
//! use hashgate_host::enforce::audit::chain::Head;
//! use hashgate_host::enforce::audit::verify::{verify, Break};
//! use hashgate_host::trust::SecretKey;
//!
//! let key = SecretKey::from_seed(&[3; 32]);
//! let (mut head, mut log) = (Head::GENESIS, Vec::new());
//! for n in 0..3 {
//!     head.link(format!(r#"{{"n":{n}}}"#).as_bytes(), &mut log);
//! }
//! head.checkpoint(&key, 1_764_820_000_000, &mut log);
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("audit.jsonl");
//! std::fs::write(&path, &log).unwrap();
//! let proof = verify(&[path.clone()], Some(&key.public_key())).unwrap();
//! assert_eq!((proof.records, proof.signed_through), (4, Some(4)));
//!
//! // The second record removed: the third names what is missing.
//! let text = String::from_utf8(log).unwrap();
//! let mut lines: Vec<&str> = text.lines().collect();
//! lines.remove(1);
//! std::fs::write(&path, lines.join("\n") + "\n").unwrap();
//! let broken = verify(&[path], Some(&key.public_key())).unwrap_err();
//! assert_eq!(broken.line(), Some(2));
//! assert!(matches!(broken.why(), Some(Break::Missing { from: 2, to: 2 })));
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::chain::{self, CheckpointError, Head, GENESIS};
use crate::trust::PublicKey;
use crate::Error;

/// A line of a log file: the file, and the line's number in it (from 1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// The file.
    pub file: PathBuf,
    /// The line's number, from 1.
    pub number: u64,
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.number)
    }
}

/// What a verified log proves, and what it leaves open.
#[derive(Clone, Debug, Default)]
pub struct Proof {
    /// Links read (records, checkpoints and recoveries; a link written again after a
    /// truncation counts once).
    pub records: u64,
    /// The first link's `seq`: above 1 when earlier records are in files not given.
    pub first: u64,
    /// The last link's `seq`.
    pub last: u64,
    /// Checkpoints read (verified, when a key was given).
    pub checkpoints: u64,
    /// The `seq` of the last checkpoint: everything from `first` to it is proven.
    pub signed_through: Option<u64>,
    /// Whether checkpoints were checked against a key.
    pub keyed: bool,
    /// Where bytes no record accounts for were found and a `recovered` link names them
    /// (a crash mid-write, or bytes appended by someone else).
    pub recovered: Vec<Line>,
    /// Links written again after a truncation (`copytruncate`), identical to the ones
    /// before.
    pub replayed: u64,
}

impl Proof {
    /// Links after the last checkpoint: not signed yet, so not proven.
    pub fn unsigned_tail(&self) -> u64 {
        match self.signed_through {
            Some(s) => self.last - s,
            None => self.records,
        }
    }
}

/// How the chain is broken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Break {
    /// Occurs when a line is not a link (edited, or inserted) and no `recovered` link
    /// accounts for it.
    NotARecord,
    /// Occurs when the last line has no newline: cut off mid-record, and not (yet)
    /// accounted for by the writer.
    Truncated,
    /// Occurs when the line's `seq` skips: the records `from..=to` were removed.
    Missing {
        /// The first missing `seq`.
        from: u64,
        /// The last missing `seq`.
        to: u64,
    },
    /// Occurs when a `seq` comes again or goes back, and the line is not the same link
    /// written again after a truncation: records reordered or a record replaced.
    OutOfOrder {
        /// The line's `seq`.
        seq: u64,
        /// The `seq` expected.
        expected: u64,
    },
    /// Occurs when the next link does not chain to this one: this record (or the next
    /// one's `prev`) was edited.
    Edited,
    /// Occurs when the first record of the log (`seq` 1) does not chain to the genesis.
    Genesis,
    /// Occurs when a checkpoint does not verify.
    Checkpoint(CheckpointError),
    /// Occurs when the link differs from the checkpoint witnessed elsewhere for its
    /// `seq`: the log was rewritten from there.
    Witness,
}

impl fmt::Display for Break {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Break::NotARecord => f.write_str("not a record of the chain (edited or inserted)"),
            Break::Truncated => f.write_str("a record cut off (the file was truncated)"),
            Break::Missing { from, to } if from == to => {
                write!(f, "record {from} is missing (removed)")
            }
            Break::Missing { from, to } => {
                write!(f, "records {from} to {to} are missing (removed)")
            }
            Break::OutOfOrder { seq, expected } => write!(
                f,
                "record {seq} where {expected} was expected (records reordered or replaced)"
            ),
            Break::Edited => f.write_str("edited (the next record does not chain to it)"),
            Break::Genesis => f.write_str("the first record does not start the chain"),
            Break::Checkpoint(e) => e.fmt(f),
            Break::Witness => {
                f.write_str("not the checkpoint witnessed elsewhere for this record (rewritten)")
            }
        }
    }
}

/// Why a log does not verify.
#[derive(Debug)]
pub enum VerifyError {
    /// Occurs when a file cannot be read.
    Io(Error),
    /// Occurs when the chain is broken at `at`.
    Broken {
        /// The first bad line.
        at: Line,
        /// How.
        why: Break,
    },
    /// Occurs when a checkpoint witnessed elsewhere (sent to the authority) is past the
    /// files' last record: the log was cut after it was written.
    Cut {
        /// The witnessed checkpoint's `seq`.
        witnessed: u64,
        /// The last record the files hold.
        last: u64,
    },
    /// Occurs when a witness line is not a checkpoint signed by the key given.
    BadWitness(String),
    /// Occurs when a key was given and the files hold records but no checkpoint:
    /// nothing in them is signed, so nothing is proven.
    Unsigned {
        /// Links read.
        records: u64,
    },
}

impl VerifyError {
    /// The number of the first bad line, if the chain is broken.
    pub fn line(&self) -> Option<u64> {
        match self {
            VerifyError::Broken { at, .. } => Some(at.number),
            _ => None,
        }
    }

    /// How the chain is broken, if it is.
    pub fn why(&self) -> Option<&Break> {
        match self {
            VerifyError::Broken { why, .. } => Some(why),
            _ => None,
        }
    }
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerifyError::Io(e) => e.fmt(f),
            VerifyError::Broken { at, why } => write!(f, "{at}: {why}"),
            VerifyError::Cut { witnessed, last } => write!(
                f,
                "checkpoint {witnessed}, witnessed elsewhere, is not in the files, which end at record {last}: records were removed from the end"
            ),
            VerifyError::BadWitness(why) => write!(f, "witness: {why}"),
            VerifyError::Unsigned { records } => write!(
                f,
                "{records} records and no checkpoint: nothing is signed (is `audit_key` set?)"
            ),
        }
    }
}

impl std::error::Error for VerifyError {}

/// The fields of a link the check reads.
#[derive(Deserialize)]
struct Fields {
    seq: u64,
    prev: String,
    event: Option<String>,
    key: Option<String>,
    foreign_bytes: Option<u64>,
    foreign_sha256: Option<String>,
}

/// Links remembered to check a replay against.
const RING: usize = 4096;

/// Checks the chain through `files` (oldest first), and each checkpoint against `key`
/// when one is given.
pub fn verify(files: &[PathBuf], key: Option<&PublicKey>) -> Result<Proof, VerifyError> {
    verify_witnessed(files, key, &[])
}

/// [`verify`], and that each of `witnessed` (checkpoint lines kept elsewhere: the
/// authority receives the last one in every feedback report) is in the files as it
/// was, unless it is from before the first file: a log cut after a checkpoint was
/// witnessed no longer verifies.
pub fn verify_witnessed(
    files: &[PathBuf],
    key: Option<&PublicKey>,
    witnessed: &[String],
) -> Result<Proof, VerifyError> {
    let mut seen = std::collections::BTreeMap::new();
    for line in witnessed.iter().map(|l| l.trim()).filter(|l| !l.is_empty()) {
        let seq = chain::link_seq(line.as_bytes())
            .ok_or_else(|| VerifyError::BadWitness(format!("not a checkpoint: {line}")))?;
        if let Some(key) = key {
            let named: serde_json::Value = serde_json::from_str(line)
                .map_err(|e| VerifyError::BadWitness(format!("record {seq}: {e}")))?;
            let named = named["key"].as_str().unwrap_or_default();
            chain::check_checkpoint(line.as_bytes(), named, key)
                .map_err(|e| VerifyError::BadWitness(format!("record {seq}: {e}")))?;
        }
        seen.insert(seq, line.as_bytes().to_vec());
    }
    let mut check = Check {
        witnessed: seen,
        key,
        proof: Proof {
            keyed: key.is_some(),
            ..Proof::default()
        },
        head: None,
        head_line: None,
        ring: VecDeque::new(),
        foreign: None,
    };
    for file in files {
        check.file(file)?;
    }
    if let Some(foreign) = check.foreign.take() {
        let why = if foreign.torn {
            Break::Truncated
        } else {
            Break::NotARecord
        };
        return Err(VerifyError::Broken {
            at: foreign.at,
            why,
        });
    }
    if let Some((&witnessed, _)) = check.witnessed.range(check.proof.last + 1..).next() {
        return Err(VerifyError::Cut {
            witnessed,
            last: check.proof.last,
        });
    }
    if key.is_some() && check.proof.records > 0 && check.proof.checkpoints == 0 {
        return Err(VerifyError::Unsigned {
            records: check.proof.records,
        });
    }
    Ok(check.proof)
}

/// Lines no link accounts for yet.
/// The longest line read whole: far longer than any record the writer makes (a request
/// path is bounded by the front-ends' header limits), so a huge line of foreign bytes
/// is hashed in pieces instead of held in memory.
const MAX_LINE: usize = 1 << 20;

/// Reads into `buf` up to and including the next newline, or `cap` bytes, or to the
/// end; returns whether the line ended (a newline, or the end of the input) within them.
fn read_capped(reader: &mut dyn BufRead, buf: &mut Vec<u8>, cap: usize) -> std::io::Result<bool> {
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            return Ok(true);
        }
        let take = available.len().min(cap - buf.len());
        if let Some(i) = available[..take].iter().position(|&b| b == b'\n') {
            buf.extend_from_slice(&available[..=i]);
            reader.consume(i + 1);
            return Ok(true);
        }
        buf.extend_from_slice(&available[..take]);
        reader.consume(take);
        if buf.len() == cap {
            return Ok(false);
        }
    }
}

struct Foreign {
    at: Line,
    hash: Sha256,
    bytes: u64,
    /// Whether the last of them has no newline.
    torn: bool,
}

struct Check<'k> {
    key: Option<&'k PublicKey>,
    /// Checkpoint lines witnessed elsewhere, by `seq`.
    witnessed: std::collections::BTreeMap<u64, Vec<u8>>,
    proof: Proof,
    head: Option<Head>,
    /// Where the head's line is.
    head_line: Option<Line>,
    /// The last links' `seq` and hash.
    ring: VecDeque<(u64, [u8; 32])>,
    foreign: Option<Foreign>,
}

impl Check<'_> {
    fn file(&mut self, path: &Path) -> Result<(), VerifyError> {
        let io = |e| VerifyError::Io(Error::io(path, e));
        let mut file = BufReader::new(File::open(path).map_err(io)?);
        // logrotate's `compress` leaves the older files gzipped.
        let gzipped = file.fill_buf().map_err(io)?.starts_with(&[0x1f, 0x8b]);
        let mut reader: Box<dyn BufRead> = if gzipped {
            Box::new(BufReader::new(flate2::bufread::MultiGzDecoder::new(file)))
        } else {
            Box::new(file)
        };
        let mut buf = Vec::new();
        let mut number = 0;
        let io = |e| VerifyError::Io(Error::io(path, e));
        loop {
            buf.clear();
            let ended = read_capped(&mut *reader, &mut buf, MAX_LINE).map_err(io)?;
            if buf.is_empty() {
                return Ok(());
            }
            number += 1;
            let at = Line {
                file: path.to_path_buf(),
                number,
            };
            if ended {
                self.line(&buf, at)?;
                continue;
            }
            // Longer than any record: foreign bytes, read on piece by piece (never a
            // record, whatever its tail looks like).
            self.foreign(&buf, at.clone());
            loop {
                buf.clear();
                let ended = read_capped(&mut *reader, &mut buf, MAX_LINE).map_err(io)?;
                if buf.is_empty() {
                    break;
                }
                self.foreign(&buf, at.clone());
                if ended {
                    break;
                }
            }
        }
    }

    /// Counts `raw` among the foreign bytes that start at `at` (or go on from earlier).
    fn foreign(&mut self, raw: &[u8], at: Line) {
        let foreign = self.foreign.get_or_insert_with(|| Foreign {
            at,
            hash: Sha256::new(),
            bytes: 0,
            torn: false,
        });
        foreign.hash.update(raw);
        foreign.bytes += raw.len() as u64;
        foreign.torn = !raw.ends_with(b"\n");
    }

    fn line(&mut self, raw: &[u8], at: Line) -> Result<(), VerifyError> {
        let line = raw.strip_suffix(b"\n").unwrap_or(raw);
        let fields = chain::link_seq(line)
            .and_then(|seq| {
                let fields: Fields = serde_json::from_slice(line).ok()?;
                (fields.seq == seq).then_some(fields)
            })
            .filter(|_| line.len() < raw.len());
        let Some(fields) = fields else {
            self.foreign(raw, at);
            return Ok(());
        };
        let broken = |at: Line, why| Err(VerifyError::Broken { at, why });
        let prev: Option<[u8; 32]> = hex::decode(&fields.prev)
            .ok()
            .and_then(|p| p.try_into().ok());
        let Some(prev) = prev else {
            return broken(at, Break::NotARecord);
        };
        let hash = chain::line_hash(line);
        if let Some(foreign) = self.foreign.take() {
            // Only a `recovered` link naming exactly these bytes accounts for them.
            let named = fields.event.as_deref() == Some("recovered")
                && fields.foreign_bytes == Some(foreign.bytes)
                && fields.foreign_sha256.as_deref()
                    == Some(hex::encode(foreign.hash.finalize()).as_str());
            if !named {
                return broken(foreign.at, Break::NotARecord);
            }
            self.proof.recovered.push(foreign.at);
        }
        match self.head {
            None => {
                if fields.seq == 1 && prev != GENESIS {
                    return broken(at, Break::Genesis);
                }
                self.proof.first = fields.seq;
            }
            Some(head) if fields.seq == head.seq + 1 => {
                if prev != head.hash {
                    let edited = self.head_line.clone().unwrap_or(at);
                    return broken(edited, Break::Edited);
                }
            }
            Some(head) if fields.seq <= head.seq => {
                let same = self
                    .ring
                    .iter()
                    .any(|&(seq, h)| seq == fields.seq && h == hash);
                if !same {
                    let expected = head.seq + 1;
                    return broken(
                        at,
                        Break::OutOfOrder {
                            seq: fields.seq,
                            expected,
                        },
                    );
                }
                self.proof.replayed += 1;
                return Ok(());
            }
            Some(head) => {
                let (from, to) = (head.seq + 1, fields.seq - 1);
                return broken(at, Break::Missing { from, to });
            }
        }
        if self
            .witnessed
            .get(&fields.seq)
            .is_some_and(|w| w.as_slice() != line)
        {
            return broken(at, Break::Witness);
        }
        if fields.event.as_deref() == Some("checkpoint") {
            if let Some(key) = self.key {
                let named = fields.key.as_deref().unwrap_or_default();
                if let Err(e) = chain::check_checkpoint(line, named, key) {
                    return broken(at, Break::Checkpoint(e));
                }
            }
            self.proof.checkpoints += 1;
            self.proof.signed_through = Some(fields.seq);
        }
        self.proof.records += 1;
        self.proof.last = fields.seq;
        self.head = Some(Head {
            seq: fields.seq,
            hash,
        });
        self.head_line = Some(at);
        self.ring.push_back((fields.seq, hash));
        if self.ring.len() > RING {
            self.ring.pop_front();
        }
        Ok(())
    }
}
