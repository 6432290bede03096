//! What an upload body carries, and hashing each object in it as the body streams past:
//!
//! * a plain body (`PUT` of a file) is one object;
//! * `Content-Encoding: aws-chunked` (S3 `STREAMING-*` payloads, what current AWS SDKs
//!   send over https) frames the object in signed or unsigned chunks with optional
//!   trailers: the object is the decoded payload;
//! * `multipart/form-data` (web forms) carries one object per part.
//!
//! The body itself is forwarded unchanged either way (signatures stay valid); only what
//! is hashed differs. Hashing a raw body of the wrong shape would miss every listed file
//! sent that way.

use bytes::Bytes;
use hyper::header::{HeaderMap, HeaderValue};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::digest::Digester;
use crate::hashing::ObjectHasher;
use crate::{Algorithm, Digest};

/// One object found in a body.
#[derive(Debug)]
pub struct Object {
    /// For a multipart part: its file name (or field name); `None` for the whole body.
    pub part: Option<String>,
    /// Its digests.
    pub digests: Vec<Digest>,
    /// Its size in bytes.
    pub size: u64,
}

/// The shape of a body, from its request headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Shape {
    /// The body is the object.
    Plain,
    /// S3 aws-chunked framing; the decoded length if the client declared it.
    AwsChunked(Option<u64>),
    /// multipart/form-data with this boundary.
    Multipart(String),
}

impl Shape {
    /// Reads the shape off the headers.
    pub fn of(headers: &HeaderMap<HeaderValue>) -> Shape {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let aws_chunked = text("content-encoding").is_some_and(|v| {
            v.split(',')
                .any(|c| c.trim().eq_ignore_ascii_case("aws-chunked"))
        }) || text("x-amz-content-sha256")
            .is_some_and(|v| v.starts_with("STREAMING-"));
        if aws_chunked {
            let decoded = text("x-amz-decoded-content-length").and_then(|v| v.parse().ok());
            return Shape::AwsChunked(decoded);
        }
        if let Some(boundary) = text("content-type").and_then(|v| multer::parse_boundary(v).ok()) {
            return Shape::Multipart(boundary);
        }
        Shape::Plain
    }
}

/// Hashes the objects of one body, fed frame by frame.
pub enum Objects {
    /// The whole body.
    Plain(Digester),
    /// The decoded aws-chunked payload.
    AwsChunked {
        /// The framing decoder.
        decoder: AwsChunkedDecoder,
        /// The payload's hasher.
        digester: Digester,
        /// The declared decoded length.
        declared: Option<u64>,
    },
    /// A small form: its frames kept (shared, not copied) and parsed at the end, on the
    /// caller's task: cheaper than a parser task for bodies this small.
    SmallMultipart {
        /// The boundary.
        boundary: String,
        /// The frames so far.
        frames: Vec<Bytes>,
        /// The algorithms to hash with.
        algorithms: Vec<Algorithm>,
    },
    /// Each part, hashed by a task running the multipart parser.
    Multipart {
        /// Frames for the parser.
        tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
        /// The parser task.
        task: JoinHandle<Result<Vec<Object>, String>>,
    },
}

/// Frames queued for the multipart parser.
const PARSER_QUEUE: usize = 8;
/// Forms declared at most this long are parsed at the end on the caller's task.
const SMALL_FORM: u64 = 256 * 1024;

impl Objects {
    /// Hashers for a body of `shape`, `declared` bytes long if known.
    pub fn new(shape: Shape, algorithms: &[Algorithm], declared: Option<u64>) -> Objects {
        match shape {
            Shape::Plain => Objects::Plain(Digester::new(algorithms, declared)),
            Shape::AwsChunked(decoded) => Objects::AwsChunked {
                decoder: AwsChunkedDecoder::default(),
                digester: Digester::new(algorithms, decoded),
                declared: decoded,
            },
            Shape::Multipart(boundary) if declared.is_some_and(|n| n <= SMALL_FORM) => {
                Objects::SmallMultipart {
                    boundary,
                    frames: Vec::new(),
                    algorithms: algorithms.to_vec(),
                }
            }
            Shape::Multipart(boundary) => {
                let (tx, rx) = mpsc::channel(PARSER_QUEUE);
                let algorithms = algorithms.to_vec();
                // Parsing and hashing run on a blocking thread, like a large plain body's
                // hashing: at low concurrency the other core does it while this task
                // forwards.
                let runtime = tokio::runtime::Handle::current();
                let task = tokio::task::spawn_blocking(move || {
                    runtime.block_on(parse_multipart(frames_of(rx), boundary, algorithms))
                });
                Objects::Multipart { tx, task }
            }
        }
    }

