//! The Kubernetes API, served by shoal over its store, so that `kubectl`,
//! YAML manifests and Kubernetes' client libraries work unchanged.
//!
//! A request passes `server` (TLS, authentication), then `Api::handle`
//! routes it: discovery and `/version` (`discovery`), OpenAPI (`openapi`), or
//! a resource path, whose verbs `handlers` carries out on the store through
//! `client::Kv` — objects under `/registry/<resource>/[<namespace>/]<name>`,
//! their resourceVersion the key's `mod_revision`, every write a store
//! transaction compared on it. Lists and watches are served from `cache`
//! (one store watch per resource). `kinds` holds what differs by kind:
//! typed decoding, defaulting and validation; `table` the columns `kubectl
//! get` shows.
//!
//! The crate reaches the store only through `client`: it runs the same over
//! a member in its own process or over a remote store.

mod allocate;
mod apply;
pub mod authn;
pub mod authz;
mod body;
mod cache;
mod convert;
mod crd_schema;
mod dashboard;
mod discovery;
pub mod encryption;
mod fields;
mod gc;
mod handlers;
pub mod join;
mod kinds;
mod managed;
pub mod metrics;
mod namespaces;
mod node_proxy;
mod objects;
mod openapi_docs;
pub mod pki;
pub mod query;
mod registry;
mod registry_sync;
mod respond;
pub mod server;
mod status;
mod storage;
mod table;
mod validation;
pub use validation::is_dns1123_label;
mod watch;

use std::sync::Arc;

use bytes::Bytes;

pub use node_proxy::agent_client_tls;
pub use server::{ServeError, User, bind, serve, tls_config};

use crate::registry::Registry;
use crate::server::Body;
use crate::status::ApiError;

/// How the API server is set up.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// The address clients reach the API at, as `host:port` (discovery's
    /// `serverAddressByClientCIDRs`).
    pub advertise_address: String,
    /// Signs the certificates of machines that join with the cluster's
    /// token (`POST /shoal/v1/join`); `None` refuses joins.
    pub join: Option<Arc<join::JoinAuthority>>,
    /// How the API server calls node agents (pods' logs, exec, attach):
    /// the cluster CA and its kubelet client certificate
    /// ([`agent_client_tls`]). Without it those requests are 503.
    pub agent_client_tls: Option<Arc<rustls::ClientConfig>>,
    /// The seconds of the `node.kubernetes.io/not-ready` and
    /// `unreachable` `NoExecute` tolerations new pods get when they have
    /// none (kube-apiserver's `--default-not-ready-toleration-seconds` and
    /// `--default-unreachable-toleration-seconds`; 300 there, 0 in shoal).
    pub default_not_ready_toleration_seconds: i64,
    pub default_unreachable_toleration_seconds: i64,
    /// The range Services' ClusterIPs come from (`--service-cidr`); its
    /// first address is the `kubernetes` service's.
    pub service_cidr: ipnet::Ipv4Net,
    /// The users of `--token-auth-file`: requests without a client
    /// certificate may name one with `Authorization: Bearer TOKEN`.
    pub tokens: Option<Arc<authn::TokenFile>>,
    /// Encryption at rest (`--encryption-provider-config`).
    pub encryption: Option<encryption::EncryptionConfig>,
}

impl ApiConfig {
    /// The `kubernetes` service's address: the service range's first.
    pub fn kubernetes_service_ip(&self) -> std::net::Ipv4Addr {
        nth_address(self.service_cidr, 1)
    }
}

/// The `n`th address of `range` (0 is the network's own address).
pub fn nth_address(range: ipnet::Ipv4Net, n: u32) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::from(u32::from(range.network()).wrapping_add(n))
}

/// The default service range (`--service-cidr`), k3s' 10.43.0.0/16.
pub const DEFAULT_SERVICE_CIDR: &str = "10.43.0.0/16";

