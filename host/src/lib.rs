//! The hashgate host: runs the authority's filter guest next to customer data.
//!
//! * [`runtime`] loads the guest component with wasmtime (Cranelift, pooling allocator,
//!   one `InstancePre`, a memory cap and an epoch deadline on every call) and keeps a
//!   long-lived instance that holds the filter, replacing it if it traps.
//! * [`trust`] reads Ed25519 keys and verifies the signature trailer of every file the
//!   authority publishes before the guest sees a byte of it.
//! * [`hashing`] computes, natively, only the digests the loaded filter holds.
//! * [`inspect`] is the inspection pipeline every front-end feeds: codings undone,
//!   multipart bodies split, archives opened, every object found hashed.
//! * [`enforce`] is the verdict core every front-end shares: policy (actions per
//!   category, allow-list, fail-closed or fail-open), audit log, metrics.
//! * [`scan`] walks data at rest on all cores; [`gateway`] is the inline upload gateway
//!   (streaming reverse proxy or embedded store, HTTP 451 for listed uploads); [`icap`]
//!   is an ICAP server for the proxies operators already run. The three are thin
//!   front-ends over [`enforce`]; they share [`config`], [`listener`] and [`admin`] and
//!   never reach into each other. [`serve`] assembles either server from its resolved
//!   configuration.
//!
//! The host never links the guest crate: it reaches the filter only through the
//! component, so what runs in production is what the tests exercise.

#![deny(missing_docs)]

pub mod admin;
pub mod catalog;
pub mod config;
pub mod enforce;
mod error;
pub mod feed;
pub mod gateway;
pub mod hashing;
pub mod icap;
pub mod inspect;
pub mod listener;
pub mod perceptual;
pub mod runtime;
pub mod scan;
pub mod serve;
pub mod tls;

pub use error::Error;
/// Crash-safe writes (from `hashgate-trust`).
pub use hashgate_trust::durable;
/// Keys and signatures (from `hashgate-trust`, which the authority's tools share).
pub use hashgate_trust::keys as trust;
pub use runtime::types::{Algorithm, Digest, FilterInfo, Hit, SectionInfo, Verdict};
pub use runtime::{FilterEngine, Limits, Runtime};

/// The category label of the canary sections every filter holds (`docs/FORMAT.md`).
pub const CANARY_CATEGORY: &str = "canary";

/// The guest component built from `guest/` by the build script: the authority's reference
/// filter implementation, with no imports.
pub const GUEST_COMPONENT: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/hashgate_guest.component.wasm"));
