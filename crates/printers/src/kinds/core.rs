//! Core-group kinds with small printers: Namespace, Service, Endpoints,
//! ConfigMap, Secret, ServiceAccount and ResourceQuota.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::Column;
use crate::columns::{age_column, name_column, text, wide};
use crate::labels::format_labels;
use crate::object::{age, array_at, as_int, get, int_at, map_len, name, object_at, str_at};
use crate::timestamp::UnixNanos;

pub(crate) fn namespace_columns() -> Vec<Column> {
    vec![
        name_column(),
        text("Status", "The status of the namespace"),
        age_column(),
    ]
}

pub(crate) fn namespace_cells(namespace: &Value, now: UnixNanos) -> Vec<Value> {
    vec![
        json!(name(namespace)),
        json!(str_at(namespace, &["status", "phase"])),
        json!(age(namespace, now)),
    ]
}

pub(crate) fn service_columns() -> Vec<Column> {
    vec![
        name_column(),
        text("Type", "type determines how the Service is exposed."),
        text(
            "Cluster-IP",
            "clusterIP is the IP address of the service and is usually assigned randomly.",
        ),
        text(
            "External-IP",
            "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.",
        ),
        text(
            "Port(s)",
            "The list of ports that are exposed by this service.",
        ),
        age_column(),
        wide(
            "Selector",
            "Route service traffic to pods with label keys and values matching this selector.",
        ),
    ]
}

pub(crate) fn service_cells(service: &Value, now: UnixNanos) -> Vec<Value> {
    // `clusterIPs` is what kube-apiserver prints; its defaulting fills it from
    // `clusterIP`, so the singular field is the fallback for undefaulted objects.
    let cluster_ip = array_at(service, &["spec", "clusterIPs"])
        .first()
        .and_then(Value::as_str)
        .or_else(|| Some(str_at(service, &["spec", "clusterIP"])).filter(|ip| !ip.is_empty()))
        .unwrap_or("<none>");
    let ports = service_ports(array_at(service, &["spec", "ports"]));
    vec![
        json!(name(service)),
        json!(str_at(service, &["spec", "type"])),
        json!(cluster_ip),
        json!(external_ip(service)),
        json!(if ports.is_empty() {
            "<none>".to_string()
        } else {
            ports
        }),
        json!(age(service, now)),
        json!(format_labels(object_at(service, &["spec", "selector"]))),
    ]
}

fn strings(values: &[Value]) -> Vec<&str> {
    values
        .iter()
        .map(|value| value.as_str().unwrap_or(""))
        .collect()
}

/// External-IP as printed with wide output (kube-apiserver always prints wide,
/// so load balancer addresses are never clipped).
fn external_ip(service: &Value) -> String {
    let external_ips = strings(array_at(service, &["spec", "externalIPs"]));
    match str_at(service, &["spec", "type"]) {
        "ClusterIP" | "NodePort" if !external_ips.is_empty() => external_ips.join(","),
        "ClusterIP" | "NodePort" => "<none>".to_string(),
        "LoadBalancer" => {
            let ingress_addresses: BTreeSet<&str> =
                array_at(service, &["status", "loadBalancer", "ingress"])
                    .iter()
                    .filter_map(|ingress| {
                        let ip = str_at(ingress, &["ip"]);
                        let hostname = str_at(ingress, &["hostname"]);
                        if !ip.is_empty() {
                            Some(ip)
                        } else if !hostname.is_empty() {
                            Some(hostname)
                        } else {
                            None
                        }
                    })
                    .collect();
            let mut addresses: Vec<&str> = ingress_addresses.into_iter().collect();
            addresses.extend(external_ips);
            if addresses.is_empty() {
                "<pending>".to_string()
            } else {
                addresses.join(",")
            }
        }
        "ExternalName" => str_at(service, &["spec", "externalName"]).to_string(),
        _ => "<unknown>".to_string(),
    }
}

/// "80/TCP", or "80:30080/TCP" with a node port, joined by commas.
fn service_ports(ports: &[Value]) -> String {
    let pieces: Vec<String> = ports
        .iter()
        .map(|port| {
            let number = int_at(port, &["port"]);
            let protocol = str_at(port, &["protocol"]);
            let node_port = int_at(port, &["nodePort"]);
            if node_port > 0 {
                format!("{number}:{node_port}/{protocol}")
            } else {
                format!("{number}/{protocol}")
            }
        })
        .collect();
    pieces.join(",")
}

pub(crate) fn endpoints_columns() -> Vec<Column> {
    vec![
        name_column(),
        text(
            "Endpoints",
            "The set of all endpoints is the union of all subsets.",
        ),
        age_column(),
    ]
}

pub(crate) fn endpoints_cells(endpoints: &Value, now: UnixNanos) -> Vec<Value> {
    vec![
        json!(name(endpoints)),
        json!(format_endpoints(endpoints)),
        json!(age(endpoints, now)),
    ]
}

