//! Addresses a Service gets from the cluster: a ClusterIP from the service
//! range and, for NodePort and LoadBalancer services, a port from the node
//! port range. Each address taken is a store key of its own under
//! `/registry/ranges/`, created only if absent, so two services never share
//! one, whichever API server allocated it.

use std::net::Ipv4Addr;

use serde_json::{Value, json};

use crate::Api;
use crate::registry::ResourceType;
use crate::status::{ApiError, Cause};
use crate::storage::{self, Written};

pub const NODE_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;

fn is_service(resource: &ResourceType) -> bool {
    resource.group.is_empty() && resource.kind == "Service"
}

/// Whether a ClusterIP may be asked for: inside the range, and neither its
/// network nor its broadcast address.
fn in_range(range: ipnet::Ipv4Net, ip: Ipv4Addr) -> bool {
    range.contains(&ip) && ip != range.network() && ip != range.broadcast()
}

/// Where a ClusterIP nobody asked for is drawn from, as offsets into the
/// range: kube-apiserver keeps the range's low block (1/16 of it, at least
/// 16 and at most 256 addresses) for addresses asked by name — the
/// `kubernetes` service's first, kube-dns' tenth — and draws from above it
/// while it can.
fn dynamic_offsets(range: ipnet::Ipv4Net) -> std::ops::Range<u32> {
    let size = 1u64 << (32 - u32::from(range.prefix_len()));
    let size = size.min(u64::from(u32::MAX)) as u32;
    let reserved = (size / 16).clamp(16, 256);
    if size > reserved + 2 {
        reserved..size - 1
    } else {
        // Too small to keep a block back: past the network address and
        // the `kubernetes` service's first.
        2.min(size.saturating_sub(1))..size.saturating_sub(1)
    }
}

fn ip_key(ip: Ipv4Addr) -> String {
    format!("/registry/ranges/serviceips/{ip}")
}

fn port_key(port: u16) -> String {
    format!("/registry/ranges/servicenodeports/{port}")
}

/// Claims `key` for `owner`; false when another holds it.
async fn claim(api: &Api, key: &str, owner: &str) -> Result<bool, ApiError> {
    Ok(matches!(
        storage::put_if(api.kv.as_ref(), key, &json!({"owner": owner}), 0).await?,
        Written::Done(_)
    ))
}

fn invalid(
    resource: &ResourceType,
    object: &Value,
    field: &str,
    value: &Value,
    detail: &str,
) -> ApiError {
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    ApiError::invalid(resource, name, vec![Cause::invalid(field, value, detail)])
}

/// A node port asked for, if it is one.
fn node_port_in_range(wanted: u64) -> Option<u16> {
    u16::try_from(wanted)
        .ok()
        .filter(|port| NODE_PORTS.contains(port))
}

fn node_port_out_of_range() -> String {
    format!(
        "provided port is not in the valid range. The range of valid ports is {}-{}",
        NODE_PORTS.start(),
        NODE_PORTS.end()
    )
}

fn node_ports_full() -> ApiError {
    ApiError::internal("failed to allocate a nodePort: range is full")
}

/// A free node port, claimed for `owner` (only looked for on a dry run),
/// other than those in `held`; `None` when 64 random tries found none.
async fn claim_free_node_port(
    api: &Api,
    owner: &str,
    held: &[u16],
    dry_run: bool,
) -> Result<Option<u16>, ApiError> {
    for _ in 0..64 {
        let candidate = NODE_PORTS.start()
            + rand::random::<u16>() % (NODE_PORTS.end() - NODE_PORTS.start() + 1);
        if held.contains(&candidate) {
            continue;
        }
        if dry_run || claim(api, &port_key(candidate), owner).await? {
            return Ok(Some(candidate));
        }
    }
    Ok(None)
}

