//! The sync loop: kube-rs watchers on every Service and EndpointSlice feed
//! the `Proxier`; changes are coalesced (one sync at most every
//! `min_sync_interval`) and each sync is one nf_tables netlink batch. A
//! failed transaction is logged with the command the kernel refused and
//! followed, after `retry_interval`, by a full sync; a full sync also runs
//! every `full_sync_interval`, repairing whatever changed the table behind
//! the proxy's back (skipped when the ruleset's generation shows nothing
//! did).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::{WatchStreamExt as _, watcher};

use crate::model::ServiceKey;
use crate::nft;
use crate::state::{NodeContext, Proxier};

/// How the sync loop runs.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    pub node: NodeContext,
    /// Where the table is (the machine's own network namespace for an agent).
    pub nft: nft::Nft,
    /// The least time between the end of one sync and the start of the
    /// next: changes arriving meanwhile go in one transaction.
    pub min_sync_interval: Duration,
    /// How often the whole table is rewritten.
    pub full_sync_interval: Duration,
    /// How long after a failed transaction the next is tried; doubled
    /// after each further failure, up to `max_retry_interval`.
    pub retry_interval: Duration,
    pub max_retry_interval: Duration,
}

impl ProxyConfig {
    pub fn new(node: NodeContext) -> ProxyConfig {
        ProxyConfig {
            node,
            nft: nft::Nft::host(),
            min_sync_interval: Duration::from_millis(20),
            full_sync_interval: Duration::from_secs(60),
            retry_interval: Duration::from_secs(1),
            max_retry_interval: Duration::from_secs(30),
        }
    }
}

/// What one sync did, for whoever watches the proxy (the benchmark).
#[derive(Clone, Debug)]
pub struct SyncReport {
    /// When the transaction was committed (the kernel acknowledged it).
    pub committed_at: Instant,
    pub full: bool,
    /// From the plan's start to the commit, listing included.
    pub duration: Duration,
    /// The services whose rules were written.
    pub services: Vec<ServiceKey>,
    /// The netlink batch's size, in bytes.
    pub transaction_bytes: usize,
}

/// Hooks for a caller that drives and observes the loop (the benchmark);
/// the agent passes the default.
#[derive(Default, Clone)]
pub struct Observer {
    /// Told of every committed sync.
    pub reports: Option<tokio::sync::mpsc::UnboundedSender<SyncReport>>,
    /// Notified: the next sync is a full one, at once.
    pub full_sync_now: Option<Arc<tokio::sync::Notify>>,
}

enum Change {
    Service(Result<watcher::Event<Service>, watcher::Error>),
    Slice(Result<watcher::Event<EndpointSlice>, watcher::Error>),
}

/// Which kinds have been listed once: no sync before both have, or
/// services would be rejected for endpoints not yet seen.
#[derive(Default)]
struct Listing {
    services_listed: bool,
    slices_listed: bool,
    service_relist: Option<HashSet<ServiceKey>>,
    slice_relist: Option<HashSet<(String, String)>>,
}

fn apply_change(proxier: &mut Proxier, listing: &mut Listing, change: Change) {
    match change {
        Change::Service(Ok(event)) => match event {
            watcher::Event::Init => listing.service_relist = Some(HashSet::new()),
            watcher::Event::InitApply(service) => {
                if let (Some(seen), Some(key)) = (
                    listing.service_relist.as_mut(),
                    ServiceKey::of_service(&service),
                ) {
                    seen.insert(key);
                }
                proxier.update_service(&service);
            }
            watcher::Event::InitDone => {
                let seen = listing.service_relist.take().unwrap_or_default();
                for key in proxier.service_keys() {
                    if !seen.contains(&key) {
                        proxier.delete_service(&key);
                    }
                }
                listing.services_listed = true;
            }
            watcher::Event::Apply(service) => proxier.update_service(&service),
            watcher::Event::Delete(service) => {
                if let Some(key) = ServiceKey::of_service(&service) {
                    proxier.delete_service(&key);
                }
            }
        },
        Change::Slice(Ok(event)) => match event {
            watcher::Event::Init => listing.slice_relist = Some(HashSet::new()),
            watcher::Event::InitApply(slice) => {
                if let (Some(seen), Some(namespace), Some(name)) = (
                    listing.slice_relist.as_mut(),
                    slice.metadata.namespace.clone(),
                    slice.metadata.name.clone(),
                ) {
                    seen.insert((namespace, name));
                }
                proxier.update_slice(&slice);
            }
            watcher::Event::InitDone => {
                let seen = listing.slice_relist.take().unwrap_or_default();
                for id in proxier.slice_ids() {
                    if !seen.contains(&id) {
                        proxier.delete_slice(&id.0, &id.1);
                    }
                }
                listing.slices_listed = true;
            }
            watcher::Event::Apply(slice) => proxier.update_slice(&slice),
            watcher::Event::Delete(slice) => {
                if let (Some(namespace), Some(name)) = (
                    slice.metadata.namespace.as_deref(),
                    slice.metadata.name.as_deref(),
                ) {
                    proxier.delete_slice(namespace, name);
                }
            }
        },
        Change::Service(Err(error)) | Change::Slice(Err(error)) => {
            tracing::debug!(%error, "a proxy watch was interrupted; it resumes");
        }
    }
}