/// Up to three `ip:port` pairs (bare IPs for port-less subsets), then " + N more...".
fn format_endpoints(endpoints: &Value) -> String {
    const MAX_SHOWN: usize = 3;
    let subsets = array_at(endpoints, &["subsets"]);
    if subsets.is_empty() {
        return "<none>".to_string();
    }
    let mut shown: Vec<String> = Vec::new();
    let mut more = false;
    let mut count = 0usize;
    for subset in subsets {
        let addresses = array_at(subset, &["addresses"]);
        let ports = array_at(subset, &["ports"]);
        if ports.is_empty() {
            count += addresses.len();
            for address in addresses {
                if shown.len() == MAX_SHOWN {
                    more = true;
                    break;
                }
                shown.push(str_at(address, &["ip"]).to_string());
            }
            continue;
        }
        for port in ports {
            count += addresses.len();
            for address in addresses {
                if shown.len() == MAX_SHOWN {
                    more = true;
                    break;
                }
                shown.push(join_host_port(
                    str_at(address, &["ip"]),
                    int_at(port, &["port"]),
                ));
            }
        }
    }
    let joined = shown.join(",");
    if more {
        format!("{joined} + {} more...", count - MAX_SHOWN)
    } else {
        joined
    }
}

/// Go's `net.JoinHostPort`: IPv6 literals get brackets.
fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

pub(crate) fn config_map_columns() -> Vec<Column> {
    vec![
        name_column(),
        text("Data", "Data contains the configuration data."),
        age_column(),
    ]
}

pub(crate) fn config_map_cells(config_map: &Value, now: UnixNanos) -> Vec<Value> {
    let n_entries = map_len(config_map, &["data"]) + map_len(config_map, &["binaryData"]);
    vec![
        json!(name(config_map)),
        json!(n_entries as i64),
        json!(age(config_map, now)),
    ]
}

pub(crate) fn secret_columns() -> Vec<Column> {
    vec![
        name_column(),
        text(
            "Type",
            "Used to facilitate programmatic handling of secret data.",
        ),
        text("Data", "Data contains the secret data."),
        age_column(),
    ]
}

pub(crate) fn secret_cells(secret: &Value, now: UnixNanos) -> Vec<Value> {
    vec![
        json!(name(secret)),
        json!(str_at(secret, &["type"])),
        json!(map_len(secret, &["data"]) as i64),
        json!(age(secret, now)),
    ]
}

pub(crate) fn service_account_columns() -> Vec<Column> {
    vec![
        name_column(),
        text(
            "Secrets",
            "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use.",
        ),
        age_column(),
    ]
}

pub(crate) fn service_account_cells(service_account: &Value, now: UnixNanos) -> Vec<Value> {
    vec![
        json!(name(service_account)),
        json!(array_at(service_account, &["secrets"]).len() as i64),
        json!(age(service_account, now)),
    ]
}

pub(crate) fn resource_quota_columns() -> Vec<Column> {
    vec![
        name_column(),
        text(
            "Request",
            "Request represents a minimum amount of cpu/memory that a container may consume.",
        ),
        text(
            "Limit",
            "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node.",
        ),
        age_column(),
    ]
}

/// "resource: used/hard" for every hard limit, sorted by resource name;
/// `limits.*` resources go to the Limit column, the rest to Request.
pub(crate) fn resource_quota_cells(quota: &Value, now: UnixNanos) -> Vec<Value> {
    let mut resources: Vec<(&String, &Value)> = object_at(quota, &["status", "hard"])
        .into_iter()
        .flatten()
        .collect();
    resources.sort_by(|left, right| left.0.cmp(right.0));
    let mut requests: Vec<String> = Vec::new();
    let mut limits: Vec<String> = Vec::new();
    for (resource, hard) in resources {
        let used = get(quota, &["status", "used"])
            .and_then(|used| used.get(resource.as_str()))
            .map_or_else(|| "0".to_string(), quantity);
        let entry = format!("{resource}: {used}/{}", quantity(hard));
        let mut pieces = resource.split('.');
        let is_limit = pieces.next() == Some("limits") && pieces.next().is_some();
        if is_limit {
            limits.push(entry)
        } else {
            requests.push(entry)
        }
    }
    vec![
        json!(name(quota)),
        json!(requests.join(", ")),
        json!(limits.join(", ")),
        json!(age(quota, now)),
    ]
}

/// A quantity as stored: kube-apiserver stores quantities in canonical form, so
/// the stored string is what `Quantity.String()` prints.
fn quantity(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => "0".to_string(),
        other => as_int(other).unwrap_or(0).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_endpoints_are_bracketed() {
        assert_eq!(join_host_port("fd00::1", 80), "[fd00::1]:80");
        assert_eq!(join_host_port("10.0.0.1", 80), "10.0.0.1:80");
    }
}
