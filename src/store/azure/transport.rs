//! The HTTP client every Azure request goes through (the blob service's and the sign-in
//! endpoints'): one reqwest client, handed to the Azure SDK as its transport.
//!
//! * **Trust.** The bundled web roots, the system's trust store (with `SSL_CERT_FILE` and
//!   `SSL_CERT_DIR` honoured, through rustls-native-certs) and the certificates of the
//!   `ca_file` option: private CAs and TLS-inspecting proxies work.
//! * **Proxies.** `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY` (either case) are
//!   honoured by reqwest.
//! * **Connections.** One pool, kept warm (the SDK's default client would do too, but we keep
//!   control of the pool: an idle connection is dropped after 4 s, before a server that closes
//!   idle connections after 5 s — Node's default, so Azurite's — does; reusing one the server is
//!   closing fails with "connection reset"). Nagle is off: requests are small and latency-bound.
//! * **Secrets.** reqwest's errors quote the request URL, and with it a SAS: they lose the URL
//!   before they leave this module.
//!
//! Time limits and retries are not this module's: see [`super::pipeline`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::error::{Error as AzError, ErrorKind};
use azure_core::http::headers::Headers;
use azure_core::http::request::{Body, Request};
use azure_core::http::response::PinnedStream;
use azure_core::http::{AsyncRawResponse, HttpClient, StatusCode};
use futures::TryStreamExt;

use super::redact::error_chain;
use crate::store::{Result, StoreError};

/// How the client trusts servers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// A PEM file of CA certificates to trust besides the system's.
    pub ca_file: Option<PathBuf>,
}

/// Our reqwest client as the Azure SDK's transport.
#[derive(Clone, Debug)]
pub struct Transport {
    client: reqwest::Client,
}

impl Transport {
    /// A client trusting the system's CAs and those of `tls.ca_file`.
    pub fn new(tls: &TlsOptions) -> Result<Self> {
        let mut builder = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .pool_idle_timeout(Duration::from_secs(4))
            .tcp_nodelay(true)
            .tcp_keepalive(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(20))
            .redirect(reqwest::redirect::Policy::none());
        if let Some(file) = &tls.ca_file {
            for cert in read_ca_file(file)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder
            .build()
            .map_err(|e| StoreError::Other(format!("cannot set up the HTTP client: {e}")))?;
        Ok(Transport { client })
    }

    /// The transport as the SDK takes it.
    pub fn sdk(&self) -> azure_core::http::Transport {
        azure_core::http::Transport::new(Arc::new(self.clone()))
    }
}

/// The certificates of a PEM file, with an error that says what to fix.
fn read_ca_file(file: &Path) -> Result<Vec<reqwest::Certificate>> {
    let pem = std::fs::read(file).map_err(|e| {
        StoreError::Other(format!(
            "cannot read the CA file {} (ca_file): {e}",
            file.display()
        ))
    })?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|_| {
        StoreError::Other(format!(
            "the CA file {} (ca_file) is not a PEM file of certificates",
            file.display()
        ))
    })?;
    if certs.is_empty() {
        return Err(StoreError::Other(format!(
            "the CA file {} (ca_file) holds no PEM certificate",
            file.display()
        )));
    }
    Ok(certs)
}

/// The text of a reqwest error and its sources, without the URL (it may carry a SAS).
fn describe(e: reqwest::Error) -> String {
    error_chain(&e.without_url())
}

#[async_trait]
impl HttpClient for Transport {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        let method = reqwest::Method::from_bytes(request.method().as_str().as_bytes())
            .map_err(|_| AzError::with_message(ErrorKind::Other, "unknown HTTP method"))?;
        let mut rb = self.client.request(method, request.url().clone());
        for (name, value) in request.headers().iter() {
            rb = rb.header(name.as_str(), value.as_str());
        }
        rb = match request.body().clone() {
            Body::Bytes(bytes) => rb.body(bytes),
            Body::SeekableStream(stream) => {
                if let Some(len) = stream.len() {
                    rb = rb.header("content-length", len.to_string());
                }
                rb.body(reqwest::Body::wrap_stream(stream))
            }
        };
        let req = rb.build().map_err(|e| {
            AzError::with_message(
                ErrorKind::Other,
                format!("cannot build the request: {}", describe(e)),
            )
        })?;
        let rsp = self.client.execute(req).await.map_err(|e| {
            let kind = if e.is_connect() {
                ErrorKind::Connection
            } else {
                ErrorKind::Io
            };
            AzError::with_message(kind, describe(e))
        })?;
        let status = StatusCode::from(rsp.status().as_u16());
        let mut headers = Headers::new();
        for (k, v) in rsp.headers() {
            if let Ok(v) = v.to_str() {
                headers.insert(k.as_str().to_owned(), v.to_owned());
            }
        }
        let body: PinnedStream = Box::pin(
            rsp.bytes_stream()
                .map_err(|e| AzError::with_message(ErrorKind::Io, describe(e))),
        );
        Ok(AsyncRawResponse::new(status, headers, body))
    }
}
