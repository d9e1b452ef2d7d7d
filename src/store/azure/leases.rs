//! Blob leases: acquiring, renewing, releasing and breaking them.
//!
//! Azure's lease errors are mapped by the kind of request ([`Op::Acquire`], [`Op::Renew`],
//! [`Op::Break`]): someone else's lease is a [`StoreError::LeaseConflict`], the loss of ours a
//! [`StoreError::LeaseLost`]. Breaking a lease that is not there, or already broken, succeeds.

use std::time::Duration;

use azure_core::prelude::ProposedLeaseId;
use azure_core::request_options::LeaseDuration as AzLeaseDuration;
use azure_storage_blobs::prelude::BlobLeaseClient;

use super::convert::parse_lease_id;
use super::errors::{http_status, Op};
use super::names::check_name;
use super::AzureStore;
use crate::store::{LeaseDuration, Result, StoreError};

impl AzureStore {
    /// [`BlobStore::acquire_lease`](crate::store::BlobStore::acquire_lease).
    pub(super) async fn lease(
        &self,
        name: &str,
        duration: LeaseDuration,
        proposed_id: Option<&str>,
    ) -> Result<String> {
        check_name(name)?;
        let az_duration = match duration {
            LeaseDuration::Infinite => AzLeaseDuration::Infinite,
            LeaseDuration::Seconds(s) => match u8::try_from(s) {
                Ok(s) if (15..=60).contains(&s) => AzLeaseDuration::Seconds(s),
                _ => {
                    return Err(StoreError::Other(format!(
                        "lease duration {s} s is out of Azure's range 15-60 s"
                    )))
                }
            },
        };
        let proposed = parse_lease_id(proposed_id)?;
        let blob = self.blob(name);
        let id = self
            .call_az("acquire lease", name, Op::Acquire, 0, || {
                let mut builder = blob.acquire_lease(az_duration.clone());
                if let Some(p) = proposed {
                    builder = builder.proposed_lease_id(ProposedLeaseId::from(p));
                }
                async move { builder.await.map(|r| r.lease_id.to_string()) }
            })
            .await?;
        Ok(proposed_id.map(str::to_string).unwrap_or(id))
    }

    /// The client for the lease `lease_id` of `name`; an id that is not a lease id is a lost lease.
    fn lease_client(&self, name: &str, lease_id: &str) -> Result<BlobLeaseClient> {
        check_name(name)?;
        let lease = parse_lease_id(Some(lease_id))?
            .ok_or_else(|| StoreError::LeaseLost(name.to_string()))?;
        Ok(self.blob(name).blob_lease_client(lease))
    }

    /// [`BlobStore::renew_lease`](crate::store::BlobStore::renew_lease).
    pub(super) async fn renew(&self, name: &str, lease_id: &str) -> Result<()> {
        let client = self.lease_client(name, lease_id)?;
        self.call_az("renew lease", name, Op::Renew, 0, || {
            let fut = client.renew().into_future();
            async move { fut.await.map(|_| ()) }
        })
        .await
    }

    /// [`BlobStore::release_lease`](crate::store::BlobStore::release_lease).
    pub(super) async fn release(&self, name: &str, lease_id: &str) -> Result<()> {
        let client = self.lease_client(name, lease_id)?;
        self.call_az("release lease", name, Op::Renew, 0, || {
            let fut = client.release().into_future();
            async move { fut.await.map(|_| ()) }
        })
        .await
    }

    /// [`BlobStore::break_lease`](crate::store::BlobStore::break_lease): at once (no break
    /// period).
    pub(super) async fn break_now(&self, name: &str) -> Result<()> {
        check_name(name)?;
        let blob = self.blob(name);
        self.call("break lease", name, 0, || {
            let fut = blob
                .break_lease()
                .lease_break_period(Duration::ZERO)
                .into_future();
            async move {
                match fut.await {
                    Ok(_) => Ok(()),
                    // No lease to break, or broken already: the goal is reached.
                    Err(e)
                        if matches!(
                            http_status(&e),
                            Some((
                                409,
                                Some("LeaseNotPresentWithLeaseOperation" | "LeaseAlreadyBroken")
                            ))
                        ) =>
                    {
                        Ok(())
                    }
                    Err(e) => Err(self.map_error(&e, name, "break lease", Op::Break)),
                }
            }
        })
        .await
    }
}