/// Plans and applies one sync (blocking: it talks to the kernel).
/// `generation` is the ruleset's generation after the proxy's last commit:
/// a periodic full sync finding it unchanged has nothing to repair.
fn sync_once(
    proxier: &mut Proxier,
    nft: &nft::Nft,
    generation: &mut Option<u32>,
) -> Result<SyncReport, nft::NftError> {
    let started = Instant::now();
    if proxier.needs_listing()
        && let Some(last) = *generation
        && nft.generation()? == last
    {
        proxier.skip_full_sync();
    }
    let names = if proxier.needs_listing() {
        Some(nft.existing_names()?)
    } else {
        None
    };
    let plan = proxier.plan(names);
    let full = plan.full;
    let services = plan.services.clone();
    let empty = plan.transaction.is_empty();
    match nft.apply_sized(&plan.transaction) {
        Ok(transaction_bytes) => {
            proxier.committed(plan);
            if !empty {
                // Another commit between ours and this read would be
                // missed until the next change of ours; the window is one
                // netlink round trip.
                *generation = nft.generation().ok();
            }
            let committed_at = Instant::now();
            Ok(SyncReport {
                committed_at,
                full,
                duration: committed_at - started,
                services,
                transaction_bytes,
            })
        }
        Err(error) => {
            proxier.failed();
            *generation = None;
            Err(error)
        }
    }
}

/// Keeps the node's table in step with the cluster's Services and
/// EndpointSlices until `shutdown`. The rules stay when it stops: pods
/// keep reaching services while the agent is down (`cleanup` removes
/// them).
pub async fn run(
    client: kube::Client,
    config: ProxyConfig,
    observer: Observer,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let services = watcher(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .map(Change::Service)
    .boxed();
    let slices = watcher(
        Api::<EndpointSlice>::all(client),
        watcher::Config::default(),
    )
    .default_backoff()
    .map(Change::Slice)
    .boxed();
    let mut changes = futures::stream::select(services, slices);
    let mut proxier = Some(Proxier::new(config.node.clone()));
    // The ruleset generation after the last commit of ours.
    let mut generation: Option<u32> = None;
    let mut listing = Listing::default();
    let mut earliest_sync = tokio::time::Instant::now();
    let mut next_full_sync = tokio::time::Instant::now() + config.full_sync_interval;
    let full_sync_now = observer.full_sync_now.clone().unwrap_or_default();
    let mut retry_interval = config.retry_interval;
    loop {
        let state = proxier
            .as_mut()
            .expect("the proxier is back after each sync");
        let ready = listing.services_listed && listing.slices_listed;
        let wake = if ready && state.pending() {
            earliest_sync
        } else {
            next_full_sync
        };
        tokio::select! {
            change = changes.next() => {
                match change {
                    Some(change) => apply_change(state, &mut listing, change),
                    None => return,
                }
                continue;
            }
            _ = tokio::time::sleep_until(wake) => {}
            _ = full_sync_now.notified() => state.request_full_sync(),
            _ = shutdown.wait_for(|stopped| *stopped) => return,
        }
        let now = tokio::time::Instant::now();
        if now >= next_full_sync {
            state.request_periodic_full_sync();
            next_full_sync = now + config.full_sync_interval;
        }
        if !ready || !state.pending() || now < earliest_sync {
            continue;
        }
        let mut working = proxier.take().expect("the proxier is here between syncs");
        let nft = config.nft.clone();
        let mut last_generation = generation;
        let (working, outcome) = match tokio::task::spawn_blocking(move || {
            let outcome = sync_once(&mut working, &nft, &mut last_generation);
            (working, outcome, last_generation)
        })
        .await
        {
            Ok((working, outcome, last_generation)) => {
                generation = last_generation;
                (working, outcome)
            }
            Err(error) => {
                tracing::error!(%error, "the proxy's sync task failed");
                return;
            }
        };
        proxier = Some(working);
        let finished = tokio::time::Instant::now();
        match outcome {
            Ok(report) => {
                tracing::debug!(
                    full = report.full,
                    services = report.services.len(),
                    bytes = report.transaction_bytes,
                    duration_ms = report.duration.as_secs_f64() * 1000.0,
                    "proxy rules synced"
                );
                if let Some(reports) = &observer.reports {
                    let _ = reports.send(report);
                }
                earliest_sync = finished + config.min_sync_interval;
                retry_interval = config.retry_interval;
            }
            Err(error) => {
                tracing::warn!(
                    %error,
                    retry_in_seconds = retry_interval.as_secs_f64(),
                    "cannot sync the proxy's rules; a full sync follows"
                );
                earliest_sync = finished + retry_interval;
                retry_interval = (retry_interval * 2).min(config.max_retry_interval);
            }
        }
    }
}
