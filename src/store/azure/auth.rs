//! How a store signs in: the modes (`--auth key|sas|spn|msi|workload|azcli`, blobfuse2's names)
//! and the Entra ID token credentials behind the last four.
//!
//! * `key` and `sas` sign requests with a SAS ([`super::sas`]).
//! * `spn`, `msi`, `workload` and `azcli` present a bearer token from `azure_identity`'s
//!   credentials. Every credential request goes through our transport (so `ca_file`,
//!   `SSL_CERT_FILE` and proxies apply), with the SDK's retries off and a time limit of ours
//!   ([`TimedCredential`]): a sign-in never hangs (the managed-identity endpoint of a VM is
//!   otherwise retried for over a minute, and `az` has no time limit of its own).
//! * Tokens are cached ([`TokenCache`]): a request is never held up by a refresh while the token
//!   it has is still valid. From five minutes before a token expires, a new one is fetched in the
//!   background (again 10 s after a failure); only a request that finds no valid token waits for
//!   a fetch, for at most two thirds of the request time limit, so that a failed sign-in surfaces
//!   as access denied (EACCES) rather than as a time-out. A failed fetch is logged once, naming
//!   the mode, until one succeeds again; the mount recovers by itself when the credential works
//!   again.
//! * `az` runs in its own process group, killed when the fetch is abandoned (the SDK's runner
//!   would leave a hung `az` behind, and start another one for the next fetch).
//!
//! No secret (client secret, certificate, token, assertion) appears in an error or a log line:
//! messages are built from the mode and the names of the variables or files involved, and text
//! from the SDK goes through the store's [`Redactor`](super::redact::Redactor).

use std::ffi::OsStr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use azure_core::credentials::{
    AccessToken, Secret, SecretBytes, TokenCredential, TokenRequestOptions,
};
use azure_core::error::ErrorKind;
use azure_core::http::{ClientOptions, RetryOptions};
use azure_identity::{
    AzureCliCredential, AzureCliCredentialOptions, ClientAssertionCredentialOptions,
    ClientCertificateCredential, ClientCertificateCredentialOptions, ClientSecretCredential,
    ClientSecretCredentialOptions, Executor, ManagedIdentityCredential,
    ManagedIdentityCredentialOptions, UserAssignedId, WorkloadIdentityCredential,
    WorkloadIdentityCredentialOptions,
};
use serde::{Deserialize, Serialize};

use super::redact::{truncate, Redactor};
use super::transport::Transport;
use crate::store::{Result, StoreError};

/// How a mount signs in to Azure (blobfuse2's names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Account key: a connection string, or AZURE_STORAGE_ACCOUNT + AZURE_STORAGE_KEY.
    Key,
    /// Shared access signature: AZURE_STORAGE_SAS_TOKEN, a SAS URL, or a connection string with
    /// SharedAccessSignature.
    Sas,
    /// Service principal: AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET or
    /// AZURE_CLIENT_CERTIFICATE_PATH.
    Spn,
    /// Managed identity: system-assigned, or user-assigned by client, object or resource id.
    Msi,
    /// Workload identity (Kubernetes): AZURE_FEDERATED_TOKEN_FILE, AZURE_CLIENT_ID, AZURE_TENANT_ID.
    Workload,
    /// The signed-in Azure CLI (`az login`).
    Azcli,
}

impl AuthMode {
    pub fn as_str(&self) -> &'static str {
        match self {
            AuthMode::Key => "key",
            AuthMode::Sas => "sas",
            AuthMode::Spn => "spn",
            AuthMode::Msi => "msi",
            AuthMode::Workload => "workload",
            AuthMode::Azcli => "azcli",
        }
    }
}

impl std::fmt::Display for AuthMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A user-assigned managed identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum MsiId {
    ClientId(String),
    ObjectId(String),
    ResourceId(String),
}

/// What a token mode needs, as the configuration gathered it (from the environment and the
/// settings). Secrets are held as [`Secret`]s (their `Debug` hides them).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TokenSpec {
    pub tenant_id: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<Secret>,
    pub client_certificate_path: Option<PathBuf>,
    pub client_certificate_password: Option<Secret>,
    pub federated_token_file: Option<PathBuf>,
    pub msi_id: Option<MsiId>,
}

/// Where a missing piece of a token mode can be given, for the error that names it.
fn missing(mode: AuthMode, what: &str) -> StoreError {
    StoreError::Other(format!("--auth {mode}: {what}"))
}

