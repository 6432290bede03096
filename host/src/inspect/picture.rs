//! Pictures in the tree: a node whose magic bytes announce a picture has its bytes kept
//! (up to [`PictureBudget::max_bytes`]) while it is hashed, then is decoded and
//! PDQ-hashed on the walk's thread, so that a re-encoded copy of a listed picture is
//! still found (see [`crate::perceptual`]).
//!
//! A picture that cannot be hashed is a [`Problem`](super::Problem) like any container
//! that cannot be opened: over the budget, [`ProblemKind::Picture`]; announcing more
//! pixels than the walk's decoded-bytes budget allows (a decompression bomb, the way a
//! gzip bomb trips it), [`ProblemKind::Limit`]; a format feature the decoder lacks,
//! [`ProblemKind::Unsupported`]; bytes that do not decode, [`ProblemKind::Malformed`].

use super::ProblemKind;
use crate::perceptual::{self, Pdq, Picture, PictureError, PictureLimits};

/// Bytes an object's start needs for [`Picture::sniff`].
const SNIFF: usize = 16;

/// Which pictures are PDQ-hashed, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PictureBudget {
    /// A picture larger than this (bytes, as stored) is not hashed: its bytes are kept
    /// in memory until it ends.
    pub max_bytes: u64,
    /// Bounds on decoding (pixels, sides, allocation).
    pub decode: PictureLimits,
    /// Whether the seven rotations and mirror images are hashed too, so that a turned
    /// or flipped copy matches (eight lookups instead of one).
    pub dihedral: bool,
}

impl Default for PictureBudget {
    /// 32 MiB, [`PictureLimits::default`], no dihedral hashes.
    fn default() -> Self {
        PictureBudget {
            max_bytes: 32 << 20,
            decode: PictureLimits::default(),
            dihedral: false,
        }
    }
}

/// The PDQ of a picture node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PictureHash {
    /// Its format.
    pub format: Picture,
    /// Its hashes and quality.
    pub pdq: Pdq,
}

/// Keeps an object's bytes while they are hashed, if it turns out to be a picture.
pub(super) struct Keeper {
    state: State,
    max: u64,
}

enum State {
    /// Fewer than [`SNIFF`] bytes seen.
    Sniffing(Vec<u8>),
    /// A picture, kept.
    Keeping(Picture, Vec<u8>),
    /// A picture over the budget: only its length is counted.
    Over(Picture, u64),
    /// Not a picture.
    Not,
}

/// What a [`Keeper`] kept.
pub(super) enum Kept {
    /// Not a picture.
    Not,
    /// A picture and its bytes.
    Picture(Picture, Vec<u8>),
    /// A picture of this many bytes, over the budget.
    Over(Picture, u64),
}

impl Keeper {
    pub(super) fn new(max: u64) -> Keeper {
        Keeper {
            state: State::Sniffing(Vec::with_capacity(SNIFF)),
            max,
        }
    }

    pub(super) fn push(&mut self, bytes: &[u8]) {
        match &mut self.state {
            State::Sniffing(start) => {
                start.extend_from_slice(bytes);
                if start.len() >= SNIFF {
                    let start = std::mem::take(start);
                    self.state = sniffed(start, self.max);
                }
            }
            State::Keeping(picture, kept) => {
                if (kept.len() + bytes.len()) as u64 > self.max {
                    let len = (kept.len() + bytes.len()) as u64;
                    self.state = State::Over(*picture, len);
                } else {
                    kept.extend_from_slice(bytes);
                }
            }
            State::Over(_, len) => *len += bytes.len() as u64,
            State::Not => {}
        }
    }

    pub(super) fn finish(self) -> Kept {
        let state = match self.state {
            State::Sniffing(start) => sniffed(start, self.max),
            other => other,
        };
        match state {
            State::Keeping(p, bytes) => Kept::Picture(p, bytes),
            State::Over(p, len) => Kept::Over(p, len),
            State::Sniffing(_) | State::Not => Kept::Not,
        }
    }
}

/// What an object starting with `start` is to a [`Keeper`] of `max` bytes.
fn sniffed(start: Vec<u8>, max: u64) -> State {
    match Picture::sniff(&start) {
        None => State::Not,
        Some(p) if start.len() as u64 > max => State::Over(p, start.len() as u64),
        Some(p) => State::Keeping(p, start),
    }
}

/// Hashes a kept picture of `bytes`; the problem if it cannot be. `decoded_budget` is
/// the walk's decoded-bytes budget for an input of this size: a picture announcing more
/// pixels than that is treated as the bomb it is.
pub(super) fn hash(
    picture: Picture,
    bytes: &[u8],
    budget: &PictureBudget,
    decoded_budget: u64,
) -> Result<PictureHash, (ProblemKind, String)> {
    match perceptual::hash_picture(bytes, picture, &budget.decode, budget.dihedral) {
        Ok(pdq) => Ok(PictureHash {
            format: picture,
            pdq,
        }),
        Err(e @ PictureError::TooLarge { width, height, .. }) => {
            let pixels = u64::from(width) * u64::from(height);
            let kind = if pixels > decoded_budget {
                ProblemKind::Limit
            } else {
                ProblemKind::Picture
            };
            Err((kind, format!("not PDQ-hashed: {e}")))
        }
        Err(e @ PictureError::Unsupported { .. }) => {
            Err((ProblemKind::Unsupported, format!("not PDQ-hashed: {e}")))
        }
        Err(e @ PictureError::Malformed { .. }) => Err((ProblemKind::Malformed, e.to_string())),
    }
}

/// The problem of a picture of `len` bytes over `budget`.
pub(super) fn over_budget(picture: Picture, len: u64, budget: &PictureBudget) -> String {
    format!(
        "{} of {len} bytes not PDQ-hashed: over the budget of {} bytes",
        picture.name(),
        budget.max_bytes
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(max: u64, pieces: &[&[u8]]) -> Kept {
        let mut k = Keeper::new(max);
        for p in pieces {
            k.push(p);
        }
        k.finish()
    }

    #[test]
    fn a_picture_is_kept_whatever_its_first_bytes_are_cut_into() {
        let png = b"\x89PNG\r\n\x1a\n0123456789abcdef";
        for cut in 0..png.len() {
            let Kept::Picture(Picture::Png, bytes) = kept(1 << 20, &[&png[..cut], &png[cut..]])
            else {
                panic!("not kept at cut {cut}");
            };
            assert_eq!(bytes, png);
        }
    }

    #[test]
    fn what_is_not_a_picture_is_not_kept() {
        assert!(matches!(
            kept(1 << 20, &[b"hello, world, not a picture"]),
            Kept::Not
        ));
        assert!(matches!(kept(1 << 20, &[b"hi"]), Kept::Not));
        assert!(matches!(kept(1 << 20, &[]), Kept::Not));
    }

    #[test]
    fn a_picture_over_the_budget_is_counted_not_kept() {
        let start = b"\xff\xd8\xff\xe0 a jpeg start";
        let Kept::Over(Picture::Jpeg, len) = kept(20, &[start, &[0u8; 100]]) else {
            panic!("kept");
        };
        assert_eq!(len, start.len() as u64 + 100);
    }
}
