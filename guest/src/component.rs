//! The component's exports: `wit/filter.wit` bound to this crate's [`Filter`].
//!
//! Compiled only for wasm32. The instance holds one filter in its linear memory; the
//! host keeps instances long-lived so that a filter is loaded once, not per call.

use std::cell::RefCell;

use crate::{Algorithm, Filter, ObjectDigests};

/// The one guest-side `bindgen`: the world's exports, generated from `wit/`.
#[allow(missing_docs)]
mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "filter-guest",
    });
}

use bindings::exports::hashgate::filter::filter as wit;

thread_local! {
    // wasm32-unknown-unknown is single-threaded: this is the instance's one filter.
    static FILTER: RefCell<Option<Filter>> = const { RefCell::new(None) };
}

struct Component;

bindings::export!(Component with_types_in bindings);

fn to_wit_algorithm(a: Algorithm) -> wit::Algorithm {
    match a {
        Algorithm::Md5 => wit::Algorithm::Md5,
        Algorithm::Sha1 => wit::Algorithm::Sha1,
        Algorithm::Sha256 => wit::Algorithm::Sha256,
    }
}

fn from_wit_algorithm(a: wit::Algorithm) -> Algorithm {
    match a {
        wit::Algorithm::Md5 => Algorithm::Md5,
        wit::Algorithm::Sha1 => Algorithm::Sha1,
        wit::Algorithm::Sha256 => Algorithm::Sha256,
    }
}

fn info_of(filter: &Filter) -> wit::FilterInfo {
    info_of_header(filter.header())
}

fn info_of_header(h: &crate::Header) -> wit::FilterInfo {
    wit::FilterInfo {
        series: h.series.clone(),
        version: h.version,
        created: h.created,
        expires: h.expires,
        entries: h.entries,
        bits: h.sections.iter().map(|s| s.bits).sum(),
        hashes: h.hashes,
        algorithms: Algorithm::ALL
            .into_iter()
            .filter(|a| h.sections.iter().any(|s| s.algorithm == *a))
            .map(to_wit_algorithm)
            .collect(),
        sections: h
            .sections
            .iter()
            .map(|s| wit::SectionInfo {
                algorithm: to_wit_algorithm(s.algorithm),
                category: s.category.clone(),
                entries: s.entries,
                bits: s.bits,
            })
            .collect(),
        pdq_sections: h
            .pdq
            .iter()
            .map(|s| wit::PdqSectionInfo {
                category: s.category.clone(),
                entries: s.entries,
                slots: s.slots,
                threshold: s.threshold,
            })
            .collect(),
    }
}

fn verdict_of(
    filter: &Filter,
    digests: &[(Algorithm, &[u8])],
) -> Result<wit::Verdict, wit::CheckError> {
    let hits = filter
        .check_indexed(digests)
        .map_err(|e| wit::CheckError::BadDigest(e.to_string()))?;
    if hits.is_empty() {
        return Ok(wit::Verdict::Clean);
    }
    Ok(wit::Verdict::Hit(
        hits.into_iter()
            .map(|(digest, section)| wit::Hit {
                digest: digest as u32,
                section: section as u32,
            })
            .collect(),
    ))
}

fn load_error(e: crate::Error) -> wit::LoadError {
    match e {
        crate::Error::UnsupportedVersion(v) => wit::LoadError::UnsupportedVersion(v),
        crate::Error::PayloadDigest | crate::Error::DeltaMismatch(_) => {
            wit::LoadError::Integrity(e.to_string())
        }
        crate::Error::DeltaBase => wit::LoadError::WrongBase(e.to_string()),
        other => wit::LoadError::Malformed(other.to_string()),
    }
}

impl wit::Guest for Component {
    type Scanner = Scanner;

    fn load(snapshot: Vec<u8>) -> Result<wit::FilterInfo, wit::LoadError> {
        let filter = Filter::parse(snapshot).map_err(load_error)?;
        let info = info_of(&filter);
        FILTER.with(|f| *f.borrow_mut() = Some(filter));
        Ok(info)
    }

    fn apply_delta(delta: Vec<u8>) -> Result<wit::FilterInfo, wit::LoadError> {
        FILTER.with(|f| {
            let mut guard = f.borrow_mut();
            let filter = guard
                .as_mut()
                .ok_or_else(|| wit::LoadError::WrongBase("no snapshot is loaded".into()))?;
            filter.apply_delta(&delta).map_err(load_error)?;
            Ok(info_of(filter))
        })
    }

