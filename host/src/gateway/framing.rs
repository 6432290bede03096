//! Finds HTTP/1 requests that carry both `Content-Length` and `Transfer-Encoding`.
//!
//! Such a request is framed one way by one server and another way by the next: the
//! classic request-smuggling pair (RFC 9112 §6.1 lets a server refuse it, and nginx
//! does, with 400). hyper frames it by `Transfer-Encoding` and drops `Content-Length`
//! before the request reaches the gateway, so the gateway cannot see the conflict in
//! the request it is handed. [`Watched`] wraps a connection's byte stream and follows
//! the requests' framing as hyper reads them: it reads each request head, notes whether
//! it declares both lengths, and skips its body by the same framing hyper uses. The
//! gateway then refuses the request with that index ([`Framing::ambiguous`]).
//!
//! The follower only needs to find request heads, not to judge them: whatever it does
//! not understand (an HTTP/2 preface, a head over the cap, a chunk line it cannot read)
//! makes it stop, and hyper refuses such a connection itself or speaks HTTP/2, which has
//! no `Transfer-Encoding`. It copies nothing: bodies are skipped by counting.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The largest request head followed (hyper's own cap is smaller: a longer head is
/// refused by hyper, and the follower stops).
const MAX_HEAD: usize = 1 << 20;
/// The longest chunk-size line followed.
const MAX_CHUNK_LINE: usize = 4096;

/// What one connection's follower found, shared with the gateway's handler.
#[derive(Debug)]
pub struct Framing {
    /// The index of the first request that declares both lengths, or `usize::MAX`.
    ambiguous: AtomicUsize,
}

impl Framing {
    /// Whether the connection's request number `index` (from 0) declared both
    /// `Content-Length` and `Transfer-Encoding`.
    pub fn ambiguous(&self, index: usize) -> bool {
        self.ambiguous.load(Ordering::Acquire) == index
    }
}

/// A connection's byte stream, followed request by request (see the module docs).
pub struct Watched<S> {
    inner: S,
    follower: Follower,
    framing: Arc<Framing>,
}

impl<S> Watched<S> {
    /// Wraps `inner`; the returned [`Framing`] says what was found.
    pub fn new(inner: S) -> (Watched<S>, Arc<Framing>) {
        let framing = Arc::new(Framing {
            ambiguous: AtomicUsize::new(usize::MAX),
        });
        let watched = Watched {
            inner,
            follower: Follower::default(),
            framing: framing.clone(),
        };
        (watched, framing)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let this = &mut *self;
            if let Some(index) = this.follower.feed(&buf.filled()[before..]) {
                this.framing.ambiguous.store(index, Ordering::Release);
            }
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Where the follower is in the byte stream.
#[derive(Debug)]
enum State {
    /// In a request head (or the blank lines before one).
    Head,
    /// In a body of known length: this many bytes left.
    Fixed(u64),
    /// In a chunk-size line.
    ChunkLine,
    /// In chunk data: this many bytes left, then its CRLF.
    ChunkData(u64),
    /// After chunk data, before its line end.
    ChunkEnd,
    /// In the trailer section after the last chunk.
    Trailer,
    /// Not following any more (see the module docs).
    Off,
}

/// Follows request framing over a byte stream fed in pieces.
#[derive(Debug)]
struct Follower {
    state: State,
    /// The current head, chunk line or trailer line so far.
    line: Vec<u8>,
    /// Requests whose heads have been read.
    heads: usize,
}

impl Default for Follower {
    fn default() -> Follower {
        Follower {
            state: State::Head,
            line: Vec::new(),
            heads: 0,
        }
    }
}

/// How a request head frames its body.
enum Body {
    None,
    Fixed(u64),
    Chunked,
    /// Both lengths declared.
    Ambiguous,
    /// Not something the follower can go on after.
    Unknown,
}

impl Follower {
    /// Feeds the next bytes; returns the index of a request that declares both lengths
    /// if its head ended in them.
    fn feed(&mut self, mut data: &[u8]) -> Option<usize> {
        while !data.is_empty() {
            match self.state {
                State::Off => return None,
                State::Fixed(left) => {
                    let n = (data.len() as u64).min(left);
                    data = &data[n as usize..];
                    self.state = if n == left {
                        State::Head
                    } else {
                        State::Fixed(left - n)
                    };
                }
                State::ChunkData(left) => {
                    let n = (data.len() as u64).min(left);
                    data = &data[n as usize..];
                    self.state = if n == left {
                        State::ChunkEnd
                    } else {
                        State::ChunkData(left - n)
                    };
                }
                State::ChunkEnd => {
                    // CRLF (or a bare LF) after the data.
                    match data[0] {
                        b'\r' => {}
                        b'\n' => self.state = State::ChunkLine,
                        _ => self.state = State::Off,
                    }
                    data = &data[1..];
                }
                State::Head => {
                    // Blank lines before a request line are skipped, as hyper does.
                    if self.line.is_empty() {
                        let skip = data
                            .iter()
                            .position(|&b| b != b'\r' && b != b'\n')
                            .unwrap_or(data.len());
                        data = &data[skip..];
                        if data.is_empty() {
                            break;
                        }
                    }
                    let (taken, end) = take_head(&self.line, data);
                    self.line.extend_from_slice(&data[..taken]);
                    data = &data[taken..];
                    if !end {
                        if self.line.len() > MAX_HEAD {
                            self.stop();
                        }
                        continue;
                    }
                    let index = self.heads;
                    self.heads += 1;
                    let body = body_of(&self.line);
                    self.line.clear();
                    self.state = match body {
                        Body::None | Body::Fixed(0) => State::Head,
                        Body::Fixed(n) => State::Fixed(n),
                        Body::Chunked => State::ChunkLine,
                        Body::Ambiguous => {
                            // hyper closes the connection after this request.
                            self.stop();
                            return Some(index);
                        }
                        Body::Unknown => State::Off,
                    };
                }
                State::ChunkLine | State::Trailer => {
                    let Some(at) = data.iter().position(|&b| b == b'\n') else {
                        self.line.extend_from_slice(data);
                        if self.line.len() > MAX_CHUNK_LINE {
                            self.stop();
                        }
                        break;
                    };
                    self.line.extend_from_slice(&data[..at]);
                    data = &data[at + 1..];
                    let line = std::mem::take(&mut self.line);
                    let line = line.strip_suffix(b"\r").unwrap_or(&line);
                    self.state = match self.state {
                        State::Trailer if line.is_empty() => State::Head,
                        State::Trailer => State::Trailer,
                        _ => match chunk_size(line) {
                            Some(0) => State::Trailer,
                            Some(n) => State::ChunkData(n),
                            None => State::Off,
                        },
                    };
                }
            }
        }
        None
    }

    fn stop(&mut self) {
        self.state = State::Off;
        self.line = Vec::new();
    }
}

/// How many bytes of `data` belong to the head begun with `so_far`, and whether the
/// head ends there (at its first empty line, CRLF or bare LF).
fn take_head(so_far: &[u8], data: &[u8]) -> (usize, bool) {
    // The last two bytes already held matter for an end split across reads.
    let tail = &so_far[so_far.len().saturating_sub(2)..];
    let mut prev = [0u8; 2];
    prev[2 - tail.len()..].copy_from_slice(tail);
    for (i, &b) in data.iter().enumerate() {
        if b == b'\n' && (prev[1] == b'\n' || (prev[1] == b'\r' && prev[0] == b'\n')) {
            return (i + 1, true);
        }
        prev = [prev[1], b];
    }
    (data.len(), false)
}

/// The framing a request head declares (RFC 9112 §6.3, as hyper applies it).
fn body_of(head: &[u8]) -> Body {
    let mut lines = head.split(|&b| b == b'\n');
    let request_line = lines.next().unwrap_or_default();
    if request_line.starts_with(b"PRI * HTTP/2.0") {
        return Body::Unknown;
    }
    let mut length: Option<u64> = None;
    let mut has_length = false;
    let mut chunked: Option<bool> = None;
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = line[..colon].trim_ascii();
        let value = line[colon + 1..].trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") {
            has_length = true;
            length = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.split(',').next())
                .and_then(|v| v.trim().parse().ok());
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // The last coding of the last field decides (hyper refuses anything else).
            let last = value.rsplit(|&b| b == b',').next().unwrap_or_default();
            chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        }
    }
    match (chunked, has_length) {
        (Some(_), true) => Body::Ambiguous,
        (Some(true), false) => Body::Chunked,
        (Some(false), false) => Body::Unknown,
        (None, true) => length.map_or(Body::Unknown, Body::Fixed),
        (None, false) => Body::None,
    }
}

