//! One agent connection: a WebSocket whose frames feed a core
//! `CentralSession`, whose outputs this task performs (send, close, store,
//! ack once durable). Holds no protocol logic of its own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use nap_core::central::{Admission, CentralSession, SessionEvent, SessionInput, SessionOutput};
use nap_core::codec::Message as _;
use nap_core::transport::close;
use nap_core::wire::AgentMessage;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::app::{App, AppEvent};
use crate::ingest::Pending;
use crate::metrics::{MessageType, Reason};
use crate::store::Storage;

type Ws = WebSocketStream<TokioIo<Upgraded>>;

/// A session's inbox. Inputs travel boxed: a channel allocates its slots 32
/// at a time, and 32 unboxed inputs (112 bytes each) are 3.5 KiB that every
/// idle connection would hold; boxed, a quarter of a KiB.
pub type Inbox = mpsc::Sender<Box<SessionInput>>;

/// WebSocket limits: small buffers, every size capped. The read buffer is
/// held by every idle connection; most messages fit in 1 KiB, and a larger
/// one grows it for the message's length (bounded by the size limit).
pub fn ws_config(max_message_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(max_message_bytes))
        .max_frame_size(Some(max_message_bytes))
        .write_buffer_size(0)
        .max_write_buffer_size(max_message_bytes * 2)
        .read_buffer_size(1024)
}

/// Runs an upgraded connection until it ends.
pub async fn run(
    app: Arc<App>,
    upgraded: Upgraded,
    admission: Admission,
    permit: OwnedSemaphorePermit,
) {
    let ws = WebSocketStream::from_raw_socket(
        TokioIo::new(upgraded),
        Role::Server,
        Some(ws_config(app.config.max_message_bytes)),
    )
    .await;
    let Admission {
        node_id,
        session_id,
        token_expires_at,
    } = admission;
    let (tx, rx) = mpsc::channel(256);
    app.routes
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(session_id, tx.clone());
    let session = CentralSession::new(
        app.clock.now(),
        app.clock.wall(),
        node_id,
        session_id,
        token_expires_at,
        app.session_config.clone(),
    );
    app.metrics.connections.inc();
    app.emit(AppEvent::SessionOpened {
        node_id,
        session_id,
    });
    let mut conn = Connection {
        app: Arc::clone(&app),
        ws,
        session,
        tx,
        open: true,
    };
    // `welcome` first, then whatever the hub had queued for this node.
    conn.perform().await;
    drop(permit); // the handshake is over
    app.with_hub(|hub, now| hub.session_opened(now, node_id, session_id));
    app.take_over(node_id, session_id);
    let _ = app.store.touch_node(node_id, app.clock.wall(), None).await;
    conn.run(rx).await;

    app.routes
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .remove(&session_id);
    app.metrics.connections.dec();
    app.session_ended(node_id, session_id).await;
    app.emit(AppEvent::SessionClosed {
        node_id,
        session_id,
    });
}

struct Connection {
    app: Arc<App>,
    ws: Ws,
    session: CentralSession,
    tx: Inbox,
    open: bool,
}

