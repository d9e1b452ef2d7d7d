//! Blob leases: acquiring, renewing, releasing and breaking them.
//!
//! Azure's lease errors are mapped by the kind of request ([`Op::Acquire`], [`Op::Renew`],
//! [`Op::Break`]): someone else's lease is a [`StoreError::LeaseConflict`], the loss of ours a
//! [`StoreError::LeaseLost`]. Breaking a lease that is not there, or already broken, succeeds.

use azure_storage_blob::models::{BlobClientAcquireLeaseOptions, BlobClientBreakLeaseOptions};

use super::convert::{parse_lease_id, LEASE_ID};
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
        let seconds: i32 = match duration {
            LeaseDuration::Infinite => -1,
            LeaseDuration::Seconds(s) if (15..=60).contains(&s) => s as i32,
            LeaseDuration::Seconds(s) => {
                return Err(StoreError::Other(format!(
                    "lease duration {s} s is out of Azure's range 15-60 s"
                )))
            }
        };
        let proposed = parse_lease_id(proposed_id)?;
        let blob = self.blob(name);
        let id = self
            .call_az("acquire lease", name, Op::Acquire, 0, || {
                let options = BlobClientAcquireLeaseOptions {
                    proposed_lease_id: proposed.clone(),
                    ..Default::default()
                };
                let blob = &blob;
                async move {
                    blob.acquire_lease(seconds, Some(options)).await.map(|r| {
                        r.headers()
                            .get_optional_str(&LEASE_ID)
                            .unwrap_or_default()
                            .to_string()
                    })
                }
            })
            .await?;
        match proposed_id {
            Some(p) => Ok(p.to_string()),
            None if !id.is_empty() => Ok(id),
            None => Err(StoreError::Other(format!(
                "acquire lease {name:?}: the answer carries no lease id"
            ))),
        }
    }

    /// The lease id `lease_id` as Azure takes it; one that is not a lease id is a lost lease.
    fn lease_of(name: &str, lease_id: &str) -> Result<String> {
        parse_lease_id(Some(lease_id))?.ok_or_else(|| StoreError::LeaseLost(name.to_string()))
    }

    /// [`BlobStore::renew_lease`](crate::store::BlobStore::renew_lease).
    pub(super) async fn renew(&self, name: &str, lease_id: &str) -> Result<()> {
        check_name(name)?;
        let lease = Self::lease_of(name, lease_id)?;
        let blob = self.blob(name);
        self.call_az("renew lease", name, Op::Renew, 0, || {
            let (blob, lease) = (&blob, lease.clone());
            async move { blob.renew_lease(lease, None).await.map(|_| ()) }
        })
        .await
    }

    /// [`BlobStore::release_lease`](crate::store::BlobStore::release_lease).
    pub(super) async fn release(&self, name: &str, lease_id: &str) -> Result<()> {
        check_name(name)?;
        let lease = Self::lease_of(name, lease_id)?;
        let blob = self.blob(name);
        self.call_az("release lease", name, Op::Renew, 0, || {
            let (blob, lease) = (&blob, lease.clone());
            async move { blob.release_lease(lease, None).await.map(|_| ()) }
        })
        .await
    }

    /// [`BlobStore::break_lease`](crate::store::BlobStore::break_lease): at once (no break
    /// period).
    pub(super) async fn break_now(&self, name: &str) -> Result<()> {
        check_name(name)?;
        let blob = self.blob(name);
        self.call("break lease", name, 0, || {
            let options = BlobClientBreakLeaseOptions {
                break_period: Some(0),
                ..Default::default()
            };
            let blob = &blob;
            async move {
                match blob.break_lease(Some(options)).await {
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
