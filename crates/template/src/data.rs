//! What a template renders from: the store's keys under the `--keys`
//! prefixes and the Services (with their EndpointSlices) the template asked
//! for, all read at one store revision.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use client::{ClientError, Kv};
use proto::etcdserverpb::RangeRequest;
use serde_json::Value;

/// Where the API server keeps Services (`crates/apiserver/src/registry.rs`,
/// as kube-apiserver does).
pub const SERVICES_PREFIX: &str = "/registry/services/specs/";
/// Where the API server keeps EndpointSlices.
pub const ENDPOINT_SLICES_PREFIX: &str = "/registry/endpointslices/";
/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A Service named in a template as `"namespace/name"` (or `"name"`, in
/// `default`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceName {
    pub namespace: String,
    pub name: String,
}

impl ServiceName {
    /// Parses `namespace/name` or `name`; `None` for anything else.
    pub fn parse(text: &str) -> Option<ServiceName> {
        let (namespace, name) = match text.split_once('/') {
            Some((namespace, name)) => (namespace, name),
            None => ("default", text),
        };
        let valid = |part: &str| !part.is_empty() && !part.contains('/');
        (valid(namespace) && valid(name)).then(|| ServiceName {
            namespace: namespace.to_string(),
            name: name.to_string(),
        })
    }

    pub fn service_key(&self) -> String {
        format!("{SERVICES_PREFIX}{}/{}", self.namespace, self.name)
    }

    /// The prefix holding the EndpointSlices of this Service's namespace
    /// (slices have generated names; the label says whose they are).
    pub fn slices_prefix(&self) -> String {
        format!("{ENDPOINT_SLICES_PREFIX}{}/", self.namespace)
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}/{}", self.namespace, self.name)
    }
}

/// One Service as stored: its object (`None`: no such Service) and its
/// EndpointSlices.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceData {
    pub service: Option<Value>,
    pub slices: Vec<Value>,
}

/// Everything one render reads, at one store revision.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// The store revision everything was read at.
    pub revision: i64,
    /// Keys under the `--keys` prefixes and their values (as UTF-8, lossily).
    pub keys: BTreeMap<String, String>,
    /// The Services read, by name.
    pub services: BTreeMap<ServiceName, ServiceData>,
}

/// Reads the keys under `prefixes` and the `services` at one revision: the
/// first read's, so the whole snapshot is one state of the store.
pub async fn read(
    kv: &dyn Kv,
    prefixes: &[String],
    services: &BTreeSet<ServiceName>,
) -> Result<Snapshot, ClientError> {
    let mut snapshot = Snapshot::default();
    let mut reader = Reader { kv, revision: 0 };
    for prefix in prefixes {
        for (key, value) in reader.prefix(prefix).await? {
            snapshot
                .keys
                .insert(key, String::from_utf8_lossy(&value).into_owned());
        }
    }
    // The slices of one namespace are read once, however many of its
    // Services the template names.
    let mut slices_by_namespace: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for service in services {
        if !slices_by_namespace.contains_key(&service.namespace) {
            let slices = reader
                .prefix(&service.slices_prefix())
                .await?
                .into_iter()
                .filter_map(|(_, value)| serde_json::from_slice(&value).ok())
                .collect();
            slices_by_namespace.insert(service.namespace.clone(), slices);
        }
        let object = reader
            .one(&service.service_key())
            .await?
            .and_then(|value| serde_json::from_slice(&value).ok());
        let slices = slices_by_namespace[&service.namespace]
            .iter()
            .filter(|slice| slice_belongs_to(slice, &service.name))
            .cloned()
            .collect();
        snapshot.services.insert(
            service.clone(),
            ServiceData {
                service: object,
                slices,
            },
        );
    }
    if reader.revision == 0 {
        // Nothing was asked for: the revision still says where to watch from.
        reader.one("/").await?;
    }
    snapshot.revision = reader.revision;
    Ok(snapshot)
}

/// Whether an EndpointSlice (as JSON) is one of `service_name`'s.
pub fn slice_belongs_to(slice: &Value, service_name: &str) -> bool {
    slice
        .pointer("/metadata/labels")
        .and_then(|labels| labels.get(SERVICE_NAME_LABEL))
        .and_then(Value::as_str)
        == Some(service_name)
}

/// Range reads pinned to the revision of the first one.
struct Reader<'a> {
    kv: &'a dyn Kv,
    revision: i64,
}

impl Reader<'_> {
    async fn range(
        &mut self,
        key: &[u8],
        range_end: Vec<u8>,
    ) -> Result<Vec<(String, Vec<u8>)>, ClientError> {
        let response = self
            .kv
            .range(RangeRequest {
                key: key.to_vec().into(),
                range_end: range_end.into(),
                revision: self.revision,
                ..Default::default()
            })
            .await?;
        if self.revision == 0 {
            self.revision = response.header.map_or(0, |header| header.revision);
        }
        Ok(response
            .kvs
            .into_iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(&kv.key).into_owned(),
                    kv.value.to_vec(),
                )
            })
            .collect())
    }

    async fn prefix(&mut self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, ClientError> {
        self.range(prefix.as_bytes(), client::prefix_end(prefix.as_bytes()))
            .await
    }

    async fn one(&mut self, key: &str) -> Result<Option<Vec<u8>>, ClientError> {
        Ok(self
            .range(key.as_bytes(), Vec::new())
            .await?
            .into_iter()
            .next()
            .map(|(_, value)| value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_parse_with_a_default_namespace() {
        assert_eq!(
            ServiceName::parse("kube-system/kube-dns"),
            Some(ServiceName {
                namespace: "kube-system".into(),
                name: "kube-dns".into()
            })
        );
        assert_eq!(
            ServiceName::parse("web").map(|name| name.to_string()),
            Some("default/web".to_string())
        );
        assert_eq!(ServiceName::parse("a/b/c"), None);
        assert_eq!(ServiceName::parse("/web"), None);
        assert_eq!(ServiceName::parse(""), None);
    }

    #[test]
    fn slices_belong_to_the_service_their_label_names() {
        let slice = serde_json::json!({
            "metadata": {"name": "web-x1", "labels": {SERVICE_NAME_LABEL: "web"}}
        });
        assert!(slice_belongs_to(&slice, "web"));
        assert!(!slice_belongs_to(&slice, "web2"));
        assert!(!slice_belongs_to(
            &serde_json::json!({"metadata": {}}),
            "web"
        ));
    }
}