    fn read_snapshot(offset: u64, len: u32) -> Result<Vec<u8>, wit::CheckError> {
        FILTER.with(|f| {
            let guard = f.borrow();
            let bytes = guard.as_ref().ok_or(wit::CheckError::NoFilter)?.as_bytes();
            let start = usize::try_from(offset)
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            let end = start.saturating_add(len as usize).min(bytes.len());
            Ok(bytes[start..end].to_vec())
        })
    }

    fn describe(head: Vec<u8>) -> Result<wit::FilterInfo, wit::LoadError> {
        crate::Header::parse(&head)
            .map(|h| info_of_header(&h))
            .map_err(load_error)
    }

    fn info() -> Option<wit::FilterInfo> {
        FILTER.with(|f| f.borrow().as_ref().map(info_of))
    }

    fn check(digests: Vec<wit::Digest>, _size: u64) -> Result<wit::Verdict, wit::CheckError> {
        FILTER.with(|f| {
            let guard = f.borrow();
            let filter = guard.as_ref().ok_or(wit::CheckError::NoFilter)?;
            let digests: Vec<(Algorithm, &[u8])> = digests
                .iter()
                .map(|d| (from_wit_algorithm(d.algorithm), d.bytes.as_slice()))
                .collect();
            verdict_of(filter, &digests)
        })
    }

    fn check_pdq(hashes: Vec<Vec<u8>>) -> Result<Vec<wit::PdqHit>, wit::CheckError> {
        let queries = hashes
            .iter()
            .map(|h| {
                <[u8; crate::pdq::HASH_LEN]>::try_from(h.as_slice()).map_err(|_| {
                    wit::CheckError::BadDigest(format!(
                        "a PDQ hash cannot be {} bytes long",
                        h.len()
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        FILTER.with(|f| {
            let guard = f.borrow();
            let filter = guard.as_ref().ok_or(wit::CheckError::NoFilter)?;
            let hits = filter
                .check_pdq(&queries)
                .map_err(|e| wit::CheckError::BadDigest(e.to_string()))?;
            Ok(hits
                .into_iter()
                .map(|h| wit::PdqHit {
                    query: h.query as u32,
                    section: h.section as u32,
                    listed: h.listed.to_vec(),
                    distance: h.distance,
                })
                .collect())
        })
    }

    fn check_packed(
        algorithm: wit::Algorithm,
        packed: Vec<u8>,
    ) -> Result<Vec<wit::Hit>, wit::CheckError> {
        FILTER.with(|f| {
            let guard = f.borrow();
            let filter = guard.as_ref().ok_or(wit::CheckError::NoFilter)?;
            let hits = filter
                .check_packed(from_wit_algorithm(algorithm), &packed)
                .map_err(|e| wit::CheckError::BadDigest(e.to_string()))?;
            Ok(hits
                .into_iter()
                .map(|(digest, section)| wit::Hit {
                    digest: digest as u32,
                    section: section as u32,
                })
                .collect())
        })
    }
}

/// The `scanner` resource: hashes raw bytes in the guest (the portable path).
pub struct Scanner {
    digests: RefCell<Option<ObjectDigests>>,
}

fn fresh_digests() -> Option<ObjectDigests> {
    FILTER.with(|f| {
        f.borrow()
            .as_ref()
            .map(|filter| ObjectDigests::new(&filter.algorithms()))
    })
}

impl wit::GuestScanner for Scanner {
    fn new() -> Self {
        Scanner {
            digests: RefCell::new(fresh_digests()),
        }
    }

    fn write(&self, chunk: Vec<u8>) {
        if let Some(d) = self.digests.borrow_mut().as_mut() {
            d.update(&chunk);
        }
    }

    fn finish(&self) -> Result<wit::ScanResult, wit::CheckError> {
        let digests = self.digests.replace(fresh_digests());
        let digests = digests.ok_or(wit::CheckError::NoFilter)?.finish();
        let verdict = FILTER.with(|f| {
            let guard = f.borrow();
            let filter = guard.as_ref().ok_or(wit::CheckError::NoFilter)?;
            let views: Vec<(Algorithm, &[u8])> =
                digests.iter().map(|(a, d)| (*a, d.as_slice())).collect();
            verdict_of(filter, &views)
        })?;
        Ok(wit::ScanResult {
            digests: digests
                .into_iter()
                .map(|(a, bytes)| wit::Digest {
                    algorithm: to_wit_algorithm(a),
                    bytes,
                })
                .collect(),
            verdict,
        })
    }
}
