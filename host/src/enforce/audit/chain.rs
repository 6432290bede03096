//! The audit log's hash chain: what makes a removed, edited or reordered record
//! evident.
//!
//! Every line of the log is a link: a JSON object whose first two members are `seq`
//! (1 for the first record the log ever held, then one more per line) and `prev`, the
//! SHA-256 of the previous line's bytes (without its newline; 64 zeros before the first
//! record). Each line thereby commits to every line before it. Every so many records
//! or seconds the writer adds a **checkpoint**, a link of its own signed with the
//! operator's Ed25519 key:
//!
//! ```text
//! {"seq":1001,"prev":"9c1f…","event":"checkpoint","time_ms":1764820000123,"key":"5e0a8b2c41d7f3e9","signature":"…"}
//! ```
//!
//! The signature covers [`CHECKPOINT_DOMAIN`] followed by the line's bytes up to (not
//! including) `,"signature":`, so it signs the position, the whole chain before it
//! (through `prev`), the time and the key id exactly as written; nothing is
//! re-serialised to be checked. Someone who can edit the file but does not hold the
//! key can rewrite the chain after the last checkpoint, never before it.
//!
//! Two more events keep the chain whole through what happens to files:
//! - `recovered`: written when the log is opened after a crash left a torn last line
//!   (no newline). The torn bytes stay; the writer ends them with a newline and writes
//!   this link, which names their length and SHA-256 and chains to the last whole
//!   record, so the torn line is accounted for, not hidden.
//! - a replay: when the file shrank under the writer (logrotate's `copytruncate`
//!   copies, then truncates, and records written in between would be lost), the writer
//!   writes the last links it wrote again, byte for byte, before the next record. A
//!   verifier reading the rotated copy and the new file sees the overlap and checks
//!   that it is identical.

use sha2::{Digest, Sha256};

use crate::trust::{PublicKey, SecretKey};

/// What precedes a checkpoint line's bytes in the signed message (so the signature
/// cannot be taken for one over anything else the key signs).
pub const CHECKPOINT_DOMAIN: &[u8] = b"hashgate audit checkpoint v1\n";

/// `prev` of the first record a log ever holds.
pub const GENESIS: [u8; 32] = [0; 32];

/// Where the chain stands: the last link written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// The last link's `seq` (0 before the first).
    pub seq: u64,
    /// The SHA-256 of the last link's line.
    pub hash: [u8; 32],
}

impl Head {
    /// The head of an empty log.
    pub const GENESIS: Head = Head {
        seq: 0,
        hash: GENESIS,
    };

    /// Appends `record` (a serialised JSON object, `{` first, no newline) to `out` as
    /// the next link, newline included, and moves the head to it.
    pub fn link(&mut self, record: &[u8], out: &mut Vec<u8>) {
        debug_assert_eq!(record.first(), Some(&b'{'));
        let start = out.len();
        self.prefix(out);
        let body = &record[1..];
        if body != b"}" {
            out.push(b',');
        }
        out.extend_from_slice(body);
        self.advance(&out[start..]);
        out.push(b'\n');
    }

    /// Appends a checkpoint link signed with `key` to `out` and moves the head to it.
    pub fn checkpoint(&mut self, key: &SecretKey, time_ms: u64, out: &mut Vec<u8>) {
        let start = out.len();
        self.prefix(out);
        out.extend_from_slice(
            format!(
                ",\"event\":\"checkpoint\",\"time_ms\":{time_ms},\"key\":\"{}\"",
                hex::encode(key.public_key().id())
            )
            .as_bytes(),
        );
        let signature = key.sign(&signed_message(&out[start..]));
        out.extend_from_slice(
            format!(",\"signature\":\"{}\"}}", hex::encode(signature)).as_bytes(),
        );
        self.advance(&out[start..]);
        out.push(b'\n');
    }

    /// Where the chain stands after `line` (a link, without its newline).
    pub fn after(line: &[u8]) -> Option<Head> {
        let seq = link_seq(line)?;
        Some(Head {
            seq,
            hash: line_hash(line),
        })
    }

    fn prefix(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(
            format!(
                "{{\"seq\":{},\"prev\":\"{}\"",
                self.seq + 1,
                hex::encode(self.hash)
            )
            .as_bytes(),
        );
    }

    fn advance(&mut self, line: &[u8]) {
        self.seq += 1;
        self.hash = line_hash(line);
    }
}

/// The SHA-256 of a line (its bytes without the newline): what the next link's `prev`
/// holds.
pub fn line_hash(line: &[u8]) -> [u8; 32] {
    Sha256::digest(line).into()
}

