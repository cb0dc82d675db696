//! The agent's driver, generic over its host: the one place where the core
//! engine's outputs are performed. Transports (dial, send, close) are the
//! runner's; everything the machine does — sign a token, sample, check
//! health, run and kill tasks, persist, audit — is the [`Host`]'s. The real
//! agent's host is the machine (`driver.rs`); the simulator's virtual nodes
//! are this same runner with a synthetic host.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use nap_core::agent::{AgentEngine, AgentEvent, AgentInput, AgentOutput, AgentSnapshot, Task};
use nap_core::transport::{Epoch, SendClass};
use nap_core::wire::Hello;
use nap_core::{RequestId, Timestamp};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;

pub use crate::transport::Dialer;

/// Where the host reports what it was asked for (samples, outcomes, health).
pub type Inputs = mpsc::Sender<AgentInput>;

/// Frames one transport may have waiting to be written, per send class.
const SEND_QUEUE: usize = 256;

/// What the machine does for the engine.
pub trait Host: Send {
    /// Signs a node token valid for `lifetime`.
    fn mint(&mut self, lifetime: Duration) -> anyhow::Result<String>;
    /// Takes a telemetry sample and reports it as `TelemetrySample`.
    fn sample(&mut self, inputs: &Inputs);
    /// Checks health (for `request_id` when central asked) and reports it
    /// as `HealthReport`.
    fn check_health(&mut self, request_id: Option<RequestId>, inputs: &Inputs);
    /// Starts an allowed task and reports its outcome as `CommandFinished`
    /// (a `health_check` task is [`Host::check_health`]).
    fn run(&mut self, request_id: RequestId, task: Task, inputs: &Inputs);
    /// Kills a running task; `run` still reports how it ended.
    fn kill(&mut self, request_id: RequestId);
    /// Keeps the engine's snapshot across restarts.
    fn persist(&mut self, snapshot: &AgentSnapshot);
    /// An engine event, for logs, audit and metrics.
    fn event(&mut self, event: AgentEvent);
    /// The newly installed version connected: keep it.
    fn confirm_update(&mut self) {}
    /// The newly installed version did not connect in time: put the
    /// previous one back (and restart).
    fn roll_back_update(&mut self) {}
    /// The engine asked for a log stream (v0.4; not spoken yet).
    fn stream_logs(&mut self, service: &str) {
        tracing::warn!(%service, "stream_logs is not supported by this agent yet; ignored");
    }
}

/// A monotonic clock for the core's timestamps, started with the driver.
#[derive(Debug, Clone, Copy)]
pub struct Monotonic {
    base: Instant,
}

impl Monotonic {
    pub fn start() -> Self {
        Self {
            base: Instant::now(),
        }
    }

    pub fn now(&self) -> Timestamp {
        Timestamp::from_micros(u64::try_from(self.base.elapsed().as_micros()).unwrap_or(u64::MAX))
    }

    /// The instant a core timestamp stands for.
    pub fn instant(&self, at: Timestamp) -> Instant {
        self.base + Duration::from_micros(at.as_micros())
    }
}

/// One transport as the runner holds it.
#[derive(Debug)]
struct Link {
    writer: crate::transport::SendQueues,
    task: JoinHandle<()>,
    /// The dial has connected (until then a close aborts the dial: a dial
    /// the engine gave up on must not go on to cost central a handshake).
    connected: bool,
    /// Where the engine's TLS key updates are asked for.
    keys: std::sync::Arc<crate::transport::KeyUpdates>,
    /// Frames held back while the path is stalled (the simulator's chaos).
    held: Vec<(SendClass, Message)>,
    stalled_until: Option<Instant>,
}

/// The engine, its host and its transports.
#[derive(Debug)]
pub struct Runner<H> {
    pub engine: AgentEngine,
    pub host: H,
    pub clock: Monotonic,
    dialer: Dialer,
    links: HashMap<Epoch, Link>,
    /// Transports the engine closed that are finishing their close, each
    /// with the engine's deadline for it.
    closing: Vec<(JoinHandle<()>, Instant)>,
    tx: Inputs,
    rx: mpsc::Receiver<AgentInput>,
}

impl<H: Host> Runner<H> {
    pub fn new(engine: AgentEngine, host: H, dialer: Dialer) -> Self {
        let (tx, rx) = mpsc::channel(1024);
        Self {
            engine,
            host,
            clock: Monotonic::start(),
            dialer,
            links: HashMap::new(),
            closing: Vec::new(),
            tx,
            rx,
        }
    }

    /// Where reports for the engine go.
    pub fn inputs(&self) -> Inputs {
        self.tx.clone()
    }

    /// Feeds the engine one input now.
    pub fn input(&mut self, input: AgentInput) {
        if let AgentInput::Connected { epoch } = &input
            && let Some(link) = self.links.get_mut(epoch)
        {
            link.connected = true;
        }
        self.engine.handle_input(self.clock.now(), input);
    }

    /// Fires the engine's due timers (and releases a stall that is over).
    pub fn handle_timeout(&mut self) {
        let now = Instant::now();
        for link in self.links.values_mut() {
            if link.stalled_until.is_some_and(|u| u <= now) {
                link.stalled_until = None;
                for (class, frame) in link.held.drain(..) {
                    link.writer.try_send(class, frame);
                }
            }
        }
        self.engine.handle_timeout(self.clock.now());
    }

    /// When the runner next needs to wake without an input.
    pub fn deadline(&self) -> Instant {
        let engine = self.engine.poll_timeout().map_or_else(
            || Instant::now() + Duration::from_secs(3600),
            |t| self.clock.instant(t),
        );
        self.links
            .values()
            .filter_map(|l| l.stalled_until)
            .fold(engine, Instant::min)
    }

