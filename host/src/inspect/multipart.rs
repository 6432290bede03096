//! Splitting a `multipart/*` body (RFC 2046 §5.1; form-data is RFC 7578) into its
//! preamble, parts and epilogue, as a stream: a part is read while it arrives.
//!
//! Hand-written because the crates that split multipart bodies are either async-only
//! (multer, which the walk's blocking thread cannot drive without a second runtime) or
//! unmaintained (multipart 0.18). Strict where readers differ: a delimiter is
//! `CRLF--boundary`, a part's head must end in a blank line within 16 KiB, and a body
//! without its close delimiter is malformed (an origin may read such a body differently;
//! what cannot be read one way only is not inspected one way only).

use std::io::{self, Read};

/// Longest part head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Read size.
const CHUNK: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Before the first delimiter.
    Preamble,
    /// Inside a part's body.
    Body,
    /// Just after a delimiter: a head (or the close) comes next.
    Delimiter,
    /// After the close delimiter.
    Epilogue,
    /// Everything read.
    Done,
}

/// A part's head, the fields the walk uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartHead {
    /// `Content-Disposition`.
    pub disposition: Option<String>,
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// `Content-Transfer-Encoding`.
    pub transfer_encoding: Option<String>,
    /// `Content-Encoding`.
    pub content_encoding: Option<String>,
}

impl PartHead {
    /// The part's name: its `filename*` or `filename`, else its form field `name`.
    pub fn name(&self) -> Option<String> {
        let params = self.disposition.as_deref()?.split_once(';')?.1;
        if let Some(ext) = super::envelope::param(params, "filename*") {
            // RFC 5987: charset'lang'percent-encoded; the bytes are what matter.
            if let Some((_, encoded)) = ext.split_once('\'').and_then(|(_, r)| r.split_once('\'')) {
                return Some(percent_decode(encoded));
            }
        }
        super::envelope::param(params, "filename")
            .or_else(|| super::envelope::param(params, "name"))
    }
}

/// `%XX` escapes undone (a `%` not followed by two hex digits kept as it is; `+` is not
/// a space here), the bytes read as UTF-8 with invalid sequences replaced.
pub(crate) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A streaming splitter over a multipart body.
pub struct Splitter<R> {
    inner: R,
    /// `\r\n--boundary`.
    delimiter: Vec<u8>,
    buf: Vec<u8>,
    start: usize,
    eof: bool,
    state: State,
    /// Bytes of the CRLF put in front that are not the body's: dropped, not handed out.
    synthetic: usize,
}

impl<R: Read> Splitter<R> {
    /// A splitter for `boundary` over `inner`.
    pub fn new(inner: R, boundary: &str) -> Self {
        let mut delimiter = b"\r\n--".to_vec();
        delimiter.extend_from_slice(boundary.as_bytes());
        // The body may open with the delimiter itself: a CRLF in front makes that one
        // look like every other.
        Splitter {
            inner,
            delimiter,
            buf: b"\r\n".to_vec(),
            start: 0,
            eof: false,
            state: State::Preamble,
            synthetic: 2,
        }
    }

    /// Reads more input; `false` at its end.
    fn fill(&mut self) -> io::Result<bool> {
        if self.eof {
            return Ok(false);
        }
        if self.start > 0 && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let len = self.buf.len();
        self.buf.resize(len + CHUNK, 0);
        let n = loop {
            match self.inner.read(&mut self.buf[len..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => break r,
            }
        };
        let n = match n {
            Ok(n) => n,
            Err(e) => {
                self.buf.truncate(len);
                return Err(e);
            }
        };
        self.buf.truncate(len + n);
        self.eof = n == 0;
        Ok(n > 0)
    }

    /// Body data (of the preamble or a part) into `out`, up to the next delimiter;
    /// 0 at the delimiter. Past the delimiter the state is [`State::Delimiter`].
    fn read_body(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            let window = &self.buf[self.start..];
            if let Some(at) = memchr::memmem::find(window, &self.delimiter) {
                if at == 0 {
                    self.start += self.delimiter.len();
                    self.state = State::Delimiter;
                    self.synthetic = 0;
                    return Ok(0);
                }
                if self.synthetic > 0 {
                    let n = self.synthetic.min(at);
                    self.start += n;
                    self.synthetic -= n;
                    continue;
                }
                let n = at.min(out.len());
                out[..n].copy_from_slice(&window[..n]);
                self.start += n;
                return Ok(n);
            }
            // Everything but a possible start of the delimiter is data.
            let safe = window.len().saturating_sub(self.delimiter.len() - 1);
            if safe > 0 && self.synthetic > 0 {
                let n = self.synthetic.min(safe);
                self.start += n;
                self.synthetic -= n;
                continue;
            }
            if safe > 0 {
                let n = safe.min(out.len());
                out[..n].copy_from_slice(&window[..n]);
                self.start += n;
                return Ok(n);
            }
            if !self.fill()? {
                return Err(malformed("multipart body ends without its close delimiter"));
            }
        }
    }

