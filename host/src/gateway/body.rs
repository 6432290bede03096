//! Bodies the gateway builds: fixed bytes, and a channel fed by a task, which lets the
//! upload path decide frame by frame what the origin receives, and abort it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use tokio::sync::mpsc;

/// The body type of every request and response the gateway makes.
pub type GatewayBody = BoxBody<Bytes, io::Error>;

/// A body with `bytes` in it.
pub fn full(bytes: impl Into<Bytes>) -> GatewayBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A body fed through a channel; an `Err` sent into it aborts the body (hyper then
/// resets the connection, so the receiver sees an incomplete message).
pub struct ChannelBody {
    rx: mpsc::Receiver<Result<Bytes, io::Error>>,
    remaining: Option<u64>,
}

/// The sending half of a [`ChannelBody`].
pub type BodySender = mpsc::Sender<Result<Bytes, io::Error>>;

impl ChannelBody {
    /// A channel body holding at most `depth` frames in flight, and its sender.
    /// `length`, when known, is reported as the exact size hint.
    pub fn new(depth: usize, length: Option<u64>) -> (BodySender, ChannelBody) {
        let (tx, rx) = mpsc::channel(depth);
        (
            tx,
            ChannelBody {
                rx,
                remaining: length,
            },
        )
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(Ok(data))) => {
                if let Some(r) = &mut self.remaining {
                    *r = r.saturating_sub(data.len() as u64);
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

/// Why a client's body ended before its end.
#[derive(Debug)]
pub enum BodyCut {
    /// No frame arrived within the idle timeout (answer 408).
    Stalled,
    /// The client aborted or sent a malformed body (answer 400).
    Broken(hyper::Error),
    /// More bytes than the configured maximum (answer 413).
    TooLarge,
}

/// Reads a client body frame by frame, with an idle timeout per frame and a size cap;
/// trailers are skipped (not forwarded).
pub struct Upload {
    body: hyper::body::Incoming,
    idle: Duration,
    remaining: u64,
}

impl Upload {
    /// Wraps `body`, allowing `max` bytes and `idle` between frames.
    pub fn new(body: hyper::body::Incoming, idle: Duration, max: u64) -> Upload {
        Upload {
            body,
            idle,
            remaining: max,
        }
    }

    /// The next data frame, `None` at the end of the body.
    pub async fn next(&mut self) -> Result<Option<Bytes>, BodyCut> {
        loop {
            let frame = match tokio::time::timeout(self.idle, self.body.frame()).await {
                Err(_) => return Err(BodyCut::Stalled),
                Ok(None) => return Ok(None),
                Ok(Some(Err(e))) => return Err(BodyCut::Broken(e)),
                Ok(Some(Ok(frame))) => frame,
            };
            if let Ok(data) = frame.into_data() {
                self.remaining = self
                    .remaining
                    .checked_sub(data.len() as u64)
                    .ok_or(BodyCut::TooLarge)?;
                return Ok(Some(data));
            }
        }
    }
}

/// Which bytes of a streamed body may go on at once, and which must wait for the
/// verdict: the final bytes are always held back, so the receiver never has the whole
/// object before the verdict.
///
/// When the body's length is fixed by its framing (`Content-Length`), the completing
/// frame is known on arrival: every earlier frame goes on as it arrives, and of the
/// completing one only its last [`Holdback::TAIL`] bytes wait. The receiver then works
/// on nearly the whole body while the gateway hashes it, instead of after the verdict
/// (over TLS a 64 KiB upload often arrives as one frame). Otherwise (chunked) no frame is
/// known to be the last until the body ends, so each frame waits for the next.
#[derive(Debug)]
pub struct Holdback {
    /// The body's exact length, when its framing fixes it.
    length: Option<u64>,
    /// Bytes pushed so far.
    seen: u64,
    held: Option<Bytes>,
}

impl Holdback {
    /// Bytes of a known-length body held back at most: one TLS record's worth. A body
    /// this small never reaches the origin before the verdict.
    pub const TAIL: usize = 16 * 1024;

    /// For a body of exactly `length` bytes (`None`: unknown until it ends). Take the
    /// length from the body's framing (its exact size hint), not from a header: hyper
    /// guarantees the framing, and ends the body with an error if it comes up short.
    pub fn new(length: Option<u64>) -> Holdback {
        Holdback {
            length,
            seen: 0,
            held: None,
        }
    }

    /// Takes the next frame; returns the bytes that may go on now, if any.
    pub fn push(&mut self, mut frame: Bytes) -> Option<Bytes> {
        if frame.is_empty() {
            // An empty frame (an HTTP/2 DATA frame may be) must not release what is held.
            return None;
        }
        self.seen += frame.len() as u64;
        match (self.length, self.held.take()) {
            (Some(length), None) if self.seen < length => Some(frame),
            (Some(_), None) => {
                let tail = frame.split_off(frame.len().saturating_sub(Self::TAIL));
                self.held = Some(tail);
                (!frame.is_empty()).then_some(frame)
            }
            (Some(_), Some(held)) => {
                // More bytes than announced, which hyper's framing rules out: the held
                // bytes would complete the announced body, so nothing goes on.
                let mut all = bytes::BytesMut::from(&held[..]);
                all.extend_from_slice(&frame);
                self.held = Some(all.freeze());
                None
            }
            // Unknown length: the newest frame waits for the next.
            (None, previous) => {
                self.held = Some(frame);
                previous
            }
        }
    }

    /// Whether the body is known to be complete: its announced length has arrived.
    pub fn complete(&self) -> bool {
        self.length.is_some_and(|length| self.seen >= length)
    }

    /// The bytes held back: the body's last, to send once the verdict allows it.
    pub fn last(self) -> Option<Bytes> {
        self.held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(holdback: &mut Holdback, sizes: &[usize]) -> Vec<Option<usize>> {
        sizes
            .iter()
            .map(|&n| holdback.push(Bytes::from(vec![0; n])).map(|b| b.len()))
            .collect()
    }

    #[test]
    fn known_length_forwards_all_but_the_tail_of_the_completing_frame() {
        let tail = Holdback::TAIL;
        let mut holdback = Holdback::new(Some(3 * tail as u64 + 10));
        assert_eq!(
            frames(&mut holdback, &[tail, tail + 10]),
            [Some(tail), Some(tail + 10)]
        );
        assert!(!holdback.complete());
        assert_eq!(frames(&mut holdback, &[tail]), [None]);
        assert!(holdback.complete());
        assert_eq!(holdback.last().map(|b| b.len()), Some(tail));

        let mut holdback = Holdback::new(Some(4 * tail as u64));
        assert_eq!(frames(&mut holdback, &[4 * tail]), [Some(3 * tail)]);
        assert_eq!(holdback.last().map(|b| b.len()), Some(tail));
    }

    #[test]
    fn a_body_no_longer_than_the_tail_is_held_whole() {
        let mut holdback = Holdback::new(Some(10));
        assert_eq!(frames(&mut holdback, &[3, 7]), [Some(3), None]);
        assert_eq!(holdback.last().map(|b| b.len()), Some(7));
        let mut holdback = Holdback::new(Some(Holdback::TAIL as u64));
        assert_eq!(frames(&mut holdback, &[Holdback::TAIL]), [None]);
        assert_eq!(holdback.last().map(|b| b.len()), Some(Holdback::TAIL));
    }

    #[test]
    fn unknown_length_keeps_each_frame_until_the_next() {
        let mut holdback = Holdback::new(None);
        assert_eq!(frames(&mut holdback, &[3, 4, 3]), [None, Some(3), Some(4)]);
        assert_eq!(holdback.last().map(|b| b.len()), Some(3));
    }

    #[test]
    fn more_bytes_than_announced_release_nothing() {
        // Cannot happen with hyper's framing; if it did, nothing may slip through.
        let mut holdback = Holdback::new(Some(4));
        assert_eq!(frames(&mut holdback, &[4, 2, 1]), [None, None, None]);
        assert_eq!(holdback.last().map(|b| b.len()), Some(7));
    }

    #[test]
    fn empty_frames_release_nothing() {
        let mut holdback = Holdback::new(Some(5));
        assert_eq!(
            frames(&mut holdback, &[0, 5, 0, 0]),
            [None, None, None, None]
        );
        assert_eq!(holdback.last().map(|b| b.len()), Some(5));
        let mut holdback = Holdback::new(None);
        assert_eq!(frames(&mut holdback, &[3, 0, 0]), [None, None, None]);
        assert_eq!(holdback.last().map(|b| b.len()), Some(3));
    }

    #[test]
    fn an_empty_body_holds_nothing() {
        assert!(Holdback::new(Some(0)).last().is_none());
        assert!(Holdback::new(None).last().is_none());
    }
}
