//! The one hold-back: a streamed body's final bytes, kept back until the verdict, for
//! every front-end that passes bytes on while they are inspected (the gateway to its
//! origin, the ICAP server back to its proxy).
//!
//! Whoever receives the body sees it complete only once the held bytes go on, so a
//! refused body is never stored whole: the front-end drops them and breaks the stream.
//!
//! * When the body's length is fixed by its framing (`Content-Length`), the completing
//!   frame is known on arrival: every earlier frame goes on as it arrives, and of the
//!   completing one only its last `hold` bytes wait (the gateway: [`HoldBack::TAIL`]).
//!   The receiver then works on nearly the whole body while it is inspected, instead of
//!   after the verdict (over TLS a 64 KiB upload often arrives as one frame).
//! * Otherwise (chunked; ICAP bodies) no frame is known to be the last until the body
//!   ends: at least `hold` bytes, and always the newest frame, wait.

use std::collections::VecDeque;

use bytes::Bytes;

/// A streamed body's final bytes, held back (see the module docs).
#[derive(Debug)]
pub struct HoldBack {
    /// The body's exact length, when its framing fixes it.
    length: Option<u64>,
    /// Bytes to keep back.
    hold: usize,
    /// Bytes pushed so far.
    seen: u64,
    /// Bytes that may go on now, oldest first.
    ready: VecDeque<Bytes>,
    /// Bytes held back, oldest first.
    held: VecDeque<Bytes>,
    held_bytes: usize,
}

impl HoldBack {
    /// The gateway's hold for a known-length body: one TLS record's worth. A body this
    /// small never reaches the origin before the verdict.
    pub const TAIL: usize = 16 * 1024;

    /// For a body of exactly `length` bytes (`None`: unknown until it ends), keeping
    /// `hold` bytes back. Take the length from the body's framing (hyper's exact size
    /// hint), not from a header: hyper guarantees the framing, and ends the body with an
    /// error if it comes up short.
    pub fn new(length: Option<u64>, hold: usize) -> HoldBack {
        HoldBack {
            length,
            hold,
            seen: 0,
            ready: VecDeque::new(),
            held: VecDeque::new(),
            held_bytes: 0,
        }
    }

    /// Takes the next frame; what may go on now comes out of [`HoldBack::release`].
    pub fn push(&mut self, mut frame: Bytes) {
        if frame.is_empty() {
            // An empty frame (an HTTP/2 DATA frame may be) must not release what is held.
            return;
        }
        let before = self.seen;
        self.seen += frame.len() as u64;
        match self.length {
            Some(length) if before >= length => {
                // More bytes than announced, which hyper's framing rules out: the held
                // bytes would complete the announced body, so nothing more goes on.
                self.hold_frame(frame);
            }
            Some(length) if self.seen < length => self.ready.push_back(frame),
            Some(_) => {
                let tail = frame.split_off(frame.len().saturating_sub(self.hold));
                if !frame.is_empty() {
                    self.ready.push_back(frame);
                }
                self.hold_frame(tail);
            }
            None => {
                self.hold_frame(frame);
                while self.held.len() > 1 {
                    let front = self.held.front().map_or(0, Bytes::len);
                    if self.held_bytes - front < self.hold {
                        break;
                    }
                    self.held_bytes -= front;
                    self.ready.extend(self.held.pop_front());
                }
            }
        }
    }

    fn hold_frame(&mut self, frame: Bytes) {
        self.held_bytes += frame.len();
        self.held.push_back(frame);
    }

    /// The oldest bytes that may go on now, if any.
    pub fn release(&mut self) -> Option<Bytes> {
        self.ready.pop_front()
    }

    /// Whether the body is known to be complete: its announced length has arrived.
    pub fn complete(&self) -> bool {
        self.length.is_some_and(|length| self.seen >= length)
    }

    /// Bytes held back.
    pub fn held(&self) -> usize {
        self.held_bytes
    }

