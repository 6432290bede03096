//! `DeleteObjects` (`POST ?delete`): the catalog forgets the objects the store says it
//! deleted.
//!
//! The request is passed on as it came (its body is a list of keys, not an upload). The
//! store's answer names each key it deleted (`<Deleted><Key>`), and only those rows go:
//! a key the request named but the store did not delete (an error, a parse of the
//! request that differs from ours) keeps its row. A quiet request's answer names only
//! the failures, so it removes nothing here; those rows, and rows of objects a client
//! addressed by another spelling of their key, stay until a re-check finds the object
//! gone. The request is forwarded as it came, and the client gets the store's answer
//! (or a 502 if that answer cannot be read whole).

use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use quick_xml::events::Event;

use super::super::body::{full, GatewayBody};
use super::super::Gateway;
use crate::enforce::Context;

/// Largest answer read (1000 keys of 1 KiB, each escaped, fit well under it).
const MAX_RESULT: usize = 16 << 20;

/// Passes a `DeleteObjects` on and removes the rows of the keys it deleted.
pub async fn delete_objects(
    gw: &Gateway,
    req: Request<Incoming>,
    ctx: &Context,
) -> Response<GatewayBody> {
    let response = super::super::upload::pass_through(gw, req).await;
    if !gw.keeps_catalog() || response.status() != StatusCode::OK {
        return response;
    }
    let (parts, body) = response.into_parts();
    let read = http_body_util::Limited::new(body, MAX_RESULT)
        .collect()
        .await;
    let answer = match read {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            // The store deleted what it deleted; its answer is lost either way.
            tracing::warn!(request_id = %ctx.request_id, error = %e, "cannot read a DeleteObjects answer");
            return gw.refusal(
                StatusCode::BAD_GATEWAY,
                ctx,
                "the store's answer could not be read",
            );
        }
    };
    match deleted_keys(&answer) {
        Ok(keys) => {
            // Path style names the bucket in the path, virtual-hosted style in the host.
            let base = ctx.path.trim_end_matches('/');
            gw.record_deleted(ctx, keys.iter().map(|k| format!("{base}/{}", key_path(k))));
        }
        Err(why) => {
            tracing::warn!(request_id = %ctx.request_id, why, "a DeleteObjects answer not understood: no row removed");
        }
    }
    Response::from_parts(parts, full(answer))
}

/// A key as a path segment, percent-encoded as S3 clients encode it (every byte but
/// unreserved characters and `/`): the spelling the object's row was recorded under.
fn key_path(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for &b in key.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The keys a `<DeleteResult>` says were deleted (`<Deleted><Key>`).
fn deleted_keys(xml: &[u8]) -> Result<Vec<String>, String> {
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut path: Vec<Vec<u8>> = Vec::new();
    let mut keys = Vec::new();
    let mut text = String::new();
    let mut buf = Vec::new();
    let in_key = |path: &[Vec<u8>]| matches!(path, [r, d, k] if r == b"DeleteResult" && d == b"Deleted" && k == b"Key");
    loop {
        match reader
            .read_event_into(&mut buf)
            .map_err(|e| e.to_string())?
        {
            Event::Start(e) => {
                path.push(e.local_name().as_ref().to_vec());
                text.clear();
            }
            Event::End(_) => {
                if in_key(&path) {
                    keys.push(std::mem::take(&mut text));
                }
                path.pop();
            }
            Event::Text(t) if in_key(&path) => {
                text.push_str(&t.decode().map_err(|e| e.to_string())?);
            }
            Event::GeneralRef(r) if in_key(&path) => text.push(super::xml_reference(&r)?),
            Event::CData(c) if in_key(&path) => {
                text.push_str(std::str::from_utf8(&c).map_err(|e| e.to_string())?);
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if !path.is_empty() {
        return Err("the answer ends early".into());
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_keys_the_store_deleted_are_read() {
        let xml = br#"<?xml version="1.0" encoding="UTF-8"?>
<DeleteResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Deleted><Key>a/b c.bin</Key></Deleted><Error><Key>kept.bin</Key><Code>AccessDenied</Code></Error><Deleted><Key>x&amp;y&#x2F;z</Key><VersionId>1</VersionId></Deleted></DeleteResult>"#;
        assert_eq!(deleted_keys(xml).unwrap(), ["a/b c.bin", "x&y/z"]);
        assert!(deleted_keys(b"<DeleteResult><Deleted><Key>a").is_err());
        assert!(deleted_keys(b"<DeleteResult/>").unwrap().is_empty());
    }

    #[test]
    fn keys_are_spelt_as_clients_send_them() {
        assert_eq!(key_path("photos/a b+c~.jpg"), "photos/a%20b%2Bc~.jpg");
        assert_eq!(key_path("é"), "%C3%A9");
    }
}
