//! Digest lists.
//!
//! **hashgate format** (any file not named `*.hdb` / `*.hsb`): one entry per line,
//!
//! ```text
//! # comment lines and blank lines are ignored
//! sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
//! d41d8cd98f00b204e9800998ecf8427e,terror
//! SHA1:DA39A3EE5E6B4B0D3255BFEF95601890AFD80709 , csam
//! ```
//!
//! an optional `algorithm:` prefix (`md5`, `sha1`, `sha256`, any case), the hex digest
//! (any case; a bare digest's algorithm follows from its length: 32 MD5, 40 SHA-1, 64
//! SHA-256), and an optional `,category` (1 to 24 of `a-z 0-9 . _ -`).
//!
//! A perceptual hash takes the prefix `pdq:` (64 hex digits, as Meta's tools print it;
//! the prefix is required, since 64 digits alone are a SHA-256). The all-zero hash, which
//! PDQ gives pictures too flat to hash, cannot be listed:
//!
//! ```text
//! pdq:f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22,csam
//! ```
//!
//! The same files also take the checksum lines that tools print, so a list can be made
//! with `sha256sum * > list`; the file name is ignored and the entry gets the default
//! category:
//!
//! ```text
//! d41d8cd98f00b204e9800998ecf8427e  empty.txt          # md5sum, sha1sum, sha256sum
//! d41d8cd98f00b204e9800998ecf8427e *empty.bin          # the same, binary mode
//! \d41d8cd98f00b204e9800998ecf8427e  back\\slash      # the same, an escaped name
//! d41d8cd98f00b204e9800998ecf8427e<TAB>empty.txt          # HEX, a tab, a name
//! SHA256 (empty.txt) = e3b0c442…b855                    # BSD, `sha256sum --tag`
//! SHA2-256(empty.txt)= e3b0c442…b855                    # openssl dgst
//! ```
//!
//! A digest followed by two spaces (or a space and `*`, or a tab) is a checksum line
//! unless what follows starts with `,`: then it is a category, as above.
//!
//! **ClamAV** `.hdb` and `.hsb` files: `hash:size:name` per line (size may be `*` in
//! `.hsb`); the algorithm follows from the hash's length; size and name are checked for
//! shape and otherwise ignored.
//!
//! Either kind may start with a UTF-8 byte order mark (Windows editors write one); it is
//! skipped. A UTF-16 file is refused with a message that says so.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use hashgate_guest::{format, Algorithm};

use crate::Error;

/// What an entry lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// A file, by its digest with this algorithm: matched exactly.
    Digest(Algorithm),
    /// A picture, by its 256-bit PDQ hash: matched within a Hamming distance.
    Pdq,
}

/// One entry of a list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    /// What the bytes are.
    pub kind: Kind,
    /// The digest's or the PDQ hash's bytes.
    pub digest: &'a [u8],
    /// The entry's category, if the line or the default gives one.
    pub category: Option<&'a str>,
}

/// The line formats a list file can be in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Syntax {
    /// `[algorithm:]hex[,category]`.
    Hashgate,
    /// ClamAV `hash:size:name`.
    ClamAv,
}

impl Syntax {
    /// The syntax of a file, by its extension.
    pub fn of(path: &Path) -> Syntax {
        match path.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("hdb") || ext.eq_ignore_ascii_case("hsb") => {
                Syntax::ClamAv
            }
            _ => Syntax::Hashgate,
        }
    }
}