/// The size on a chunk-size line (`1f4;ext=1` → 500).
fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line
        .split(|&b| b == b';' || b == b' ' || b == b'\t')
        .next()
        .unwrap_or_default();
    let digits = std::str::from_utf8(digits).ok()?;
    if digits.is_empty() {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `stream` in pieces of `step` bytes; the index found, if any.
    fn follow(stream: &[u8], step: usize) -> Option<usize> {
        let mut f = Follower::default();
        stream.chunks(step).find_map(|piece| f.feed(piece))
    }

    fn every_split(stream: &[u8]) -> Option<usize> {
        let whole = follow(stream, stream.len());
        for step in 1..stream.len().min(40) {
            assert_eq!(follow(stream, step), whole, "step {step}");
        }
        whole
    }

    #[test]
    fn both_lengths_are_found_in_either_order_and_any_case() {
        for head in [
            "PUT /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "PUT /a HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n",
            "PUT /a HTTP/1.1\nTRANSFER-ENCODING: gzip, chunked\nCONTENT-LENGTH: 0\n\n",
        ] {
            assert_eq!(every_split(head.as_bytes()), Some(0), "{head:?}");
        }
    }

    #[test]
    fn requests_are_counted_across_bodies_of_every_framing() {
        // Bodies that look like ambiguous heads are bodies.
        let inner = "PUT /x HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let stream = format!(
            "\r\nPUT /a HTTP/1.1\r\nContent-Length: {}\r\n\r\n{inner}\
             PUT /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
             {:x};ext\r\n{inner}\r\n0\r\nX-T: 1\r\n\r\n\
             GET /c HTTP/1.1\r\n\r\n\
             PUT /d HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            inner.len(),
            inner.len(),
        );
        assert_eq!(every_split(stream.as_bytes()), Some(3));
    }

    #[test]
    fn clean_streams_and_unknown_ones_find_nothing() {
        let clean = b"PUT /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\n\r\n";
        assert_eq!(every_split(clean), None);
        // HTTP/2's preface ends the following, as does a coding hyper refuses.
        let h2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nPUT / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(every_split(h2), None);
        let gzip = b"PUT / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nPUT / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(every_split(gzip), None);
    }
}
