//! ICAP/1.0 on the wire (RFC 3507): reading request heads, the `Encapsulated` map and
//! chunked bodies (with preview and `ieof`), and writing responses. Reads go through one
//! buffer per connection; body data is handed out as slices of it, not copied.

use std::time::Duration;

use tokio::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Why a transaction cannot go on. Private to the ICAP server: each kind maps to an ICAP
/// status (or to closing the connection) in `transaction`.
#[derive(Debug)]
pub enum Fault {
    /// The peer closed the connection (cleanly, between requests, or mid-message).
    Closed,
    /// The peer sent nothing for longer than allowed.
    Timeout,
    /// The peer sent something that is not ICAP/1.0 as RFC 3507 says (→ 400).
    Malformed(String),
    /// A request head larger than the configured cap (→ 400).
    TooLarge,
    /// Reading or writing the socket failed.
    Io(std::io::Error),
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Closed => f.write_str("the peer closed the connection"),
            Fault::Timeout => f.write_str("the peer went silent"),
            Fault::Malformed(why) => write!(f, "malformed ICAP: {why}"),
            Fault::TooLarge => f.write_str("ICAP head over the size cap"),
            Fault::Io(e) => write!(f, "socket error: {e}"),
        }
    }
}

impl From<std::io::Error> for Fault {
    fn from(e: std::io::Error) -> Fault {
        Fault::Io(e)
    }
}

fn malformed(what: impl Into<String>) -> Fault {
    Fault::Malformed(what.into())
}

/// Bytes read at most per socket read.
const READ_SIZE: usize = 64 * 1024;
/// Longest chunk-size line (size, extensions such as `ieof`).
const MAX_CHUNK_LINE: usize = 1024;

/// The reading side of a connection, with its buffer.
pub struct Reader {
    stream: Box<dyn AsyncRead + Send + Unpin>,
    buf: BytesMut,
}

impl Reader {
    pub fn new(stream: Box<dyn AsyncRead + Send + Unpin>) -> Reader {
        Reader {
            stream,
            buf: BytesMut::with_capacity(READ_SIZE),
        }
    }

    /// Reads more bytes into the buffer, waiting until `deadline` at most.
    ///
    /// A deadline, not a timeout: a head must arrive whole within its time, however its
    /// bytes are spread (a timer restarted on every read lets a peer sending one byte a
    /// second hold the connection forever).
    async fn fill(&mut self, deadline: Instant) -> Result<(), Fault> {
        self.buf.reserve(READ_SIZE);
        match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
            Err(_) => Err(Fault::Timeout),
            Ok(Ok(0)) => Err(Fault::Closed),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(Fault::Io(e)),
        }
    }

    /// Waits for the first byte of the next request: `Closed` or `Timeout` here mean an
    /// idle connection ended, not a broken request.
    pub async fn await_request(&mut self, idle: Duration) -> Result<(), Fault> {
        loop {
            // Tolerate blank lines between messages (RFC 9112 §2.2 robustness).
            while self.buf.starts_with(b"\r\n") {
                let _ = self.buf.split_to(2);
            }
            if !self.buf.is_empty() && self.buf[..] != b"\r"[..] {
                return Ok(());
            }
            self.fill(Instant::now() + idle).await?;
        }
    }

    /// The request head, through its blank line, at most `limit` bytes, whole by
    /// `deadline`.
    pub async fn read_head(&mut self, limit: usize, deadline: Instant) -> Result<Bytes, Fault> {
        let mut searched = 0;
        loop {
            if let Some(at) = find(&self.buf[searched..], b"\r\n\r\n") {
                let end = searched + at + 4;
                if end > limit {
                    return Err(Fault::TooLarge);
                }
                return Ok(self.buf.split_to(end).freeze());
            }
            searched = self.buf.len().saturating_sub(3);
            if self.buf.len() > limit {
                return Err(Fault::TooLarge);
            }
            self.fill(deadline).await?;
        }
    }

    /// Exactly `n` bytes, whole by `deadline`.
    pub async fn read_exact(&mut self, n: usize, deadline: Instant) -> Result<Bytes, Fault> {
        while self.buf.len() < n {
            self.fill(deadline).await?;
        }
        Ok(self.buf.split_to(n).freeze())
    }

    /// One CRLF-terminated line (without the CRLF), at most `limit` bytes.
    async fn read_line(&mut self, limit: usize, deadline: Instant) -> Result<Bytes, Fault> {
        let mut searched = 0;
        loop {
            if let Some(at) = find(&self.buf[searched..], b"\r\n") {
                let line = self.buf.split_to(searched + at).freeze();
                let _ = self.buf.split_to(2);
                return Ok(line);
            }
            searched = self.buf.len().saturating_sub(1);
            if self.buf.len() > limit {
                return Err(malformed("chunk-size line too long"));
            }
            self.fill(deadline).await?;
        }
    }

    /// Up to `max` bytes of data, as soon as any are there.
    async fn read_some(&mut self, max: usize, deadline: Instant) -> Result<Bytes, Fault> {
        if self.buf.is_empty() {
            self.fill(deadline).await?;
        }
        let n = self.buf.len().min(max);
        Ok(self.buf.split_to(n).freeze())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A parsed ICAP request head.
#[derive(Debug)]
pub struct RequestHead {
    /// `OPTIONS`, `REQMOD`, `RESPMOD`, or anything else the client sent.
    pub method: String,
    /// The path of the ICAP URI (`/reqmod` of `icap://host:1344/reqmod?x`).
    pub service: String,
    /// Header fields in order, names as sent.
    pub headers: Vec<(String, String)>,
}

impl RequestHead {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the client offered `Allow: 204`.
    pub fn allows_204(&self) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("allow"))
            .flat_map(|(_, v)| v.split(','))
            .any(|v| v.trim() == "204")
    }
}

