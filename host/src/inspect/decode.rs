//! Decoders: one `Read` over another, for every coding and single-stream compressor the
//! walk undoes. The compressors are well-kept crates (flate2 on zlib-rs, zstd, brotli,
//! bzip2, liblzma); base64 and quoted-printable are the few lines below, since the
//! crates that decode them work on whole buffers, not streams.

use std::io::{self, Read};

use base64::Engine as _;

/// Input read at a time by the hand-written decoders.
const CHUNK: usize = 16 * 1024;

/// A zlib stream starts with CMF/FLG bytes whose value is a multiple of 31, method 8.
pub fn is_zlib(prefix: &[u8]) -> bool {
    prefix.len() >= 2
        && prefix[0] & 0x0f == 8
        && prefix[0] >> 4 <= 7
        && (u16::from(prefix[0]) << 8 | u16::from(prefix[1])) % 31 == 0
}

/// `log2` of the largest zstd window that fits in `memory` bytes.
pub fn zstd_window_log(memory: u64) -> u32 {
    (63 - memory.max(1 << 10).leading_zeros()).clamp(10, 31)
}

/// Decodes `Content-Transfer-Encoding: base64` (RFC 2045): line breaks and other
/// whitespace are skipped; any other byte outside the alphabet is an error, as is data
/// after the padding.
pub struct Base64Reader<R> {
    inner: R,
    /// Alphabet bytes not yet decoded (fewer than 4 after each refill).
    pending: Vec<u8>,
    /// Decoded bytes not yet handed out.
    out: Vec<u8>,
    at: usize,
    ended: bool,
    padded: bool,
}

impl<R: Read> Base64Reader<R> {
    /// A decoder over `inner`.
    pub fn new(inner: R) -> Self {
        Base64Reader {
            inner,
            pending: Vec::with_capacity(CHUNK + 4),
            out: Vec::with_capacity(CHUNK),
            at: 0,
            ended: false,
            padded: false,
        }
    }

    fn refill(&mut self) -> io::Result<()> {
        let mut raw = [0u8; CHUNK];
        let n = self.inner.read(&mut raw)?;
        if n == 0 {
            self.ended = true;
            if !self.pending.is_empty() {
                return Err(invalid("base64: input ends inside a group"));
            }
            return Ok(());
        }
        for &b in &raw[..n] {
            match b {
                b' ' | b'\t' | b'\r' | b'\n' => {}
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'+' | b'/' | b'=' => {
                    if self.padded {
                        return Err(invalid("base64: data after the padding"));
                    }
                    self.pending.push(b);
                    if b == b'=' && self.pending.len().is_multiple_of(4) {
                        self.padded = true;
                    }
                }
                _ => return Err(invalid("base64: a byte outside the alphabet")),
            }
        }
        let whole = self.pending.len() / 4 * 4;
        self.out.clear();
        self.at = 0;
        base64::engine::general_purpose::STANDARD
            .decode_vec(&self.pending[..whole], &mut self.out)
            .map_err(|e| invalid(&format!("base64: {e}")))?;
        self.pending.drain(..whole);
        Ok(())
    }
}

impl<R: Read> Read for Base64Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.out.len() {
            if self.ended {
                return Ok(0);
            }
            self.refill()?;
        }
        Ok(hand_out(&self.out, &mut self.at, buf))
    }
}

/// Decodes `Content-Transfer-Encoding: quoted-printable` (RFC 2045 §6.7): `=XX` is a
/// byte, `=` at the end of a line a soft break; everything else is literal. A broken
/// escape is kept literally, as mail readers do.
pub struct QuotedPrintableReader<R> {
    inner: R,
    /// Input not yet decoded: at most an incomplete escape (`=`, `=X`, `=\r`).
    carry: Vec<u8>,
    out: Vec<u8>,
    at: usize,
    ended: bool,
}

impl<R: Read> QuotedPrintableReader<R> {
    /// A decoder over `inner`.
    pub fn new(inner: R) -> Self {
        QuotedPrintableReader {
            inner,
            carry: Vec::new(),
            out: Vec::with_capacity(CHUNK),
            at: 0,
            ended: false,
        }
    }

    fn refill(&mut self) -> io::Result<()> {
        let mut raw = vec![0u8; CHUNK];
        let n = self.inner.read(&mut raw)?;
        raw.truncate(n);
        self.ended = n == 0;
        let mut input = std::mem::take(&mut self.carry);
        input.extend_from_slice(&raw);
        self.out.clear();
        self.at = 0;
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            if b != b'=' {
                self.out.push(b);
                i += 1;
                continue;
            }
            let rest = &input[i + 1..];
            let need_more = !self.ended && rest.len() < 2;
            match rest {
                [b'\n', ..] => i += 2,
                [b'\r', b'\n', ..] => i += 3,
                [h, l, ..] if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => {
                    let hex = [*h, *l];
                    let text = std::str::from_utf8(&hex).expect("hex digits");
                    self.out
                        .push(u8::from_str_radix(text, 16).expect("hex digits"));
                    i += 3;
                }
                _ if need_more => {
                    self.carry = input[i..].to_vec();
                    break;
                }
                _ => {
                    self.out.push(b'=');
                    i += 1;
                }
            }
        }
        Ok(())
    }
}

impl<R: Read> Read for QuotedPrintableReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.out.len() {
            if self.ended && self.carry.is_empty() {
                return Ok(0);
            }
            self.refill()?;
        }
        Ok(hand_out(&self.out, &mut self.at, buf))
    }
}

/// Copies decoded bytes from `out[*at..]` into `buf`; returns how many.
fn hand_out(out: &[u8], at: &mut usize, buf: &mut [u8]) -> usize {
    let n = buf.len().min(out.len() - *at);
    buf[..n].copy_from_slice(&out[*at..*at + n]);
    *at += n;
    n
}

fn invalid(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::inspect::tests::Trickle;

    /// Reads `r` to the end in reads of `piece` bytes.
    fn all(mut r: impl Read, piece: usize) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; piece];
        loop {
            let n = r.read(&mut buf)?;
            if n == 0 {
                return Ok(out);
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn base64_decodes_in_any_split_and_skips_line_breaks() {
        let data: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
        let text = base64::engine::general_purpose::STANDARD.encode(&data);
        let wrapped: Vec<u8> = text
            .as_bytes()
            .chunks(76)
            .flat_map(|l| l.iter().copied().chain(*b"\r\n"))
            .collect();
        for piece in [1, 3, 77, 100_000] {
            let r = Base64Reader::new(Trickle(&wrapped, piece));
            assert_eq!(all(r, 7).unwrap(), data, "pieces of {piece}");
        }
        for bad in [&b"QUJD*"[..], b"QUI", b"QQ==QUJD"] {
            assert!(all(Base64Reader::new(bad), 10).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn quoted_printable_decodes_escapes_and_soft_breaks_in_any_split() {
        let text = b"caf=C3=A9 =\r\nsoft=\nbreak =3D done=\r\n=4";
        for piece in [1, 2, 5, 1000] {
            let r = QuotedPrintableReader::new(Trickle(text, piece));
            assert_eq!(
                all(r, 3).unwrap(),
                "café softbreak = done=4".as_bytes(),
                "pieces of {piece}"
            );
        }
    }

    #[test]
    fn zlib_headers_are_told_from_raw_deflate() {
        assert!(is_zlib(&[0x78, 0x9c]));
        assert!(is_zlib(&[0x78, 0x01]));
        assert!(!is_zlib(&[0xcb, 0x48]));
        assert_eq!(zstd_window_log(64 << 20), 26);
        assert_eq!(zstd_window_log(8 << 20), 23);
    }
}
