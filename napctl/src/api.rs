//! The operator API over HTTP or HTTPS (TLS 1.3, trusting the CA given).

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::net::TcpStream;

/// Where the API is and who is calling.
#[derive(Debug, Clone)]
pub struct Api {
    base: Uri,
    token: String,
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// An answer that is not 2xx: the status and central's error text.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub error: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "central answered {}: {}", self.status, self.error)
    }
}

impl std::error::Error for Refused {}

impl Api {
    /// `url` is `http://host:port` or `https://host:port`; `ca` the PEM
    /// file of the CA that signed central's API certificate.
    pub fn new(url: &str, token: &str, ca: Option<&Path>) -> anyhow::Result<Self> {
        let base: Uri = url
            .parse()
            .with_context(|| format!("{url:?} is not a URL"))?;
        let tls = match base.scheme_str() {
            Some("http") => None,
            Some("https") => Some(tls_config(ca)?),
            _ => bail!("{url:?}: the API URL starts with http:// or https://"),
        };
        Ok(Self {
            base,
            token: token.to_owned(),
            tls,
        })
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.call(Method::POST, path, Some(body)).await
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let authority = self.base.authority().context("the API URL has no host")?;
        let host = authority.host().to_owned();
        let port = authority
            .port_u16()
            .unwrap_or(if self.tls.is_some() { 443 } else { 80 });
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .with_context(|| format!("connecting to {authority}"))?;
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", authority.as_str())
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(
                body.map(Value::to_string).unwrap_or_default(),
            )))?;
        let (status, bytes) = match &self.tls {
            None => send(TokioIo::new(tcp), request).await?,
            Some(config) => {
                let name = ServerName::try_from(host.trim_matches(['[', ']']).to_owned())?;
                let stream = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
                    .context("TLS handshake with the API")?;
                send(TokioIo::new(stream), request).await?
            }
        };
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !(200..300).contains(&status) {
            let error = value.get("error").and_then(Value::as_str).map_or_else(
                || String::from_utf8_lossy(&bytes).into_owned(),
                str::to_owned,
            );
            return Err(Refused { status, error }.into());
        }
        Ok(value)
    }
}

async fn send<S>(io: TokioIo<S>, request: Request<Full<Bytes>>) -> anyhow::Result<(u16, Bytes)>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(connection);
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await?.to_bytes();
    Ok((status, bytes))
}

fn tls_config(ca: Option<&Path>) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let ca = ca.context("an https:// API needs --ca (the CA that signed its certificate)")?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in
        CertificateDer::pem_file_iter(ca).with_context(|| format!("reading {}", ca.display()))?
    {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
