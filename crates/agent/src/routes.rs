//! Routes to other machines' pods, as flannel's host-gw backend makes them:
//! each node's pod range via that node's InternalIP. The machines of a
//! shoal cluster are expected to share a layer-2 network (one subnet, as
//! the test hosts on a bridge do); routing needs no encapsulation then, no
//! MTU loss and no tunnel device. Nodes in different subnets would need
//! VXLAN, which is not built.

use std::collections::BTreeMap;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use kube::runtime::watcher;
use runtime::pod::{Ipv4Cidr, PodRuntime};

/// A node's pod range and address, when it has both.
fn route_of(node: &Node) -> Option<(Ipv4Cidr, std::net::Ipv4Addr)> {
    let cidr = node.spec.as_ref()?.pod_cidr.as_ref()?.parse().ok()?;
    let address = node
        .status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .find(|address| address.type_ == "InternalIP")?
        .address
        .parse()
        .ok()?;
    Some((cidr, address))
}

/// Keeps the routes to every other node's pods until `shutdown`.
pub async fn follow(
    nodes: Api<Node>,
    own_name: String,
    runtime: PodRuntime,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut stream = watcher(nodes, watcher::Config::default()).boxed();
    let mut known: BTreeMap<String, (Ipv4Cidr, std::net::Ipv4Addr)> = BTreeMap::new();
    let mut listing: Option<BTreeMap<String, (Ipv4Cidr, std::net::Ipv4Addr)>> = None;
    let mut applied: Option<Vec<(Ipv4Cidr, std::net::Ipv4Addr)>> = None;
    loop {
        let event = tokio::select! {
            event = stream.next() => event,
            _ = shutdown.wait_for(|stopped| *stopped) => return,
        };
        let Some(event) = event else { return };
        match event {
            Ok(watcher::Event::Init) => listing = Some(BTreeMap::new()),
            Ok(watcher::Event::InitApply(node)) => {
                if let (Some(listing), Some(name), Some(route)) = (
                    listing.as_mut(),
                    node.metadata.name.clone(),
                    route_of(&node),
                ) && name != own_name
                {
                    listing.insert(name, route);
                }
                continue;
            }
            Ok(watcher::Event::InitDone) => known = listing.take().unwrap_or_default(),
            Ok(watcher::Event::Apply(node)) => {
                let Some(name) = node.metadata.name.clone() else {
                    continue;
                };
                if name == own_name {
                    continue;
                }
                match route_of(&node) {
                    Some(route) => known.insert(name, route),
                    None => known.remove(&name),
                };
            }
            Ok(watcher::Event::Delete(node)) => {
                if let Some(name) = node.metadata.name {
                    known.remove(&name);
                }
            }
            Err(error) => {
                tracing::debug!(%error, "the node watch was interrupted");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                continue;
            }
        }
        let routes: Vec<_> = known.values().cloned().collect();
        if applied.as_ref() == Some(&routes) {
            continue;
        }
        let runtime = runtime.clone();
        let wanted = routes.clone();
        match tokio::task::spawn_blocking(move || runtime.set_peer_routes(&wanted)).await {
            Ok(Ok(())) => applied = Some(routes),
            Ok(Err(error)) => tracing::warn!(%error, "cannot set the routes to other nodes' pods"),
            Err(_) => {}
        }
    }
}
