//! Admin notifications (auth failures, critical alerts): stored as events
//! and, when a webhook is configured, POSTed to it as JSON — queued
//! (bounded), retried with backoff, never blocking the caller.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::mpsc;

use crate::app::App;
use crate::metrics::Outcome;
use crate::store::Storage;

/// The notification queue's sending side.
#[derive(Debug)]
pub struct Notifier {
    webhook: Option<String>,
    tx: std::sync::Mutex<Option<mpsc::Sender<serde_json::Value>>>,
}

impl Notifier {
    pub fn new(webhook: Option<String>) -> Self {
        Self {
            webhook,
            tx: std::sync::Mutex::new(None),
        }
    }
}

/// Starts the webhook worker, if a webhook is configured.
pub fn start(app: &Arc<App>) {
    let Some(url) = app.notifier.webhook.clone() else {
        return;
    };
    let (tx, rx) = mpsc::channel(1000);
    *app.notifier
        .tx
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(tx);
    tokio::spawn(deliver(Arc::clone(app), url, rx));
}

/// Stores the event and queues it for the webhook.
pub fn notify(app: &Arc<App>, kind: &'static str, detail: serde_json::Value) {
    let at = app.clock.wall();
    let body = serde_json::json!({ "kind": kind, "at": at, "detail": detail });
    let sender = app
        .notifier
        .tx
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    if let Some(tx) = sender
        && tx.try_send(body).is_err()
    {
        app.metrics
            .notifications
            .get_or_create(&Outcome {
                outcome: "dropped".into(),
            })
            .inc();
        tracing::warn!(
            kind,
            "admin notification queue full; webhook delivery dropped (the event is stored)"
        );
    }
    let app = Arc::clone(app);
    tokio::spawn(async move {
        if let Err(e) = app.store.insert_event(kind, detail, at).await {
            app.metrics.db_error("insert_event");
            tracing::error!(error = %e, kind, "could not store an admin event");
        }
    });
}

async fn deliver(app: Arc<App>, url: String, mut rx: mpsc::Receiver<serde_json::Value>) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    while let Some(body) = rx.recv().await {
        let mut delay = Duration::from_secs(1);
        let mut outcome = "failed";
        for _attempt in 0..5 {
            let request = hyper::Request::post(&url)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body.to_string())));
            let Ok(request) = request else {
                outcome = "bad_url";
                break;
            };
            match tokio::time::timeout(Duration::from_secs(10), client.request(request)).await {
                Ok(Ok(response)) if response.status().is_success() => {
                    outcome = "delivered";
                    break;
                }
                Ok(Ok(response)) => {
                    tracing::warn!(status = %response.status(), "webhook refused a notification")
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "webhook unreachable"),
                Err(_) => tracing::warn!("webhook timed out"),
            }
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
        app.metrics
            .notifications
            .get_or_create(&Outcome {
                outcome: outcome.into(),
            })
            .inc();
    }
}
