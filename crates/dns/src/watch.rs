//! Keeps the zones in step with what they mirror: Services, EndpointSlices
//! and Namespaces through kube-rs watchers (served from the API server's
//! watch cache), and `/skydns/` keys through a store watch. Each change
//! rebuilds the zone it touches, a little after the last of a burst, and
//! swaps it in; queries never wait on any of this.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use hickory_proto::rr::Name;
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use proto::etcdserverpb::RangeRequest;
use proto::mvccpb::event::EventType;
use tokio::sync::Notify;

use crate::cluster::{self, ClusterState};
use crate::resolve::SharedZones;
use crate::skydns::{self, Entries};

/// Changes that come within this of each other are built into one zone.
const COALESCE: Duration = Duration::from_millis(20);

/// Mirrors the cluster's Services, EndpointSlices and Namespaces into
/// `zones` until the task is dropped.
pub async fn follow_cluster(client: kube::Client, domain: Name, zones: SharedZones) {
    let changed = Arc::new(Notify::new());
    let services = mirror::<Service>(kube::Api::all(client.clone()), &changed);
    let slices = mirror::<EndpointSlice>(kube::Api::all(client.clone()), &changed);
    let namespaces = mirror::<Namespace>(kube::Api::all(client), &changed);
    for store in [
        services.wait_until_ready().await.is_ok(),
        slices.wait_until_ready().await.is_ok(),
        namespaces.wait_until_ready().await.is_ok(),
    ] {
        if !store {
            return;
        }
    }
    let mut serial: u32 = 1;
    loop {
        let service_list = services.state();
        let slice_list = slices.state();
        let namespace_list = namespaces.state();
        let state = ClusterState {
            services: service_list.iter().map(|service| &**service).collect(),
            endpoint_slices: slice_list.iter().map(|slice| &**slice).collect(),
            namespaces: namespace_list
                .iter()
                .filter_map(|namespace| namespace.metadata.name.as_deref())
                .collect(),
        };
        let built = cluster::build(&domain, &state, serial);
        zones.update(|current| crate::resolve::Zones {
            cluster: Arc::new(built.forward),
            reverse_v4: Arc::new(built.reverse_v4),
            reverse_v6: Arc::new(built.reverse_v6),
            reverse_authority: current.reverse_authority.clone(),
            skydns: Arc::clone(&current.skydns),
        });
        serial = serial.wrapping_add(1);
        changed.notified().await;
        tokio::time::sleep(COALESCE).await;
    }
}

/// Starts a reflector of every `K`; `changed` is told of each event.
fn mirror<K>(api: kube::Api<K>, changed: &Arc<Notify>) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let changed = Arc::clone(changed);
    let stream = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default()).default_backoff(),
    );
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => changed.notify_one(),
                Err(error) => tracing::debug!(%error, "dns: a watch was interrupted"),
            }
        }
    });
    reader
}

/// Mirrors SkyDNS's keys under `/skydns/` from `kv` into the zone at
/// `domain`, until the task is dropped.
pub async fn follow_skydns(kv: client::SharedKv, domain: Name, zones: SharedZones) {
    let prefix = skydns::KEY_PREFIX.as_bytes().to_vec();
    let range_end = client::prefix_end(&prefix);
    let mut serial: u32 = 1;
    loop {
        // List, then watch from just after the listing's revision.
        let listed = kv
            .range(RangeRequest {
                key: prefix.clone().into(),
                range_end: range_end.clone().into(),
                ..Default::default()
            })
            .await;
        let listed = match listed {
            Ok(listed) => listed,
            Err(error) => {
                tracing::debug!(%error, "dns: cannot list /skydns/ yet");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let revision = listed.header.as_ref().map_or(0, |header| header.revision);
        let mut entries = Entries::new();
        let mut reported = HashSet::new();
        for kv in &listed.kvs {
            apply_put(&mut entries, &mut reported, &kv.key, &kv.value);
        }
        publish_skydns(&zones, &domain, &entries, &mut serial);
        let watch = kv
            .watch(client::WatchRequest {
                key: prefix.clone(),
                range_end: range_end.clone(),
                start_revision: revision + 1,
                prev_kv: false,
            })
            .await;
        let mut watch = match watch {
            Ok(watch) => watch,
            Err(error) => {
                tracing::debug!(%error, "dns: cannot watch /skydns/ yet");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        while let Some(update) = watch.next().await {
            let events = match update {
                Ok(client::WatchUpdate::Events { events, .. }) => events,
                Ok(client::WatchUpdate::Progress { .. }) => continue,
                // Compacted past us, or the store went away: list again.
                Err(error) => {
                    tracing::debug!(%error, "dns: the /skydns/ watch ended");
                    break;
                }
            };
            for event in events {
                let Some(kv) = event.kv else { continue };
                if event.r#type == EventType::Delete as i32 {
                    entries.remove(&String::from_utf8_lossy(&kv.key).into_owned());
                } else {
                    apply_put(&mut entries, &mut reported, &kv.key, &kv.value);
                }
            }
            publish_skydns(&zones, &domain, &entries, &mut serial);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Records one written key: its entry replaces the key's old one; a key
/// or value that does not parse removes it and is logged (once per
/// key and value).
fn apply_put(
    entries: &mut Entries,
    reported: &mut HashSet<(Vec<u8>, Vec<u8>)>,
    key: &[u8],
    value: &[u8],
) {
    let key_text = String::from_utf8_lossy(key).into_owned();
    let parsed = skydns::key_to_name(&key_text)
        .and_then(|name| Ok((name, skydns::parse_entry(&key_text, value)?)));
    match parsed {
        Ok(entry) => {
            entries.insert(key_text, entry);
        }
        Err(error) => {
            entries.remove(&key_text);
            if reported.insert((key.to_vec(), value.to_vec())) {
                tracing::warn!(%error, "dns: skipping a SkyDNS record");
            }
        }
    }
}

fn publish_skydns(zones: &SharedZones, domain: &Name, entries: &Entries, serial: &mut u32) {
    let zone = Arc::new(skydns::build(domain, entries, *serial));
    *serial = serial.wrapping_add(1);
    zones.update(|current| crate::resolve::Zones {
        cluster: Arc::clone(&current.cluster),
        reverse_v4: Arc::clone(&current.reverse_v4),
        reverse_v6: Arc::clone(&current.reverse_v6),
        reverse_authority: current.reverse_authority.clone(),
        skydns: zone,
    });
}