/// Most header fields accepted in one ICAP head.
const MAX_HEADERS: usize = 100;

/// Why a request head was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum HeadError {
    /// Occurs when the version is `ICAP/` something other than 1.0 (→ 505).
    Version,
    /// Occurs when the head is not an ICAP/1.0 request head (→ 400); says why.
    Malformed(String),
}

fn bad(why: impl Into<String>) -> HeadError {
    HeadError::Malformed(why.into())
}

/// Parses a head read by [`Reader::read_head`].
pub fn parse_head(head: &[u8]) -> Result<RequestHead, HeadError> {
    let line_end = find(head, b"\r\n").ok_or_else(|| bad("no request line"))?;
    let line =
        std::str::from_utf8(&head[..line_end]).map_err(|_| bad("request line is not UTF-8"))?;
    let mut parts = line.split(' ');
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad(format!("bad request line {line:?}")));
    };
    if !version.starts_with("ICAP/") {
        return Err(bad(format!("bad request line {line:?}")));
    }
    if version != "ICAP/1.0" {
        return Err(HeadError::Version);
    }
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(bad(format!("bad method {method:?}")));
    }
    let rest = uri
        .strip_prefix("icap://")
        .or_else(|| uri.strip_prefix("icaps://"))
        .ok_or_else(|| bad(format!("not an icap:// URI: {uri:?}")))?;
    let path = rest.find('/').map_or("/", |i| &rest[i..]);
    let service = path.split('?').next().unwrap_or("/").to_string();

    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let fields = match httparse::parse_headers(&head[line_end + 2..], &mut slots) {
        Ok(httparse::Status::Complete((_, fields))) => fields,
        Ok(httparse::Status::Partial) => return Err(bad("incomplete header block")),
        Err(e) => return Err(bad(format!("bad header block: {e}"))),
    };
    let mut headers = Vec::with_capacity(fields.len());
    for f in fields.iter() {
        let value = std::str::from_utf8(f.value)
            .map_err(|_| bad(format!("header {} is not UTF-8", f.name)))?;
        headers.push((f.name.to_string(), value.trim().to_string()));
    }
    Ok(RequestHead {
        method: method.to_string(),
        service,
        headers,
    })
}

/// The body an ICAP request carries, by its `Encapsulated` name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    /// `req-body`: an HTTP request's body (REQMOD).
    Request,
    /// `res-body`: an HTTP response's body (RESPMOD).
    Response,
    /// `opt-body`: an OPTIONS body.
    Options,
    /// `null-body`: none.
    Null,
}

/// The `Encapsulated` header: where each encapsulated part starts.
#[derive(Debug, PartialEq, Eq)]
pub struct Encapsulated {
    /// Byte range of the encapsulated HTTP request head.
    pub req_hdr: Option<std::ops::Range<usize>>,
    /// Byte range of the encapsulated HTTP response head.
    pub res_hdr: Option<std::ops::Range<usize>>,
    /// What follows the heads.
    pub body: BodyKind,
    /// Where the body starts: the heads' total length.
    pub body_offset: usize,
}

