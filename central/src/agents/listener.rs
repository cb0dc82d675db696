//! The agent listener: accepts TCP connections, bounds the TLS handshakes in
//! flight, and stops listening while this process is at capacity. Each
//! accepted connection is served as HTTP/1.1 by `upgrade`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use nap_core::central::ListenGate;

use super::AgentEndpoint;
use crate::events::AppEvent;
use crate::metrics::Outcome;

/// Accepts agent connections until `shutdown` resolves.
pub async fn serve(
    endpoint: Arc<AgentEndpoint>,
    mut listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    // TLS handshakes in flight are bounded at accept: past the bound, new
    // connections wait in the kernel's listen backlog, which costs nothing,
    // instead of each costing a full TLS handshake only to be refused with
    // a 503. A fleet reconnecting at once is then admitted at the rate this
    // process can handshake, not slowed by handshakes it throws away.
    let tls_slots = Arc::new(Semaphore::new(endpoint.max_handshakes.max(1)));
    tokio::pin!(shutdown);
    // Capacity is reached by sessions starting elsewhere, not by accepting:
    // look again now and then while waiting for a connection.
    let mut recheck = tokio::time::interval(Duration::from_millis(250));
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut gate = ListenGate::new(endpoint.max_connections);
    loop {
        gate.update(connections(&endpoint));
        if !gate.listening() {
            match pause_listening(&endpoint, &mut gate, listener, &mut shutdown).await {
                Some(reopened) => listener = reopened,
                None => return,
            }
        }
        let slot = tokio::select! {
            slot = Arc::clone(&tls_slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => return, // never closed
            },
            () = &mut shutdown => return,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Usually out of file descriptors: pause instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = recheck.tick() => continue,
            () = &mut shutdown => return,
        };
        gate.update(connections(&endpoint));
        if !gate.listening() {
            // At the limit now: refuse this one; the loop stops listening.
            endpoint
                .metrics()
                .handshakes
                .get_or_create(&Outcome {
                    outcome: "over_capacity".into(),
                })
                .inc();
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let endpoint = Arc::clone(&endpoint);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let handshake =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await;
            drop(slot);
            let tls = match handshake {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    endpoint
                        .metrics()
                        .handshakes
                        .get_or_create(&Outcome {
                            outcome: "tls_failed".into(),
                        })
                        .inc();
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let service =
                service_fn(move |req| super::routes::handle(Arc::clone(&endpoint), peer, req));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .max_buf_size(16 * 1024)
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(tls), service)
                .with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "agent HTTP connection ended");
            }
        });
    }
}

fn connections(endpoint: &AgentEndpoint) -> usize {
    usize::try_from(endpoint.metrics().connections.get()).unwrap_or(0)
}

/// At capacity, this process stops listening until it is back under 95 %.
/// Processes sharing the port (SO_REUSEPORT) then receive every new
/// connection between them — a full listener would keep getting its share
/// and drop it, and a client's SYN retries hash to the same listener — and
/// a process on its own refuses connections outright, which costs a client
/// less than an accepted connection that is dropped. `None` on shutdown.
async fn pause_listening(
    endpoint: &AgentEndpoint,
    gate: &mut ListenGate,
    listener: TcpListener,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Option<TcpListener> {
    let addr = listener.local_addr().ok()?;
    drop(listener);
    tracing::warn!(
        max = endpoint.max_connections,
        "at capacity: stopped listening for agents"
    );
    let events = &endpoint.hub.effects().events;
    events.emit(AppEvent::Listening { accepting: false });
    let mut every = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = shutdown.as_mut() => return None,
        }
        gate.update(connections(endpoint));
        if !gate.listening() {
            continue;
        }
        match bind(addr, endpoint.shared_port) {
            Ok(listener) => {
                tracing::info!("under capacity again: listening for agents");
                events.emit(AppEvent::Listening { accepting: true });
                return Some(listener);
            }
            Err(e) => tracing::error!(error = %e, "cannot listen again; retrying"),
        }
    }
}

/// Binds `addr`. `shared`: several central processes of one cluster share
/// the port (SO_REUSEPORT, DESIGN.md §5). Alone, central binds it
/// exclusively, so that a second one fails with "address in use" instead of
/// silently taking half of the connections it cannot route.
pub fn bind(addr: SocketAddr, shared: bool) -> anyhow::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(shared)?;
    socket
        .bind(addr)
        .with_context(|| format!("binding {addr}"))?;
    Ok(socket.listen(4096)?)
}