/// Reads every entry of the list at `path`, streaming, calling `each` per entry.
/// Entries without a category get `default_category`. Stops at the first bad line with
/// an error naming the file and line.
pub fn read(
    path: &Path,
    default_category: Option<&str>,
    each: &mut dyn FnMut(Entry<'_>) -> Result<(), Error>,
) -> Result<u64, Error> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let syntax = Syntax::of(path);
    let mut line = Vec::with_capacity(256);
    let mut number = 0u64;
    let mut entries = 0u64;
    let mut digest = [0u8; 32];
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| Error::io(path, e))?;
        if n == 0 {
            return Ok(entries);
        }
        number += 1;
        let bad = |reason: String| Error::List {
            path: path.to_path_buf(),
            line: number,
            reason,
        };
        let mut raw = &line[..];
        if number == 1 {
            if let Some(rest) = raw.strip_prefix(b"\xef\xbb\xbf") {
                raw = rest;
            } else if raw.starts_with(b"\xff\xfe") || raw.starts_with(b"\xfe\xff") {
                return Err(bad(
                    "the file is UTF-16 (it starts with a UTF-16 byte order mark); save it as UTF-8"
                        .into(),
                ));
            }
        }
        let raw = raw.trim_ascii();
        if raw.is_empty() || raw[0] == b'#' {
            continue;
        }
        // Fast path for the bulk of large lists: a bare hex digest on its own line.
        if syntax == Syntax::Hashgate && raw.len().is_multiple_of(2) {
            if let Some(algorithm) = Algorithm::from_digest_len(raw.len() / 2) {
                let len = algorithm.digest_len();
                if faster_hex::hex_decode(raw, &mut digest[..len]).is_ok() {
                    each(Entry {
                        kind: Kind::Digest(algorithm),
                        digest: &digest[..len],
                        category: default_category,
                    })?;
                    entries += 1;
                    continue;
                }
            }
        }
        let text = std::str::from_utf8(raw).map_err(|_| bad("not UTF-8".into()))?;
        let (kind, len, category) = match syntax {
            Syntax::Hashgate => parse_hashgate(text, &mut digest).map_err(bad)?,
            Syntax::ClamAv => {
                let (algorithm, len, category) = parse_clamav(text, &mut digest).map_err(bad)?;
                (Kind::Digest(algorithm), len, category)
            }
        };
        each(Entry {
            kind,
            digest: &digest[..len],
            category: category.or(default_category),
        })?;
        entries += 1;
    }
}

fn parse_hashgate<'a>(
    text: &'a str,
    digest: &mut [u8; 32],
) -> Result<(Kind, usize, Option<&'a str>), String> {
    if let Some(checksum) = parse_checksum(text, digest) {
        return checksum.map(|(algorithm, len)| (Kind::Digest(algorithm), len, None));
    }
    let (spec, category) = match text.split_once(',') {
        Some((spec, category)) => (spec.trim_end(), Some(category.trim())),
        None => (text, None),
    };
    if let Some(category) = category {
        check_category(category)?;
    }
    let (named, hex) = match spec.split_once(':') {
        Some((name, hex)) if name.trim().eq_ignore_ascii_case("pdq") => {
            let hex = hex.trim();
            if hex.len() != 64 {
                return Err(format!("a PDQ hash has 64 hex digits, not {}", hex.len()));
            }
            faster_hex::hex_decode(hex.as_bytes(), &mut digest[..])
                .map_err(|_| format!("{hex:?} is not a hex PDQ hash"))?;
            if digest.iter().all(|&b| b == 0) {
                return Err(
                    "the all-zero PDQ hash is what every flat picture gets; it cannot be listed"
                        .into(),
                );
            }
            return Ok((Kind::Pdq, 32, category));
        }
        Some((name, hex)) => (
            Some(
                name.trim()
                    .parse::<Algorithm>()
                    .map_err(|e| e.to_string())?,
            ),
            hex.trim(),
        ),
        None => (None, spec),
    };
    let (algorithm, len) = parse_hex(hex, named, digest)?;
    Ok((Kind::Digest(algorithm), len, category))
}

/// A checksum line as coreutils (`HEX  NAME`, `HEX *NAME`, `\\HEX  NAME`), a tab
/// (`HEX<TAB>NAME`), BSD (`ALG (NAME) = HEX`) or openssl (`ALG(NAME)= HEX`) print it;
/// `None` if the line is not one.
fn parse_checksum(text: &str, digest: &mut [u8; 32]) -> Option<Result<(Algorithm, usize), String>> {
    // coreutils and tab: a hex token, then the separator, then a name.
    let unescaped = text.strip_prefix('\\').unwrap_or(text);
    let hex_len = unescaped
        .bytes()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(unescaped.len());
    let (hex, rest) = unescaped.split_at(hex_len);
    let name = rest
        .strip_prefix("  ")
        .or_else(|| rest.strip_prefix(" *"))
        .or_else(|| rest.strip_prefix('\t'));
    if let Some(name) = name {
        if hex_len > 0 && !name.trim_start().starts_with(',') {
            if name.trim().is_empty() {
                return Some(Err("a checksum line without a file name".into()));
            }
            return Some(parse_hex(hex, None, digest));
        }
    }
    // BSD and openssl: `ALG (NAME) = HEX`, the name may hold anything, even ") = ".
    let (left, hex) = text.rsplit_once('=')?;
    let (tag, _) = left.split_once('(')?;
    if !left.trim_end().ends_with(')') {
        return None;
    }
    let algorithm = match tag.trim().to_ascii_uppercase().as_str() {
        "MD5" => Algorithm::Md5,
        "SHA1" | "SHA-1" => Algorithm::Sha1,
        "SHA256" | "SHA-256" | "SHA2-256" => Algorithm::Sha256,
        other => {
            return Some(Err(format!(
                "a checksum line of {other:?}, not MD5, SHA1 or SHA256"
            )));
        }
    };
    Some(parse_hex(hex.trim(), Some(algorithm), digest))
}