    /// Ensures `n` bytes are buffered past `start` (fewer only at the input's end).
    fn want(&mut self, n: usize) -> io::Result<()> {
        while self.buf.len() - self.start < n {
            if !self.fill()? {
                break;
            }
        }
        Ok(())
    }

    /// Skips the rest of the current body (preamble or part), then reads what follows
    /// its delimiter: the next part's head, or `None` after the close delimiter.
    pub fn next_part(&mut self) -> io::Result<Option<PartHead>> {
        let mut sink = [0u8; CHUNK];
        while matches!(self.state, State::Preamble | State::Body) {
            self.read_body(&mut sink)?;
        }
        if self.state != State::Delimiter {
            return Ok(None);
        }
        self.want(2)?;
        if self.buf[self.start..].starts_with(b"--") {
            self.start += 2;
            self.state = State::Epilogue;
            return Ok(None);
        }
        // Transport padding (RFC 2046: linear white space), then CRLF.
        loop {
            self.want(1)?;
            match self.buf.get(self.start) {
                Some(b' ' | b'\t') => self.start += 1,
                _ => break,
            }
        }
        self.want(2)?;
        if !self.buf[self.start..].starts_with(b"\r\n") {
            return Err(malformed("multipart delimiter not followed by CRLF"));
        }
        self.start += 2;
        let head = self.read_head()?;
        self.state = State::Body;
        Ok(Some(head))
    }

    /// The part head up to and including its blank line.
    fn read_head(&mut self) -> io::Result<PartHead> {
        let end = loop {
            let window = &self.buf[self.start..];
            if window.starts_with(b"\r\n") {
                break 2;
            }
            if let Some(at) = memchr::memmem::find(window, b"\r\n\r\n") {
                break at + 4;
            }
            if window.len() > MAX_HEAD {
                return Err(malformed("multipart part head too long"));
            }
            if !self.fill()? {
                return Err(malformed("multipart body ends inside a part head"));
            }
        };
        if end > MAX_HEAD {
            return Err(malformed("multipart part head too long"));
        }
        let raw = &self.buf[self.start..self.start + end];
        let mut fields = [httparse::EMPTY_HEADER; 64];
        let parsed = if end == 2 {
            Vec::new()
        } else {
            match httparse::parse_headers(raw, &mut fields) {
                Ok(httparse::Status::Complete((_, fields))) => fields.to_vec(),
                _ => return Err(malformed("malformed multipart part head")),
            }
        };
        let mut head = PartHead::default();
        for field in parsed {
            let value = String::from_utf8_lossy(field.value).into_owned();
            let slot = match field.name.to_ascii_lowercase().as_str() {
                "content-disposition" => &mut head.disposition,
                "content-type" => &mut head.content_type,
                "content-transfer-encoding" => &mut head.transfer_encoding,
                "content-encoding" => &mut head.content_encoding,
                _ => continue,
            };
            if slot.as_ref().is_some_and(|v| *v != value) {
                // Two readers may take either one.
                return Err(malformed(
                    "multipart part repeats a field with another value",
                ));
            }
            *slot = Some(value);
        }
        self.start += end;
        Ok(head)
    }

    /// A reader over the current body: the preamble before the first
    /// [`Splitter::next_part`], a part's body after it.
    pub fn body(&mut self) -> Body<'_, R> {
        Body { splitter: self }
    }

    /// A reader over the epilogue, once [`Splitter::next_part`] returned `None`.
    pub fn epilogue(&mut self) -> Epilogue<'_, R> {
        Epilogue { splitter: self }
    }
}