/// The token credential of `mode`, its requests through `transport`, each fetch limited to
/// `limit`. No request is made.
pub(super) fn token_credential(
    mode: AuthMode,
    spec: &TokenSpec,
    transport: &Transport,
    limit: Duration,
    redactor: Redactor,
) -> Result<Arc<dyn TokenCredential>> {
    let client_options = || ClientOptions {
        transport: Some(transport.sdk()),
        retry: RetryOptions::none(),
        ..Default::default()
    };
    let sdk_error = |e: azure_core::Error| {
        StoreError::Other(format!(
            "--auth {mode}: {}",
            redactor.scrub(&truncate(&e.to_string(), 400))
        ))
    };
    let inner: Arc<dyn TokenCredential> = match mode {
        AuthMode::Spn => {
            let tenant = spec.tenant_id.as_deref().ok_or_else(|| {
                missing(
                    mode,
                    "set AZURE_TENANT_ID (the directory of the service principal)",
                )
            })?;
            let client_id = spec.client_id.clone().ok_or_else(|| {
                missing(
                    mode,
                    "set AZURE_CLIENT_ID (the application id of the service principal)",
                )
            })?;
            match (&spec.client_secret, &spec.client_certificate_path) {
                (Some(secret), _) => ClientSecretCredential::new(
                    tenant,
                    client_id,
                    secret.clone(),
                    Some(ClientSecretCredentialOptions {
                        client_options: client_options(),
                    }),
                )
                .map_err(sdk_error)?,
                (None, Some(path)) => {
                    let pkcs12 = certificate_pkcs12(
                        path,
                        spec.client_certificate_password.as_ref(),
                    )?;
                    ClientCertificateCredential::new(
                        tenant.to_string(),
                        client_id,
                        SecretBytes::from(pkcs12),
                        Some(ClientCertificateCredentialOptions {
                            client_options: client_options(),
                            password: spec.client_certificate_password.clone(),
                        }),
                    )
                    .map_err(sdk_error)?
                }
                (None, None) => {
                    return Err(missing(
                        mode,
                        "set AZURE_CLIENT_SECRET, or AZURE_CLIENT_CERTIFICATE_PATH (a PEM or PKCS#12 file with the certificate and its key)",
                    ))
                }
            }
        }
        AuthMode::Msi => {
            let user_assigned_id = spec.msi_id.clone().map(|id| match id {
                MsiId::ClientId(s) => UserAssignedId::ClientId(s),
                MsiId::ObjectId(s) => UserAssignedId::ObjectId(s),
                MsiId::ResourceId(s) => UserAssignedId::ResourceId(s),
            });
            ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                user_assigned_id,
                client_options: client_options(),
            }))
            .map_err(sdk_error)?
        }
        AuthMode::Workload => {
            let token_file = spec.federated_token_file.clone().ok_or_else(|| {
                missing(
                    mode,
                    "set AZURE_FEDERATED_TOKEN_FILE (the projected service-account token)",
                )
            })?;
            if !token_file.is_file() {
                return Err(missing(
                    mode,
                    &format!(
                        "AZURE_FEDERATED_TOKEN_FILE names {}, which is not a readable file",
                        token_file.display()
                    ),
                ));
            }
            let client_id = spec.client_id.clone().ok_or_else(|| {
                missing(
                    mode,
                    "set AZURE_CLIENT_ID (the workload identity's client id)",
                )
            })?;
            let tenant_id = spec
                .tenant_id
                .clone()
                .ok_or_else(|| missing(mode, "set AZURE_TENANT_ID"))?;
            WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
                credential_options: ClientAssertionCredentialOptions {
                    client_options: client_options(),
                },
                client_id: Some(client_id),
                tenant_id: Some(tenant_id),
                token_file_path: Some(token_file),
            }))
            .map_err(sdk_error)?
        }
        AuthMode::Azcli => AzureCliCredential::new(Some(AzureCliCredentialOptions {
            tenant_id: spec.tenant_id.clone(),
            executor: Some(Arc::new(GroupExecutor)),
            ..Default::default()
        }))
        .map_err(sdk_error)?,
        AuthMode::Key | AuthMode::Sas => {
            return Err(StoreError::Other(format!(
                "--auth {mode} signs with a SAS, not a token"
            )))
        }
    };
    let timed = Arc::new(TimedCredential {
        mode,
        inner,
        // Below the request's own limit, so that a failed sign-in is an error of its own.
        limit: limit.mul_f64(2.0 / 3.0).max(Duration::from_secs(1)),
        failing: AtomicBool::new(false),
        redactor,
    });
    Ok(Arc::new(TokenCache {
        inner: timed,
        state: Arc::new(Mutex::new(CacheState::default())),
    }))
}

/// A token is refreshed in the background from this long before it expires.
const REFRESH_BEFORE: Duration = Duration::from_secs(300);
/// A token this close to its expiry is not handed out any more.
const EXPIRY_MARGIN: Duration = Duration::from_secs(10);
/// After a failed background refresh, the next one waits this long.
const REFRESH_RETRY: Duration = Duration::from_secs(10);

#[derive(Default)]
struct CacheState {
    /// The token for the scopes last asked for.
    token: Option<(Vec<String>, AccessToken)>,
    refreshing: bool,
    last_failure: Option<Instant>,
}

/// Hands out the cached token while it is valid and refreshes it in the background.
struct TokenCache {
    inner: Arc<TimedCredential>,
    state: Arc<Mutex<CacheState>>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenCache({})", self.inner.mode)
    }
}

