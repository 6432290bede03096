//! What an upload body carries, read off its headers, and the inspection it gets:
//!
//! * `Content-Encoding: aws-chunked` (S3 `STREAMING-*` payloads, what current AWS SDKs
//!   send over https) frames the object in signed or unsigned chunks with optional
//!   trailers: the framing is undone here and the payload inspected;
//! * everything else the headers say (transfer and content codings, a `multipart/*`
//!   media type) becomes the [`Envelope`] the inspection pipeline undoes, and the
//!   pipeline opens whatever containers the bytes hold.
//!
//! The body itself is forwarded unchanged either way (signatures stay valid); only what
//! is hashed differs.

use std::sync::Arc;

use bytes::Bytes;
use hyper::header::{HeaderMap, HeaderValue};

use crate::inspect::Hashes;
use crate::inspect::{
    AwsChunkedDecoder, Envelope, EnvelopeError, InspectError, Inspection, Limits, Report,
};

/// The shape of a body, from its request headers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Shape {
    /// S3 aws-chunked framing, with the decoded length if the client declared it.
    pub aws_chunked: Option<Option<u64>>,
    /// What the headers say about the (decoded) payload.
    pub envelope: Envelope,
}

/// Joins every value of a header field with commas (RFC 9110 §5.3).
fn joined(headers: &HeaderMap<HeaderValue>, name: &str) -> Option<String> {
    let values: Vec<&str> = headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap_or("\u{fffd}"))
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

impl Shape {
    /// Reads the shape off the headers; an error names a coding that cannot be undone.
    pub fn of(headers: &HeaderMap<HeaderValue>) -> Result<Shape, EnvelopeError> {
        let content_encoding = joined(headers, "content-encoding");
        let aws = content_encoding.as_deref().is_some_and(|v| {
            v.split(',')
                .any(|c| c.trim().eq_ignore_ascii_case("aws-chunked"))
        }) || headers
            .get("x-amz-content-sha256")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("STREAMING-"));
        let decoded = headers
            .get("x-amz-decoded-content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let content_type = if headers.get_all("content-type").iter().count() > 1 {
            // Two media types: readers may take either.
            return Err(EnvelopeError::NoBoundary("two Content-Type fields".into()));
        } else {
            headers
                .get("content-type")
                .map(|v| v.to_str().unwrap_or("\u{fffd}"))
        };
        let envelope = Envelope::http(
            joined(headers, "transfer-encoding").as_deref(),
            content_encoding.as_deref(),
            content_type,
        )?;
        Ok(Shape {
            aws_chunked: aws.then_some(decoded),
            envelope,
        })
    }
}

/// Occurs when an upload body cannot be inspected: its framing is broken, or the
/// inspection could not finish.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The aws-chunked framing is broken, or disagrees with the declared length.
    #[error(transparent)]
    Framing(#[from] crate::inspect::AwsChunkedError),
    /// The aws-chunked payload's length disagrees with `x-amz-decoded-content-length`.
    #[error("aws-chunked payload is {got} bytes, x-amz-decoded-content-length says {declared}")]
    Length {
        /// Decoded.
        got: u64,
        /// Declared.
        declared: u64,
    },
    /// The inspection failed (a worker, a spool file).
    #[error(transparent)]
    Inspect(#[from] InspectError),
}

/// One body's inspection, fed frame by frame.
pub struct Objects {
    aws: Option<(AwsChunkedDecoder, Option<u64>)>,
    inspection: Inspection,
}

impl Objects {
    /// The inspection of a body of `shape`, `declared` bytes long if known.
    pub fn new(
        shape: Shape,
        hashes: Hashes<'_>,
        limits: Arc<Limits>,
        declared: Option<u64>,
    ) -> Objects {
        let expected = match shape.aws_chunked {
            Some(decoded) => decoded,
            None => declared,
        };
        Objects {
            aws: shape
                .aws_chunked
                .map(|decoded| (AwsChunkedDecoder::default(), decoded)),
            inspection: Inspection::new(shape.envelope, hashes, limits, expected),
        }
    }

    /// Feeds the next frame of the body. An error means the body is malformed.
    pub async fn update(&mut self, frame: &Bytes) -> Result<(), BodyError> {
        match &mut self.aws {
            Some((decoder, _)) => {
                for data in decoder.push(frame)? {
                    self.inspection.update(&data).await;
                }
            }
            None => self.inspection.update(frame).await,
        }
        Ok(())
    }

    /// The report, once the body has ended. An error means nothing may pass.
    pub async fn finish(self) -> Result<Report, BodyError> {
        if let Some((decoder, declared)) = &self.aws {
            decoder.finish()?;
            let got = self.inspection.bytes_fed();
            if let Some(declared) = declared.filter(|&n| n != got) {
                return Err(BodyError::Length { got, declared });
            }
        }
        Ok(self.inspection.finish().await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::Coding;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn shapes_follow_the_headers() {
        assert!(Shape::of(&headers(&[])).unwrap().envelope.is_plain());
        let s = Shape::of(&headers(&[
            ("content-encoding", "aws-chunked"),
            ("x-amz-decoded-content-length", "11"),
        ]))
        .unwrap();
        assert_eq!(s.aws_chunked, Some(Some(11)));
        assert!(s.envelope.is_plain());
        let s = Shape::of(&headers(&[(
            "x-amz-content-sha256",
            "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        )]))
        .unwrap();
        assert_eq!(s.aws_chunked, Some(None));
        let s = Shape::of(&headers(&[(
            "content-type",
            "multipart/form-data; boundary=----x",
        )]))
        .unwrap();
        assert_eq!(s.envelope.boundary.as_deref(), Some("----x"));
        // Every value of a field counts, in order.
        let s = Shape::of(&headers(&[
            ("content-encoding", "gzip"),
            ("content-encoding", "zstd"),
        ]))
        .unwrap();
        assert_eq!(s.envelope.codings, [Coding::Gzip, Coding::Zstd]);
        assert!(Shape::of(&headers(&[("content-encoding", "compress")])).is_err());
        assert!(Shape::of(&headers(&[
            ("content-type", "multipart/mixed; boundary=a"),
            ("content-type", "text/plain"),
        ]))
        .is_err());
    }
}