/// The bytes of one body of a multipart message.
pub struct Body<'a, R> {
    splitter: &'a mut Splitter<R>,
}

impl<R: Read> Read for Body<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.splitter.state {
            State::Preamble | State::Body if !buf.is_empty() => self.splitter.read_body(buf),
            _ => Ok(0),
        }
    }
}

/// The bytes after the close delimiter.
pub struct Epilogue<'a, R> {
    splitter: &'a mut Splitter<R>,
}

impl<R: Read> Read for Epilogue<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let s = &mut *self.splitter;
        if s.state != State::Epilogue {
            return Ok(0);
        }
        if s.start == s.buf.len() && !s.fill()? {
            s.state = State::Done;
            return Ok(0);
        }
        let n = buf.len().min(s.buf.len() - s.start);
        buf[..n].copy_from_slice(&s.buf[s.start..s.start + n]);
        s.start += n;
        Ok(n)
    }
}

fn malformed(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::inspect::tests::Trickle;

    /// A body split: its preamble, its parts (head and bytes), its epilogue.
    type Split = (Vec<u8>, Vec<(PartHead, Vec<u8>)>, Vec<u8>);

    fn split(body: &[u8], piece: usize) -> io::Result<Split> {
        let mut s = Splitter::new(Trickle(body, piece), "XyZ");
        let mut preamble = Vec::new();
        s.body().read_to_end(&mut preamble)?;
        let mut parts = Vec::new();
        while let Some(head) = s.next_part()? {
            let mut data = Vec::new();
            s.body().read_to_end(&mut data)?;
            parts.push((head, data));
        }
        let mut epilogue = Vec::new();
        s.epilogue().read_to_end(&mut epilogue)?;
        Ok((preamble, parts, epilogue))
    }

    #[test]
    fn parts_preamble_and_epilogue_come_out_in_any_split() {
        let body = b"pre\r\n--XyZ  \r\nContent-Disposition: form-data; name=\"f\"; filename=\"a b.zip\"\r\nContent-Type: application/zip\r\n\r\nPK\r\n-XyZ almost\r\n--XyZ\r\n\r\nsecond\r\n--XyZ--\r\nepi";
        for piece in [1, 2, 5, 13, 1000] {
            let (pre, parts, epi) = split(body, piece).unwrap();
            assert_eq!(pre, b"pre");
            assert_eq!(parts.len(), 2, "pieces of {piece}");
            assert_eq!(parts[0].0.name().as_deref(), Some("a b.zip"));
            assert_eq!(parts[0].0.content_type.as_deref(), Some("application/zip"));
            assert_eq!(parts[0].1, b"PK\r\n-XyZ almost");
            assert_eq!(parts[1].1, b"second");
            assert_eq!(epi, b"\r\nepi");
        }
    }

    #[test]
    fn a_body_may_open_with_its_delimiter() {
        let (pre, parts, _) = split(b"--XyZ\r\n\r\nonly\r\n--XyZ--", 3).unwrap();
        assert!(pre.is_empty());
        assert_eq!(parts[0].1, b"only");
    }

    #[test]
    fn malformed_bodies_are_errors() {
        for bad in [
            &b"--XyZ\r\n\r\nno close"[..],
            b"--XyZ\r\nContent-Type: a\r\nno blank line",
            b"--XyZ junk\r\n\r\nx\r\n--XyZ--",
            // The boundary inside a part, run on (RFC 2046 forbids it; readers differ).
            b"--XyZ\r\n\r\nx\r\n--XyZnot a delimiter\r\n--XyZ--",
            b"--XyZ\r\nContent-Type: a\r\nContent-Type: b\r\n\r\nx\r\n--XyZ--",
            b"no delimiter at all",
        ] {
            assert!(split(bad, 4).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn extended_file_names_are_decoded() {
        let head = PartHead {
            disposition: Some("form-data; name=f; filename*=UTF-8''caf%C3%A9.zip".into()),
            ..PartHead::default()
        };
        assert_eq!(head.name().as_deref(), Some("café.zip"));
    }
}
