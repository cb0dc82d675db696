//! Dialling central: TLS 1.3 verified against the configured CA only, then
//! the WebSocket upgrade with the node token and subprotocol `nap.v1`.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};

use anyhow::Context as _;
use nap_core::agent::DialFailure;
use nap_core::transport::SendClass;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

pub type Ws = WebSocketStream<Rekeying>;

/// Bytes read and written on TCP sockets: TLS records, both directions.
#[derive(Debug, Default)]
pub struct WireBytes {
    pub sent: AtomicU64,
    pub received: AtomicU64,
}

/// Where a dial starts from and what it counts. The agent uses the
/// defaults; the simulator spreads its nodes over source addresses and
/// measures the bytes on the wire.
#[derive(Debug, Clone, Default)]
pub struct DialOptions {
    /// Bind the socket to this address (any port) before connecting.
    pub local_addr: Option<IpAddr>,
    /// Add every byte read and written on the socket here.
    pub counters: Option<Arc<WireBytes>>,
    /// Count every TLS key update sent here.
    pub key_updates: Option<Arc<AtomicU64>>,
}

/// Where and how to dial central.
#[derive(Debug, Clone)]
pub struct Dialer {
    pub url: String,
    pub tls: Arc<rustls::ClientConfig>,
    pub options: DialOptions,
}