/// Allocates a new Service's ClusterIP and node ports (claims nothing on a
/// dry run).
pub async fn on_create(
    api: &Api,
    resource: &ResourceType,
    object: &mut Value,
    dry_run: bool,
) -> Result<(), ApiError> {
    if !is_service(resource) {
        return Ok(());
    }
    let object_name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let owner = format!(
        "{}/{}",
        object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or(""),
        object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
    );
    let service_type = object
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    if service_type != "ExternalName" {
        let given = object
            .pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let ip = if given == "None" {
            None
        } else if !given.is_empty() {
            let Ok(ip) = given.parse::<Ipv4Addr>() else {
                return Err(invalid(
                    resource,
                    object,
                    "spec.clusterIP",
                    &json!(given),
                    "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                ));
            };
            let range = api.config.service_cidr;
            if !in_range(range, ip) {
                return Err(invalid(
                    resource,
                    object,
                    "spec.clusterIPs",
                    &json!([given]),
                    &format!(
                        "failed to allocate IP {given}: provided IP is not in the valid range. The range of valid IPs is {range}"
                    ),
                ));
            }
            if !dry_run && !claim(api, &ip_key(ip), &owner).await? {
                return Err(invalid(
                    resource,
                    object,
                    "spec.clusterIPs",
                    &json!([given]),
                    &format!("failed to allocate IP {given}: provided IP is already allocated"),
                ));
            }
            Some(ip)
        } else {
            let mut found = None;
            let range = api.config.service_cidr;
            let offsets = dynamic_offsets(range);
            for _ in 0..64.min(offsets.len()) {
                let offset = offsets.start + rand::random::<u32>() % offsets.len() as u32;
                let ip = crate::nth_address(range, offset);
                if dry_run || claim(api, &ip_key(ip), &owner).await? {
                    found = Some(ip);
                    break;
                }
            }
            let Some(ip) = found else {
                return Err(ApiError::internal(
                    "failed to allocate a serviceIP: range is full",
                ));
            };
            Some(ip)
        };
        match ip {
            Some(ip) => {
                object["spec"]["clusterIP"] = json!(ip.to_string());
                object["spec"]["clusterIPs"] = json!([ip.to_string()]);
            }
            None => {
                object["spec"]["clusterIP"] = json!("None");
                object["spec"]["clusterIPs"] = json!(["None"]);
            }
        }
    }
    if matches!(service_type.as_str(), "NodePort" | "LoadBalancer")
        && let Some(ports) = object
            .pointer_mut("/spec/ports")
            .and_then(Value::as_array_mut)
    {
        for (index, port) in ports.iter_mut().enumerate() {
            let wanted = port.get("nodePort").and_then(Value::as_u64).unwrap_or(0);
            let name = object_name.clone();
            let port_error = |detail: &str| {
                ApiError::invalid(
                    resource,
                    &name,
                    vec![Cause::invalid(
                        format!("spec.ports[{index}].nodePort"),
                        &json!(wanted),
                        detail,
                    )],
                )
            };
            let chosen = if wanted != 0 {
                let wanted = node_port_in_range(wanted)
                    .ok_or_else(|| port_error(&node_port_out_of_range()))?;
                if !dry_run && !claim(api, &port_key(wanted), &owner).await? {
                    return Err(port_error("provided port is already allocated"));
                }
                wanted
            } else {
                claim_free_node_port(api, &owner, &[], dry_run)
                    .await?
                    .ok_or_else(node_ports_full)?
            };
            port["nodePort"] = json!(chosen);
        }
    }
    Ok(())
}

/// A Service's ClusterIP does not change once allocated.
pub fn on_update(resource: &ResourceType, old: &Value, new: &mut Value) -> Result<(), ApiError> {
    if !is_service(resource) {
        return Ok(());
    }
    let old_ip = old.pointer("/spec/clusterIP").cloned();
    let new_ip = new.pointer("/spec/clusterIP").cloned();
    match (old_ip, new_ip) {
        (Some(old_ip), None) | (Some(old_ip), Some(Value::Null)) => {
            new["spec"]["clusterIP"] = old_ip;
            if let Some(ips) = old.pointer("/spec/clusterIPs") {
                new["spec"]["clusterIPs"] = ips.clone();
            }
        }
        (Some(old_ip), Some(new_ip)) if old_ip != new_ip && new_ip != json!("") => {
            return Err(invalid(
                resource,
                new,
                "spec.clusterIPs[0]",
                &new_ip,
                "may not change once set",
            ));
        }
        (Some(old_ip), Some(_)) => {
            new["spec"]["clusterIP"] = old_ip;
            if let Some(ips) = old.pointer("/spec/clusterIPs") {
                new["spec"]["clusterIPs"] = ips.clone();
            }
        }
        _ => {}
    }
    // Node ports carry over when the update leaves them out, if the new
    // type has node ports.
    let keeps_node_ports = needs_node_ports(new);
    if let (Some(old_ports), Some(new_ports)) = (
        old.pointer("/spec/ports")
            .and_then(Value::as_array)
            .cloned(),
        new.pointer_mut("/spec/ports").and_then(Value::as_array_mut),
    ) {
        for port in new_ports.iter_mut() {
            if !keeps_node_ports {
                continue;
            }
            if port.get("nodePort").is_some_and(|value| !value.is_null()) {
                continue;
            }
            if let Some(previous) = old_ports
                .iter()
                .find(|previous| previous.get("port") == port.get("port"))
                && let Some(node_port) = previous.get("nodePort")
            {
                port["nodePort"] = node_port.clone();
            }
        }
    }
    Ok(())
}

/// Before validation: an updated Service whose new type has no node ports
/// drops the ones the update kept as they were (upstream's
/// `dropTypeDependentFields`), so `type: ClusterIP` alone is a valid change.
pub fn drop_type_dependent_fields(resource: &ResourceType, old: &Value, new: &mut Value) {
    if !is_service(resource) || needs_node_ports(new) {
        return;
    }
    let held = node_ports_of(old);
    for port in new
        .pointer_mut("/spec/ports")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        let unchanged = port
            .get("nodePort")
            .and_then(Value::as_u64)
            .and_then(|given| u16::try_from(given).ok())
            .is_some_and(|given| held.contains(&given));
        if unchanged && let Some(fields) = port.as_object_mut() {
            fields.remove("nodePort");
        }
    }
}

fn needs_node_ports(service: &Value) -> bool {
    matches!(
        service.pointer("/spec/type").and_then(Value::as_str),
        Some("NodePort" | "LoadBalancer")
    )
}

fn node_ports_of(service: &Value) -> Vec<u16> {
    service
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|port| port.get("nodePort").and_then(Value::as_u64))
        .filter_map(|port| u16::try_from(port).ok())
        .filter(|port| *port != 0)
        .collect()
}

