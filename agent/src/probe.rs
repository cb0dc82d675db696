//! Probes over plain HTTP and TCP: the application's health URL and
//! Prometheus endpoint, and the database health check.

use std::time::{Duration, Instant};

use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use nap_core::wire::{ApplicationMetrics, ApplicationStatus};

use crate::config::ApplicationConfig;

/// GETs `url` (http only); the status and body, within `timeout`.
pub async fn get(url: &str, timeout: Duration) -> Result<(u16, String), String> {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let uri = url.parse().map_err(|e| format!("bad URL {url}: {e}"))?;
    let response = tokio::time::timeout(timeout, client.get(uri))
        .await
        .map_err(|_| format!("{url} did not answer within {timeout:?}"))?
        .map_err(|e| format!("{url}: {e}"))?;
    let status = response.status().as_u16();
    let body = tokio::time::timeout(timeout, response.into_body().collect())
        .await
        .map_err(|_| format!("{url}: body timed out"))?
        .map_err(|e| format!("{url}: {e}"))?
        .to_bytes();
    let body = String::from_utf8_lossy(&body[..body.len().min(1 << 20)]).into_owned();
    Ok((status, body))
}

/// The application's status and selected metrics.
pub async fn application(config: &ApplicationConfig) -> ApplicationMetrics {
    let mut out = crate::telemetry::unknown_application();
    if let Some(url) = &config.health_url {
        let started = Instant::now();
        let answer = get(url, Duration::from_secs(5)).await;
        out.latency_ms = Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
        out.status = match answer {
            Ok((status, _)) if (200..300).contains(&status) => ApplicationStatus::Up,
            _ => ApplicationStatus::Down,
        };
    }
    if let Some(url) = &config.metrics_url {
        match get(url, Duration::from_secs(5)).await {
            Ok((200, body)) => {
                out.metrics = crate::telemetry::parse_prometheus(&body, &config.metrics);
                if out.status == ApplicationStatus::Unknown {
                    out.status = ApplicationStatus::Up;
                }
            }
            _ => out.status = ApplicationStatus::Down,
        }
    }
    out
}

/// Whether the database answers: `tcp://host:port` connects, `postgres://…`
/// runs `SELECT 1`. The round trip, or why not.
pub async fn database(target: &str, timeout: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    if let Some(addr) = target.strip_prefix("tcp://") {
        tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| format!("{addr} did not answer within {timeout:?}"))?
            .map_err(|e| format!("{addr}: {e}"))?;
        return Ok(started.elapsed());
    }
    if target.starts_with("postgres://") || target.starts_with("postgresql://") {
        let check = async {
            let (client, conn) = tokio_postgres::connect(target, tokio_postgres::NoTls)
                .await
                .map_err(|e| e.to_string())?;
            let task = tokio::spawn(conn);
            let result = client
                .simple_query("SELECT 1")
                .await
                .map_err(|e| e.to_string());
            drop(client);
            task.abort();
            result.map(|_| ())
        };
        tokio::time::timeout(timeout, check)
            .await
            .map_err(|_| format!("the database did not answer within {timeout:?}"))??;
        return Ok(started.elapsed());
    }
    Err(format!(
        "unsupported database target {target:?}: use tcp://host:port or postgres://"
    ))
}
