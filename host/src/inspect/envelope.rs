//! What a message says about its own bytes: the codings applied to them and whether its
//! media type splits them into parts. Front-ends build one from their headers (HTTP,
//! ICAP's encapsulated HTTP, a MIME part's); the walk undoes it.

use super::Layer;

/// A coding a message's bytes went through, one the walk can undo.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coding {
    /// `gzip`, `x-gzip` (several members are one stream, as `gzip -d` reads them).
    Gzip,
    /// `deflate`: zlib-wrapped as RFC 9110 says, or raw deflate as some clients send.
    Deflate,
    /// `br`.
    Brotli,
    /// `zstd`.
    Zstd,
    /// A MIME part's `Content-Transfer-Encoding: base64`.
    Base64,
    /// A MIME part's `Content-Transfer-Encoding: quoted-printable`.
    QuotedPrintable,
}

impl Coding {
    /// The layer undoing it adds.
    pub fn layer(self) -> Layer {
        match self {
            Coding::Gzip => Layer::Gzip,
            Coding::Deflate => Layer::Deflate,
            Coding::Brotli => Layer::Brotli,
            Coding::Zstd => Layer::Zstd,
            Coding::Base64 => Layer::Base64,
            Coding::QuotedPrintable => Layer::QuotedPrintable,
        }
    }

    /// An HTTP content or transfer coding by name (case-insensitive); `Ok(None)` for
    /// `identity`.
    fn http(name: &str) -> Result<Option<Coding>, ()> {
        Ok(Some(match name.to_ascii_lowercase().as_str() {
            "identity" => return Ok(None),
            "gzip" | "x-gzip" => Coding::Gzip,
            "deflate" => Coding::Deflate,
            "br" => Coding::Brotli,
            "zstd" => Coding::Zstd,
            _ => return Err(()),
        }))
    }
}

/// Occurs when a message declares a coding the pipeline cannot undo: it cannot be
/// inspected, so it must not pass (RFC 9112 §6.1: 501 for a transfer coding; 415 for a
/// content coding).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// An unknown transfer coding (anything but `chunked` and the content codings).
    #[error("unknown transfer coding {0:?}")]
    UnknownTransferCoding(String),
    /// An unknown content coding.
    #[error("unknown content coding {0:?}")]
    UnknownContentCoding(String),
    /// A `multipart/*` media type without a usable boundary.
    #[error("multipart media type without a boundary: {0:?}")]
    NoBoundary(String),
}

/// What a message says about its bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Envelope {
    /// Codings in the order they were applied; the walk undoes them last first.
    pub codings: Vec<Coding>,
    /// The boundary, if the (decoded) bytes are a `multipart/*` body.
    pub boundary: Option<String>,
}

impl Envelope {
    /// The envelope of an HTTP message with these header values (all the values of each
    /// field, joined with commas as RFC 9110 allows): transfer codings other than
    /// `chunked` (which the HTTP layer already removed), then content codings
    /// (`aws-chunked` is S3 framing, undone by the front-end, and skipped here), then
    /// the media type.
    pub fn http(
        transfer_encoding: Option<&str>,
        content_encoding: Option<&str>,
        content_type: Option<&str>,
    ) -> Result<Envelope, EnvelopeError> {
        let mut envelope = Envelope::default();
        for name in list(content_encoding) {
            if name.eq_ignore_ascii_case("aws-chunked") {
                continue;
            }
            match Coding::http(name) {
                Ok(coding) => envelope.codings.extend(coding),
                Err(()) => return Err(EnvelopeError::UnknownContentCoding(name.into())),
            }
        }
        // Transfer codings were applied after the content codings.
        for name in list(transfer_encoding) {
            if name.eq_ignore_ascii_case("chunked") {
                continue;
            }
            match Coding::http(name) {
                Ok(coding) => envelope.codings.extend(coding),
                Err(()) => return Err(EnvelopeError::UnknownTransferCoding(name.into())),
            }
        }
        envelope.boundary = boundary(content_type)?;
        Ok(envelope)
    }

    /// The envelope of a MIME part with these header values: its
    /// `Content-Transfer-Encoding` (`7bit`, `8bit`, `binary` need no decoding; an unknown
    /// one is a [`EnvelopeError::UnknownContentCoding`]), `Content-Encoding` and
    /// `Content-Type`.
    pub fn mime_part(
        transfer_encoding: Option<&str>,
        content_encoding: Option<&str>,
        content_type: Option<&str>,
    ) -> Result<Envelope, EnvelopeError> {
        let mut envelope = Envelope::http(None, content_encoding, content_type)?;
        if let Some(cte) = transfer_encoding.map(str::trim) {
            let coding = match cte.to_ascii_lowercase().as_str() {
                "7bit" | "8bit" | "binary" | "" => None,
                "base64" => Some(Coding::Base64),
                "quoted-printable" => Some(Coding::QuotedPrintable),
                _ => return Err(EnvelopeError::UnknownContentCoding(cte.into())),
            };
            // The transfer encoding is the outermost: applied last, undone first.
            envelope.codings.extend(coding);
        }
        Ok(envelope)
    }