    /// Everything not yet released, oldest first: the body's last bytes, to send once
    /// the verdict allows it.
    pub fn into_rest(self) -> impl Iterator<Item = Bytes> {
        self.ready.into_iter().chain(self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAIL: usize = HoldBack::TAIL;

    /// What each pushed frame releases (lengths).
    fn frames(h: &mut HoldBack, sizes: &[usize]) -> Vec<Vec<usize>> {
        sizes
            .iter()
            .map(|&n| {
                h.push(Bytes::from(vec![0; n]));
                std::iter::from_fn(|| h.release())
                    .map(|b| b.len())
                    .collect()
            })
            .collect()
    }

    fn rest(h: HoldBack) -> Vec<usize> {
        h.into_rest().map(|b| b.len()).collect()
    }

    #[test]
    fn known_length_forwards_all_but_the_tail_of_the_completing_frame() {
        let mut h = HoldBack::new(Some(3 * TAIL as u64 + 10), TAIL);
        assert_eq!(frames(&mut h, &[TAIL, TAIL + 10]), [[TAIL], [TAIL + 10]]);
        assert!(!h.complete());
        assert_eq!(frames(&mut h, &[TAIL]), [Vec::<usize>::new()]);
        assert!(h.complete());
        assert_eq!(rest(h), [TAIL]);

        let mut h = HoldBack::new(Some(4 * TAIL as u64), TAIL);
        assert_eq!(frames(&mut h, &[4 * TAIL]), [[3 * TAIL]]);
        assert_eq!(rest(h), [TAIL]);
    }

    #[test]
    fn a_body_no_longer_than_the_hold_is_held_whole() {
        let mut h = HoldBack::new(Some(10), TAIL);
        assert_eq!(frames(&mut h, &[3, 7]), [vec![3], vec![]]);
        assert_eq!(rest(h), [7]);
        let mut h = HoldBack::new(Some(TAIL as u64), TAIL);
        assert_eq!(frames(&mut h, &[TAIL]), [Vec::<usize>::new()]);
        assert_eq!(rest(h), [TAIL]);
    }

    #[test]
    fn unknown_length_keeps_the_newest_frame_and_at_least_the_hold() {
        let mut h = HoldBack::new(None, 0);
        assert_eq!(frames(&mut h, &[3, 4, 3]), [vec![], vec![3], vec![4]]);
        assert_eq!(rest(h), [3]);
        // At least 100 bytes, and always the newest chunk, stay back.
        let mut h = HoldBack::new(None, 100);
        assert_eq!(frames(&mut h, &[60, 60]), vec![Vec::<usize>::new(); 2]);
        assert_eq!(frames(&mut h, &[50]), [vec![60]]);
        assert_eq!(h.held(), 110);
        let mut none = HoldBack::new(None, 0);
        assert_eq!(frames(&mut none, &[5, 7]), [vec![], vec![5]]);
        assert_eq!(rest(none), [7], "the newest chunk always stays");
    }

    #[test]
    fn more_bytes_than_announced_release_nothing() {
        // Cannot happen with hyper's framing; if it did, nothing may slip through.
        let mut h = HoldBack::new(Some(4), TAIL);
        assert_eq!(frames(&mut h, &[4, 2, 1]), vec![Vec::<usize>::new(); 3]);
        assert_eq!(rest(h).iter().sum::<usize>(), 7);
    }

    #[test]
    fn an_empty_body_holds_nothing() {
        assert_eq!(HoldBack::new(Some(0), TAIL).into_rest().count(), 0);
        assert_eq!(HoldBack::new(None, 0).into_rest().count(), 0);
    }

    #[test]
    fn empty_frames_release_nothing() {
        let mut h = HoldBack::new(Some(5), TAIL);
        assert_eq!(frames(&mut h, &[0, 5, 0, 0]), vec![Vec::<usize>::new(); 4]);
        assert_eq!(rest(h), [5]);
        let mut h = HoldBack::new(None, 0);
        assert_eq!(frames(&mut h, &[3, 0, 0]), vec![Vec::<usize>::new(); 3]);
        assert_eq!(rest(h), [3]);
    }
}
