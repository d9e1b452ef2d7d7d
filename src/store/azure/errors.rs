//! Azure's errors in the terms of [`StoreError`].
//!
//! The same HTTP status and error code mean different things to different requests (a 409
//! `LeaseIdMismatchWithLeaseOperation` is someone else's lease when acquiring, our lost lease when
//! renewing), so the mapping takes the kind of request ([`Op`]). Messages are built from status
//! codes, error codes and the store's description; any text taken from the error itself goes
//! through the store's [`Redactor`](super::redact::Redactor).

use azure_core::error::ErrorKind;

use super::redact::{error_chain, truncate};
use super::AzureStore;
use crate::store::{BlobStore, StoreError};

/// Which kind of request failed: the same Azure error code means different things to them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Op {
    /// Reads and writes of blobs.
    Blob,
    /// Acquiring a lease.
    Acquire,
    /// Renewing or releasing a lease we hold.
    Renew,
    /// Breaking a lease.
    Break,
    /// Container-level requests.
    Container,
}

/// The HTTP status and Azure error code of an error that is an HTTP answer.
pub(super) fn http_status(err: &azure_core::Error) -> Option<(u16, Option<&str>)> {
    match err.kind() {
        ErrorKind::HttpResponse {
            status, error_code, ..
        } => {
            let status = u16::from(*status);
            // The SDK takes the status as the code when the answer has none.
            let code = error_code
                .as_deref()
                .filter(|c| c.parse::<u16>().ok() != Some(status));
            Some((status, code))
        }
        _ => None,
    }
}

/// ` CODE`, or nothing when there is no error code: the tail of `HTTP 409 CODE`.
fn code_suffix(code: &str) -> String {
    if code.is_empty() {
        String::new()
    } else {
        format!(" {code}")
    }
}

impl AzureStore {
    /// Translates an Azure error into our terms, without credentials.
    pub(super) fn map_error(
        &self,
        err: &azure_core::Error,
        name: &str,
        what: &str,
        op: Op,
    ) -> StoreError {
        let name_s = name.to_string();
        match err.kind() {
            ErrorKind::HttpResponse { .. } => {
                let (status, code) = http_status(err).unwrap_or((0, None));
                self.map_status(status, code.unwrap_or(""), err, name_s, what, op)
            }
            ErrorKind::Io | ErrorKind::Connection => StoreError::Transient {
                name: name_s,
                message: format!("{what}: {}", self.error_text(err)),
            },
            ErrorKind::Credential => StoreError::Auth(format!(
                "{what} on {}: {}",
                self.describe(),
                self.error_text(err)
            )),
            _ => StoreError::Other(format!(
                "azure {what} {name:?} on {}: {}",
                self.describe(),
                self.error_text(err)
            )),
        }
    }

    fn map_status(
        &self,
        status: u16,
        code: &str,
        err: &azure_core::Error,
        name: String,
        what: &str,
        op: Op,
    ) -> StoreError {
        use StoreError::*;
        match (status, code) {
            (404, "ContainerNotFound") => ContainerNotFound(self.container_name.clone()),
            (404, _) if op == Op::Container => ContainerNotFound(self.container_name.clone()),
            (404, _) => NotFound(name),
            (412, "LeaseIdMissing" | "LeaseIdMismatchWithBlobOperation") => LeaseConflict(name),
            (412, "LeaseNotPresentWithBlobOperation" | "LeaseLost") => LeaseLost(name),
            (412, _) => PreconditionFailed(name),
            (409, "BlobAlreadyExists") => PreconditionFailed(name),
            (409, "BlockCountExceedsLimit") => BlobFull(name),
            (409, "LeaseAlreadyPresent" | "LeaseIsBreakingAndCannotBeAcquired") => {
                LeaseConflict(name)
            }
            (409, "LeaseIdMismatchWithLeaseOperation") if op == Op::Acquire => LeaseConflict(name),
            (409, "LeaseIdMismatchWithLeaseOperation")
            | (409, "LeaseNotPresentWithLeaseOperation")
            | (409, "LeaseIsBrokenAndCannotBeRenewed")
            | (409, "LeaseIsBreakingAndCannotBeChanged") => LeaseLost(name),
            (401 | 403, _) => Auth(format!(
                "{what} on {} was refused (HTTP {status}{}; signed in with --auth {})",
                self.describe(),
                code_suffix(code),
                self.mode
            )),
            (400, "InvalidBlockList") => BlockListInvalid(name),
            (400, "InvalidResourceName" | "InvalidUri") => InvalidName {
                name,
                reason: format!("Azure rejected it ({code})"),
            },
            (500, "FeatureNotSupported") => Other(format!(
                "azure {what} {name:?} on {}: the service does not support a feature of the request \
                 (HTTP 500 FeatureNotSupported; Azurite in strict mode?)",
                self.describe()
            )),
            (408 | 429 | 500 | 502..=504 | 506..=599, _) => Transient {
                name,
                message: format!("{what}: HTTP {status}{}", code_suffix(code)),
            },
            _ => {
                // The SDK's message is the status and the answer's body (XML): its first line
                // that is more than markup, as a hint.
                let text = err.to_string();
                let detail = text
                    .split_once("<Message>")
                    .and_then(|(_, rest)| rest.split_once("</Message>"))
                    .and_then(|(m, _)| m.lines().next())
                    .map(|m| format!(": {}", self.redactor.scrub(&truncate(m.trim(), 200))))
                    .unwrap_or_default();
                Other(format!(
                    "azure {what} {name:?} on {} failed: HTTP {status}{}{detail}",
                    self.describe(),
                    code_suffix(code)
                ))
            }
        }
    }

    /// The messages of an error and its sources, without secrets (the transport already
    /// dropped URLs from its errors).
    fn error_text(&self, err: &azure_core::Error) -> String {
        self.redactor.scrub(&truncate(&error_chain(err), 600))
    }
}
