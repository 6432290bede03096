//! The accept loop every serving front-end shares: a cap on connections served at once
//! (the rest wait in the listen queue), `TCP_NODELAY`, one task per connection, and a
//! stop on the shutdown signal that closes the listening socket at once.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Accepts connections on `listener` until `shutdown` resolves, at most `max` at a time,
/// and runs `serve(stream, peer)` for each on its own task. Returns once `shutdown` has
/// resolved and the listening socket is closed; connections still running go on.
pub async fn accept_until<F, Fut>(
    listener: TcpListener,
    max: usize,
    shutdown: impl Future<Output = ()>,
    mut serve: F,
) where
    F: FnMut(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let limit = Arc::new(Semaphore::new(max));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = limit.clone().acquire_owned() => permit.expect("never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let connection = serve(stream, peer);
        tokio::spawn(async move {
            connection.await;
            drop(permit);
        });
    }
    // New clients are refused from here on, not queued.
    drop(listener);
}