#[async_trait]
impl TokenCredential for TokenCache {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let wanted: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
        let now = time::OffsetDateTime::now_utc();
        {
            let mut st = crate::mutex::lock(&self.state);
            let cached = st
                .token
                .as_ref()
                .filter(|(s, t)| *s == wanted && t.expires_on - now > EXPIRY_MARGIN)
                .map(|(_, t)| t.clone());
            if let Some(token) = cached {
                let due = token.expires_on - now < REFRESH_BEFORE;
                let backed_off = st.last_failure.is_some_and(|t| t.elapsed() < REFRESH_RETRY);
                if due && !st.refreshing && !backed_off {
                    st.refreshing = true;
                    let (inner, state) = (self.inner.clone(), self.state.clone());
                    tokio::spawn(async move {
                        let scopes: Vec<&str> = wanted.iter().map(String::as_str).collect();
                        let outcome = inner.get_token(&scopes, None).await;
                        let mut st = crate::mutex::lock(&state);
                        st.refreshing = false;
                        match outcome {
                            Ok(t) => {
                                st.token = Some((wanted.clone(), t));
                                st.last_failure = None;
                            }
                            Err(_) => st.last_failure = Some(Instant::now()),
                        }
                    });
                }
                return Ok(token);
            }
        }
        // No valid token: this request waits for one.
        match self.inner.get_token(scopes, options).await {
            Ok(t) => {
                let mut st = crate::mutex::lock(&self.state);
                st.token = Some((wanted, t.clone()));
                st.last_failure = None;
                Ok(t)
            }
            Err(e) => {
                crate::mutex::lock(&self.state).last_failure = Some(Instant::now());
                Err(e)
            }
        }
    }
}

/// Runs `az` (through the SDK's `/bin/sh -c …`) in a process group of its own, killed with the
/// fetch when that is abandoned (its time limit ran out).
#[derive(Debug)]
struct GroupExecutor;

/// Kills a process group when dropped, unless disarmed.
struct KillGroup(Option<i32>);

impl Drop for KillGroup {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.take() {
            // SAFETY: kill(2) on a process group we created; no memory is involved.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
}

#[async_trait]
impl Executor for GroupExecutor {
    async fn run(&self, program: &OsStr, args: &[&OsStr]) -> std::io::Result<std::process::Output> {
        let child = tokio::process::Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()?;
        let mut guard = KillGroup(child.id().and_then(|p| i32::try_from(p).ok()));
        let output = child.wait_with_output().await;
        guard.0 = None;
        output
    }
}

/// The client certificate at `path` as PKCS#12 (what the SDK takes): a PKCS#12 file as is, a PEM
/// file (certificate and private key) converted.
fn certificate_pkcs12(path: &std::path::Path, password: Option<&Secret>) -> Result<Vec<u8>> {
    let bad = |why: String| {
        StoreError::Other(format!(
            "--auth spn: AZURE_CLIENT_CERTIFICATE_PATH {}: {why}",
            path.display()
        ))
    };
    let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot be read ({e})")))?;
    if !bytes.starts_with(b"-----BEGIN") && !bytes.windows(10).any(|w| w == b"-----BEGIN") {
        return Ok(bytes);
    }
    let cert = openssl::x509::X509::from_pem(&bytes)
        .map_err(|_| bad("holds no PEM certificate".into()))?;
    let key = openssl::pkey::PKey::private_key_from_pem(&bytes)
        .map_err(|_| bad("holds no unencrypted PEM private key".into()))?;
    let pass = password.map(|p| p.secret().to_string()).unwrap_or_default();
    let p12 = openssl::pkcs12::Pkcs12::builder()
        .name("remotedict")
        .pkey(&key)
        .cert(&cert)
        .build2(&pass)
        .map_err(|_| bad("its certificate and key cannot be packed as PKCS#12".into()))?;
    p12.to_der()
        .map_err(|_| bad("its certificate and key cannot be packed as PKCS#12".into()))
}

/// A token credential with a time limit, whose failures are logged once (naming the mode) until
/// it works again.
struct TimedCredential {
    mode: AuthMode,
    inner: Arc<dyn TokenCredential>,
    limit: Duration,
    failing: AtomicBool,
    redactor: Redactor,
}

impl std::fmt::Debug for TimedCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TimedCredential({})", self.mode)
    }
}

#[async_trait]
impl TokenCredential for TimedCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let outcome = tokio::time::timeout(self.limit, self.inner.get_token(scopes, options)).await;
        let message = match outcome {
            Ok(Ok(token)) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    log::warn!("sign-in (--auth {}) works again", self.mode);
                }
                log::debug!(
                    "sign-in (--auth {}): a token valid until {}",
                    self.mode,
                    token.expires_on
                );
                return Ok(token);
            }
            Ok(Err(e)) => self.redactor.scrub(&truncate(&e.to_string(), 400)),
            Err(_) => format!(
                "no token within {} s (the sign-in endpoint or `az` did not answer)",
                self.limit.as_secs()
            ),
        };
        if !self.failing.swap(true, Ordering::Relaxed) {
            log::error!("sign-in (--auth {}) failed: {message}", self.mode);
        }
        Err(azure_core::Error::with_message(
            ErrorKind::Credential,
            format!("sign-in (--auth {}) failed: {message}", self.mode),
        ))
    }
}