impl Connection {
    async fn run(&mut self, mut rx: mpsc::Receiver<Box<SessionInput>>) {
        while self.open {
            let deadline = self
                .session
                .poll_timeout()
                .map(|t| self.app.clock.instant(t))
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                frame = self.ws.next() => self.on_frame(frame).await,
                Some(input) = rx.recv() => {
                    self.session.handle_input(self.app.clock.now(), *input);
                }
                () = tokio::time::sleep_until(deadline.into()) => {
                    self.session.handle_timeout(self.app.clock.now());
                }
            }
            self.perform().await;
        }
    }

    async fn on_frame(&mut self, frame: Option<Result<Message, WsError>>) {
        let now = self.app.clock.now();
        let input = match frame {
            Some(Ok(Message::Text(text))) => SessionInput::Frame(text.as_str().to_owned()),
            Some(Ok(Message::Binary(_))) => SessionInput::BinaryFrame,
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => return,
            Some(Ok(Message::Close(frame))) => SessionInput::Closed {
                code: frame.map(|f| u16::from(f.code)),
            },
            Some(Err(WsError::Capacity(e))) => {
                self.count_invalid("too_large");
                tracing::info!(session = %self.session.session_id(), error = %e, "frame over the size limit");
                self.close(close::TOO_BIG, "message too big").await;
                SessionInput::Closed {
                    code: Some(close::TOO_BIG),
                }
            }
            Some(Err(e)) => {
                tracing::debug!(session = %self.session.session_id(), error = %e, "transport error");
                SessionInput::Closed { code: None }
            }
            None => SessionInput::Closed { code: None },
        };
        self.session.handle_input(now, input);
    }

    fn count_invalid(&self, reason: &str) {
        self.app
            .metrics
            .invalid_messages
            .get_or_create(&Reason {
                reason: reason.to_owned(),
            })
            .inc();
    }

    async fn close(&mut self, code: u16, reason: &'static str) {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), self.ws.close(Some(frame))).await;
        self.open = false;
    }

    /// Performs everything the session asked for.
    async fn perform(&mut self) {
        while let Some(output) = self.session.poll_output() {
            match output {
                SessionOutput::Send(message) => {
                    let kind = message.message_type();
                    match nap_core::encode(&message) {
                        Ok(text) => {
                            if self.ws.send(Message::Text(text.into())).await.is_err() {
                                self.session.handle_input(
                                    self.app.clock.now(),
                                    SessionInput::Closed { code: None },
                                );
                            } else {
                                self.app
                                    .metrics
                                    .messages_out
                                    .get_or_create(&MessageType {
                                        r#type: kind.to_owned(),
                                    })
                                    .inc();
                            }
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "could not encode an outgoing {kind}")
                        }
                    }
                }
                SessionOutput::Close { code, reason } => self.close(code, reason).await,
                SessionOutput::StoreTelemetry(telemetry) => {
                    let accepted = self.app.ingest.submit(Pending {
                        telemetry: *telemetry,
                        session: self.tx.clone(),
                        received: Instant::now(),
                    });
                    if !accepted {
                        self.app.metrics.telemetry_refused.inc();
                    }
                }
                SessionOutput::StoreResult(result) => {
                    let app = Arc::clone(&self.app);
                    let tx = self.tx.clone();
                    let node_id = self.session.node_id();
                    tokio::spawn(async move { store_result(app, tx, node_id, *result).await });
                }
                SessionOutput::CheckRefresh { token } => {
                    let app = Arc::clone(&self.app);
                    let tx = self.tx.clone();
                    let node_id = self.session.node_id();
                    tokio::spawn(async move {
                        let check = crate::auth::inspect(&app.store, &token).await;
                        let verdict =
                            app.with_hub(|hub, now| hub.check_refresh(now, node_id, &check));
                        if let Err(rejection) = verdict {
                            app.metrics
                                .auth_failures
                                .get_or_create(&Reason {
                                    reason: rejection.reason().to_owned(),
                                })
                                .inc();
                        }
                        let _ = tx
                            .send(Box::new(SessionInput::RefreshChecked(verdict)))
                            .await;
                    });
                }
                SessionOutput::Status { status, reason } => {
                    let (node_id, session_id) = (self.session.node_id(), self.session.session_id());
                    self.app.with_hub(|hub, _| {
                        hub.status_reported(node_id, session_id, status, reason)
                    });
                }
                SessionOutput::Record(message) => self.record(*message),
                SessionOutput::Event(event) => self.observe(event),
            }
        }
        if !self.session.is_open() {
            self.open = false;
        }
    }

    fn record(&self, message: AgentMessage) {
        let app = Arc::clone(&self.app);
        let node_id = self.session.node_id();
        tokio::spawn(async move {
            let at = app.clock.wall();
            let result = match &message {
                AgentMessage::Alert(alert) => {
                    if alert.severity == nap_core::wire::Severity::Critical
                        && alert.state == nap_core::wire::AlertState::Firing
                    {
                        crate::notify::notify(
                            &app,
                            "critical_alert",
                            serde_json::json!({ "nodeId": node_id, "alert": alert }),
                        );
                    }
                    app.store.insert_alert(node_id, at, alert).await
                }
                AgentMessage::Health(health) => app.store.insert_health(node_id, at, health).await,
                _ => Ok(()), // log lines are not stored yet
            };
            if let Err(e) = result {
                app.metrics.db_error("record");
                tracing::error!(error = %e, node = %node_id, "could not store a {}", message.message_type());
            }
        });
    }

    fn observe(&self, event: SessionEvent) {
        let metrics = &self.app.metrics;
        match event {
            SessionEvent::Received { message_type } => {
                metrics
                    .messages_in
                    .get_or_create(&MessageType {
                        r#type: message_type.to_owned(),
                    })
                    .inc();
            }
            SessionEvent::Invalid { error } => {
                self.count_invalid(error.kind());
                tracing::debug!(session = %self.session.session_id(), %error, "invalid message ignored");
            }
            SessionEvent::Refused { message_type, why } => {
                self.count_invalid("refused");
                tracing::warn!(session = %self.session.session_id(), message_type, why, "message refused");
            }
            SessionEvent::RateLimited => self.count_invalid("rate_limited"),
            SessionEvent::Ended { code, reason } => {
                tracing::info!(session = %self.session.session_id(), node = %self.session.node_id(), ?code, reason, "session ended");
            }
        }
    }
}

/// Records a result durably, tells the hub, then acks it. If the store
/// fails, nothing is acked: the agent keeps the result and re-sends it.
async fn store_result(
    app: Arc<App>,
    tx: Inbox,
    node_id: nap_core::NodeId,
    result: nap_core::wire::CommandResult,
) {
    // A node answers only its own commands.
    if let Ok(Some(command)) = app.store.get_command(result.request_id).await
        && command.node_id != node_id
    {
        tracing::warn!(request = %result.request_id, node = %node_id, "result for another node's command refused");
        let _ = tx
            .send(Box::new(SessionInput::ResultStored(result.request_id)))
            .await;
        return;
    }
    let mut delay = Duration::from_millis(100);
    for _ in 0..6 {
        match app.store.record_result(&result, app.clock.wall()).await {
            Ok(_first) => {
                app.with_hub(|hub, now| hub.result_received(now, node_id, &result));
                app.emit(AppEvent::ResultStored {
                    request_id: result.request_id,
                });
                let _ = tx
                    .send(Box::new(SessionInput::ResultStored(result.request_id)))
                    .await;
                return;
            }
            Err(e) => {
                app.metrics.db_error("record_result");
                tracing::error!(error = %e, request = %result.request_id, "could not record a result; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
    tracing::error!(request = %result.request_id, "result not recorded; it stays unacked and the agent will send it again");
}
