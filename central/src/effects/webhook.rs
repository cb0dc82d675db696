//! The admin webhook's client: one POST per notification over a connection
//! of its own, plain HTTP or HTTPS (rustls, the project's one provider,
//! checked against the configured CA or the system's). Notifications are
//! few — the hub coalesces them — so there is nothing to pool.

use std::sync::Arc;

use anyhow::Context as _;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Where notifications go.
#[derive(Clone)]
pub struct Webhook {
    uri: Uri,
    authority: String,
    addr: (String, u16),
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("uri", &self.uri)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Webhook {
    /// The webhook at `url` (`http://` or `https://`); an `https` one
    /// trusts the CA certificates in `ca`, else the system's.
    pub fn new(url: &str, ca: Option<&std::path::Path>) -> anyhow::Result<Self> {
        let uri: Uri = url.parse().with_context(|| format!("webhook URL {url}"))?;
        let host = uri
            .host()
            .with_context(|| format!("webhook URL {url} has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let (tls, default_port) = match uri.scheme_str() {
            Some("https") => {
                let config = crate::tls::client_config(ca)?;
                let name = ServerName::try_from(host.clone())
                    .with_context(|| format!("webhook host {host}"))?;
                (Some((TlsConnector::from(Arc::clone(&config)), name)), 443)
            }
            Some("http") => (None, 80),
            _ => anyhow::bail!("webhook URL {url}: the scheme must be http or https"),
        };
        let port = uri.port_u16().unwrap_or(default_port);
        let authority = uri
            .authority()
            .map_or_else(|| host.clone(), |a| a.as_str().to_owned());
        Ok(Self {
            uri,
            authority,
            addr: (host, port),
            tls,
        })
    }

    /// POSTs `body` as JSON; the answer's status.
    pub async fn post(&self, body: String) -> Result<StatusCode, String> {
        let tcp = TcpStream::connect((self.addr.0.as_str(), self.addr.1))
            .await
            .map_err(|e| format!("connecting: {e}"))?;
        match &self.tls {
            Some((connector, name)) => {
                let stream = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                self.send(stream, body).await
            }
            None => self.send(tcp, body).await,
        }
    }

    async fn send<S>(&self, stream: S, body: String) -> Result<StatusCode, String>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let path = self
            .uri
            .path_and_query()
            .map_or("/", hyper::http::uri::PathAndQuery::as_str);
        let request = hyper::Request::post(path)
            .header(hyper::header::HOST, &self.authority)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("request: {e}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        Ok(response.status())
    }
}
