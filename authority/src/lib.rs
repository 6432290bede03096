//! The authority's side of hashgate: digest lists in, signed filter snapshots out.
//!
//! * [`keys`] generates the authority's signing key pair.
//! * [`list`] reads digest lists (hashgate's own line format and ClamAV `.hdb`/`.hsb`),
//!   streaming, with errors that name the file and line.
//! * [`build`] turns lists into a signed snapshot in two streaming passes (count, then
//!   insert), so memory stays near the filter's own size however long the lists are.
//! * [`inspect`] reports what a snapshot is, how full it is, and who signed it.
//! * [`confirm`] serves the confirmation range API gateways use to tell true matches
//!   from false positives.
//! * [`feedback`] receives operators' signed reports of hits and totals them.
//! * [`publish`] writes a feed: the next version's snapshot, deltas from recent versions,
//!   and the signed manifest (`docs/PROTOCOL.md`).
//!
//! This crate links the guest's format code natively; gateways never do (they run it as
//! a component).

#![deny(missing_docs)]

pub mod build;
pub mod confirm;
mod error;
pub mod feedback;
pub mod inspect;
pub mod keys;
pub mod list;
pub mod publish;

pub use error::Error;

pub use hashgate_guest::BuildParams;

/// The canary file's bytes (`docs/FORMAT.md`, "The canary").
pub fn canary_content() -> &'static [u8] {
    hashgate_guest::canary::CONTENT
}

/// The creation time to write: `SOURCE_DATE_EPOCH` when set (reproducible builds: the
/// same inputs give byte-identical files), else now, in Unix seconds.
pub fn creation_time() -> Result<u64, Error> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v.trim().parse().map_err(|_| {
            Error::Config(format!(
                "SOURCE_DATE_EPOCH={v:?} is not a number of seconds"
            ))
        }),
        Err(_) => Ok(std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())),
    }
}
