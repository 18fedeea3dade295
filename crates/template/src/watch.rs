//! `--watch`: one store watch per key prefix and per Service the template
//! reads (its EndpointSlices' namespace, filtered by the service-name label,
//! and its Service object), each started just after the revision the last
//! render read, so no change falls between a render and its watches. Renders
//! for changes start at least a short window apart: a change after a quiet
//! spell is rendered at once, and the changes of a burst that follow it
//! join one render at the window's end.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use client::{Kv, WatchRequest, WatchUpdate};
use futures::StreamExt as _;
use proto::mvccpb::Event;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::Templater;
use crate::data::{ServiceName, slice_belongs_to};
use crate::stage::Outcome;

/// The least time between the starts of two syncs for changes.
const COALESCE_WINDOW: Duration = Duration::from_millis(100);
/// The first retry after a failed sync or a lost watch, doubled each time
/// up to the maximum.
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(500);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// What one watch follows.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    Prefix(String),
    Slices(ServiceName),
    Service(ServiceName),
}

impl Target {
    fn request(&self, start_revision: i64) -> WatchRequest {
        let (key, range_end) = match self {
            Target::Prefix(prefix) => (
                prefix.as_bytes().to_vec(),
                client::prefix_end(prefix.as_bytes()),
            ),
            Target::Slices(service) => {
                let prefix = service.slices_prefix();
                (
                    prefix.as_bytes().to_vec(),
                    client::prefix_end(prefix.as_bytes()),
                )
            }
            Target::Service(service) => (service.service_key().into_bytes(), Vec::new()),
        };
        WatchRequest {
            key,
            range_end,
            start_revision,
            // A deleted slice's labels are only in its previous value.
            prev_kv: matches!(self, Target::Slices(_)),
        }
    }

    /// Whether these events change what the template reads.
    fn concerns(&self, events: &[Event]) -> bool {
        match self {
            Target::Slices(service) => events.iter().any(|event| {
                [
                    event.kv.as_ref().map(|kv| &kv.value),
                    event.prev_kv.as_ref().map(|kv| &kv.value),
                ]
                .into_iter()
                .flatten()
                .filter_map(|value| serde_json::from_slice(value).ok())
                .any(|slice| slice_belongs_to(&slice, &service.name))
            }),
            _ => !events.is_empty(),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Prefix(prefix) => write!(formatter, "keys under {prefix}"),
            Target::Slices(service) => write!(formatter, "endpoint slices of {service}"),
            Target::Service(service) => write!(formatter, "service {service}"),
        }
    }
}

enum Notice {
    Changed(Target),
    Lost(Target, String),
}

pub async fn run(templater: &Templater, shutdown: impl std::future::Future<Output = ()>) {
    tokio::pin!(shutdown);
    let (notices_sender, mut notices) = mpsc::channel(64);
    let mut watchers: BTreeMap<Target, JoinHandle<()>> = BTreeMap::new();
    let mut retry_delay = FIRST_RETRY_DELAY;
    let mut next_sync = Some(Instant::now());
    let mut last_sync: Option<Instant> = None;
    let dest = templater.settings().dest.display().to_string();
    loop {
        if next_sync.is_some_and(|at| at <= Instant::now()) {
            next_sync = None;
            last_sync = Some(Instant::now());
            let result = tokio::select! {
                _ = &mut shutdown => break,
                result = templater.sync() => result,
            };
            match result {
                Ok(synced) => {
                    retry_delay = FIRST_RETRY_DELAY;
                    match synced.outcome {
                        Outcome::Replaced => {
                            tracing::info!(dest, revision = synced.revision, "updated")
                        }
                        Outcome::Unchanged => {
                            tracing::debug!(dest, revision = synced.revision, "unchanged")
                        }
                    }
                    let targets = targets(&templater.settings().prefixes, &synced.services);
                    start_watchers(
                        templater.kv(),
                        &mut watchers,
                        targets,
                        synced.revision + 1,
                        &notices_sender,
                    );
                }
                Err(error) => {
                    tracing::error!("{error}; retrying in {retry_delay:?}");
                    next_sync = Some(Instant::now() + retry_delay);
                    retry_delay = (retry_delay * 2).min(MAX_RETRY_DELAY);
                    // A change to the keys may mend it sooner (a missing key
                    // written): watch them from now.
                    let targets = targets(&templater.settings().prefixes, &BTreeSet::new());
                    start_watchers(templater.kv(), &mut watchers, targets, 0, &notices_sender);
                }
            }
            continue;
        }
        let wake_at = next_sync;
        tokio::select! {
            _ = &mut shutdown => break,
            Some(notice) = notices.recv() => match notice {
                Notice::Changed(target) => {
                    tracing::debug!("{target} changed");
                    let now = Instant::now();
                    let at = last_sync.map_or(now, |last| (last + COALESCE_WINDOW).max(now));
                    next_sync = Some(next_sync.map_or(at, |scheduled| scheduled.min(at)));
                }
                Notice::Lost(target, error) => {
                    tracing::warn!("watch of {target} lost: {error}; reading again in {retry_delay:?}");
                    watchers.remove(&target);
                    let at = Instant::now() + retry_delay;
                    next_sync = Some(next_sync.map_or(at, |scheduled| scheduled.min(at)));
                    retry_delay = (retry_delay * 2).min(MAX_RETRY_DELAY);
                }
            },
            _ = sleep_until(wake_at), if wake_at.is_some() => {}
        }
    }
    for (_, watcher) in watchers {
        watcher.abort();
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

fn targets(prefixes: &[String], services: &BTreeSet<ServiceName>) -> Vec<Target> {
    prefixes
        .iter()
        .cloned()
        .map(Target::Prefix)
        .chain(services.iter().flat_map(|service| {
            [
                Target::Slices(service.clone()),
                Target::Service(service.clone()),
            ]
        }))
        .collect()
}

/// Starts a watch for each target not watched yet, from `start_revision`.
fn start_watchers(
    kv: &Arc<dyn Kv>,
    watchers: &mut BTreeMap<Target, JoinHandle<()>>,
    targets: Vec<Target>,
    start_revision: i64,
    notices: &mpsc::Sender<Notice>,
) {
    for target in targets {
        if watchers.contains_key(&target) {
            continue;
        }
        let watcher = tokio::spawn(follow(
            kv.clone(),
            target.clone(),
            start_revision,
            notices.clone(),
        ));
        watchers.insert(target, watcher);
    }
}

/// One watch: a notice per change that concerns the template, and one when
/// the watch ends.
async fn follow(
    kv: Arc<dyn Kv>,
    target: Target,
    start_revision: i64,
    notices: mpsc::Sender<Notice>,
) {
    let mut updates = match kv.watch(target.request(start_revision)).await {
        Ok(updates) => updates,
        Err(error) => {
            let _ = notices.send(Notice::Lost(target, error.to_string())).await;
            return;
        }
    };
    while let Some(update) = updates.next().await {
        match update {
            Ok(WatchUpdate::Events { events, .. }) => {
                if target.concerns(&events)
                    && notices.send(Notice::Changed(target.clone())).await.is_err()
                {
                    return;
                }
            }
            Ok(WatchUpdate::Progress { .. }) => {}
            Err(error) => {
                let _ = notices.send(Notice::Lost(target, error.to_string())).await;
                return;
            }
        }
    }
    let _ = notices
        .send(Notice::Lost(target, "the watch ended".to_string()))
        .await;
}