impl Encapsulated {
    /// Parses `req-hdr=0, res-hdr=137, res-body=296`: offsets ascending from 0, heads
    /// before exactly one body entry, which comes last.
    pub fn parse(value: &str) -> Result<Encapsulated, String> {
        let mut heads: Vec<(&str, usize)> = Vec::new();
        let mut body = None;
        for entry in value.split(',') {
            let (name, offset) = entry
                .trim()
                .split_once('=')
                .ok_or_else(|| format!("bad Encapsulated entry {entry:?}"))?;
            let offset: usize = offset
                .trim()
                .parse()
                .map_err(|_| format!("bad Encapsulated offset in {entry:?}"))?;
            if body.is_some() {
                return Err("Encapsulated: the body entry must come last".into());
            }
            if heads.last().is_some_and(|&(_, prev)| offset < prev) {
                return Err("Encapsulated: offsets must ascend".into());
            }
            if heads.is_empty() && offset != 0 {
                return Err("Encapsulated: the first entry must be at offset 0".into());
            }
            match name.trim() {
                n @ ("req-hdr" | "res-hdr") => {
                    if heads.iter().any(|&(seen, _)| seen == n) {
                        return Err(format!("Encapsulated: {n} twice"));
                    }
                    // RFC 3507 §4.4.1: the parts in the order req-hdr, res-hdr, body;
                    // and no HTTP head is empty.
                    if n == "req-hdr" && !heads.is_empty() {
                        return Err("Encapsulated: req-hdr must come first".into());
                    }
                    if heads.last().is_some_and(|&(_, prev)| offset == prev) {
                        return Err(format!("Encapsulated: an empty head before {n}"));
                    }
                    heads.push((n, offset));
                }
                "req-body" => body = Some((BodyKind::Request, offset)),
                "res-body" => body = Some((BodyKind::Response, offset)),
                "opt-body" => body = Some((BodyKind::Options, offset)),
                "null-body" => body = Some((BodyKind::Null, offset)),
                other => return Err(format!("Encapsulated: unknown entry {other:?}")),
            }
        }
        let (body, body_offset) = body.ok_or("Encapsulated: no body entry")?;
        if heads.last().is_some_and(|&(_, prev)| body_offset <= prev) {
            return Err("Encapsulated: offsets must ascend, and no head is empty".into());
        }
        let mut e = Encapsulated {
            req_hdr: None,
            res_hdr: None,
            body,
            body_offset,
        };
        for (i, &(name, start)) in heads.iter().enumerate() {
            let end = heads.get(i + 1).map_or(body_offset, |&(_, next)| next);
            if name == "req-hdr" {
                e.req_hdr = Some(start..end);
            } else {
                e.res_hdr = Some(start..end);
            }
        }
        Ok(e)
    }
}

/// Reads one chunked body (or one preview of it): data in, `None` at its last chunk.
pub struct ChunkedBody {
    /// Data bytes left in the current chunk.
    left: u64,
    /// Whether the current chunk's data is followed by a CRLF still to be read.
    in_chunk: bool,
    /// Whether the last chunk carried `ieof` (the preview was the whole body).
    pub ieof: bool,
    done: bool,
}

impl ChunkedBody {
    pub fn new() -> ChunkedBody {
        ChunkedBody {
            left: 0,
            in_chunk: false,
            ieof: false,
            done: false,
        }
    }

    /// The next piece of data (at most `max` bytes), or `None` once the zero-size chunk
    /// and its trailer have been read. `timeout` bounds each piece: a body may take as
    /// long as it needs, as long as it keeps coming.
    pub async fn next(
        &mut self,
        reader: &mut Reader,
        max: usize,
        timeout: Duration,
    ) -> Result<Option<Bytes>, Fault> {
        if self.done {
            return Ok(None);
        }
        let deadline = Instant::now() + timeout;
        if self.left == 0 {
            if self.in_chunk {
                let end = reader.read_exact(2, deadline).await?;
                if &end[..] != b"\r\n" {
                    return Err(malformed("chunk data not followed by CRLF"));
                }
                self.in_chunk = false;
            }
            let line = reader.read_line(MAX_CHUNK_LINE, deadline).await?;
            let (size, ieof) = parse_chunk_line(&line)?;
            if size == 0 {
                // Trailer fields, if any, up to the blank line; ICAP gives them no meaning.
                while !reader.read_line(MAX_CHUNK_LINE, deadline).await?.is_empty() {}
                self.done = true;
                self.ieof = ieof;
                return Ok(None);
            }
            self.left = size;
            self.in_chunk = true;
        }
        let want = usize::try_from(self.left).unwrap_or(usize::MAX).min(max);
        let data = reader.read_some(want, deadline).await?;
        self.left -= data.len() as u64;
        Ok(Some(data))
    }
}

/// `1f4; ieof` → (500, true).
fn parse_chunk_line(line: &[u8]) -> Result<(u64, bool), Fault> {
    let line = std::str::from_utf8(line).map_err(|_| malformed("chunk-size line not ASCII"))?;
    let (size, extensions) = line.split_once(';').unwrap_or((line, ""));
    let size = size.trim();
    if size.is_empty() || size.len() > 15 || !size.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(malformed(format!("bad chunk size {size:?}")));
    }
    let size = u64::from_str_radix(size, 16).expect("checked hex digits");
    let ieof = extensions.split(';').any(|e| e.trim() == "ieof");
    Ok((size, ieof))
}

