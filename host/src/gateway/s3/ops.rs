//! Which S3 operation a request is, read exactly as S3 reads it, or refused.
//!
//! S3 routes a request on its method, the *names* present in its query string and the
//! `x-amz-copy-source` header (the body and path shape do not matter for the operations
//! here). The gateway must never take a request for something other than what the store
//! will do with it: a completion it took for a plain `POST` would be forwarded unchecked.
//! So the table follows S3's routing (as s3s implements it, checked against s3s-fs by
//! tests/s3.rs), and whatever stores may read differently is refused with 400 before any
//! byte is forwarded:
//!
//! * a routing name (`uploadId`, `partNumber`, `uploads`, the object subresources)
//!   given twice: one store takes the first, another the last, s3s rejects it;
//! * a routing name spelt in another case, percent-encoded, or glued to another name
//!   with `;`: one store decodes or folds it, another does not;
//! * combinations no S3 operation has: `uploadId` without `partNumber` on a `PUT` (or the
//!   reverse), a part or upload id together with a subresource, a copy source on a
//!   subresource;
//! * a part number that is not plainly 1 to 10000 (`01`, `+1`), and two copy sources.
//!
//! | method | query names | `x-amz-copy-source` | operation |
//! | --- | --- | --- | --- |
//! | `PUT` | `partNumber`, `uploadId` | yes | [`Op::UploadPartCopy`] |
//! | `PUT` | `partNumber`, `uploadId` | no | [`Op::UploadPart`] |
//! | `PUT` | none of the routing names | yes | [`Op::CopyObject`] |
//! | `POST` | `uploadId` (with or without `partNumber`) | - | [`Op::Complete`] |
//! | `DELETE` | `uploadId` | - | [`Op::Abort`] |
//! | `POST` | `delete` | - | [`Op::DeleteObjects`] |
//! | `POST` | `uploads` | - | [`Op::CreateUpload`] |
//! | anything else | | | [`Op::Other`]: proxied or inspected as any request |

use hyper::header::HeaderMap;
use hyper::Method;

/// The S3 operations the gateway treats specially.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `PUT ?partNumber=N&uploadId=ID`: the part's bytes are in the body.
    UploadPart {
        /// The upload id.
        upload: String,
        /// The part number (1 to 10000).
        number: u32,
    },
    /// `PUT ?partNumber=N&uploadId=ID` with `x-amz-copy-source`: the part's bytes are
    /// (a range of) an object already stored.
    UploadPartCopy {
        /// The upload id.
        upload: String,
        /// The part number (1 to 10000).
        number: u32,
        /// The object copied from.
        source: CopySource,
    },
    /// `PUT` with `x-amz-copy-source`: a new object made of a stored one.
    CopyObject {
        /// The object copied from.
        source: CopySource,
    },
    /// `POST ?uploadId=ID`.
    Complete {
        /// The upload id.
        upload: String,
    },
    /// `DELETE ?uploadId=ID`.
    Abort {
        /// The upload id.
        upload: String,
    },
    /// `POST ?uploads`: a multipart upload begun (its body, if any, is stored nowhere).
    CreateUpload,
    /// `POST ?delete`: several objects deleted at once.
    DeleteObjects,
    /// Anything else.
    Other,
}

/// The object an `x-amz-copy-source` header names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopySource {
    /// The bucket.
    pub bucket: String,
    /// The key (decoded).
    pub key: String,
    /// The version copied, if one is named.
    pub version: Option<String>,
}

