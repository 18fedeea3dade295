//! The `kube-system/kube-dns` Service pods reach the cluster DNS at: made
//! if missing, selectorless, with this server's address added to its
//! Endpoints and EndpointSlice (other servers' addresses kept).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointPort as SlicePort, EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, PostParams};

pub const NAMESPACE: &str = "kube-system";
pub const NAME: &str = "kube-dns";

/// Who writes the EndpointSlice (its `managed-by` label): not the
/// mirroring controller, which the Endpoints' `skip-mirror` label keeps
/// away.
const MANAGED_BY: &str = "cluster-dns.shoal.io";

/// The writes a conflict (another server updating at once) retries.
const MAX_ATTEMPTS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum KubeDnsError {
    #[error("cannot write {kind} kube-system/kube-dns: {source}")]
    Write {
        kind: &'static str,
        source: kube::Error,
    },
    #[error("{kind} kube-system/kube-dns kept changing under {MAX_ATTEMPTS} attempts")]
    Contended { kind: &'static str },
}

/// The Service, and this server's address in its endpoints: `address`
/// serving DNS on `port` (UDP and TCP).
pub async fn ensure(
    client: kube::Client,
    cluster_ip: Ipv4Addr,
    address: IpAddr,
    port: u16,
) -> Result<(), KubeDnsError> {
    let labels = BTreeMap::from([
        ("k8s-app".to_string(), "kube-dns".to_string()),
        ("kubernetes.io/name".to_string(), "CoreDNS".to_string()),
    ]);
    let services: Api<Service> = Api::namespaced(client.clone(), NAMESPACE);
    let service = Service {
        metadata: ObjectMeta {
            name: Some(NAME.to_string()),
            namespace: Some(NAMESPACE.to_string()),
            labels: Some(labels.clone()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some(cluster_ip.to_string()),
            cluster_ips: Some(vec![cluster_ip.to_string()]),
            ports: Some(vec![
                ServicePort {
                    name: Some("dns".to_string()),
                    port: 53,
                    protocol: Some("UDP".to_string()),
                    target_port: Some(IntOrString::Int(53)),
                    ..Default::default()
                },
                ServicePort {
                    name: Some("dns-tcp".to_string()),
                    port: 53,
                    protocol: Some("TCP".to_string()),
                    target_port: Some(IntOrString::Int(53)),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        }),
        ..Default::default()
    };
    create_unless_exists(&services, &service, "Service").await?;

    let ip = address.to_string();
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), NAMESPACE);
    update_or_create(&endpoints, "Endpoints", |existing| {
        let mut object = existing.unwrap_or_else(|| Endpoints {
            metadata: ObjectMeta {
                name: Some(NAME.to_string()),
                namespace: Some(NAMESPACE.to_string()),
                labels: Some(
                    labels
                        .clone()
                        .into_iter()
                        .chain([(
                            "endpointslice.kubernetes.io/skip-mirror".to_string(),
                            "true".to_string(),
                        )])
                        .collect(),
                ),
                ..Default::default()
            },
            subsets: None,
        });
        let subsets = object.subsets.get_or_insert_with(Vec::new);
        let subset = subsets.iter_mut().find(|subset| {
            subset
                .ports
                .iter()
                .flatten()
                .any(|existing| existing.port == i32::from(port))
        });
        let subset = match subset {
            Some(subset) => subset,
            None => {
                subsets.push(EndpointSubset {
                    addresses: Some(Vec::new()),
                    ports: Some(vec![
                        EndpointPort {
                            name: Some("dns".to_string()),
                            port: i32::from(port),
                            protocol: Some("UDP".to_string()),
                            ..Default::default()
                        },
                        EndpointPort {
                            name: Some("dns-tcp".to_string()),
                            port: i32::from(port),
                            protocol: Some("TCP".to_string()),
                            ..Default::default()
                        },
                    ]),
                    ..Default::default()
                });
                subsets.last_mut().expect("just pushed")
            }
        };
        let addresses = subset.addresses.get_or_insert_with(Vec::new);
        if addresses.iter().any(|existing| existing.ip == ip) {
            return None;
        }
        addresses.push(EndpointAddress {
            ip: ip.clone(),
            ..Default::default()
        });
        Some(object)
    })
    .await?;

    let slices: Api<EndpointSlice> = Api::namespaced(client, NAMESPACE);
    update_or_create(&slices, "EndpointSlice", |existing| {
        let mut object = existing.unwrap_or_else(|| EndpointSlice {
            metadata: ObjectMeta {
                name: Some(NAME.to_string()),
                namespace: Some(NAMESPACE.to_string()),
                labels: Some(
                    labels
                        .clone()
                        .into_iter()
                        .chain([
                            ("kubernetes.io/service-name".to_string(), NAME.to_string()),
                            (
                                "endpointslice.kubernetes.io/managed-by".to_string(),
                                MANAGED_BY.to_string(),
                            ),
                        ])
                        .collect(),
                ),
                ..Default::default()
            },
            address_type: if address.is_ipv4() { "IPv4" } else { "IPv6" }.to_string(),
            endpoints: Vec::new(),
            ports: Some(vec![
                SlicePort {
                    name: Some("dns".to_string()),
                    port: Some(i32::from(port)),
                    protocol: Some("UDP".to_string()),
                    ..Default::default()
                },
                SlicePort {
                    name: Some("dns-tcp".to_string()),
                    port: Some(i32::from(port)),
                    protocol: Some("TCP".to_string()),
                    ..Default::default()
                },
            ]),
        });
        if object
            .endpoints
            .iter()
            .any(|endpoint| endpoint.addresses.contains(&ip))
        {
            return None;
        }
        object.endpoints.push(Endpoint {
            addresses: vec![ip.clone()],
            conditions: Some(EndpointConditions {
                ready: Some(true),
                serving: Some(true),
                terminating: Some(false),
            }),
            ..Default::default()
        });
        Some(object)
    })
    .await?;
    Ok(())
}

async fn create_unless_exists<K>(
    api: &Api<K>,
    object: &K,
    kind: &'static str,
) -> Result<(), KubeDnsError>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.create(&PostParams::default(), object).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(source) => Err(KubeDnsError::Write { kind, source }),
    }
}

/// Reads the object, lets `change` make the new one (`None`: nothing to
/// do), and writes it, retrying when another writer got there first.
async fn update_or_create<K>(
    api: &Api<K>,
    kind: &'static str,
    change: impl Fn(Option<K>) -> Option<K>,
) -> Result<(), KubeDnsError>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    for _ in 0..MAX_ATTEMPTS {
        let existing = api
            .get_opt(NAME)
            .await
            .map_err(|source| KubeDnsError::Write { kind, source })?;
        let creating = existing.is_none();
        let Some(object) = change(existing) else {
            return Ok(());
        };
        let written = if creating {
            api.create(&PostParams::default(), &object).await
        } else {
            api.replace(NAME, &PostParams::default(), &object).await
        };
        match written {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(source) => return Err(KubeDnsError::Write { kind, source }),
        }
    }
    Err(KubeDnsError::Contended { kind })
}
