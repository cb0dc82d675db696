//! One agent connection: a WebSocket whose frames feed a core
//! `CentralSession`, whose outputs this task performs — send, close, store,
//! verify — and whose events for the hub it forwards unread. The session
//! decides; this task only carries.

use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use nap_core::central::{
    Admission, CentralSession, HubInput, SessionConfig, SessionEvent, SessionInput, SessionOutput,
};
use nap_core::codec::Message as _;
use nap_core::transport::CloseCode;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::effects::{Inbox, Pending};
use crate::events::AppEvent;
use crate::hub::{HubHandle, inbox};
use crate::metrics::{MessageType, Reason};
use crate::store::Storage;

type Ws = WebSocketStream<TokioIo<Upgraded>>;

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

/// An admitted upgrade and what the agent said of itself.
pub(super) struct Admitted {
    pub(super) admission: Admission,
    pub(super) agent_version: Option<String>,
}

/// Runs an upgraded connection until it ends.
pub async fn run(
    hub: HubHandle,
    config: SessionConfig,
    upgraded: Upgraded,
    admitted: Admitted,
    permit: OwnedSemaphorePermit,
) {
    let Admitted {
        admission,
        agent_version,
    } = admitted;
    let ws = WebSocketStream::from_raw_socket(
        TokioIo::new(upgraded),
        Role::Server,
        Some(ws_config(config.limits.max_message_bytes)),
    )
    .await;
    let Admission {
        node_id,
        session_id,
        ..
    } = admission;
    let (tx, rx) = inbox();
    hub.register(session_id, tx.clone());
    let clock = hub.clock();
    let session = CentralSession::new(clock.now(), clock.wall(), admission, config);
    let effects = hub.effects().clone();
    effects.metrics.connections.inc();
    effects.events.emit(AppEvent::SessionOpened {
        node_id,
        session_id,
    });
    let mut conn = Connection {
        hub: hub.clone(),
        ws,
        session,
        tx,
        open: true,
    };
    // `welcome` first, then whatever the hub had queued for this node.
    conn.perform().await;
    drop(permit); // the handshake is over
    let _ = effects
        .store
        .touch_node(node_id, clock.wall(), agent_version)
        .await;
    conn.run(rx).await;

    hub.unregister(session_id);
    effects.metrics.connections.dec();
    effects.events.emit(AppEvent::SessionClosed {
        node_id,
        session_id,
    });
}

/// An admitted upgrade that never became a connection.
pub fn never_opened(hub: &HubHandle, admission: Admission) {
    hub.input(HubInput::NeverOpened(admission));
}

struct Connection {
    hub: HubHandle,
    ws: Ws,
    session: CentralSession,
    tx: Inbox,
    open: bool,
}