/// Occurs when a request cannot be classified the way every S3 store would classify it;
/// it is refused with 400 and never forwarded.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unclassifiable {
    /// Occurs when a routing name appears more than once in the query.
    #[error("the query names {0} more than once")]
    Repeated(&'static str),
    /// Occurs when a query name is a routing name spelt another way.
    #[error("the query name {0:?} is an S3 routing name spelt another way")]
    Spelling(String),
    /// Occurs when the query names combine into no S3 operation.
    #[error("the query combines {0}, which no S3 operation does")]
    Mixed(&'static str),
    /// Occurs when `partNumber` is not a plain number from 1 to 10000.
    #[error("partNumber {0:?} is not a number from 1 to 10000")]
    PartNumber(String),
    /// Occurs when `x-amz-copy-source` is missing its bucket or key, repeated, not
    /// UTF-8, or carries something other than `versionId`.
    #[error("x-amz-copy-source {0:?} is not bucket/key[?versionId=...]")]
    CopySource(String),
}

/// The query names S3 routes object requests on.
const ROUTING: [&str; 10] = [
    "uploadId",
    "partNumber",
    "uploads",
    "acl",
    "tagging",
    "legal-hold",
    "retention",
    "select",
    "restore",
    "delete",
];

/// The routing names present in a query, each with its value, checked for repeats and
/// other spellings.
#[derive(Default)]
struct Names {
    values: [Option<String>; ROUTING.len()],
}

/// A query pair's name, decoded.
fn name_of(pair: &str) -> String {
    let raw = pair.split_once('=').map_or(pair, |(n, _)| n);
    form_urlencoded::parse(raw.as_bytes())
        .next()
        .map(|(n, _)| n.into_owned())
        .unwrap_or_default()
}

/// The routing name `name` is, in any case, with spaces or `;`-glued pieces around it.
fn routing(name: &str) -> Option<usize> {
    name.split(';').find_map(|piece| {
        ROUTING
            .iter()
            .position(|r| r.eq_ignore_ascii_case(piece.trim()))
    })
}

impl Names {
    fn read(query: &str) -> Result<Names, Unclassifiable> {
        let mut names = Names::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            // `a=1;b=2` is one pair to most stores and two to some.
            if pair.contains(';')
                && pair
                    .split(';')
                    .skip(1)
                    .any(|p| routing(&name_of(p)).is_some())
            {
                return Err(Unclassifiable::Spelling(pair.to_string()));
            }
            let (raw, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decoded = name_of(raw);
            let Some(index) = routing(&decoded) else {
                continue;
            };
            if raw != ROUTING[index] {
                return Err(Unclassifiable::Spelling(raw.to_string()));
            }
            if names.values[index].is_some() {
                return Err(Unclassifiable::Repeated(ROUTING[index]));
            }
            let value = form_urlencoded::parse(format!("v={value}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            names.values[index] = Some(value);
        }
        Ok(names)
    }

    fn get(&self, name: &str) -> Option<&str> {
        let index = ROUTING.iter().position(|r| *r == name)?;
        self.values[index].as_deref()
    }

    /// Whether any subresource (any routing name but the multipart ones) is present.
    fn subresource(&self) -> bool {
        self.values[2..].iter().any(Option::is_some)
    }
}

impl Op {
    /// Reads the operation off a request's method, query and headers.
    pub fn of(
        method: &Method,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<Op, Unclassifiable> {
        let names = Names::read(query.unwrap_or(""))?;
        let upload = names.get("uploadId").map(str::to_string);
        let number = names.get("partNumber");
        let sources: Vec<_> = headers.get_all("x-amz-copy-source").iter().collect();
        let source = match sources.as_slice() {
            [] => None,
            [one] => Some(CopySource::parse(one.as_bytes())?),
            [first, ..] => {
                return Err(Unclassifiable::CopySource(
                    String::from_utf8_lossy(first.as_bytes()).into_owned(),
                ))
            }
        };
        let multipart = upload.is_some() || number.is_some();
        if multipart && names.subresource() {
            return Err(Unclassifiable::Mixed(
                "a part or upload id and a subresource",
            ));
        }
        if *method == Method::PUT {
            if source.is_some() && names.subresource() {
                return Err(Unclassifiable::Mixed("a copy source and a subresource"));
            }
            return match (upload, number, source) {
                (Some(upload), Some(number), source) => {
                    let number = part_number(number)?;
                    Ok(match source {
                        Some(source) => Op::UploadPartCopy {
                            upload,
                            number,
                            source,
                        },
                        None => Op::UploadPart { upload, number },
                    })
                }
                (None, None, Some(source)) => Ok(Op::CopyObject { source }),
                (None, None, None) => Ok(Op::Other),
                _ => Err(Unclassifiable::Mixed(
                    "uploadId and partNumber, one without the other",
                )),
            };
        }
        // S3 takes a POST with an upload id for its completion, whatever else it names.
        Ok(match (method, upload) {
            (&Method::POST, Some(upload)) => Op::Complete { upload },
            (&Method::DELETE, Some(upload)) => Op::Abort { upload },
            (&Method::POST, None) if names.get("delete").is_some() => Op::DeleteObjects,
            (&Method::POST, None) if names.get("uploads").is_some() => Op::CreateUpload,
            _ => Op::Other,
        })
    }
}

fn part_number(text: &str) -> Result<u32, Unclassifiable> {
    let plain = !text.is_empty()
        && text.len() <= 5
        && text.bytes().all(|b| b.is_ascii_digit())
        && !text.starts_with('0');
    match text.parse() {
        Ok(n @ 1..=10_000) if plain => Ok(n),
        _ => Err(Unclassifiable::PartNumber(text.to_string())),
    }
}

impl CopySource {
    /// Reads `[/]bucket/key[?versionId=V]`, the key percent-encoded (a `?` in a key is
    /// `%3F`, so the first literal `?` starts the query).
    pub fn parse(raw: &[u8]) -> Result<CopySource, Unclassifiable> {
        let bad = || Unclassifiable::CopySource(String::from_utf8_lossy(raw).into_owned());
        let text = std::str::from_utf8(raw).map_err(|_| bad())?;
        let (path, query) = text.split_once('?').unwrap_or((text, ""));
        let mut version = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("versionId", v)) if version.is_none() && !v.is_empty() => {
                    version = Some(percent_decode(v).ok_or_else(bad)?)
                }
                _ => return Err(bad()),
            }
        }
        let path = percent_decode(path.strip_prefix('/').unwrap_or(path)).ok_or_else(bad)?;
        let (bucket, key) = path.split_once('/').ok_or_else(bad)?;
        if bucket.is_empty() || key.is_empty() || bucket.contains(':') {
            // Access point and Outposts ARNs name no bucket this gateway can read.
            return Err(bad());
        }
        Ok(CopySource {
            bucket: bucket.to_string(),
            key: key.to_string(),
            version,
        })
    }

    /// The source's path and query on a path-style origin, encoded as S3 wants it.
    pub fn path_and_query(&self) -> String {
        let mut target = format!(
            "/{}/{}",
            encode(&self.bucket, false),
            encode(&self.key, true)
        );
        if let Some(v) = &self.version {
            target.push_str("?versionId=");
            target.push_str(&encode(v, false));
        }
        target
    }
}

/// Percent-decodes `text` (no `+` for space: this is a path); `None` if the result is
/// not UTF-8 or an escape is broken.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// S3's URI encoding: every byte but the unreserved ones (and `/` in a key) escaped.
fn encode(text: &str, slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn op(m: Method, q: &str) -> Result<Op, Unclassifiable> {
        Op::of(&m, Some(q), &HeaderMap::new())
    }

    fn copy(m: Method, q: &str, source: &'static str) -> Result<Op, Unclassifiable> {
        let mut h = HeaderMap::new();
        h.insert("x-amz-copy-source", HeaderValue::from_static(source));
        Op::of(&m, Some(q), &h)
    }

    #[test]
    fn operations_are_told_apart_by_method_query_and_copy_source() {
        assert_eq!(
            op(Method::PUT, "partNumber=3&uploadId=a%2Fb"),
            Ok(Op::UploadPart {
                upload: "a/b".into(),
                number: 3
            })
        );
        assert_eq!(
            op(Method::POST, "uploadId=x"),
            Ok(Op::Complete { upload: "x".into() })
        );
        // S3 completes on a POST with an upload id, whatever else the query says.
        assert_eq!(
            op(Method::POST, "partNumber=1&uploadId=x"),
            Ok(Op::Complete { upload: "x".into() })
        );
        assert_eq!(
            op(Method::DELETE, "uploadId=x"),
            Ok(Op::Abort { upload: "x".into() })
        );
        assert_eq!(op(Method::POST, "uploads"), Ok(Op::CreateUpload));
        assert_eq!(op(Method::POST, "delete"), Ok(Op::DeleteObjects));
        assert_eq!(op(Method::PUT, "delete"), Ok(Op::Other));
        assert_eq!(op(Method::PUT, "x-id=PutObject"), Ok(Op::Other));
        assert_eq!(op(Method::GET, "uploadId=x"), Ok(Op::Other));
        let source = CopySource {
            bucket: "b".into(),
            key: "dir/a key?".into(),
            version: Some("v1".into()),
        };
        assert_eq!(
            copy(Method::PUT, "", "/b/dir/a%20key%3F?versionId=v1"),
            Ok(Op::CopyObject {
                source: source.clone()
            })
        );
        assert_eq!(source.path_and_query(), "/b/dir/a%20key%3F?versionId=v1");
        assert_eq!(
            copy(Method::PUT, "uploadId=u&partNumber=2", "b/k"),
            Ok(Op::UploadPartCopy {
                upload: "u".into(),
                number: 2,
                source: CopySource {
                    bucket: "b".into(),
                    key: "k".into(),
                    version: None
                }
            })
        );
    }

    #[test]
    fn what_stores_may_read_differently_is_refused() {
        for (m, q) in [
            (Method::POST, "uploadId=x&uploadId=y"),
            (Method::PUT, "partNumber=1&partNumber=2&uploadId=x"),
            (Method::POST, "upload%49d=x"),
            (Method::POST, "uploadid=x"),
            (Method::POST, "UploadId=x"),
            (Method::PUT, "partNumber=1&upload%49d=x"),
            (Method::PUT, "partNumber=1;uploadId=x"),
            (Method::POST, "partNumber=1;uploadId=x"),
            (Method::POST, "x=1;uploadId=x"),
            (Method::POST, "partNumber%3BuploadId=x"),
            (Method::PUT, "uploadId=x"),
            (Method::PUT, "partNumber=1"),
            (Method::PUT, "partNumber=01&uploadId=x"),
            (Method::PUT, "partNumber=%2B1&uploadId=x"),
            (Method::PUT, "partNumber=10001&uploadId=x"),
            (Method::PUT, "partNumber=0&uploadId=x"),
            (Method::PUT, "acl&partNumber=1&uploadId=x"),
            (Method::POST, "uploads&uploadId=x"),
        ] {
            assert!(op(m.clone(), q).is_err(), "{m} ?{q}");
        }
        for source in [
            "b",
            "/b/",
            "arn:aws:s3:us-east-1:1:accesspoint/a/object/k",
            "b/k?x=1",
            "b/%zz",
        ] {
            assert!(copy(Method::PUT, "", source).is_err(), "{source}");
        }
        assert!(copy(Method::PUT, "tagging", "b/k").is_err());
    }
}
