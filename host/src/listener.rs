//! How the serving front-ends (gateway, ICAP) run: thread per core.
//!
//! A [`Listener`] is one listening socket shared by `cores` serving threads. Each thread
//! has its own single-threaded tokio runtime and accepts on the same socket, so a
//! connection, its requests, the upstream request it makes (from a pool owned by that
//! thread) and their wake-ups all stay on one thread, as in nginx's worker processes: no
//! work-stealing, no cross-thread wake-ups on the data path. Blocking work (hashing large
//! bodies) still goes to each runtime's blocking pool, so at low concurrency another core
//! helps.
//!
//! [`Core::accept_until_stopped`] is the accept loop each thread runs: a cap on
//! connections served at once across all threads (the rest wait in the listen queue),
//! a balance between the threads, `TCP_NODELAY`, one task per connection, and a stop on
//! the shutdown signal.

use std::future::Future;
use std::net::{SocketAddr, ToSocketAddrs};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};

use crate::Error;

/// Connections the kernel queues before they are accepted (what tokio's `bind` asks for;
/// Linux caps it at `net.core.somaxconn`).
const LISTEN_BACKLOG: i32 = 1024;

/// A bound listening socket and the number of threads that will serve it.
pub struct Listener {
    socket: std::net::TcpListener,
    cores: usize,
}

impl Listener {
    /// Binds `addr` (the first address it resolves to) for `cores` serving threads
    /// (at least one).
    pub fn bind(addr: &str, cores: usize) -> Result<Listener, Error> {
        let bind_error = |e: std::io::Error| Error::Serve(format!("listening on {addr}: {e}"));
        let resolved = addr
            .to_socket_addrs()
            .map_err(bind_error)?
            .next()
            .ok_or_else(|| Error::Serve(format!("listening on {addr}: no address")))?;
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(resolved),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )
        .map_err(bind_error)?;
        // As tokio's own listeners: reuse the address of a server just stopped, and a
        // listen queue long enough for the connections waiting beyond the cap.
        socket.set_reuse_address(true).map_err(bind_error)?;
        socket.bind(&resolved.into()).map_err(bind_error)?;
        socket.listen(LISTEN_BACKLOG).map_err(bind_error)?;
        socket.set_nonblocking(true).map_err(bind_error)?;
        Ok(Listener {
            socket: socket.into(),
            cores: cores.max(1),
        })
    }

    /// The address bound (with the port the system chose, if it was 0).
    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        self.socket
            .local_addr()
            .map_err(|e| Error::Serve(format!("listener address: {e}")))
    }
}