/// A TCP stream that adds what passes through it to [`WireBytes`].
#[derive(Debug)]
pub struct Counted {
    inner: TcpStream,
    counters: Option<Arc<WireBytes>>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Some(c) = &self.counters {
            let n = buf.filled().len() - before;
            c.received.fetch_add(n as u64, Ordering::Relaxed);
        }
        poll
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let (Poll::Ready(Ok(n)), Some(c)) = (&poll, &self.counters) {
            c.sent.fetch_add(*n as u64, Ordering::Relaxed);
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// One connection's hand on its TLS traffic keys: the engine asks for an
/// update (spec §11), the runner raises `requested`, and the next write on
/// the connection first queues a TLS 1.3 KeyUpdate — which also asks
/// central to update its keys — so the frame after it goes out under the
/// new keys.
#[derive(Debug, Default)]
pub struct KeyUpdates {
    requested: AtomicBool,
    /// Key updates sent on this connection.
    pub done: AtomicU64,
}

impl KeyUpdates {
    /// Asks for a key update with the next write.
    pub fn request(&self) {
        self.requested.store(true, Ordering::Relaxed);
    }
}

/// The TLS stream under the WebSocket, updating its keys when asked.
#[derive(Debug)]
pub struct Rekeying {
    inner: TlsStream<Counted>,
    keys: Arc<KeyUpdates>,
    /// Key updates sent by every connection of this dialer (tests, reports).
    total: Option<Arc<AtomicU64>>,
}

impl Rekeying {
    fn update_keys_if_asked(&mut self) {
        if !self.keys.requested.swap(false, Ordering::Relaxed) {
            return;
        }
        match self.inner.get_mut().1.refresh_traffic_keys() {
            Ok(()) => {
                self.keys.done.fetch_add(1, Ordering::Relaxed);
                if let Some(total) = &self.total {
                    total.fetch_add(1, Ordering::Relaxed);
                }
                tracing::debug!("TLS traffic keys updated");
            }
            Err(e) => tracing::warn!(error = %e, "cannot update the TLS traffic keys"),
        }
    }
}

impl AsyncRead for Rekeying {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rekeying {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.update_keys_if_asked();
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A TCP connection to `host:port`, from `local` if given.
async fn tcp_connect(host: &str, port: u16, local: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let Some(local) = local else {
        return TcpStream::connect((host, port)).await;
    };
    let mut last = None;
    for addr in tokio::net::lookup_host((host, port)).await? {
        if addr.is_ipv4() != local.is_ipv4() {
            continue;
        }
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.bind(SocketAddr::new(local, 0))?;
        match socket.connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no address of the family of the source")))
}

/// A TLS client that trusts only `ca`.
pub fn tls_config(ca: &Path) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)
        .with_context(|| format!("reading the CA {}", ca.display()))?
    {
        roots
            .add(cert.context("parsing the CA")?)
            .context("adding the CA")?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Dials `url` (`wss://host:port/v1/agent`) and upgrades with `token`,
/// announcing `hello` (spec/protocol.md §1.1).
pub async fn dial(
    url: &str,
    tls: Arc<rustls::ClientConfig>,
    token: &str,
    hello: &nap_core::wire::Hello,
    max_message_bytes: usize,
    options: &DialOptions,
    keys: Arc<KeyUpdates>,
) -> Result<Ws, DialFailure> {
    let request = url.into_client_request().map_err(|e| {
        tracing::error!(%url, error = %e, "invalid central URL");
        DialFailure::Network
    })?;
    let host = request
        .uri()
        .host()
        .unwrap_or("localhost")
        .trim_matches(['[', ']'])
        .to_owned();
    let port = request.uri().port_u16().unwrap_or(443);
    let mut request = request;
    let headers = request.headers_mut();
    let bearer = format!("Bearer {token}")
        .parse()
        .map_err(|_| DialFailure::Network)?;
    headers.insert("authorization", bearer);
    headers.insert(
        "sec-websocket-protocol",
        nap_core::PROTOCOL_VERSION
            .parse()
            .map_err(|_| DialFailure::Network)?,
    );
    for (name, value) in hello.headers() {
        headers.insert(name, value.parse().map_err(|_| DialFailure::Network)?);
    }
    let connect = async {
        let tcp = tcp_connect(&host, port, options.local_addr)
            .await
            .map_err(|e| {
                tracing::warn!(%host, port, error = %e, "cannot reach central");
                DialFailure::Network
            })?;
        let _ = tcp.set_nodelay(true);
        let tcp = Counted {
            inner: tcp,
            counters: options.counters.clone(),
        };
        let name = ServerName::try_from(host.clone()).map_err(|_| DialFailure::Network)?;
        let stream = TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "TLS with central failed");
                DialFailure::Network
            })?;
        let stream = Rekeying {
            inner: stream,
            keys,
            total: options.key_updates.clone(),
        };
        // Small buffers: tungstenite's default read buffer is 128 KiB, which
        // a simulator holding thousands of agents pays per node; central's
        // messages are a few hundred bytes, and a larger one grows the
        // buffer for its length (bounded by the size limit).
        let config = WebSocketConfig::default()
            .max_message_size(Some(max_message_bytes))
            .max_frame_size(Some(max_message_bytes))
            .read_buffer_size(4096)
            .write_buffer_size(0)
            .max_write_buffer_size(max_message_bytes * 2);
        match tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await {
            Ok((ws, _)) => Ok(ws),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let status = response.status().as_u16();
                tracing::warn!(status, "central refused the upgrade");
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                Err(DialFailure::from_http_status(status, retry_after))
            }
            Err(e) => {
                tracing::warn!(error = %e, "WebSocket upgrade failed");
                Err(DialFailure::Network)
            }
        }
    };
    // No deadline here: the engine's connect timer abandons a dial that
    // takes too long, and its runner aborts this task.
    connect.await
}

/// One connection's send queues, one per [`SendClass`], each of `capacity`
/// frames: the writer always takes the most urgent frame waiting (spec
/// §7.1), so a replay's backlog never holds back a pong or a result.
#[derive(Debug)]
pub struct SendQueues {
    senders: [tokio::sync::mpsc::Sender<tokio_tungstenite::tungstenite::Message>; 4],
}

/// The writer's side of [`SendQueues`].
#[derive(Debug)]
pub struct Outgoing {
    receivers: [tokio::sync::mpsc::Receiver<tokio_tungstenite::tungstenite::Message>; 4],
}

/// A connection's queues, both sides.
pub fn send_queues(capacity: usize) -> (SendQueues, Outgoing) {
    let (c, rc) = tokio::sync::mpsc::channel(capacity);
    let (r, rr) = tokio::sync::mpsc::channel(capacity);
    let (l, rl) = tokio::sync::mpsc::channel(capacity);
    let (b, rb) = tokio::sync::mpsc::channel(capacity);
    (
        SendQueues {
            senders: [c, r, l, b],
        },
        Outgoing {
            receivers: [rc, rr, rl, rb],
        },
    )
}

impl SendQueues {
    /// Queues `frame` in `class`; false when that queue is full or the
    /// connection is gone.
    pub fn try_send(
        &self,
        class: SendClass,
        frame: tokio_tungstenite::tungstenite::Message,
    ) -> bool {
        self.senders[class.rank()].try_send(frame).is_ok()
    }

    /// Queues `frame` in `class`, waiting for room.
    pub async fn send(&self, class: SendClass, frame: tokio_tungstenite::tungstenite::Message) {
        let _ = self.senders[class.rank()].send(frame).await;
    }