    /// Feeds the next frame of the body. An error means the body is malformed.
    pub async fn update(&mut self, frame: &Bytes) -> Result<(), String> {
        match self {
            Objects::Plain(d) => d.update(frame).await,
            Objects::AwsChunked {
                decoder, digester, ..
            } => {
                for data in decoder.push(frame)? {
                    digester.update(&data).await;
                }
            }
            Objects::SmallMultipart { frames, .. } => {
                // Within the declared length (the body reader enforces it), so bounded.
                frames.push(frame.clone());
            }
            Objects::Multipart { tx, .. } => {
                // A send fails only once the parser has stopped on an error, which
                // `finish` reports.
                let _ = tx.send(Ok(frame.clone())).await;
            }
        }
        Ok(())
    }

    /// The objects, once the body has ended. An error means the body is malformed (or,
    /// rarely, a hashing task failed): nothing may pass.
    pub async fn finish(self) -> Result<Vec<Object>, String> {
        let whole = |digester: Digester| async move {
            let size = digester.bytes_fed();
            let digests = digester.finish().await.ok_or("hashing failed")?;
            Ok::<_, String>(vec![Object {
                part: None,
                digests,
                size,
            }])
        };
        match self {
            Objects::Plain(d) => whole(d).await,
            Objects::AwsChunked {
                decoder,
                digester,
                declared,
            } => {
                decoder.finish()?;
                if let Some(n) = declared.filter(|&n| n != digester.bytes_fed()) {
                    return Err(format!(
                        "aws-chunked payload is {} bytes, x-amz-decoded-content-length says {n}",
                        digester.bytes_fed()
                    ));
                }
                whole(digester).await
            }
            Objects::SmallMultipart {
                boundary,
                frames,
                algorithms,
            } => {
                let frames = futures_util::stream::iter(frames.into_iter().map(Ok));
                parse_multipart(frames, boundary, algorithms).await
            }
            Objects::Multipart { tx, task } => {
                drop(tx);
                task.await
                    .map_err(|e| format!("multipart parser failed: {e}"))?
            }
        }
    }
}

fn frames_of(
    rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|frame| (frame, rx))
    })
}

async fn parse_multipart(
    frames: impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    boundary: String,
    algorithms: Vec<Algorithm>,
) -> Result<Vec<Object>, String> {
    let mut form = multer::Multipart::new(frames, boundary);
    let mut objects = Vec::new();
    let malformed = |e: multer::Error| format!("malformed multipart body: {e}");
    while let Some(mut field) = form.next_field().await.map_err(malformed)? {
        let part = field
            .file_name()
            .or(field.name())
            .map(str::to_string)
            .or_else(|| Some(format!("part {}", objects.len() + 1)));
        let mut hasher = ObjectHasher::new(&algorithms);
        while let Some(chunk) = field.chunk().await.map_err(malformed)? {
            hasher.update(&chunk);
        }
        objects.push(Object {
            part,
            size: hasher.len(),
            digests: hasher.finish(),
        });
    }
    Ok(objects)
}

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
    pub fn push(&mut self, frame: &Bytes) -> Result<Vec<Bytes>, String> {
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
                        return Err("aws-chunked: chunk data not followed by CRLF".into());
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
                            return Err("aws-chunked: line too long".into());
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
                        _ => return Err("aws-chunked: malformed trailer".into()),
                    };
                }
                State::Done => {
                    return Err("aws-chunked: data after the last chunk".into());
                }
            }
        }
        Ok(out)
    }

    /// Checks that the framing ended properly.
    pub fn finish(&self) -> Result<(), String> {
        match self.state {
            State::Done => Ok(()),
            _ => Err("aws-chunked: body ended before its last chunk".into()),
        }
    }
}

fn parse_size(line: &[u8]) -> Result<u64, String> {
    let size = line.split(|&b| b == b';').next().unwrap_or_default();
    let size = std::str::from_utf8(size).unwrap_or("").trim();
    if size.is_empty() || size.len() > 15 || !size.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "aws-chunked: bad chunk size {:?}",
            String::from_utf8_lossy(line)
        ));
    }
    Ok(u64::from_str_radix(size, 16).expect("checked hex digits"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_in_pieces(body: &[u8], piece: usize) -> Result<Vec<u8>, String> {
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

    #[test]
    fn shapes_follow_the_headers() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (n, v) in pairs {
                h.insert(*n, HeaderValue::from_static(v));
            }
            h
        };
        assert_eq!(Shape::of(&headers(&[])), Shape::Plain);
        assert_eq!(
            Shape::of(&headers(&[
                ("content-encoding", "aws-chunked"),
                ("x-amz-decoded-content-length", "11")
            ])),
            Shape::AwsChunked(Some(11))
        );
        assert_eq!(
            Shape::of(&headers(&[(
                "x-amz-content-sha256",
                "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
            )])),
            Shape::AwsChunked(None)
        );
        assert_eq!(
            Shape::of(&headers(&[(
                "content-type",
                "multipart/form-data; boundary=----x"
            )])),
            Shape::Multipart("----x".into())
        );
        assert_eq!(
            Shape::of(&headers(&[("content-type", "application/octet-stream")])),
            Shape::Plain
        );
    }
}
