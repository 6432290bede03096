//! `CompleteMultipartUpload`: its body read as strictly as a store reads it, and the
//! spooled parts it names read back, in its order, as one object.

use quick_xml::events::Event;

use super::super::assembly::Piece;
use super::spool::{Spool, Unvouched};
use crate::inspect::Hashes;
use crate::inspect::{Limits, Report};

/// One part a completion names.
#[derive(Debug, PartialEq, Eq)]
pub struct Listed {
    /// The part number.
    pub number: u32,
    /// The ETag the client says the part has, if it says one.
    pub etag: Option<String>,
}

/// Occurs when a `CompleteMultipartUpload` body is not one a store reads the same way
/// every time: what is wrong with it, for the client's 400.
#[derive(Debug, thiserror::Error)]
#[error("completion body: {0}")]
pub struct BadCompletion(String);

fn bad(why: impl Into<String>) -> BadCompletion {
    BadCompletion(why.into())
}

/// The fields a `<Part>` may hold (S3's `CompletedPart`).
const PART_FIELDS: [&str; 7] = [
    "PartNumber",
    "ETag",
    "ChecksumCRC32",
    "ChecksumCRC32C",
    "ChecksumCRC64NVME",
    "ChecksumSHA1",
    "ChecksumSHA256",
];

/// The parts a completion body lists, in order. Refused: anything but
/// `<CompleteMultipartUpload>` holding `<Part>`s of [`PART_FIELDS`] (no document type,
/// comments, CDATA, processing instructions or prefixed names: readers differ on them),
/// a field twice in one part, a part without a number, and numbers that do not rise
/// (S3 refuses those too, `InvalidPartOrder`).
pub fn parts(xml: &[u8]) -> Result<Vec<Listed>, BadCompletion> {
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut path: Vec<String> = Vec::new();
    let mut listed = Vec::new();
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut text = String::new();
    let mut seen_root = false;
    let mut buf = Vec::new();
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| bad(format!("not XML: {e}")))?;
        match event {
            Event::Decl(_) if !seen_root && path.is_empty() => {}
            Event::Start(e) => {
                let name = std::str::from_utf8(e.name().as_ref())
                    .map_err(|_| bad("a name is not UTF-8"))?
                    .to_string();
                match (path.len(), name.as_str()) {
                    (0, "CompleteMultipartUpload") if !seen_root => seen_root = true,
                    (1, "Part") => fields.clear(),
                    (2, field) if PART_FIELDS.contains(&field) => text.clear(),
                    _ => return Err(bad(format!("unexpected element <{name}>"))),
                }
                if !path.is_empty() && e.attributes().next().is_some() {
                    return Err(bad(format!("attributes on <{name}>")));
                }
                path.push(name);
            }
            Event::Empty(_) if path.is_empty() && !seen_root => {
                return Err(bad("it lists no parts"));
            }
            Event::End(_) => {
                let name = path.pop().unwrap_or_default();
                match path.len() {
                    2 => {
                        if fields.iter().any(|(f, _)| *f == name) {
                            return Err(bad(format!("<{name}> twice in one part")));
                        }
                        fields.push((name, std::mem::take(&mut text)));
                    }
                    1 => listed.push(part(&fields)?),
                    _ => {}
                }
            }
            Event::Text(t) => {
                let t = t.decode().map_err(|_| bad("text is not UTF-8"))?;
                if path.len() == 3 {
                    text.push_str(&t);
                } else if !t.trim().is_empty() {
                    return Err(bad("text outside a part's fields"));
                }
            }
            Event::GeneralRef(r) if path.len() == 3 => {
                text.push(super::xml_reference(&r).map_err(bad)?);
            }
            Event::Eof if seen_root && path.is_empty() => break,
            Event::Eof => return Err(bad("it ends early")),
            other => return Err(bad(format!("unexpected {other:?}"))),
        }
        buf.clear();
    }
    if listed.is_empty() {
        return Err(bad("it lists no parts"));
    }
    if listed.windows(2).any(|w| w[0].number >= w[1].number) {
        return Err(bad("part numbers do not rise"));
    }
    Ok(listed)
}