    /// Queues the close frame behind everything already queued (a close
    /// ends the connection: whatever is queued goes first).
    pub fn try_close(&self, frame: tokio_tungstenite::tungstenite::Message) -> bool {
        self.try_send(SendClass::Backlog, frame)
    }
}

impl Outgoing {
    /// The most urgent frame waiting, or `None` once the queues are closed
    /// and empty.
    async fn recv(&mut self) -> Option<tokio_tungstenite::tungstenite::Message> {
        let [control, commands, live, backlog] = &mut self.receivers;
        // Biased: the first ready queue in order of urgency wins. A closed
        // queue is skipped until every queue is closed and drained.
        tokio::select! {
            biased;
            Some(m) = control.recv() => Some(m),
            Some(m) = commands.recv() => Some(m),
            Some(m) = live.recv() => Some(m),
            Some(m) = backlog.recv() => Some(m),
            else => None,
        }
    }
}

/// Dials and then runs the connection of `epoch` until it ends: the
/// outcome of the dial, every text frame and the close are reported to the
/// engine through `inputs`; what arrives on `outgoing` is written.
pub async fn connect(
    dialer: Dialer,
    token: String,
    hello: nap_core::wire::Hello,
    epoch: nap_core::transport::Epoch,
    inputs: tokio::sync::mpsc::Sender<nap_core::agent::AgentInput>,
    mut outgoing: Outgoing,
    keys: Arc<KeyUpdates>,
) {
    let Dialer { url, tls, options } = dialer;
    use futures_util::{SinkExt as _, StreamExt as _};
    use nap_core::agent::AgentInput;
    use tokio_tungstenite::tungstenite::Message;

    let ws = match dial(
        &url,
        tls,
        &token,
        &hello,
        nap_core::Limits::DEFAULT_MAX_MESSAGE_BYTES,
        &options,
        keys,
    )
    .await
    {
        Ok(ws) => ws,
        Err(reason) => {
            let _ = inputs.send(AgentInput::DialFailed { epoch, reason }).await;
            return;
        }
    };
    let _ = inputs.send(AgentInput::Connected { epoch }).await;
    let (mut sink, mut stream) = ws.split();
    let (peer_closed, mut finish) = tokio::sync::oneshot::channel::<()>();
    let mut writer = AbortOnDrop(tokio::spawn(async move {
        loop {
            tokio::select! {
                message = outgoing.recv() => {
                    let Some(message) = message else { break };
                    let closing = matches!(message, Message::Close(_));
                    if sink.send(message).await.is_err() || closing {
                        break;
                    }
                }
                // Central closed: finishing the close sends its close frame
                // back (RFC 6455 §5.5.1).
                _ = &mut finish => break,
            }
        }
        let _ = sink.close().await;
    }));
    let code = loop {
        match stream.next().await {
            Some(Ok(Message::Text(text))) => {
                let text = text.as_str().to_owned();
                let _ = inputs.send(AgentInput::Frame { epoch, text }).await;
            }
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            Some(Err(error)) => {
                use nap_core::transport::FrameFault;
                use tokio_tungstenite::tungstenite::Error as WsError;
                use tokio_tungstenite::tungstenite::error::CapacityError;
                let fault = match error {
                    WsError::Capacity(CapacityError::MessageTooLong { size, .. }) => {
                        FrameFault::TooLarge { size }
                    }
                    WsError::Capacity(_) => FrameFault::TooLarge { size: 0 },
                    WsError::Utf8(_) => FrameFault::NotUtf8,
                    _ => break None,
                };
                // The engine closes with the code for it; this transport
                // writes that close and ends (nothing more can be read).
                let _ = inputs.send(AgentInput::FrameFault { epoch, fault }).await;
                let _ = (&mut writer.0).await;
                return;
            }
            None => break None,
        }
    };
    let _ = inputs
        .send(AgentInput::Closed {
            epoch,
            code: code.map(nap_core::transport::CloseCode::from),
        })
        .await;
    if code.is_some() {
        let _ = peer_closed.send(());
        let _ = (&mut writer.0).await;
    }
}

/// A task that stops when its handle is dropped (the connection's writer
/// goes with the connection, whichever way that ends).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::Message;

    fn text(s: &str) -> Message {
        Message::Text(s.to_owned().into())
    }

    #[tokio::test]
    async fn the_writer_takes_the_most_urgent_frame_waiting_and_the_close_last() {
        let (queues, mut outgoing) = send_queues(8);
        assert!(queues.try_send(SendClass::Backlog, text("old sample")));
        assert!(queues.try_close(Message::Close(None)));
        assert!(queues.try_send(SendClass::Live, text("new sample")));
        assert!(queues.try_send(SendClass::Commands, text("result")));
        assert!(queues.try_send(SendClass::Control, text("pong")));
        drop(queues);

        let mut order = Vec::new();
        while let Some(frame) = outgoing.recv().await {
            order.push(match frame {
                Message::Text(t) => t.as_str().to_owned(),
                Message::Close(_) => "close".to_owned(),
                other => format!("{other:?}"),
            });
        }
        assert_eq!(
            order,
            ["pong", "result", "new sample", "old sample", "close"]
        );
    }

    #[tokio::test]
    async fn a_full_class_refuses_without_blocking_the_others() {
        let (queues, _outgoing) = send_queues(1);
        assert!(queues.try_send(SendClass::Backlog, text("a")));
        assert!(!queues.try_send(SendClass::Backlog, text("b")));
        assert!(queues.try_send(SendClass::Control, text("ping")));
    }
}