/// The API server's state: what it serves and the store it serves it from.
pub struct Api {
    kv: client::SharedKv,
    /// The store as `kv`, when encryption at rest is on.
    encrypting: Option<Arc<encryption::EncryptingKv>>,
    registry: Registry,
    caches: Arc<cache::Caches>,
    /// Who may do what: RBAC and the Node rule, from in-memory indexes.
    authorizer: Arc<authz::Authorizer>,
    namespaces: Arc<namespaces::Namespaces>,
    openapi: openapi_docs::OpenApi,
    config: ApiConfig,
    /// Work for the garbage collector (`gc`), run by `run_collector`.
    collector: tokio::sync::mpsc::UnboundedSender<gc::Work>,
    collector_queue: parking_lot::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<gc::Work>>>,
    /// Held from an eviction's disruption-budget check to its delete, so
    /// that evictions in parallel (`kubectl drain` sends them so) are
    /// judged one after another, each seeing the ones before it.
    evictions: tokio::sync::Mutex<()>,
    /// Requests, watchers and object counts (`/metrics`).
    metrics: metrics::ApiMetrics,
    metrics_endpoint: Arc<::metrics::Endpoint>,
    /// Set once `bootstrap` started the authorization indexes (bootstrap
    /// is retried while the store elects its leader).
    authorization_started: std::sync::atomic::AtomicBool,
}

/// The strategic merge patch schema of the built-in kinds, built once.
pub(crate) fn patch_schema() -> &'static apimachinery::patch::PatchSchema {
    static SCHEMA: std::sync::OnceLock<apimachinery::patch::PatchSchema> =
        std::sync::OnceLock::new();
    SCHEMA.get_or_init(apimachinery::patch::PatchSchema::builtin)
}

/// The namespaces that exist from the start.
pub const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

impl Api {
    pub fn new(kv: client::SharedKv, config: ApiConfig) -> Arc<Api> {
        let (collector, queue) = tokio::sync::mpsc::unbounded_channel();
        let registry = Registry::new();
        // Encryption at rest sits under everything else: the API server
        // (and its watch cache) sees plain objects, the store ciphertext.
        let mut encrypting = None;
        let kv: client::SharedKv = match &config.encryption {
            Some(encryption) => {
                let resources = registry.all();
                let prefixes = encryption.by_prefix(resources.iter().map(|resource| {
                    (
                        resource.plural.as_str(),
                        resource.group.as_str(),
                        resource.key_prefix(),
                    )
                }));
                let wrapped = Arc::new(encryption::EncryptingKv::new(kv, prefixes));
                encrypting = Some(Arc::clone(&wrapped));
                wrapped
            }
            None => kv,
        };
        let api_metrics = metrics::ApiMetrics::default();
        let metrics_endpoint = metrics::endpoint(&api_metrics);
        let api = Arc::new(Api {
            caches: Arc::new(cache::Caches::new(Arc::clone(&kv))),
            authorizer: authz::Authorizer::new(),
            namespaces: Arc::default(),
            kv,
            encrypting,
            registry,
            openapi: openapi_docs::OpenApi::default(),
            config,
            collector,
            collector_queue: parking_lot::Mutex::new(Some(queue)),
            evictions: tokio::sync::Mutex::new(()),
            metrics: api_metrics,
            metrics_endpoint,
            authorization_started: std::sync::atomic::AtomicBool::new(false),
        });
        let mut watchers = ::metrics::Registry::default();
        watchers.register_collector(Box::new(metrics::WatcherCollector(Arc::downgrade(&api))));
        api.metrics_endpoint.add(Arc::new(watchers));
        tokio::spawn(metrics::keep_counts(Arc::downgrade(&api)));
        api
    }

    /// What the API port's `/metrics` serves; the scheduler and the
    /// controllers running beside this server add their registries to it.
    pub fn metrics_endpoint(&self) -> &Arc<::metrics::Endpoint> {
        &self.metrics_endpoint
    }