    /// Whether the message says nothing the walk must act on before sniffing.
    pub fn is_plain(&self) -> bool {
        self.codings.is_empty() && self.boundary.is_none()
    }
}

fn list(value: Option<&str>) -> impl Iterator<Item = &str> {
    value
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// The boundary of a `multipart/*` media type; `None` for any other type.
fn boundary(content_type: Option<&str>) -> Result<Option<String>, EnvelopeError> {
    let Some(value) = content_type else {
        return Ok(None);
    };
    let (essence, params) = value.split_once(';').unwrap_or((value, ""));
    let essence = essence.trim().to_ascii_lowercase();
    if !essence.starts_with("multipart/") {
        return Ok(None);
    }
    match param(params, "boundary") {
        Some(b) if !b.is_empty() && b.len() <= 200 => Ok(Some(b)),
        _ => Err(EnvelopeError::NoBoundary(value.into())),
    }
}

/// The value of parameter `name` in a `; a=b; c="d"` list (RFC 9110 §5.6.6: tokens or
/// quoted strings with backslash escapes). A parameter given twice with different values
/// has none: parsers disagree on which one counts, and a message two readers split
/// differently must not be inspected one way and stored the other.
pub(super) fn param(params: &str, name: &str) -> Option<String> {
    let mut found: Option<String> = None;
    for (key, value) in pairs(params) {
        if key.eq_ignore_ascii_case(name) {
            match &found {
                Some(v) if *v != value => return None,
                _ => found = Some(value),
            }
        }
    }
    found
}

fn pairs(params: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = params;
    loop {
        rest = rest.trim_start_matches([';', ' ', '\t']);
        if rest.is_empty() {
            return out;
        }
        let Some(eq) = rest.find(['=', ';']) else {
            return out;
        };
        let key = rest[..eq].trim().to_string();
        if rest.as_bytes()[eq] == b';' {
            rest = &rest[eq..];
            continue;
        }
        rest = rest[eq + 1..].trim_start();
        let value;
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut text = String::new();
            let mut end = quoted.len();
            let mut chars = quoted.char_indices();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => text.extend(chars.next().map(|(_, c)| c)),
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => text.push(c),
                }
            }
            value = text;
            rest = &quoted[end..];
        } else {
            let end = rest.find(';').unwrap_or(rest.len());
            value = rest[..end].trim().to_string();
            rest = &rest[end..];
        }
        out.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_codings_are_undone_last_first() {
        let e = Envelope::http(Some("gzip, chunked"), Some("zstd, identity"), None).unwrap();
        // zstd was applied first, then the gzip transfer coding.
        assert_eq!(e.codings, [Coding::Zstd, Coding::Gzip]);
        assert!(Envelope::http(None, Some("aws-chunked"), None)
            .unwrap()
            .is_plain());
        assert_eq!(
            Envelope::http(Some("compress, chunked"), None, None),
            Err(EnvelopeError::UnknownTransferCoding("compress".into()))
        );
        assert_eq!(
            Envelope::http(None, Some("x-bogus"), None),
            Err(EnvelopeError::UnknownContentCoding("x-bogus".into()))
        );
    }

    #[test]
    fn boundaries_are_read_from_any_multipart_type() {
        let b = |ct| Envelope::http(None, None, Some(ct)).map(|e| e.boundary);
        assert_eq!(b("multipart/related; boundary=abc"), Ok(Some("abc".into())));
        assert_eq!(
            b("Multipart/Form-Data; charset=x; boundary=\"a b\\\"c\""),
            Ok(Some("a b\"c".into()))
        );
        assert_eq!(b("text/plain; boundary=abc"), Ok(None));
        assert!(b("multipart/mixed").is_err());
        assert!(b("multipart/mixed; boundary=").is_err());
        assert!(b("multipart/mixed; boundary=a; boundary=b").is_err());
        assert_eq!(
            b("multipart/mixed; boundary=a; BOUNDARY=a"),
            Ok(Some("a".into()))
        );
    }

    #[test]
    fn mime_parts_take_their_transfer_encoding() {
        let e = Envelope::mime_part(Some("BASE64"), None, Some("application/zip")).unwrap();
        assert_eq!(e.codings, [Coding::Base64]);
        assert!(Envelope::mime_part(Some("binary"), None, None)
            .unwrap()
            .is_plain());
        assert!(Envelope::mime_part(Some("x-uuencode"), None, None).is_err());
    }
}