    /// The next report for the engine (never `None`: the runner holds a sender).
    pub async fn recv(&mut self) -> Option<AgentInput> {
        self.rx.recv().await
    }

    /// Performs every output the engine has, including those that feed it back.
    pub fn perform(&mut self) {
        while let Some(output) = self.engine.poll_output() {
            match output {
                AgentOutput::MintToken { lifetime } => match self.host.mint(lifetime) {
                    Ok(token) => self.input(AgentInput::TokenMinted { token, lifetime }),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot sign a token; the engine will retry")
                    }
                },
                AgentOutput::Dial {
                    epoch,
                    token,
                    hello,
                } => self.dial(epoch, token, hello),
                AgentOutput::Send {
                    epoch,
                    message,
                    class,
                } => match nap_core::encode(&message) {
                    Ok(text) => self.send(epoch, class, Message::Text(text.into())),
                    Err(e) => tracing::error!(error = %e, "cannot encode a message; dropped"),
                },
                AgentOutput::Close {
                    epoch,
                    code,
                    reason,
                    linger,
                } => {
                    if let Some(link) = self.links.remove(&epoch) {
                        let frame = CloseFrame {
                            code: WsCloseCode::from(code.as_u16()),
                            reason: reason.into(),
                        };
                        if !link.connected || !link.writer.try_close(Message::Close(Some(frame))) {
                            // Still dialling, or wedged: nothing to close gracefully.
                            link.task.abort();
                        } else {
                            self.closing.retain(|(task, _)| !task.is_finished());
                            self.closing.push((link.task, Instant::now() + linger));
                        }
                    }
                }
                AgentOutput::SampleTelemetry => self.host.sample(&self.tx),
                AgentOutput::CheckHealth => self.host.check_health(None, &self.tx),
                AgentOutput::Run {
                    request_id,
                    task: Task::HealthCheck { .. },
                } => self.host.check_health(Some(request_id), &self.tx),
                AgentOutput::Run { request_id, task } => self.host.run(request_id, task, &self.tx),
                AgentOutput::Kill { request_id } => self.host.kill(request_id),
                AgentOutput::StreamLogs { service, .. } => self.host.stream_logs(&service),
                AgentOutput::Persist => self.host.persist(&self.engine.snapshot()),
                AgentOutput::UpdateTrafficKeys { epoch } => {
                    if let Some(link) = self.links.get(&epoch) {
                        link.keys.request();
                    }
                }
                AgentOutput::ConfirmUpdate => self.host.confirm_update(),
                AgentOutput::RollBackUpdate => self.host.roll_back_update(),
                AgentOutput::Event(event) => self.host.event(event),
            }
        }
    }

    /// Drops the transport of the current epoch without a close frame, as a
    /// network that loses a connection would (the simulator's chaos).
    pub fn cut(&mut self) -> bool {
        let epoch = self.engine.epoch();
        let Some(link) = self.links.remove(&epoch) else {
            return false;
        };
        link.task.abort();
        self.input(AgentInput::Closed { epoch, code: None });
        true
    }

    /// Holds the current transport's frames until `until`, then sends them
    /// in order (the simulator's chaos).
    pub fn stall(&mut self, until: Instant) -> bool {
        let epoch = self.engine.epoch();
        match self.links.get_mut(&epoch) {
            Some(link) => {
                link.stalled_until = Some(until);
                true
            }
            None => false,
        }
    }

    /// Waits for the transports the engine closed to finish their close —
    /// the last frames written, central's close frame back — each no longer
    /// than the linger the engine gave it (before the process exits).
    pub async fn finish_closing(&mut self) {
        for (mut task, deadline) in self.closing.drain(..) {
            let deadline = tokio::time::Instant::from_std(deadline);
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
            }
        }
    }

    /// The process dies: every transport is dropped where it stands (no
    /// close frame), and what is left is the host (what was persisted).
    pub fn crash(mut self) -> H {
        for (_, link) in self.links.drain() {
            link.task.abort();
        }
        for (task, _) in self.closing.drain(..) {
            task.abort();
        }
        self.host
    }

    /// Sends what is queued on every transport and closes them (shutdown).
    pub async fn close_all(&mut self) {
        for (_, link) in self.links.drain() {
            for (class, frame) in link.held {
                link.writer.send(class, frame).await;
            }
            link.writer
                .send(SendClass::Backlog, Message::Close(None))
                .await;
        }
    }

    fn send(&mut self, epoch: Epoch, class: SendClass, frame: Message) {
        let Some(link) = self.links.get_mut(&epoch) else {
            return;
        };
        if link.stalled_until.is_some() {
            link.held.push((class, frame));
        } else if !link.writer.try_send(class, frame) {
            // The engine decides what a full queue means.
            self.input(AgentInput::SendQueueFull { epoch });
        }
    }

    fn dial(&mut self, epoch: Epoch, token: String, hello: Hello) {
        // One transport at a time, as the engine has: whatever an older one
        // is still doing (closing, or a dial given up) stops now.
        for (_, old) in self.links.drain() {
            old.task.abort();
        }
        for (old, _) in self.closing.drain(..) {
            old.abort();
        }
        let (writer, outgoing) = crate::transport::send_queues(SEND_QUEUE);
        let keys = std::sync::Arc::new(crate::transport::KeyUpdates::default());
        let task = tokio::spawn(crate::transport::connect(
            self.dialer.clone(),
            token,
            hello,
            epoch,
            self.tx.clone(),
            outgoing,
            std::sync::Arc::clone(&keys),
        ));
        let link = Link {
            writer,
            task,
            keys,
            connected: false,
            held: Vec::new(),
            stalled_until: None,
        };
        if let Some(old) = self.links.insert(epoch, link) {
            old.task.abort();
        }
    }
}