fn part(fields: &[(String, String)]) -> Result<Listed, BadCompletion> {
    let field = |name: &str| fields.iter().find(|(f, _)| f == name).map(|(_, v)| v);
    let number = field("PartNumber").ok_or_else(|| bad("a part without a PartNumber"))?;
    let number = number
        .trim()
        .parse()
        .ok()
        .filter(|n| (1..=10_000).contains(n))
        .ok_or_else(|| bad(format!("bad PartNumber {number:?}")))?;
    Ok(Listed {
        number,
        etag: field("ETag").map(|e| e.trim().to_string()),
    })
}

/// Why the parts of an upload cannot be checked as one object (the completion is then
/// refused with 503, not forwarded).
#[derive(Debug, thiserror::Error)]
pub enum AssemblyError {
    /// Occurs when the spool cannot vouch for a part the completion names.
    #[error(transparent)]
    Unvouched(#[from] Unvouched),
    /// Occurs when the parts cannot be read back or inspected.
    #[error(transparent)]
    Assembly(#[from] super::super::assembly::AssemblyError),
    /// Occurs when the blocking task that reads the parts panicked or was cancelled.
    #[error("the assembly task failed: {0}")]
    Task(String),
}

/// Inspects the spooled parts `listed` names, in its order, as one object (a zip
/// uploaded in parts is opened like any other).
pub fn inspect(
    spool: &Spool,
    upload: &str,
    listed: &[Listed],
    hashes: Hashes<'_>,
    limits: &Limits,
) -> Result<Report, AssemblyError> {
    let mut pieces = Vec::with_capacity(listed.len());
    for part in listed {
        let spooled = spool.vouch(upload, part.number, part.etag.as_deref())?;
        pieces.push(Piece {
            path: spooled.path,
            aws_chunked: spooled.aws,
            length: None,
        });
    }
    Ok(super::super::assembly::inspect(&pieces, hashes, limits)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_bodies_give_their_parts_in_order() {
        let xml = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Part><ETag>&quot;a&quot;</ETag><PartNumber>1</PartNumber></Part><Part><PartNumber> 2 </PartNumber><ChecksumCRC32>x==</ChecksumCRC32></Part></CompleteMultipartUpload>";
        assert_eq!(
            parts(xml).unwrap(),
            [
                Listed {
                    number: 1,
                    etag: Some("\"a\"".into())
                },
                Listed {
                    number: 2,
                    etag: None
                }
            ]
        );
    }

    #[test]
    fn completion_bodies_readers_may_differ_on_are_refused() {
        for xml in [
            "<CompleteMultipartUpload/>",
            "<CompleteMultipartUpload></CompleteMultipartUpload>",
            "<CompleteMultipartUpload><Part><PartNumber>x</PartNumber></Part></CompleteMultipartUpload>",
            "<CompleteMultipartUpload><Part><PartNumber>1</Part></CompleteMultipartUpload>",
            "<CompleteMultipartUpload><Part><PartNumber>2</PartNumber></Part><Part><PartNumber>1</PartNumber></Part></CompleteMultipartUpload>",
            "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber></Part><Part><PartNumber>1</PartNumber></Part></CompleteMultipartUpload>",
            "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><PartNumber>2</PartNumber></Part></CompleteMultipartUpload>",
            "<CompleteMultipartUpload><Part><!-- c --><PartNumber>1</PartNumber></Part></CompleteMultipartUpload>",
            "<CompleteMultipartUpload><Part><PartNumber><![CDATA[1]]></PartNumber></Part></CompleteMultipartUpload>",
            "<!DOCTYPE x [<!ENTITY n \"1\">]><CompleteMultipartUpload><Part><PartNumber>&n;</PartNumber></Part></CompleteMultipartUpload>",
            "<s3:CompleteMultipartUpload><s3:Part><s3:PartNumber>1</s3:PartNumber></s3:Part></s3:CompleteMultipartUpload>",
            "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><Size>5</Size></Part></CompleteMultipartUpload>",
            "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber></Part></CompleteMultipartUpload><CompleteMultipartUpload/>",
            "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber></Part>",
            "<CompleteMultipartUpload>junk<Part><PartNumber>1</PartNumber></Part></CompleteMultipartUpload>",
        ] {
            assert!(parts(xml.as_bytes()).is_err(), "{xml}");
        }
    }
}
