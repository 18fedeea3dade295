//! Leader election on a coordination.k8s.io Lease, as client-go's
//! `leaderelection` package does it, for the parts of shoal that every
//! server runs but only one may act as at a time (the scheduler, the
//! controllers).
//!
//! `Elector` makes one attempt at a time; `lead` is the loop around it: it
//! follows until it takes the Lease, starts the caller's work, renews the
//! Lease, and tells the work it is deposed when a renewal has not succeeded
//! within the renew deadline (or on shutdown, after which it gives the
//! Lease up so another instance need not wait out its duration).

mod elector;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use tokio::sync::oneshot;

pub use crate::elector::{Attempt, Elector, LeaseTiming};

/// The Lease a group of instances competes for, and this instance's name in it.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub namespace: String,
    pub name: String,
    /// This instance's `holderIdentity`.
    pub identity: String,
    pub timing: LeaseTiming,
}

#[derive(Debug, thiserror::Error)]
pub enum ElectionError {
    #[error("invalid leader election: {0}")]
    Config(String),
}

/// Resolves when the work it was given to must stop: leadership was lost,
/// or the instance is shutting down.
pub struct Deposed(oneshot::Receiver<()>);

impl Future for Deposed {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

/// Competes for the Lease until `shutdown` resolves. Each time this instance
/// takes it, `work` is called and its future spawned; the future is given a
/// `Deposed` that resolves when the Lease is lost or on shutdown, and is
/// awaited before the instance competes again (so two generations of work
/// never overlap). API errors are logged and retried, never returned.
pub async fn lead<F, Fut>(
    client: kube::Client,
    candidate: Candidate,
    shutdown: impl Future<Output = ()>,
    mut work: F,
) -> Result<(), ElectionError>
where
    F: FnMut(Deposed) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    if candidate.identity.is_empty() {
        return Err(ElectionError::Config("the identity is empty".to_string()));
    }
    if candidate.timing.renew_deadline >= candidate.timing.lease_duration {
        return Err(ElectionError::Config(
            "the renew deadline must be shorter than the lease duration".to_string(),
        ));
    }
    let mut shutdown = std::pin::pin!(shutdown);
    let leases: Api<Lease> = Api::namespaced(client, &candidate.namespace);
    let mut elector = Elector::new(
        leases,
        &candidate.name,
        &candidate.identity,
        candidate.timing.clone(),
    );
    let lease = format!("{}/{}", candidate.namespace, candidate.name);
    loop {
        // Follow until this instance takes the Lease.
        loop {
            match elector.try_acquire_or_renew().await {
                Ok(Attempt::Leader) => break,
                Ok(Attempt::Follower(holder)) => {
                    tracing::debug!(%lease, %holder, "the lease is held elsewhere")
                }
                Err(error) => tracing::warn!(%lease, %error, "cannot read the lease"),
            }
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                _ = tokio::time::sleep(candidate.timing.retry_period) => {}
            }
        }
        tracing::info!(%lease, identity = %candidate.identity, "leading");
        let (depose, deposed) = oneshot::channel();
        let leading = tokio::spawn(work(Deposed(deposed)));
        let outcome = keep_lease(&mut elector, &mut shutdown).await;
        let _ = depose.send(());
        let _ = leading.await;
        match outcome {
            Outcome::Shutdown => {
                if let Err(error) = elector.release().await {
                    tracing::warn!(%lease, %error, "cannot release the lease");
                }
                return Ok(());
            }
            Outcome::Lost => {
                tracing::warn!(%lease, identity = %candidate.identity, "lost the lease; stopped leading");
            }
        }
    }
}

enum Outcome {
    Shutdown,
    Lost,
}

/// Renews the Lease every retry period until shutdown, or until no renewal
/// has succeeded for the renew deadline.
async fn keep_lease(
    elector: &mut Elector,
    shutdown: &mut Pin<&mut impl Future<Output = ()>>,
) -> Outcome {
    let timing = elector.timing().clone();
    let mut last_renewal = Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.as_mut() => return Outcome::Shutdown,
            _ = tokio::time::sleep(timing.retry_period) => {}
        }
        let attempt =
            tokio::time::timeout(timing.renew_deadline, elector.try_acquire_or_renew()).await;
        match attempt {
            Ok(Ok(Attempt::Leader)) => last_renewal = Instant::now(),
            Ok(Ok(Attempt::Follower(holder))) => {
                tracing::warn!(%holder, "another instance holds the lease");
                return Outcome::Lost;
            }
            Ok(Err(error)) => tracing::warn!(%error, "cannot renew the lease"),
            Err(_) => tracing::warn!("renewing the lease timed out"),
        }
        if last_renewal.elapsed() >= timing.renew_deadline {
            return Outcome::Lost;
        }
    }
}
