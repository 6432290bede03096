//! Perceptual hashing: PDQ of pictures, so that a resized or re-encoded copy of a listed
//! picture is still found.
//!
//! Exact digests find byte-identical copies only; re-saving a JPEG changes every byte.
//! The lists that matter carry perceptual hashes too. This module computes them natively
//! ([`pdq`]) from pictures recognised by their magic bytes and decoded under limits
//! ([`decode`]); the guest matches them against the filter's PDQ sections.
//!
//! ```
//! use hashgate_host::perceptual::{hash_picture, Picture, PictureLimits};
//! let png = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/pdq/misc-images/c.png")).unwrap();
//! let picture = Picture::sniff(&png).unwrap();
//! let pdq = hash_picture(&png, picture, &PictureLimits::default(), false).unwrap();
//! assert_eq!(pdq.hashes.len(), 1);
//! assert!(pdq.quality >= 50);
//! ```

mod decode;
pub mod pdq;

pub use decode::{decode, Picture, PictureError, PictureLimits};
pub use pdq::{Dihedral, Luma, Pdq, PdqHash};

/// Decodes `bytes` (a `picture`) under `limits` and hashes it: the original's hash, and
/// with `dihedral` the hashes of its seven rotations and mirror images too.
pub fn hash_picture(
    bytes: &[u8],
    picture: Picture,
    limits: &PictureLimits,
    dihedral: bool,
) -> Result<Pdq, PictureError> {
    let luma = decode(bytes, picture, limits)?;
    let which: &[Dihedral] = if dihedral {
        &Dihedral::ALL
    } else {
        &[Dihedral::Original]
    };
    Ok(pdq::hashes(luma, which))
}
