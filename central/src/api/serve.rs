//! The operator API's listener: a connection budget of its own (past it, new
//! connections wait in the kernel's backlog and cost no descriptor), optional
//! TLS, a deadline for each request's headers, and an idle deadline after
//! which a connection that moves no bytes is closed. The agent endpoint has
//! its own budget, so neither listener can starve the other.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

/// The listener's limits.
#[derive(Debug, Clone)]
pub struct ApiLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

impl ApiLimits {
    pub fn from_config(config: &crate::ServeConfig) -> Self {
        Self {
            max_connections: config.api_max_connections.max(1),
            header_timeout: Duration::from_millis(config.api_header_timeout_ms),
            idle_timeout: Duration::from_millis(config.api_idle_timeout_ms),
        }
    }
}

/// Serves `router` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: ApiLimits,
    shutdown: impl Future<Output = ()>,
) {
    let budget = Arc::new(Semaphore::new(limits.max_connections));
    let tls = tls.map(TlsAcceptor::from);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&budget).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return, // never closed
            },
            () = &mut shutdown => return,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "operator API: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let (router, tls, limits) = (router.clone(), tls.clone(), limits.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let activity = Activity::default();
            let stream = Watched::new(stream, activity.clone());
            match tls {
                Some(acceptor) => {
                    match tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)).await
                    {
                        Ok(Ok(stream)) => connection(stream, router, &limits, activity).await,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "operator API: TLS failed")
                        }
                        Err(_) => tracing::debug!(%peer, "operator API: TLS handshake timed out"),
                    }
                }
                None => connection(stream, router, &limits, activity).await,
            }
        });
    }
}

async fn connection<S>(stream: S, router: Router, limits: &ApiLimits, activity: Activity)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(router);
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(64 * 1024)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    let idle = limits.idle_timeout;
    loop {
        let quiet_for = activity.since();
        let wait = idle.saturating_sub(quiet_for);
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(error = %e, "operator API connection ended");
                }
                return;
            }
            () = tokio::time::sleep(wait) => {
                if activity.since() >= idle {
                    // Nothing moved for the idle deadline: a request in
                    // progress finishes, an idle connection closes now.
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(limits.header_timeout, conn.as_mut()).await;
                    return;
                }
            }
        }
    }
}

/// When a connection last moved a byte.
#[derive(Debug, Clone)]
struct Activity {
    base: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            base: Instant::now(),
            last_ms: Arc::default(),
        }
    }
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn since(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.base.elapsed().saturating_sub(last)
    }
}

/// A stream that records its activity.
struct Watched<S> {
    inner: S,
    activity: Activity,
}

impl<S> Watched<S> {
    fn new(inner: S, activity: Activity) -> Self {
        activity.touch();
        Self { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