impl Connection {
    async fn run(&mut self, mut rx: mpsc::UnboundedReceiver<Box<SessionInput>>) {
        let clock = self.hub.clock();
        while self.open {
            let deadline = self
                .session
                .poll_timeout()
                .map(|t| clock.instant(t))
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                frame = self.ws.next() => self.on_frame(frame),
                Some(input) = rx.recv() => self.session.handle_input(clock.now(), *input),
                () = tokio::time::sleep_until(deadline.into()) => {
                    self.session.handle_timeout(clock.now());
                }
            }
            self.perform().await;
        }
    }

    /// What the transport delivered, as a session input.
    fn on_frame(&mut self, frame: Option<Result<Message, WsError>>) {
        let input = match frame {
            Some(Ok(Message::Text(text))) => SessionInput::Frame(text.as_str().to_owned()),
            Some(Ok(Message::Binary(_))) => SessionInput::BinaryFrame,
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => return,
            Some(Ok(Message::Close(frame))) => SessionInput::Closed {
                code: frame.map(|f| CloseCode::from(u16::from(f.code))),
            },
            Some(Err(WsError::Utf8(_))) => SessionInput::InvalidUtf8,
            Some(Err(WsError::Capacity(e))) => {
                tracing::info!(session = %self.session.session_id(), error = %e, "frame over the size limit");
                SessionInput::FrameTooLarge {
                    size: capacity_size(&e),
                }
            }
            Some(Err(e)) => {
                tracing::debug!(session = %self.session.session_id(), error = %e, "transport error");
                SessionInput::Closed { code: None }
            }
            None => SessionInput::Closed { code: None },
        };
        self.session.handle_input(self.hub.clock().now(), input);
    }

    /// Performs everything the session asked for.
    async fn perform(&mut self) {
        let clock = self.hub.clock();
        while let Some(output) = self.session.poll_output() {
            let effects = self.hub.effects();
            match output {
                SessionOutput::Send(message) => {
                    let kind = message.message_type();
                    match nap_core::encode(&message) {
                        Ok(text) => {
                            if self.ws.send(Message::Text(text.into())).await.is_err() {
                                let closed = SessionInput::Closed { code: None };
                                self.session.handle_input(clock.now(), closed);
                            } else {
                                effects
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
                SessionOutput::Close {
                    code,
                    reason,
                    linger,
                } => {
                    let frame = CloseFrame {
                        code: WsCloseCode::from(code.as_u16()),
                        reason: reason.into(),
                    };
                    let _ = tokio::time::timeout(linger, self.ws.close(Some(frame))).await;
                }
                SessionOutput::ToHub(event) => self.hub.input(HubInput::FromSession {
                    session_id: self.session.session_id(),
                    event,
                }),
                SessionOutput::StoreTelemetry(telemetry) => {
                    let refused = effects.telemetry.submit(Pending {
                        telemetry: *telemetry,
                        session: self.tx.clone(),
                        received: Instant::now(),
                    });
                    if let Err(sample) = refused {
                        let input = SessionInput::TelemetryRefused(sample);
                        self.session.handle_input(clock.now(), input);
                    }
                }
                SessionOutput::VerifyToken { token } => {
                    let (effects, tx) = (effects.clone(), self.tx.clone());
                    let skew = self.hub.read(|hub| hub.config().auth.max_skew);
                    tokio::spawn(async move {
                        // A store failure refuses the refresh (4001); the agent
                        // reconnects with a fresh token.
                        let mut check = match super::tokens::inspect(&effects.store, &token).await {
                            Ok(check) => check,
                            Err(_) => super::tokens::inspect_with(&token, None),
                        };
                        // Spent durably like an upgrade's: a refresh token is
                        // a node token and could open a session after a restart.
                        check.spent = super::tokens::spend(&effects, &check, skew).await;
                        let verified = SessionInput::TokenVerified(Box::new(check));
                        let _ = tx.send(Box::new(verified));
                    });
                }
                SessionOutput::Record { message, ack } => {
                    let ack = ack.map(|key| (key, self.tx.clone()));
                    effects.record(self.session.node_id(), *message, ack);
                }
                SessionOutput::Alarm(alarm) => effects.alarm(alarm),
                SessionOutput::Event(event) => self.observe(event),
            }
        }
        if !self.session.is_open() {
            self.open = false;
        }
    }

    fn count_invalid(&self, reason: &str) {
        self.hub
            .effects()
            .metrics
            .invalid_messages
            .get_or_create(&Reason {
                reason: reason.to_owned(),
            })
            .inc();
    }

    fn observe(&self, event: SessionEvent) {
        let metrics = &self.hub.effects().metrics;
        let session = self.session.session_id();
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
                tracing::debug!(%session, %error, "invalid message ignored");
            }
            SessionEvent::Refused { message_type, why } => {
                self.count_invalid("refused");
                tracing::warn!(%session, message_type, why, "message refused");
            }
            SessionEvent::RateLimited => self.count_invalid("rate_limited"),
            SessionEvent::OverTelemetryWindow => self.count_invalid("telemetry_window"),
            SessionEvent::RefreshRefused { reason } => {
                metrics
                    .auth_failures
                    .get_or_create(&Reason {
                        reason: reason.to_owned(),
                    })
                    .inc();
            }
            SessionEvent::Ended { code, reason } => {
                let node = self.session.node_id();
                tracing::info!(%session, %node, ?code, reason, "session ended");
            }
        }
    }
}

/// The size a capacity error names (0 when it does not say).
fn capacity_size(error: &tokio_tungstenite::tungstenite::error::CapacityError) -> usize {
    use tokio_tungstenite::tungstenite::error::CapacityError;
    match error {
        CapacityError::MessageTooLong { size, .. } => *size,
        CapacityError::TooManyHeaders => 0,
    }
}