/// The `seq` of a link, read from the prefix the writer gives every line (`None` for a
/// line that is not a link, or whose `seq` leaves no room for a next one).
pub fn link_seq(line: &[u8]) -> Option<u64> {
    let rest = line.strip_prefix(b"{\"seq\":")?;
    let end = rest.iter().position(|b| !b.is_ascii_digit())?;
    let seq: u64 = std::str::from_utf8(&rest[..end]).ok()?.parse().ok()?;
    (seq < u64::MAX).then_some(seq)
}

/// What a checkpoint's signature covers: [`CHECKPOINT_DOMAIN`], then the line up to
/// its `,"signature":`.
fn signed_message(unsigned: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(CHECKPOINT_DOMAIN.len() + unsigned.len());
    message.extend_from_slice(CHECKPOINT_DOMAIN);
    message.extend_from_slice(unsigned);
    message
}

/// Why a checkpoint line does not check out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckpointError {
    /// Occurs when the line has no `"signature":"<128 hex digits>"}` at its end.
    Unsigned,
    /// Occurs when the checkpoint names a key other than the one it is checked with.
    OtherKey {
        /// The key id the checkpoint names.
        named: String,
    },
    /// Occurs when the signature is not the key's over the line.
    BadSignature,
}

impl std::fmt::Display for CheckpointError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckpointError::Unsigned => f.write_str("checkpoint without a signature"),
            CheckpointError::OtherKey { named } => {
                write!(f, "checkpoint signed by key {named}, not by the key given")
            }
            CheckpointError::BadSignature => {
                f.write_str("checkpoint signature does not verify (the line was edited)")
            }
        }
    }
}

/// Checks a checkpoint line's signature with `key` (`named_key` is the line's `key`).
pub fn check_checkpoint(
    line: &[u8],
    named_key: &str,
    key: &PublicKey,
) -> Result<(), CheckpointError> {
    const MARK: &[u8] = b",\"signature\":\"";
    let at = memchr::memmem::rfind(line, MARK).ok_or(CheckpointError::Unsigned)?;
    let signature = line[at + MARK.len()..]
        .strip_suffix(b"\"}")
        .and_then(|h| hex::decode(h).ok())
        .filter(|s| s.len() == 64)
        .ok_or(CheckpointError::Unsigned)?;
    if named_key != hex::encode(key.id()) {
        return Err(CheckpointError::OtherKey {
            named: named_key.to_string(),
        });
    }
    if key.verify_message(&signed_message(&line[..at]), &signature) {
        Ok(())
    } else {
        Err(CheckpointError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_chain_each_line_to_the_one_before() {
        let mut head = Head::GENESIS;
        let mut out = Vec::new();
        head.link(br#"{"a":1}"#, &mut out);
        head.link(br#"{"b":2}"#, &mut out);
        let text = String::from_utf8(out.clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            format!(r#"{{"seq":1,"prev":"{}","a":1}}"#, "0".repeat(64))
        );
        let first = hex::encode(line_hash(lines[0].as_bytes()));
        assert_eq!(lines[1], format!(r#"{{"seq":2,"prev":"{first}","b":2}}"#));
        assert_eq!(head, Head::after(lines[1].as_bytes()).unwrap());
        assert_eq!(link_seq(lines[1].as_bytes()), Some(2));
        assert_eq!(link_seq(br#"{"time":1}"#), None);
        assert_eq!(link_seq(br#"{"seq":18446744073709551615,"prev":""}"#), None);
    }

    #[test]
    fn a_checkpoint_verifies_with_its_key_only_and_only_unedited() {
        let key = SecretKey::from_seed(&[7; 32]);
        let other = SecretKey::from_seed(&[8; 32]);
        let mut head = Head::GENESIS;
        let mut out = Vec::new();
        head.link(br#"{"a":1}"#, &mut out);
        head.checkpoint(&key, 1_764_820_000_123, &mut out);
        let line = out.split(|&b| b == b'\n').nth(1).unwrap().to_vec();
        let named = hex::encode(key.public_key().id());
        assert_eq!(check_checkpoint(&line, &named, &key.public_key()), Ok(()));
        assert!(matches!(
            check_checkpoint(&line, &named, &other.public_key()),
            Err(CheckpointError::OtherKey { .. })
        ));
        let edited = String::from_utf8(line.clone())
            .unwrap()
            .replace("1764820000123", "1764820000124");
        assert_eq!(
            check_checkpoint(edited.as_bytes(), &named, &key.public_key()),
            Err(CheckpointError::BadSignature)
        );
        let cut = &line[..line.len() - 3];
        assert_eq!(
            check_checkpoint(cut, &named, &key.public_key()),
            Err(CheckpointError::Unsigned)
        );
    }
}