    /// Queues work for the garbage collector.
    fn collect(&self, work: gc::Work) {
        let _ = self.collector.send(work);
    }

    /// Runs the garbage collector until `shutdown`: the deletes that
    /// propagation and namespace deletion leave to do, retried every
    /// second while something is left.
    pub async fn run_collector(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        let Some(mut queue) = self.collector_queue.lock().take() else {
            return;
        };
        tokio::pin!(shutdown);
        let mut retry: Vec<gc::Work> = Vec::new();
        loop {
            let next = tokio::select! {
                () = &mut shutdown => return,
                work = queue.recv() => work,
                () = tokio::time::sleep(std::time::Duration::from_secs(1)), if !retry.is_empty() => None,
            };
            let mut batch: Vec<gc::Work> = std::mem::take(&mut retry);
            batch.extend(next);
            while let Ok(more) = queue.try_recv() {
                batch.push(more);
            }
            for work in batch {
                match gc::run(&self, work).await {
                    Ok(None) => {}
                    Ok(Some(again)) => retry.push(again),
                    Err(error) => {
                        tracing::warn!(message = %error.message, "garbage collection step failed; will retry on the next delete")
                    }
                }
            }
        }
    }

    /// Deletes every key under `prefix` in the background.
    fn spawn_store_cleanup(&self, prefix: String) {
        let kv = Arc::clone(&self.kv);
        tokio::spawn(async move {
            let request = proto::etcdserverpb::DeleteRangeRequest {
                key: prefix.as_bytes().to_vec().into(),
                range_end: client::prefix_end(prefix.as_bytes()).into(),
                ..Default::default()
            };
            if let Err(error) = kv.delete_range(request).await {
                tracing::warn!(%error, %prefix, "could not delete a removed resource's objects");
            }
        });
    }

    /// Gives a deleted Service's addresses back, in the background.
    fn spawn_service_release(&self, service: serde_json::Value) {
        let kv = Arc::clone(&self.kv);
        tokio::spawn(async move { allocate::release(kv.as_ref(), &service).await });
    }

    /// Makes what must exist before the first request: the system
    /// namespaces; and serves the custom resources stored CRDs define.
    pub async fn bootstrap(&self) -> Result<(), String> {
        tokio::spawn(Arc::clone(&self.namespaces).follow(Arc::clone(&self.kv)));
        self.start_authorization();
        let (crds, _) = storage::list(
            self.kv.as_ref(),
            "/registry/apiextensions.k8s.io/customresourcedefinitions/",
            0,
            false,
        )
        .await
        .map_err(|error| format!("reading CustomResourceDefinitions: {}", error.message))?;
        for crd in crds {
            let name = objects::name_of(&crd.object).to_string();
            self.registry
                .set_custom(&name, registry_sync::resources_of(&crd.object));
        }
        let namespaces = self
            .registry
            .find("", "v1", "namespaces")
            .ok_or("the namespaces resource is not registered")?;
        for name in SYSTEM_NAMESPACES {
            let object = serde_json::json!({
                "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}
            });
            match handlers::create_object(self, &namespaces, None, object, &Default::default())
                .await
            {
                Ok(_) => {}
                Err(error) if error.reason == "AlreadyExists" => {}
                Err(error) => return Err(format!("creating namespace {name}: {}", error.message)),
            }
        }
        self.bootstrap_kubernetes_service().await?;
        self.bootstrap_rbac().await
    }

