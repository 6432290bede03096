//! S3's aws-chunked framing (what current AWS SDKs send over https): the object is the
//! decoded payload. Push-fed, since the gateway forwards the framed body unchanged and
//! only hashes what it carries.

use bytes::Bytes;

/// Occurs when an aws-chunked body's framing is broken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("aws-chunked: {0}")]
pub struct AwsChunkedError(String);

/// Longest chunk-size or trailer line accepted (a SigV4 chunk signature is ~100 bytes).
const MAX_LINE: usize = 4096;

#[derive(Debug, Default)]
enum State {
    /// Reading a chunk-size line.
    #[default]
    Size,
    /// Reading this many data bytes.
    Data(u64),
    /// Reading the CRLF after a chunk's data (bytes of it seen).
    DataEnd(usize),
    /// Reading trailer lines after the last chunk.
    Trailers,
    /// The last chunk and trailers are read.
    Done,
}

/// Decodes S3 aws-chunked framing: `hex-size[;chunk-signature=…]\r\n data \r\n`, ending
/// with a zero-size chunk, optional trailers (`x-amz-checksum-crc32:…`,
/// `x-amz-trailer-signature:…`) and a blank line.
#[derive(Debug, Default)]
pub struct AwsChunkedDecoder {
    state: State,
    line: Vec<u8>,
}

impl AwsChunkedDecoder {
    /// Feeds `frame`; returns the payload bytes in it (slices of `frame`, not copies).
    pub fn push(&mut self, frame: &Bytes) -> Result<Vec<Bytes>, AwsChunkedError> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < frame.len() {
            match self.state {
                State::Data(left) => {
                    let n = (frame.len() - at).min(usize::try_from(left).unwrap_or(usize::MAX));
                    out.push(frame.slice(at..at + n));
                    at += n;
                    self.state = match left - n as u64 {
                        0 => State::DataEnd(0),
                        left => State::Data(left),
                    };
                }
                State::DataEnd(seen) => {
                    if frame[at] != b"\r\n"[seen] {
                        return Err(AwsChunkedError("chunk data not followed by CRLF".into()));
                    }
                    at += 1;
                    self.state = if seen == 1 {
                        State::Size
                    } else {
                        State::DataEnd(1)
                    };
                }
                State::Size | State::Trailers => {
                    let Some(end) = frame[at..].iter().position(|&b| b == b'\n') else {
                        self.line.extend_from_slice(&frame[at..]);
                        at = frame.len();
                        if self.line.len() > MAX_LINE {
                            return Err(AwsChunkedError("line too long".into()));
                        }
                        continue;
                    };
                    self.line.extend_from_slice(&frame[at..at + end]);
                    at += end + 1;
                    let line = std::mem::take(&mut self.line);
                    let line = line.strip_suffix(b"\r").unwrap_or(&line);
                    self.state = match self.state {
                        State::Size => match parse_size(line)? {
                            0 => State::Trailers,
                            n => State::Data(n),
                        },
                        _ if line.is_empty() => State::Done,
                        _ if line.contains(&b':') => State::Trailers,
                        _ => return Err(AwsChunkedError("malformed trailer".into())),
                    };
                }
                State::Done => {
                    return Err(AwsChunkedError("data after the last chunk".into()));
                }
            }
        }
        Ok(out)
    }

    /// Checks that the framing ended properly.
    pub fn finish(&self) -> Result<(), AwsChunkedError> {
        match self.state {
            State::Done => Ok(()),
            _ => Err(AwsChunkedError("body ended before its last chunk".into())),
        }
    }
}

fn parse_size(line: &[u8]) -> Result<u64, AwsChunkedError> {
    let size = line.split(|&b| b == b';').next().unwrap_or_default();
    let size = std::str::from_utf8(size).unwrap_or("").trim();
    if size.is_empty() || size.len() > 15 || !size.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(AwsChunkedError(format!(
            "bad chunk size {:?}",
            String::from_utf8_lossy(line)
        )));
    }
    Ok(u64::from_str_radix(size, 16).expect("checked hex digits"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_in_pieces(body: &[u8], piece: usize) -> Result<Vec<u8>, AwsChunkedError> {
        let mut d = AwsChunkedDecoder::default();
        let mut out = Vec::new();
        for p in body.chunks(piece) {
            for b in d.push(&Bytes::copy_from_slice(p))? {
                out.extend_from_slice(&b);
            }
        }
        d.finish()?;
        Ok(out)
    }

    #[test]
    fn aws_chunked_signed_unsigned_and_trailers_decode_in_any_split() {
        let sig =
            "chunk-signature=ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648";
        let signed = format!("5;{sig}\r\nhello\r\n6;{sig}\r\n world\r\n0;{sig}\r\n\r\n");
        let unsigned_trailer =
            "5\r\nhello\r\n6\r\n world\r\n0\r\nx-amz-checksum-crc32:DUoRhQ==\r\n\r\n";
        let signed_trailer = format!(
            "5;{sig}\r\nhello\r\n6;{sig}\r\n world\r\n0;{sig}\r\nx-amz-checksum-crc32:DUoRhQ==\r\nx-amz-trailer-signature:{sig}\r\n\r\n"
        );
        for body in [signed.as_str(), unsigned_trailer, signed_trailer.as_str()] {
            for piece in [1, 2, 3, 7, 64, 10_000] {
                assert_eq!(
                    decode_in_pieces(body.as_bytes(), piece).unwrap(),
                    b"hello world",
                    "{body:?} in pieces of {piece}"
                );
            }
        }
    }

    #[test]
    fn malformed_aws_chunked_bodies_are_errors() {
        for bad in [
            &b"5\r\nhello\r\n"[..],         // no last chunk
            b"zz\r\nhello\r\n0\r\n\r\n",    // bad size
            b"5\r\nhelloXX0\r\n\r\n",       // data not followed by CRLF
            b"5\r\nhello\r\n0\r\n\r\nmore", // data after the end
            b"0\r\nnot a trailer\r\n\r\n",  // trailer without a colon
            b"5\r\nhel",                    // cut mid-chunk
        ] {
            assert!(decode_in_pieces(bad, 3).is_err(), "{bad:?}");
        }
        let long = format!("{}\r\n", "1".repeat(5000));
        assert!(decode_in_pieces(long.as_bytes(), 100).is_err());
    }
}