/// The writing side of a connection.
pub struct Writer {
    stream: Box<dyn AsyncWrite + Send + Unpin>,
}

impl Writer {
    pub fn new(stream: Box<dyn AsyncWrite + Send + Unpin>) -> Writer {
        Writer { stream }
    }

    /// Writes `bytes` and sends them.
    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), Fault> {
        self.stream.write_all(bytes).await?;
        Ok(())
    }

    /// Writes one body chunk: size line, data, CRLF, in one vectored write.
    pub async fn send_chunk(&mut self, data: &Bytes) -> Result<(), Fault> {
        if data.is_empty() {
            return Ok(());
        }
        let mut chunk = Bytes::from(format!("{:x}\r\n", data.len()))
            .chain(data.clone())
            .chain(&b"\r\n"[..]);
        self.stream.write_all_buf(&mut chunk).await?;
        Ok(())
    }

    /// Closes the connection without finishing what was being sent: the peer sees an
    /// incomplete message.
    pub async fn abort(mut self) {
        let _ = self.stream.shutdown().await;
    }
}

/// An ICAP response head: the status line, `ISTag`, `extra` fields, the blank line.
pub fn response_head(status: u16, reason: &str, istag: &str, extra: &[(&str, String)]) -> String {
    let mut head = format!(
        "ICAP/1.0 {status} {reason}\r\nISTag: {istag}\r\nServer: hashgate/{}\r\n",
        env!("CARGO_PKG_VERSION")
    );
    for (name, value) in extra {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    head
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encapsulated_maps_heads_and_body() {
        let e = Encapsulated::parse("req-hdr=0, res-hdr=137, res-body=296").unwrap();
        assert_eq!(e.req_hdr, Some(0..137));
        assert_eq!(e.res_hdr, Some(137..296));
        assert_eq!((e.body, e.body_offset), (BodyKind::Response, 296));
        let e = Encapsulated::parse("null-body=0").unwrap();
        assert_eq!((e.req_hdr, e.body), (None, BodyKind::Null));
        for bad in [
            "",
            "req-hdr=0",
            "req-hdr=10, req-body=20",
            "res-hdr=0, req-hdr=5, res-body=1",
            "req-body=0, req-hdr=0",
            "req-hdr=0, req-hdr=5, req-body=9",
            "req-hdr=x, req-body=1",
            "foo=0",
            // Found by fuzz/icap_encapsulated: res-hdr first, and an empty head.
            "res-hdr=0, req-hdr=0, res-body=30",
            "res-hdr=0, req-hdr=10, res-body=30",
            "req-hdr=0, res-hdr=0, res-body=30",
            "req-hdr=0, req-body=0",
        ] {
            assert!(Encapsulated::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn heads_parse_and_bad_ones_are_refused() {
        let h = parse_head(
            b"REQMOD icap://127.0.0.1:1344/reqmod?x=1 ICAP/1.0\r\nHost: a\r\nAllow: 204, 206\r\nPreview: 10\r\n\r\n",
        )
        .unwrap();
        assert_eq!(
            (h.method.as_str(), h.service.as_str()),
            ("REQMOD", "/reqmod")
        );
        assert!(h.allows_204());
        assert_eq!(h.header("preview"), Some("10"));
        assert!(matches!(
            parse_head(b"OPTIONS icap://a/x ICAP/2.0\r\n\r\n"),
            Err(HeadError::Version)
        ));
        for bad in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            b"REQMOD http://a/ ICAP/1.0\r\n\r\n",
            b"REQMOD icap://a/ ICAP/1.0 extra\r\n\r\n",
            b"REQMOD icap://a/ ICAP/1.0\r\nbad header\r\n\r\n",
            b"\xff\xfe icap://a/ ICAP/1.0\r\n\r\n",
        ] {
            assert!(
                matches!(parse_head(bad), Err(HeadError::Malformed(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn chunk_lines_carry_size_and_ieof() {
        assert_eq!(parse_chunk_line(b"1f4").unwrap(), (500, false));
        assert_eq!(parse_chunk_line(b"0; ieof").unwrap(), (0, true));
        assert_eq!(parse_chunk_line(b"A;foo=1").unwrap(), (10, false));
        for bad in [&b""[..], b"x", b"-1", b"1234567890abcdef0", b" "] {
            assert!(parse_chunk_line(bad).is_err(), "{bad:?}");
        }
    }
}