    /// Starts the authorization indexes (once): RBAC's four kinds and the
    /// pods the Node rule needs, each followed through the watch cache,
    /// and the clusterrole-aggregation controller.
    fn start_authorization(&self) {
        if self
            .authorization_started
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return;
        }
        tokio::spawn(authz::rbac::follow(
            Arc::clone(&self.authorizer),
            Arc::clone(&self.caches),
            Arc::clone(&self.kv),
        ));
        let authorizer = Arc::clone(&self.authorizer);
        let caches = Arc::clone(&self.caches);
        let kv = Arc::clone(&self.kv);
        tokio::spawn(async move {
            authz::rbac::follow_prefix(authz::node::PODS_PREFIX, &caches, &kv, |event| {
                authorizer.pods.handle(event)
            })
            .await
        });
        tokio::spawn(authz::aggregate::run(
            Arc::clone(&self.authorizer),
            Arc::clone(&self.kv),
        ));
    }

    /// Writes the default roles and bindings (`authz::bootstrap`), putting
    /// back those changed without `autoupdate: "false"`, and waits until
    /// the RBAC index has read the store.
    async fn bootstrap_rbac(&self) -> Result<(), String> {
        let mut objects: Vec<(&str, Option<String>, serde_json::Value)> = Vec::new();
        for role in authz::bootstrap::cluster_roles() {
            objects.push(("clusterroles", None, role));
        }
        for binding in authz::bootstrap::cluster_role_bindings() {
            objects.push(("clusterrolebindings", None, binding));
        }
        for (plural, object) in authz::bootstrap::namespaced() {
            let namespace = object["metadata"]["namespace"].as_str().map(str::to_string);
            objects.push((plural, namespace, object));
        }
        for (plural, namespace, object) in objects {
            let resource = self
                .registry
                .find(authz::rbac::GROUP, "v1", plural)
                .ok_or("the RBAC resources are not registered")?;
            let name = objects::name_of(&object).to_string();
            let key = resource.key(namespace.as_deref(), &name);
            match storage::get(self.kv.as_ref(), &key)
                .await
                .map_err(|error| error.message)?
            {
                None => {
                    let options = handlers::WriteOptions {
                        field_manager: Some("kube-apiserver".to_string()),
                        ..Default::default()
                    };
                    match handlers::create_object(
                        self,
                        &resource,
                        namespace.as_deref(),
                        object,
                        &options,
                    )
                    .await
                    {
                        Ok(_) => {}
                        Err(error) if error.reason == "AlreadyExists" => {}
                        Err(error) => {
                            return Err(format!("creating {plural} {name}: {}", error.message));
                        }
                    }
                }
                Some(stored) if authz::bootstrap::needs_reconcile(&stored.object, &object) => {
                    let mut current = stored.object;
                    for field in ["rules", "aggregationRule", "roleRef", "subjects"] {
                        if let Some(value) = object.get(field) {
                            current[field] = value.clone();
                        }
                    }
                    storage::put_if(self.kv.as_ref(), &key, &current, stored.mod_revision)
                        .await
                        .map_err(|error| error.message)?;
                }
                Some(_) => {}
            }
        }
        self.authorizer.rbac.wait_loaded().await;
        Ok(())
    }

    /// The `kubernetes` Service in `default` (the service range's first
    /// address, port 443), its Endpoints and its EndpointSlice, the API's
    /// own address: how pods find the API, as kube-apiserver publishes it.
    async fn bootstrap_kubernetes_service(&self) -> Result<(), String> {
        let (host, port) = self
            .config
            .advertise_address
            .rsplit_once(':')
            .ok_or("the advertise address has no port")?;
        let port: u16 = port
            .parse()
            .map_err(|_| "the advertise address has a bad port")?;
        let service = serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"clusterIP": self.config.kubernetes_service_ip().to_string(), "ports": [
                {"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}
            ]}
        });
        let endpoints = serde_json::json!({
            "apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": "kubernetes", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": [{"addresses": [{"ip": host}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}]
        });
        // The Endpoints are not mirrored (skip-mirror): kube-apiserver
        // writes the slice the proxies read itself, named as the Service.
        let slice = serde_json::json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "kubernetes", "labels": {"kubernetes.io/service-name": "kubernetes"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [host], "conditions": {"ready": true}}],
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}]
        });
        for (group, plural, object) in [
            ("", "services", service),
            ("", "endpoints", endpoints),
            ("discovery.k8s.io", "endpointslices", slice),
        ] {
            let resource = self
                .registry
                .find(group, "v1", plural)
                .ok_or("a built-in resource is not registered")?;
            let options = handlers::WriteOptions {
                field_manager: Some("kube-apiserver".to_string()),
                ..Default::default()
            };
            match handlers::create_object(self, &resource, Some("default"), object, &options).await
            {
                Ok(_) => {}
                Err(error) if error.reason == "AlreadyExists" => {}
                Err(error) => {
                    return Err(format!(
                        "creating the kubernetes {plural}: {}",
                        error.message
                    ));
                }
            }
        }
        Ok(())
    }

    /// Answers one authenticated request.
    pub async fn handle(
        &self,
        user: &User,
        parts: http::request::Parts,
        body: Bytes,
    ) -> hyper::Response<Body> {
        let path = parts.uri.path().to_string();
        let query = match query::Query::parse(parts.uri.query().unwrap_or("")) {
            Ok(query) => query,
            Err(error) => return respond::error(&error),
        };
        let accept = header(&parts, http::header::ACCEPT);
        tracing::debug!(user = %user.name, method = %parts.method, %path, "request");
        let info = authz::request_info(&parts.method, &path, &query);
        let attributes = info.attributes(user);
        let decision = self.authorizer.authorize(&attributes);
        if decision != authz::Decision::Allow {
            tracing::debug!(user = %user.name, verb = %info.verb, %path, "forbidden");
            return respond::error(&authz::forbidden(&attributes, &decision));
        }
        if let Err(error) = authz::node::admit_create(user, &info, &body) {
            return respond::error(&error);
        }
        if info.resource_request
            && info.verb == "create"
            && info.name.is_empty()
            && let Some(review) =
                authz::reviews::Review::of(&info.api_group, &info.api_version, &info.resource)
        {
            let namespace = (!info.namespace.is_empty()).then_some(info.namespace.as_str());
            let content_type = header(&parts, http::header::CONTENT_TYPE);
            let answer = body::decode_object(&content_type, &body).and_then(|request| {
                authz::reviews::answer(&self.authorizer, review, user, namespace, &request)
            });
            return match answer {
                Ok(answer) => respond::json(201, &answer),
                Err(error) => respond::error(&error),
            };
        }
        let segments: Vec<&str> = path
            .trim_start_matches('/')
            .trim_end_matches('/')
            .split('/')
            .filter(|segment| !segment.is_empty())
            .collect();
        let is_get = parts.method == http::Method::GET;
        match segments.as_slice() {
            ["version"] if is_get => respond::json(200, &discovery::version()),
            ["healthz"] | ["livez"] | ["readyz"] if is_get => respond::text(200, "ok"),
            ["metrics"] if is_get => {
                let (content_type, body) = self.metrics_endpoint.render(Some(&accept));
                let mut response = hyper::Response::new(respond::full(body));
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static(content_type),
                );
                response
            }
            ["api"] if is_get => self.discovery_root(true, &accept),
            ["apis"] if is_get => self.discovery_root(false, &accept),
            ["api", "v1"] if is_get => self.resource_list("", "v1"),
            ["apis", group] if is_get => match discovery::api_group(&self.registry, group) {
                Some(document) => respond::json(200, &document),
                None => respond::error(&ApiError::not_found_path()),
            },
            ["apis", group, version] if is_get => self.resource_list(group, version),
            ["openapi", rest @ ..] if is_get => self.openapi.serve(&self.registry, rest, &accept),
            ["ui", "api", "store"] if is_get => dashboard::store(self).await,
            ["api", "v1", rest @ ..] => {
                self.resource_request(user, "", "v1", rest, parts, query, body)
                    .await
            }
            ["apis", group, version, rest @ ..] => {
                let (group, version) = (group.to_string(), version.to_string());
                self.resource_request(user, &group, &version, rest, parts, query, body)
                    .await
            }
            _ => respond::error(&ApiError::not_found_path()),
        }
    }

    fn discovery_root(&self, core: bool, accept: &str) -> hyper::Response<Body> {
        let mut response = match discovery::negotiate(accept) {
            discovery::Form::Aggregated(version) => respond::json_typed(
                200,
                &discovery::aggregated(&self.registry, core, version),
                &discovery::aggregated_content_type(version),
            ),
            discovery::Form::Legacy if core => respond::json(
                200,
                &discovery::api_versions(&self.config.advertise_address),
            ),
            discovery::Form::Legacy => {
                respond::json(200, &discovery::api_group_list(&self.registry))
            }
        };
        response
            .headers_mut()
            .insert(http::header::VARY, http::HeaderValue::from_static("Accept"));
        response
    }

    fn resource_list(&self, group: &str, version: &str) -> hyper::Response<Body> {
        match discovery::api_resource_list(&self.registry, group, version) {
            Some(document) => respond::json(200, &document),
            None => respond::error(&ApiError::not_found_path()),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn resource_request(
        &self,
        user: &User,
        group: &str,
        version: &str,
        rest: &[&str],
        parts: http::request::Parts,
        query: query::Query,
        body: Bytes,
    ) -> hyper::Response<Body> {
        // [namespaces, NS, plural, name?, sub?] or [plural, name?, sub?].
        let (namespace, plural, name, subresource) = match rest {
            ["namespaces", namespace, plural, tail @ ..] => {
                if tail.len() > 2 {
                    return respond::error(&ApiError::not_found_path());
                }
                (
                    Some(*namespace),
                    *plural,
                    tail.first().copied(),
                    tail.get(1).copied(),
                )
            }
            [plural, tail @ ..] => {
                if tail.len() > 2 {
                    return respond::error(&ApiError::not_found_path());
                }
                (None, *plural, tail.first().copied(), tail.get(1).copied())
            }
            [] => return respond::error(&ApiError::not_found_path()),
        };
        // `/api/v1/namespaces/NAME[/status]` is the namespace itself.
        let (namespace, plural, name, subresource) =
            if namespace.is_some() && group.is_empty() && plural_is_namespace_sub(plural) {
                (None, "namespaces", namespace, Some(plural))
            } else {
                (namespace, plural, name, subresource)
            };
        let Some(resource) = self.registry.find(group, version, plural) else {
            return respond::error(&ApiError::not_found_path());
        };
        if namespace.is_some() && !resource.namespaced {
            return respond::error(&ApiError::not_found_path());
        }
        if let Some(sub) = subresource
            && !resource.has_subresource(sub)
        {
            return respond::error(&ApiError::not_found_path());
        }
        let started = std::time::Instant::now();
        let labels = metrics::DurationLabels {
            verb: metrics::verb(&parts.method, name.is_some(), query.watch),
            group: group.to_string(),
            version: version.to_string(),
            resource: resource.plural.clone(),
            subresource: subresource.unwrap_or("").to_string(),
            scope: match (name.is_some(), namespace.is_some()) {
                (true, _) => "resource",
                (false, true) => "namespace",
                (false, false) => "cluster",
            },
            component: "apiserver",
        };
        let request = handlers::Request {
            user,
            resource: &resource,
            namespace,
            name,
            subresource,
            parts: &parts,
            query: &query,
            body: &body,
        };
        let response = handlers::dispatch(self, request).await;
        self.metrics
            .record(labels, response.status().as_u16(), started.elapsed());
        response
    }
}

/// The subresource names that can follow `/api/v1/namespaces/NAME/`.
fn plural_is_namespace_sub(segment: &str) -> bool {
    matches!(segment, "status" | "finalize")
}

fn header(parts: &http::request::Parts, name: http::header::HeaderName) -> String {
    parts
        .headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .to_string()
}
