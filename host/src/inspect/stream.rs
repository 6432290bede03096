//! [`Inspection`]: the pipeline fed frame by frame by a streaming front-end.
//!
//! Its first bytes decide how a body is inspected:
//! * a body the [`Envelope`] says nothing about and whose magic bytes announce no
//!   container is one object, hashed as it passes ([`Digester`]: inline, or on a
//!   blocking thread while a core is spare), exactly the cost of hashing it;
//! * anything else runs the walk on a blocking thread, fed through a bounded channel, so
//!   that decoding and splitting run while the body streams and memory stays bounded by
//!   the channel and the decoders' windows.
//!
//! The front-end forwards, holds back and decides as before; only what is hashed grows.

use std::io::{self, Read};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::digester::Digester;
use super::envelope::Envelope;
use super::sniff::{sniff, SNIFF_LEN};
use super::{Hashes, InspectError, Limits, Report};
use crate::Algorithm;

/// Frames queued for the walk's thread.
const QUEUE: usize = 16;

enum State {
    /// The first bytes, until there are enough to sniff.
    Sniffing(Vec<Bytes>),
    /// Not a container: one object.
    Plain(Digester),
    /// The walk, on its thread.
    Walking {
        tx: mpsc::Sender<Bytes>,
        task: JoinHandle<Result<Report, InspectError>>,
    },
}

/// One body being inspected as it streams (see the module docs).
pub struct Inspection {
    algorithms: Arc<[Algorithm]>,
    /// Whether pictures are PDQ-hashed (they then go to the walk).
    pictures: bool,
    limits: Arc<Limits>,
    envelope: Envelope,
    expected: Option<u64>,
    state: State,
    len: u64,
}

impl Inspection {
    /// An inspection of a body of `expected` bytes (if known) that `envelope`
    /// describes, hashing with `hashes`. Must be called inside a tokio runtime.
    pub fn new(
        envelope: Envelope,
        hashes: Hashes<'_>,
        limits: Arc<Limits>,
        expected: Option<u64>,
    ) -> Inspection {
        let algorithms = hashes.algorithms;
        let pictures = hashes.pictures && limits.pictures.is_some();
        let mut inspection = Inspection {
            algorithms: algorithms.into(),
            pictures,
            limits,
            envelope,
            expected,
            state: State::Sniffing(Vec::new()),
            len: 0,
        };
        if !inspection.envelope.is_plain() {
            inspection.state = inspection.walking();
        } else if !inspection.limits.archives && !pictures {
            inspection.state = State::Plain(Digester::new(algorithms, expected));
        }
        inspection
    }

    /// Bytes fed so far.
    pub fn bytes_fed(&self) -> u64 {
        self.len
    }

    fn walking(&self) -> State {
        let (tx, rx) = mpsc::channel::<Bytes>(QUEUE);
        let algorithms = self.algorithms.clone();
        let limits = self.limits.clone();
        let envelope = self.envelope.clone();
        let expected = self.expected;
        let pictures = self.pictures;
        let task = tokio::task::spawn_blocking(move || {
            let mut input = Channel {
                rx,
                frame: Bytes::new(),
            };
            let hashes = Hashes {
                algorithms: &algorithms,
                pictures,
            };
            super::inspect_reader(&mut input, &envelope, hashes, &limits, expected)
        });
        State::Walking { tx, task }
    }

    /// Feeds the next frame (a reference-counted handle, not a copy).
    pub async fn update(&mut self, frame: &Bytes) {
        self.len += frame.len() as u64;
        match &mut self.state {
            State::Sniffing(frames) if frames.is_empty() && frame.len() >= SNIFF_LEN => {
                // The usual case: the first frame holds the magic bytes (no copy).
                self.state = if self.is_plain(&frame[..SNIFF_LEN]) {
                    State::Plain(Digester::new(&self.algorithms, self.expected))
                } else {
                    self.walking()
                };
                match &mut self.state {
                    State::Plain(d) => d.update(frame).await,
                    State::Walking { tx, .. } => {
                        let _ = tx.send(frame.clone()).await;
                    }
                    State::Sniffing(_) => unreachable!("just left"),
                }
            }
            State::Sniffing(frames) => {
                frames.push(frame.clone());
                if self.len >= SNIFF_LEN as u64 {
                    self.decide().await;
                }
            }
            State::Plain(d) => d.update(frame).await,
            State::Walking { tx, .. } => {
                // The walk reads to the end of its input, so a send fails only if its
                // thread died, which `finish` reports.
                let _ = tx.send(frame.clone()).await;
            }
        }
    }

    /// Leaves [`State::Sniffing`] for the state its first bytes call for.
    async fn decide(&mut self) {
        let State::Sniffing(frames) =
            std::mem::replace(&mut self.state, State::Sniffing(Vec::new()))
        else {
            return;
        };
        let mut prefix = Vec::with_capacity(SNIFF_LEN);
        for f in &frames {
            let want = SNIFF_LEN - prefix.len();
            prefix.extend_from_slice(&f[..f.len().min(want)]);
        }
        self.state = if self.is_plain(&prefix) {
            State::Plain(Digester::new(&self.algorithms, self.expected))
        } else {
            self.walking()
        };
        for f in &frames {
            match &mut self.state {
                State::Plain(d) => d.update(f).await,
                State::Walking { tx, .. } => {
                    let _ = tx.send(f.clone()).await;
                }
                State::Sniffing(_) => unreachable!("just left"),
            }
        }
    }

    /// Whether a body starting with `prefix` is one object, hashed as it passes: no
    /// container to open (when they are opened), no picture to PDQ-hash.
    fn is_plain(&self, prefix: &[u8]) -> bool {
        let container = self.limits.archives && sniff(prefix).is_some();
        let picture = self.pictures && crate::perceptual::Picture::sniff(prefix).is_some();
        !container && !picture
    }

    /// The report, once the body has ended.
    pub async fn finish(mut self) -> Result<Report, InspectError> {
        if matches!(self.state, State::Sniffing(_)) {
            self.decide().await;
        }
        match self.state {
            State::Plain(d) => {
                let size = d.bytes_fed();
                let digests = d
                    .finish()
                    .await
                    .ok_or_else(|| InspectError::Worker("the hashing thread failed".into()))?;
                Ok(Report::plain(size, digests))
            }
            State::Walking { tx, task } => {
                drop(tx);
                task.await
                    .map_err(|e| InspectError::Worker(e.to_string()))?
            }
            State::Sniffing(_) => unreachable!("decided above"),
        }
    }
}

/// The walk's input: frames from the front-end, until it drops its sender.
struct Channel {
    rx: mpsc::Receiver<Bytes>,
    frame: Bytes,
}

impl Read for Channel {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.frame.is_empty() {
            match self.rx.blocking_recv() {
                Some(frame) => self.frame = frame,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.frame.len());
        buf[..n].copy_from_slice(&self.frame[..n]);
        let _ = self.frame.split_to(n);
        Ok(n)
    }
}
