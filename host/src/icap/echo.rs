//! The echo of a body (REQMOD or RESPMOD without `204`), sent back while more of it is
//! still being read.
//!
//! Reading and echoing are decoupled: the body is read as fast as the proxy sends it,
//! and what has not yet been sent back waits here, in memory up to a bound and then in
//! an unlinked spool file. Squid 5 kills an upload whose request buffer fills while its
//! REQMOD service takes in the body more slowly than the client sends it (Squid bug
//! 5405: "request buffer full", then `ERR_CLIENT_GONE`); c-icap never lets that happen
//! because it reads a body whole into its own temporary file. An echo that waited for
//! each chunk to be written before reading the next would pass the proxy's own pace
//! back to it, and trip the bug on every upload of a few MiB.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::Notify;

use super::wire::{Fault, Writer};

/// Bytes read back from the spool at a time.
const SPOOL_READ: usize = 256 * 1024;

/// One body's echo in flight (see the module docs).
pub struct Echo {
    shared: Arc<Shared>,
    /// Taken by [`Echo::finish`] or [`Echo::cancel`]; an echo dropped without either
    /// stops its sender (see `Drop`).
    sender: Option<tokio::task::JoinHandle<(Writer, Result<(), Fault>)>>,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the sender: more to send, or the end.
    ready: Notify,
    /// At most this many bytes wait in memory; the rest goes to the spool.
    memory: usize,
    spool_dir: Option<PathBuf>,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Bytes>,
    queued: usize,
    /// Once anything is spooled, everything after it is too, until the sender has read
    /// the spool to its end: the order stays the body's.
    spool: Option<Spool>,
    /// No more chunks will come: send what is left, then stop.
    finished: bool,
    /// Stop now, sending nothing more.
    cancelled: bool,
    /// The sender stopped on a write error.
    broken: bool,
}

struct Spool {
    file: File,
    written: u64,
    read: u64,
}

impl Echo {
    /// Starts sending on `writer` (the echo's ICAP and HTTP heads already sent).
    pub fn start(writer: Writer, memory: usize, spool_dir: Option<PathBuf>) -> Echo {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            ready: Notify::new(),
            memory,
            spool_dir,
        });
        let sender = Some(tokio::spawn(send(shared.clone(), writer)));
        Echo { shared, sender }
    }

    /// Queues one chunk of the body to be echoed. Never waits for the peer: fails only
    /// if the echo is broken (the peer went away) or the spool cannot be written.
    pub fn push(&self, chunk: Bytes) -> Result<(), Fault> {
        if chunk.is_empty() {
            return Ok(());
        }
        let mut state = self.shared.lock();
        if state.broken {
            return Err(Fault::Closed);
        }
        if state.spool.is_none() && state.queued + chunk.len() <= self.shared.memory {
            state.queued += chunk.len();
            state.queue.push_back(chunk);
        } else {
            if state.spool.is_none() {
                let file = match &self.shared.spool_dir {
                    Some(dir) => tempfile::tempfile_in(dir),
                    None => tempfile::tempfile(),
                }?;
                state.spool = Some(Spool {
                    file,
                    written: 0,
                    read: 0,
                });
            }
            let spool = state.spool.as_mut().expect("made above");
            spool.file.write_all(&chunk)?;
            spool.written += chunk.len() as u64;
        }
        drop(state);
        self.shared.ready.notify_one();
        Ok(())
    }

    /// Sends what is queued and gives the writer back, to end the message.
    pub async fn finish(mut self) -> Result<Writer, Fault> {
        self.shared.lock().finished = true;
        self.shared.ready.notify_one();
        let sender = self.sender.take().expect("finished once");
        let (writer, sent) = sender
            .await
            .map_err(|e| Fault::Io(std::io::Error::other(e)))?;
        sent.map(|()| writer)
    }

    /// Stops at once, whatever is queued, and gives the writer back (to abort) unless
    /// the sender was stopped mid-write: a peer that has stopped reading must not hold
    /// the cut of a listed body. Without the writer, the connection is to be closed.
    pub async fn cancel(mut self) -> Option<Writer> {
        self.shared.lock().cancelled = true;
        let sender = self.sender.take().expect("cancelled once");
        sender.abort();
        sender.await.ok().map(|(writer, _)| writer)
    }
}

impl Drop for Echo {
    /// An echo abandoned (the transaction failed while reading) stops its sender, so
    /// neither the task nor its connection is left behind.
    fn drop(&mut self) {
        if self.sender.is_some() {
            self.shared.lock().cancelled = true;
            self.shared.ready.notify_one();
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next piece to send: `Ok(None)` when there is nothing yet, `Err(())` when the
    /// echo is over (finished and sent, or cancelled).
    fn next(&self) -> Result<Option<Bytes>, Fault> {
        let mut state = self.lock();
        if state.cancelled {
            return Err(Fault::Closed);
        }
        if let Some(chunk) = state.queue.pop_front() {
            state.queued -= chunk.len();
            return Ok(Some(chunk));
        }
        if let Some(spool) = &mut state.spool {
            let left = spool.written - spool.read;
            let mut buf = vec![0u8; left.min(SPOOL_READ as u64) as usize];
            spool.file.read_exact_at(&mut buf, spool.read)?;
            spool.read += buf.len() as u64;
            if spool.read == spool.written {
                // Caught up: the file goes, and memory takes chunks again.
                state.spool = None;
            }
            return Ok(Some(Bytes::from(buf)));
        }
        if state.finished {
            return Err(Fault::Closed);
        }
        Ok(None)
    }
}

/// The sender: writes pieces as they come, until the end.
async fn send(shared: Arc<Shared>, mut writer: Writer) -> (Writer, Result<(), Fault>) {
    loop {
        let notified = shared.ready.notified();
        tokio::pin!(notified);
        // Registered before looking, so a push in between is not missed.
        notified.as_mut().enable();
        let piece = match shared.next() {
            Ok(Some(piece)) => piece,
            Ok(None) => {
                notified.await;
                continue;
            }
            Err(Fault::Closed) => return (writer, Ok(())),
            Err(e) => {
                shared.lock().broken = true;
                return (writer, Err(e));
            }
        };
        if let Err(e) = writer.send_chunk(&piece).await {
            shared.lock().broken = true;
            return (writer, Err(e));
        }
    }
}