/// The node ports an update claimed, and those it gives up once written.
#[derive(Debug, Default)]
pub struct NodePortChanges {
    claimed: Vec<String>,
    given_up: Vec<String>,
}

impl NodePortChanges {
    /// The update was written: the ports it no longer uses go back.
    pub async fn commit(self, kv: &dyn client::Kv) {
        release_keys(kv, self.given_up).await;
    }

    /// The update was not written: what it claimed goes back.
    pub async fn abandon(self, kv: &dyn client::Kv) {
        release_keys(kv, self.claimed).await;
    }
}

/// Claims the node ports an updated Service newly needs (a ClusterIP
/// Service becoming a NodePort one, a port added or given another node
/// port), answering a port taken or out of range as upstream does, and
/// notes the ones it stops using (a NodePort Service becoming a ClusterIP
/// one). Claims nothing on a dry run.
pub async fn on_update_node_ports(
    api: &Api,
    resource: &ResourceType,
    old: &Value,
    new: &mut Value,
    dry_run: bool,
) -> Result<NodePortChanges, ApiError> {
    let mut changes = NodePortChanges::default();
    if !is_service(resource) {
        return Ok(changes);
    }
    let held = node_ports_of(old);
    let owner = format!(
        "{}/{}",
        new.pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or(""),
        new.pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
    );
    let name = new
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if needs_node_ports(new)
        && let Some(ports) = new.pointer_mut("/spec/ports").and_then(Value::as_array_mut)
    {
        for (index, port) in ports.iter_mut().enumerate() {
            let wanted = port.get("nodePort").and_then(Value::as_u64).unwrap_or(0);
            let port_error = |detail: &str| {
                ApiError::invalid(
                    resource,
                    &name,
                    vec![Cause::invalid(
                        format!("spec.ports[{index}].nodePort"),
                        &json!(wanted),
                        detail,
                    )],
                )
            };
            if wanted != 0 {
                let Some(wanted) = node_port_in_range(wanted) else {
                    changes.abandon(api.kv.as_ref()).await;
                    return Err(port_error(&node_port_out_of_range()));
                };
                if held.contains(&wanted) || dry_run {
                    continue;
                }
                let key = port_key(wanted);
                if !claim(api, &key, &owner).await? {
                    changes.abandon(api.kv.as_ref()).await;
                    return Err(port_error("provided port is already allocated"));
                }
                changes.claimed.push(key);
                continue;
            }
            let Some(chosen) = claim_free_node_port(api, &owner, &held, dry_run).await? else {
                changes.abandon(api.kv.as_ref()).await;
                return Err(node_ports_full());
            };
            if !dry_run {
                changes.claimed.push(port_key(chosen));
            }
            port["nodePort"] = json!(chosen);
        }
    }
    let kept = node_ports_of(new);
    changes.given_up = held
        .into_iter()
        .filter(|port| !kept.contains(port))
        .map(port_key)
        .collect();
    Ok(changes)
}

/// Gives a deleted Service's addresses back.
pub async fn release(kv: &dyn client::Kv, object: &Value) {
    let mut keys = Vec::new();
    if let Some(ip) = object
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
    {
        keys.push(ip_key(ip));
    }
    for port in object
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(node_port) = port
            .get("nodePort")
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
        {
            keys.push(port_key(node_port));
        }
    }
    release_keys(kv, keys).await;
}

async fn release_keys(kv: &dyn client::Kv, keys: Vec<String>) {
    for key in keys {
        let request = proto::etcdserverpb::DeleteRangeRequest {
            key: key.into_bytes().into(),
            ..Default::default()
        };
        if let Err(error) = kv.delete_range(request).await {
            tracing::warn!(%error, "could not release a service address");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_nobody_asked_for_come_from_above_the_named_block() {
        let range: ipnet::Ipv4Net = "10.43.0.0/16".parse().unwrap();
        // 1/16 of 65,536 is 4,096: capped at 256.
        assert_eq!(dynamic_offsets(range), 256..65_535);
        let small: ipnet::Ipv4Net = "10.43.0.0/24".parse().unwrap();
        assert_eq!(dynamic_offsets(small), 16..255);
        let tiny: ipnet::Ipv4Net = "10.43.0.0/28".parse().unwrap();
        assert_eq!(dynamic_offsets(tiny), 2..15);
        assert!(in_range(range, "10.43.0.10".parse().unwrap()));
        assert!(!in_range(range, "10.43.0.0".parse().unwrap()));
        assert!(!in_range(range, "10.43.255.255".parse().unwrap()));
        assert!(!in_range(range, "10.96.0.1".parse().unwrap()));
    }
}