/// The default number of serving threads: `HASHGATE_WORKER_THREADS` if set, otherwise
/// one per core the process may use.
pub fn default_cores() -> usize {
    std::env::var("HASHGATE_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Resolves when the server is told to stop; each serving thread holds one.
#[derive(Clone)]
struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// Waits for the stop signal (at once if it was already given, or if the server that
    /// would give it is gone).
    async fn signalled(mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

/// A thread with this many connections more than the least loaded one holds back from
/// accepting for [`BALANCE_WAIT`], so that the others take the next: every thread that
/// the listening socket wakes accepts in a loop, and the first awake would otherwise
/// take a whole burst of connections (16 wrk connections all on one of two threads, the
/// other idle, seen here).
const BALANCE_SLACK: usize = 2;
/// How long an over-loaded thread leaves the next connection to the others.
const BALANCE_WAIT: std::time::Duration = std::time::Duration::from_millis(1);

/// What one serving thread gets: its handle on the listening socket, the connection cap
/// shared by all threads, every thread's connection count, and the stop signal.
pub struct Core {
    listener: TcpListener,
    limit: Arc<Semaphore>,
    /// Connections each thread is serving; this thread's is `served[index]`.
    served: Arc<[AtomicUsize]>,
    index: usize,
    shutdown: Shutdown,
}

/// Runs `per_core(core)` on each of the listener's serving threads, each inside its own
/// single-threaded runtime, with at most `max_connections` served at once across them,
/// until `shutdown` resolves and every thread's future has returned (that future is
/// expected to stop accepting on the signal, [`Core::accept_until_stopped`], and drain).
///
/// Fails if a thread cannot be started, or if one ends (or panics) before the shutdown
/// signal; the others are then told to stop.
pub async fn on_cores<F, Fut>(
    listener: Listener,
    max_connections: usize,
    shutdown: impl Future<Output = ()>,
    per_core: F,
) -> Result<(), Error>
where
    F: Fn(Core) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let limit = Arc::new(Semaphore::new(max_connections));
    let served: Arc<[AtomicUsize]> = (0..listener.cores).map(|_| AtomicUsize::new(0)).collect();
    let (stop, stopped) = watch::channel(false);
    let (ended, mut endings) = mpsc::unbounded_channel::<Result<(), String>>();
    let per_core = Arc::new(per_core);
    let mut started = 0;
    let mut failure = None;
    for core in 0..listener.cores {
        let spawned = listener.socket.try_clone().and_then(|socket| {
            let (per_core, ended, limit) = (per_core.clone(), ended.clone(), limit.clone());
            let served = served.clone();
            let shutdown = Shutdown(stopped.clone());
            std::thread::Builder::new()
                .name(format!("hashgate-core-{core}"))
                .spawn(move || {
                    let served = std::panic::catch_unwind(AssertUnwindSafe(|| {
                        let share = Share {
                            limit,
                            served,
                            index: core,
                        };
                        serve_core(socket, share, shutdown, &*per_core)
                    }));
                    let _ =
                        ended
                            .send(served.unwrap_or_else(|_| {
                                Err(format!("serving thread {core} panicked"))
                            }));
                })
        });
        match spawned {
            Ok(_) => started += 1,
            Err(e) => {
                failure = Some(format!("starting serving thread {core}: {e}"));
                break;
            }
        }
    }
    drop(listener);
    if failure.is_none() {
        // Wait for the signal, or for a thread that ends before it (a failure).
        tokio::select! {
            () = shutdown => {}
            Some(early) = endings.recv() => {
                started -= 1;
                failure = Some(early.err().unwrap_or_else(|| {
                    "a serving thread stopped before the shutdown signal".to_string()
                }));
            }
        }
    }
    let _ = stop.send(true);
    for _ in 0..started {
        if let Some(Err(e)) = endings.recv().await {
            failure = failure.or(Some(e));
        }
    }
    match failure {
        None => Ok(()),
        Some(e) => Err(Error::Serve(e)),
    }
}

/// One connection counted in its thread's `served` until dropped (panics included).
struct Counted(Arc<[AtomicUsize]>, usize);

impl Counted {
    fn new(served: Arc<[AtomicUsize]>, index: usize) -> Counted {
        served[index].fetch_add(1, Ordering::Relaxed);
        Counted(served, index)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0[self.1].fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the serving threads share: the connection cap and each one's count.
struct Share {
    limit: Arc<Semaphore>,
    served: Arc<[AtomicUsize]>,
    index: usize,
}

/// One serving thread: its runtime, its listener, its future.
fn serve_core<F, Fut>(
    socket: std::net::TcpListener,
    share: Share,
    shutdown: Shutdown,
    per_core: &F,
) -> Result<(), String>
where
    F: Fn(Core) -> Fut,
    Fut: Future<Output = ()>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting a serving runtime: {e}"))?;
    runtime.block_on(async {
        let listener =
            TcpListener::from_std(socket).map_err(|e| format!("registering the listener: {e}"))?;
        per_core(Core {
            listener,
            limit: share.limit,
            served: share.served,
            index: share.index,
            shutdown,
        })
        .await;
        Ok(())
    })
}

impl Core {
    /// Accepts connections until the stop signal, while the shared cap has room (one
    /// permit per connection), and runs `serve(stream, peer)` for each on its own task.
    /// Returns once the signal has come, dropping this thread's handle on the listening
    /// socket; connections still running go on.
    pub async fn accept_until_stopped<F, Fut>(self, mut serve: F)
    where
        F: FnMut(TcpStream, SocketAddr) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Core {
            listener,
            limit,
            served,
            index,
            shutdown,
        } = self;
        let shutdown = shutdown.signalled();
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                permit = limit.clone().acquire_owned() => permit.expect("never closed"),
                () = &mut shutdown => break,
            };
            let least = served
                .iter()
                .map(|n| n.load(Ordering::Relaxed))
                .min()
                .unwrap_or(0);
            if served[index].load(Ordering::Relaxed) >= least + BALANCE_SLACK {
                tokio::select! {
                    () = tokio::time::sleep(BALANCE_WAIT) => {}
                    () = &mut shutdown => break,
                }
            }
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors, mostly: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let _ = stream.set_nodelay(true);
            let connection = serve(stream, peer);
            let counted = Counted::new(served.clone(), index);
            tokio::spawn(async move {
                connection.await;
                drop((counted, permit));
            });
        }
    }
}