fn parse_clamav<'a>(
    text: &'a str,
    digest: &mut [u8; 32],
) -> Result<(Algorithm, usize, Option<&'a str>), String> {
    let mut fields = text.splitn(3, ':');
    let hex = fields.next().unwrap_or("");
    let size = fields
        .next()
        .ok_or("expected hash:size:name (ClamAV hash signature)")?;
    let name = fields
        .next()
        .ok_or("expected hash:size:name (ClamAV hash signature)")?;
    if size != "*" && size.parse::<u64>().is_err() {
        return Err(format!("size {size:?} is not a number or *"));
    }
    if name.is_empty() {
        return Err("empty signature name".into());
    }
    let (algorithm, len) = parse_hex(hex, None, digest)?;
    Ok((algorithm, len, None))
}

/// Whether `category` may label entries: 1 to 24 of `a-z 0-9 . _ -`, not `canary`; the
/// error says why not.
pub fn check_category(category: &str) -> Result<(), String> {
    if category == hashgate_guest::canary::CATEGORY {
        return Err(format!("category {category:?} is reserved for the canary"));
    }
    if !format::valid_category(category) {
        return Err(format!(
            "category {category:?} must be 1 to 24 of a-z 0-9 . _ -"
        ));
    }
    Ok(())
}

fn parse_hex(
    hex: &str,
    named: Option<Algorithm>,
    out: &mut [u8; 32],
) -> Result<(Algorithm, usize), String> {
    let algorithm = match named {
        Some(a) => a,
        None => Algorithm::from_digest_len(hex.len() / 2)
            .filter(|_| hex.len().is_multiple_of(2))
            .ok_or_else(|| {
                format!(
                    "a digest of {} hex digits is none of MD5 (32), SHA-1 (40), SHA-256 (64)",
                    hex.len()
                )
            })?,
    };
    let len = algorithm.digest_len();
    if hex.len() != len * 2 {
        return Err(format!(
            "a {algorithm} digest has {} hex digits, not {}",
            len * 2,
            hex.len()
        ));
    }
    faster_hex::hex_decode(hex.as_bytes(), &mut out[..len])
        .map_err(|_| format!("{hex:?} is not a hex digest"))?;
    Ok((algorithm, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_kind(line: &str) -> Result<(Kind, Vec<u8>, Option<String>), String> {
        let mut d = [0u8; 32];
        parse_hashgate(line, &mut d).map(|(k, n, c)| (k, d[..n].to_vec(), c.map(String::from)))
    }

    fn parse(line: &str) -> Result<(Algorithm, Vec<u8>, Option<String>), String> {
        match parse_kind(line)? {
            (Kind::Digest(a), d, c) => Ok((a, d, c)),
            (Kind::Pdq, ..) => Err("a PDQ entry".into()),
        }
    }

    #[test]
    fn pdq_lines_need_their_prefix_and_a_hash_that_is_not_zero() {
        let hex = "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22";
        let (k, d, c) = parse_kind(&format!("PDQ:{hex} , csam")).unwrap();
        assert_eq!(
            (k, hex::encode(d), c.as_deref()),
            (Kind::Pdq, hex.to_string(), Some("csam"))
        );
        // Bare, 64 digits are a SHA-256.
        assert_eq!(parse_kind(hex).unwrap().0, Kind::Digest(Algorithm::Sha256));
        for bad in [
            format!("pdq:{}", &hex[2..]),
            format!("pdq:{hex}00"),
            format!("pdq:{}zz", &hex[2..]),
            format!("pdq:{}", "0".repeat(64)),
            format!("pdq:{hex},Bad Label"),
        ] {
            assert!(parse_kind(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hashgate_lines() {
        let (a, d, c) = parse("d41d8cd98f00b204e9800998ecf8427e").unwrap();
        assert_eq!((a, d.len(), c), (Algorithm::Md5, 16, None));
        let (a, _, c) = parse("SHA-1:DA39A3EE5E6B4B0D3255BFEF95601890AFD80709 , csam").unwrap();
        assert_eq!((a, c.as_deref()), (Algorithm::Sha1, Some("csam")));
        assert!(parse("sha256:d41d8cd98f00b204e9800998ecf8427e").is_err());
        assert!(parse("d41d8cd98f00b204e9800998ecf8427").is_err());
        assert!(parse("zz1d8cd98f00b204e9800998ecf8427e").is_err());
        assert!(parse("d41d8cd98f00b204e9800998ecf8427e,Bad Label").is_err());
        assert!(parse("d41d8cd98f00b204e9800998ecf8427e,canary").is_err());
        assert!(parse("blake3:d41d8cd98f00b204e9800998ecf8427e").is_err());
    }

    #[test]
    fn checksum_lines_of_common_tools() {
        let md5 = "d41d8cd98f00b204e9800998ecf8427e";
        let sha256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        for line in [
            format!("{md5}  empty.txt"),
            format!("{md5} *empty.bin"),
            format!("\\{md5}  back\\\\slash"),
            format!("{md5}\tname, with a comma"),
            format!("{md5}  a,b"),
            format!("MD5 (empty.txt) = {md5}"),
            format!("MD5 (odd) = name) = {md5}"),
            format!("MD5(empty.txt)= {md5}"),
        ] {
            let (a, d, c) = parse(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
            assert_eq!((a, d.len(), c), (Algorithm::Md5, 16, None), "{line:?}");
        }
        for line in [
            format!("SHA256 (x) = {sha256}"),
            format!("SHA2-256(x)= {sha256}"),
            format!("{sha256}  x"),
        ] {
            assert_eq!(parse(&line).unwrap().0, Algorithm::Sha256, "{line:?}");
        }
        // The hashgate form with spaces before its category stays that.
        let (_, _, c) = parse(&format!("{md5}  , csam")).unwrap();
        assert_eq!(c.as_deref(), Some("csam"));
        // Wrong lengths, names and tags are errors, not entries.
        for line in [
            format!("{}  x", &md5[1..]),
            format!("{md5}  "),
            format!("SHA512 (x) = {sha256}"),
            format!("SHA1 (x) = {md5}"),
        ] {
            assert!(parse(&line).is_err(), "{line:?}");
        }
    }

    #[test]
    fn a_byte_order_mark_is_skipped_and_utf16_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("list.txt");
        let md5 = "d41d8cd98f00b204e9800998ecf8427e";
        std::fs::write(&path, format!("\u{feff}{md5}  a\r\n{md5}\r\n")).unwrap();
        let mut seen = 0;
        let n = read(&path, None, &mut |_| {
            seen += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!((n, seen), (2, 2));
        std::fs::write(&path, b"\xff\xfed\x004\x00").unwrap();
        let e = read(&path, None, &mut |_| Ok(())).unwrap_err().to_string();
        assert!(e.contains("UTF-16") && e.contains(":1"), "{e}");
    }

    #[test]
    fn clamav_lines() {
        let mut d = [0u8; 32];
        let (a, n, _) =
            parse_clamav("44d88612fea8a8f36de82e1278abb02f:68:Eicar-Test", &mut d).unwrap();
        assert_eq!((a, n), (Algorithm::Md5, 16));
        assert!(parse_clamav("44d88612fea8a8f36de82e1278abb02f:*:X", &mut d).is_ok());
        assert!(parse_clamav("44d88612fea8a8f36de82e1278abb02f:big:X", &mut d).is_err());
        assert!(parse_clamav("44d88612fea8a8f36de82e1278abb02f", &mut d).is_err());
    }
}
