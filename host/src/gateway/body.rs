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
