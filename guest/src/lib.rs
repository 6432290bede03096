//! The hashgate filter: the format (v1, and v2 with PDQ sections) and matching.
//!
//! This crate is the authority's code that gateways run sandboxed. It is compiled two
//! ways:
//!
//! * natively, as an rlib, for the authority tools that **build** filters and for tests
//!   and benches that compare answers;
//! * to `wasm32-unknown-unknown`, encoded as a WebAssembly component with **no imports**
//!   (see `wit/filter.wit` and `src/component.rs`), which is what a gateway runs.
//!
//! The format is specified byte by byte in `docs/FORMAT.md`; this crate is one
//! implementation of it, not its definition.
//!
//! # Example
//!
//! ```
//! use hashgate_guest::{Algorithm, BuildParams, FilterBuilder, Filter, SectionSpec};
//!
//! let listed = [0xab_u8; 32];
//! let params = BuildParams::new("example", 1, 1_700_000_000, 1_700_604_800, 1e-6);
//! let mut builder = FilterBuilder::new(
//!     &params,
//!     &[SectionSpec { algorithm: Algorithm::Sha256, category: Some("test".into()), entries: 1 }],
//! )?;
//! builder.insert(Algorithm::Sha256, Some("test"), &listed)?;
//! let snapshot = builder.finish()?;
//!
//! let filter = Filter::parse(snapshot)?;
//! let hits = filter.check(&[(Algorithm::Sha256, &listed[..])])?;
//! assert_eq!(hits.len(), 1);
//! assert_eq!(hits[0].category.as_deref(), Some("test"));
//! assert!(filter.check(&[(Algorithm::Sha256, &[0u8; 32][..])])?.is_empty());
//! # Ok::<(), hashgate_guest::Error>(())
//! ```

#![cfg_attr(not(test), deny(missing_docs))]

mod algorithm;
mod builder;
pub mod canary;
pub mod delta;
mod error;
mod filter;
pub mod format;
pub mod index;
pub mod pdq;
mod scanner;

#[cfg(target_arch = "wasm32")]
mod component;

pub use algorithm::Algorithm;
pub use builder::{
    optimal_bits, optimal_hashes, pdq_slots, section_bits, BuildParams, FilterBuilder, PdqSpec,
    SectionSpec, MIN_SECTION_BITS,
};
pub use error::Error;
pub use filter::{Filter, Hit, PdqHit, PdqSection, Section};
pub use format::{Header, PdqSectionHeader, SectionHeader};
pub use scanner::ObjectDigests;
