//! The verbs on a resource: get, list, watch, create, update, patch, delete
//! and deletecollection, and the subresources (status, scale, binding,
//! eviction, and the node-served log/exec/attach).

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Value, json};

use crate::body;
use crate::kinds;
use crate::objects::{self, name_of};
use crate::query::Query;
use crate::registry::ResourceType;
use crate::respond;
use crate::server::{Body, User};
use crate::status::{ApiError, success_status};
use crate::storage::{self, Stored, Written};
use crate::table;
use crate::validation;
use crate::{Api, header};

/// One request on a resource path.
pub struct Request<'a> {
    pub user: &'a User,
    pub resource: &'a Arc<ResourceType>,
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
    pub subresource: Option<&'a str>,
    pub parts: &'a http::request::Parts,
    pub query: &'a Query,
    pub body: &'a Bytes,
}

/// Writes retried when they lose a race they did not ask to lose (a patch
/// with no resourceVersion in it), as kube-apiserver retries them.
const WRITE_ATTEMPTS: usize = 5;

pub async fn dispatch(api: &Api, request: Request<'_>) -> hyper::Response<Body> {
    let method = request.parts.method.clone();
    // Every authenticated user may do everything until authorization
    // (RBAC) lands; the user is known here for when it does.
    tracing::trace!(user = %request.user.name, resource = %request.resource.plural, "authorized");
    let outcome = match (&method, request.name, request.subresource) {
        (&http::Method::GET, None, None) if request.query.watch => {
            return with_warnings(
                crate::watch::serve(api, &request).await,
                &deprecation_warnings(request.resource),
            );
        }
        (&http::Method::GET, None, None) => list(api, &request).await,
        (&http::Method::GET, Some(name), None | Some("status")) => get(api, &request, name)
            .await
            .map(|object| answer_object(&request, 200, object)),
        (&http::Method::GET, Some(name), Some("scale")) => get(api, &request, name)
            .await
            .and_then(|object| scale_of(&object))
            .map(|scale| respond::json(200, &scale)),
        (_, Some(_), Some("log" | "exec" | "attach" | "portforward" | "proxy")) => {
            Err(node_not_serving(&request))
        }
        (&http::Method::POST, None, None) => create(api, &request).await,
        (&http::Method::POST, Some(name), Some("binding")) => bind(api, &request, name).await,
        (&http::Method::POST, Some(name), Some("eviction")) => evict(api, &request, name).await,
        (&http::Method::PUT, Some(name), None | Some("status") | Some("finalize")) => {
            update(api, &request, name).await
        }
        (&http::Method::PUT, Some(name), Some("scale")) => {
            update_scale(api, &request, name, false).await
        }
        (&http::Method::PATCH, Some(name), Some("scale")) => {
            update_scale(api, &request, name, true).await
        }
        (&http::Method::PATCH, Some(name), None | Some("status")) => {
            patch(api, &request, name).await
        }
        (&http::Method::DELETE, Some(name), None) => delete(api, &request, name).await,
        (&http::Method::DELETE, None, None) => delete_collection(api, &request).await,
        _ => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({} {})",
            method,
            request.parts.uri.path()
        ))),
    };
    let response = outcome.unwrap_or_else(|error| respond::error(&error));
    with_warnings(response, &deprecation_warnings(request.resource))
}

/// The warnings kube-apiserver 1.33 adds to every request on a deprecated
/// resource (kubectl prints them as `Warning: …`).
fn deprecation_warnings(resource: &ResourceType) -> Vec<String> {
    if resource.group.is_empty() && resource.plural == "endpoints" {
        return vec![
            "v1 Endpoints is deprecated in v1.33+; use discovery.k8s.io/v1 EndpointSlice"
                .to_string(),
        ];
    }
    Vec::new()
}

fn node_not_serving(request: &Request<'_>) -> ApiError {
    ApiError::bad_request(format!(
        "pod {} has no node agent to serve its {}: shoal does not run pods on nodes yet",
        request.name.unwrap_or(""),
        request.subresource.unwrap_or("")
    ))
}

/// The key of the object a request names (or of `name` in its namespace).
fn key(request: &Request<'_>, name: &str) -> String {
    request.resource.key(request.namespace, name)
}

/// An object answer, as a Table when kubectl asked for one.
fn answer_object(request: &Request<'_>, code: u16, object: Value) -> hyper::Response<Body> {
    let accept = header(request.parts, http::header::ACCEPT);
    if let Some(table_version) = table::wants_table(&accept) {
        let revision = object
            .pointer("/metadata/resourceVersion")
            .cloned()
            .unwrap_or(Value::Null);
        let table = table::table(
            request.resource,
            vec![object],
            request.query.include_object.as_deref(),
            table_version,
            true,
            &json!({"resourceVersion": revision}),
        );
        return respond::json(code, &table);
    }
    respond::json(code, &object)
}

/// An object as its resource shows it (converted when the resource is
/// another version's objects).
async fn read(api: &Api, resource: &ResourceType, key: &str) -> Result<Option<Stored>, ApiError> {
    Ok(storage::get(api.kv.as_ref(), key).await?.map(|mut stored| {
        stored.object = crate::convert::present(resource, stored.object);
        stored
    }))
}

/// Stores an object of `resource` if the key's revision is `expected`.
async fn write_if(
    api: &Api,
    resource: &ResourceType,
    key: &str,
    object: &Value,
    expected: i64,
) -> Result<Written, ApiError> {
    if crate::convert::converts(resource) {
        let stored = crate::convert::to_storage(resource, object.clone());
        return storage::put_if(api.kv.as_ref(), key, &stored, expected).await;
    }
    storage::put_if(api.kv.as_ref(), key, object, expected).await
}

async fn get(api: &Api, request: &Request<'_>, name: &str) -> Result<Value, ApiError> {
    match read(api, request.resource, &key(request, name)).await? {
        Some(stored) => Ok(stored.object),
        None => Err(ApiError::not_found(request.resource, name)),
    }
}

/// A request's selectors, checked against what the kind supports.
pub struct Filter {
    labels: apimachinery::labels::Selector,
    fields: apimachinery::fields::FieldSelector,
}

impl Filter {
    pub fn from_query(resource: &ResourceType, query: &Query) -> Result<Filter, ApiError> {
        let labels = match query.label_selector.as_deref() {
            Some(text) if !text.trim().is_empty() => apimachinery::labels::Selector::parse(text)
                .map_err(|error| ApiError::bad_request(error.to_string()))?,
            _ => apimachinery::labels::Selector::everything(),
        };
        let fields = match query.field_selector.as_deref() {
            Some(text) if !text.trim().is_empty() => {
                let fields = apimachinery::fields::FieldSelector::parse(text)
                    .map_err(|error| ApiError::bad_request(error.to_string()))?;
                fields
                    .check_supported(|field| crate::fields::supported(resource, field))
                    .map_err(|error| ApiError::bad_request(error.to_string()))?;
                fields
            }
            _ => apimachinery::fields::FieldSelector::everything(),
        };
        Ok(Filter { labels, fields })
    }

    /// `matches`, with the object decoded only if a field selector needs it.
    pub fn matches_lazily(
        &self,
        resource: &ResourceType,
        labels: &std::collections::BTreeMap<String, String>,
        object: impl FnOnce() -> Option<std::sync::Arc<Value>>,
    ) -> bool {
        if !self.labels.matches(labels) {
            return false;
        }
        if self.fields.is_empty() {
            return true;
        }
        object().is_some_and(|object| {
            self.fields
                .matches(&|field| crate::fields::value(resource, &object, field))
        })
    }

    pub fn matches(&self, resource: &ResourceType, object: &Value) -> bool {
        let labels = object
            .pointer("/metadata/labels")
            .and_then(Value::as_object);
        let label_matches = self.labels.matches_with(|key| {
            labels
                .and_then(|labels| labels.get(key))
                .and_then(Value::as_str)
        });
        label_matches
            && self
                .fields
                .matches(&|field| crate::fields::value(resource, object, field))
    }
}

/// A continue token: the revision the list is read at and the key to go on after.
fn encode_continue(revision: i64, last_key: &str) -> String {
    use base64::Engine as _;
    let token = json!({"v": "meta.k8s.io/v1", "rv": revision, "start": format!("{last_key}\u{0}")});
    base64::engine::general_purpose::URL_SAFE.encode(token.to_string())
}

fn decode_continue(token: &str) -> Result<(i64, String), ApiError> {
    use base64::Engine as _;
    let invalid = || {
        ApiError::bad_request(
            "continue key is not valid: illegal base64 data at input byte 0".to_string(),
        )
    };
    let bytes = base64::engine::general_purpose::URL_SAFE
        .decode(token)
        .map_err(|_| invalid())?;
    let parsed: Value = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    let revision = parsed
        .get("rv")
        .and_then(Value::as_i64)
        .ok_or_else(invalid)?;
    let start = parsed
        .get("start")
        .and_then(Value::as_str)
        .ok_or_else(invalid)?
        .to_string();
    Ok((revision, start))
}

/// The prefix a list or watch reads: the resource's, or one namespace's.
pub fn list_prefix(resource: &ResourceType, namespace: Option<&str>) -> String {
    match namespace {
        Some(namespace) if resource.namespaced => {
            format!("{}{namespace}/", resource.key_prefix())
        }
        _ => resource.key_prefix(),
    }
}

/// The objects a list answers, filtered, with the revision they are as of.
pub async fn read_list(
    api: &Api,
    resource: &ResourceType,
    namespace: Option<&str>,
    query: &Query,
) -> Result<(Vec<Stored>, i64, Option<String>), ApiError> {
    let filter = Filter::from_query(resource, query)?;
    let prefix = list_prefix(resource, namespace);
    let (revision, start) = match &query.continue_token {
        Some(token) => {
            let (revision, start) = decode_continue(token)?;
            (revision, Some(start))
        }
        None => {
            let exact = query.resource_version_match.as_deref() == Some("Exact");
            match query.resource_version.as_deref() {
                Some(text) if exact && !text.is_empty() => (
                    text.parse::<i64>().map_err(|_| {
                        ApiError::bad_request(format!("invalid resource version: {text:?}"))
                    })?,
                    None,
                ),
                _ => (0, None),
            }
        }
    };
    // Read in pages from where the list (or its continue token) starts, at
    // one revision, until the limit is passed: a page of 500 out of 10,000
    // objects reads about 500, not 10,000.
    let limit = query
        .limit
        .filter(|limit| *limit > 0)
        .map(|limit| limit as usize);
    let end = client::prefix_end(prefix.as_bytes());
    let mut from = start.map_or_else(|| prefix.as_bytes().to_vec(), String::into_bytes);
    let mut read_at = revision;
    let mut items: Vec<Stored> = Vec::new();
    // resourceVersion=0 accepts any recent state: this member's own, with
    // no quorum round.
    let serializable = query.resource_version.as_deref() == Some("0");
    loop {
        let wanted = limit.map_or(0, |limit| (limit + 1 - items.len().min(limit)) as i64);
        let page = match storage::page(api.kv.as_ref(), &from, &end, read_at, wanted, serializable)
            .await
        {
            Err(error) if error.code == 410 && query.continue_token.is_some() => {
                return Err(ApiError::expired(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                ));
            }
            other => other?,
        };
        read_at = page.revision;
        if let Some(last) = page.objects.last() {
            from = format!("{}\u{0}", last.key).into_bytes();
        }
        for mut item in page.objects {
            if crate::convert::converts(resource) {
                item.object = crate::convert::present(resource, std::mem::take(&mut item.object));
            }
            if filter.matches(resource, &item.object) {
                items.push(item);
            }
        }
        let enough = limit.is_some_and(|limit| items.len() > limit);
        if enough || !page.more {
            break;
        }
    }
    let mut next = None;
    if let Some(limit) = limit
        && items.len() > limit
    {
        items.truncate(limit);
        if let Some(last) = items.last() {
            next = Some(encode_continue(read_at, &last.key));
        }
    }
    Ok((items, read_at, next))
}

async fn list(api: &Api, request: &Request<'_>) -> Result<hyper::Response<Body>, ApiError> {
    let resource = request.resource;
    let (items, revision, next) =
        read_list(api, resource, request.namespace, request.query).await?;
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if let Some(next) = &next {
        metadata["continue"] = json!(next);
    }
    let accept = header(request.parts, http::header::ACCEPT);
    let objects: Vec<Value> = items.into_iter().map(|item| item.object).collect();
    if let Some(table_version) = table::wants_table(&accept) {
        let table = table::table(
            resource,
            objects,
            request.query.include_object.as_deref(),
            table_version,
            true,
            &metadata,
        );
        return Ok(respond::json(200, &table));
    }
    Ok(respond::json(
        200,
        &list_object(resource, metadata, objects),
    ))
}

/// A `<Kind>List` of `items` (moved in, not copied: `json!` would copy them).
fn list_object(resource: &ResourceType, metadata: Value, items: Vec<Value>) -> Value {
    let mut list = serde_json::Map::new();
    list.insert("kind".to_string(), Value::String(resource.list_kind()));
    list.insert(
        "apiVersion".to_string(),
        Value::String(resource.api_version()),
    );
    list.insert("metadata".to_string(), metadata);
    list.insert("items".to_string(), Value::Array(items));
    Value::Object(list)
}

/// Options a request's body carries beside the object (dry run and the like
/// come from the query).
#[derive(Default)]
pub struct WriteOptions {
    pub dry_run: bool,
    pub field_manager: Option<String>,
    pub field_validation: String,
    /// How the manager's write is recorded: `Update`, or `Apply`.
    pub operation: &'static str,
    /// For an apply: the applied configuration, and whether it takes fields
    /// other managers own.
    pub applied: Option<Value>,
    pub force: bool,
}

impl WriteOptions {
    fn from_request(request: &Request<'_>) -> WriteOptions {
        let query = request.query;
        // Without a fieldManager, kube-apiserver names the manager after the
        // client's User-Agent (its part before the first '/').
        let field_manager = query.field_manager.clone().or_else(|| {
            let agent = header(request.parts, http::header::USER_AGENT);
            let name = agent.split('/').next().unwrap_or("").trim();
            (!name.is_empty()).then(|| name.chars().take(128).collect())
        });
        WriteOptions {
            dry_run: query.dry_run,
            field_manager,
            field_validation: query.field_validation().to_string(),
            operation: "Update",
            applied: None,
            force: query.force,
        }
    }
}

/// The strategic merge patch schema of `resource`'s kind (schemaless for
/// custom resources), which also says how field ownership names list items.
fn object_schema(resource: &ResourceType) -> apimachinery::patch::ObjectSchema<'static> {
    crate::patch_schema()
        .for_kind(&resource.api_version(), &resource.kind)
        .unwrap_or_else(apimachinery::patch::ObjectSchema::schemaless)
}

/// Decodes with the kind's schema: a type error is a 400, unknown fields a
/// 400 under Strict and warnings under Warn.
fn decode_typed(
    resource: &ResourceType,
    object: Value,
    validation: &str,
    warnings: &mut Vec<String>,
) -> Result<Value, ApiError> {
    if resource.shape == crate::registry::Shape::Custom {
        let mut object = object;
        let checked = match &resource.schema {
            Some(schema) => crate::crd_schema::check_object(&mut object, schema),
            None => Default::default(),
        };
        if !checked.causes.is_empty() {
            return Err(ApiError::invalid(
                resource,
                name_of(&object),
                checked.causes,
            ));
        }
        unknown_fields(resource, &checked.unknown_fields, validation, warnings)?;
        return Ok(object);
    }
    let decoded = kinds::decode(resource, object).map_err(|reason| {
        ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: {reason}",
            resource.kind, resource.version, resource.kind
        ))
    })?;
    unknown_fields(resource, &decoded.unknown_fields, validation, warnings)?;
    Ok(decoded.object)
}

/// Unknown fields, as `fieldValidation` says: a 400 naming them under
/// Strict, warnings under Warn, nothing under Ignore.
fn unknown_fields(
    resource: &ResourceType,
    fields: &[String],
    validation: &str,
    warnings: &mut Vec<String>,
) -> Result<(), ApiError> {
    let listed = fields
        .iter()
        .map(|field| format!("unknown field \"{field}\""));
    match validation {
        "Strict" if !fields.is_empty() => Err(ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
            resource.kind,
            resource.version,
            resource.kind,
            listed.collect::<Vec<_>>().join(", ")
        ))),
        "Warn" => {
            warnings.extend(listed);
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Checks the body's apiVersion and kind against the URL's, filling them in
/// when absent (the Python client sends bare objects).
fn check_type(resource: &ResourceType, object: &mut Value) -> Result<(), ApiError> {
    if !object.is_object() {
        return Err(ApiError::bad_request(
            "Object 'Kind' is missing in the request body: expected a JSON object",
        ));
    }
    let api_version = resource.api_version();
    match object.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => object["apiVersion"] = json!(api_version),
        Some(given) if given != api_version => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({given}) does not match the expected API version ({api_version})"
            )));
        }
        Some(_) => {}
    }
    match object.get("kind").and_then(Value::as_str) {
        None | Some("") => object["kind"] = json!(resource.kind),
        Some(given) if given != resource.kind => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({given}) does not match the expected kind ({})",
                resource.kind
            )));
        }
        Some(_) => {}
    }
    Ok(())
}

/// Whether the namespace exists and is being deleted, read as
/// kube-apiserver's lifecycle check reads it: from the in-memory index, and
/// from the store when the index has not seen it yet.
async fn namespace_state(
    api: &Api,
    namespace: &str,
) -> Result<Option<crate::namespaces::Namespace>, ApiError> {
    if let Some(known) = api.namespaces.get(namespace) {
        return Ok(Some(known));
    }
    let key = format!("/registry/namespaces/{namespace}");
    Ok(storage::get(api.kv.as_ref(), &key).await?.map(|stored| {
        if stored
            .object
            .pointer("/metadata/deletionTimestamp")
            .is_some()
        {
            crate::namespaces::Namespace::Terminating
        } else {
            crate::namespaces::Namespace::Active
        }
    }))
}

fn with_warnings(
    mut response: hyper::Response<Body>,
    warnings: &[String],
) -> hyper::Response<Body> {
    for warning in warnings {
        let text = format!("299 - \"{}\"", warning.replace('"', "\\\""));
        if let Ok(value) = http::HeaderValue::from_str(&text) {
            response.headers_mut().append("Warning", value);
        }
    }
    response
}

async fn create(api: &Api, request: &Request<'_>) -> Result<hyper::Response<Body>, ApiError> {
    let content_type = header(request.parts, http::header::CONTENT_TYPE);
    let object = body::decode_object(&content_type, request.body)?;
    let options = WriteOptions::from_request(request);
    let (created, warnings) =
        create_object_with_warnings(api, request.resource, request.namespace, object, &options)
            .await?;
    Ok(with_warnings(
        answer_object(request, 201, created),
        &warnings,
    ))
}

pub async fn create_object(
    api: &Api,
    resource: &ResourceType,
    namespace: Option<&str>,
    object: Value,
    options: &WriteOptions,
) -> Result<Value, ApiError> {
    create_object_with_warnings(api, resource, namespace, object, options)
        .await
        .map(|(object, _)| object)
}

async fn create_object_with_warnings(
    api: &Api,
    resource: &ResourceType,
    namespace: Option<&str>,
    mut object: Value,
    options: &WriteOptions,
) -> Result<(Value, Vec<String>), ApiError> {
    check_type(resource, &mut object)?;
    let mut warnings = Vec::new();
    let validation = if options.field_validation.is_empty() {
        "Warn"
    } else {
        &options.field_validation
    };
    let mut object = decode_typed(resource, object, validation, &mut warnings)?;
    // The namespace: the URL's; the body's must agree when given.
    if resource.namespaced {
        let Some(namespace) = namespace else {
            return Err(ApiError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource: {} must be created in a namespace",
                resource.plural
            )));
        };
        match object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
        {
            Some(given) if !given.is_empty() && given != namespace => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => {}
        }
        objects::metadata_mut(&mut object).insert("namespace".to_string(), json!(namespace));
        match namespace_state(api, namespace).await? {
            None => return Err(ApiError::namespace_not_found(namespace)),
            Some(crate::namespaces::Namespace::Terminating) => {
                return Err(ApiError {
                    code: 403,
                    reason: "Forbidden",
                    message: format!(
                        "{} \"{}\" is forbidden: unable to create new content in namespace {namespace} because it is being terminated",
                        resource.qualified_plural(),
                        name_of(&object)
                    ),
                    details: None,
                });
            }
            Some(_) => {}
        }
    } else if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("namespace");
    }
    // Server-owned metadata.
    {
        let metadata = objects::metadata_mut(&mut object);
        let given_name = metadata.get("name").and_then(Value::as_str).unwrap_or("");
        if given_name.is_empty()
            && let Some(prefix) = metadata.get("generateName").and_then(Value::as_str)
            && !prefix.is_empty()
        {
            let generated = objects::generate_name(prefix);
            metadata.insert("name".to_string(), json!(generated));
        }
        metadata.insert("uid".to_string(), json!(objects::new_uid()));
        metadata.insert("creationTimestamp".to_string(), json!(objects::now()));
        metadata.insert("generation".to_string(), json!(1));
        for owned in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
            "managedFields",
        ] {
            metadata.remove(owned);
        }
    }
    kinds::apply_defaults(resource, &mut object);
    kinds::on_create(resource, &mut object);
    objects::drop_empty_metadata(&mut object);
    // Ownership covers the defaults too: kube-apiserver defaults while
    // decoding, before its field manager runs.
    if let Some(manager) = &options.field_manager {
        match &options.applied {
            Some(applied) => {
                let empty = json!({});
                object = crate::managed::apply(
                    &empty,
                    object.clone(),
                    applied,
                    manager,
                    &resource.api_version(),
                    true,
                    object_schema(resource),
                )
                .unwrap_or(object);
            }
            None => crate::managed::record_update(
                None,
                &mut object,
                manager,
                &resource.api_version(),
                None,
                object_schema(resource),
            ),
        }
    }
    let name = name_of(&object).to_string();
    let causes = validation::validate(resource, &object);
    if !causes.is_empty() {
        return Err(ApiError::invalid(resource, &name, causes));
    }
    let key = resource.key(namespace, &name);
    // An existing Service is reported as such before any address is
    // claimed for the new one (the write below checks every kind, against
    // races too).
    let allocates = resource.group.is_empty() && resource.kind == "Service";
    if (allocates || options.dry_run) && storage::get(api.kv.as_ref(), &key).await?.is_some() {
        return Err(ApiError::already_exists(resource, &name));
    }
    crate::allocate::on_create(api, resource, &mut object, options.dry_run).await?;
    if options.dry_run {
        return Ok((object, warnings));
    }
    match write_if(api, resource, &key, &object, 0).await? {
        Written::Done(revision) => {
            objects::metadata_mut(&mut object)
                .insert("resourceVersion".to_string(), json!(revision.to_string()));
            crate::registry_sync::after_write(api, resource, &object);
            Ok((object, warnings))
        }
        Written::Lost => {
            if resource.group.is_empty() && resource.kind == "Service" {
                crate::allocate::release(api.kv.as_ref(), &object).await;
            }
            Err(ApiError::already_exists(resource, &name))
        }
    }
}

/// The object an update would store: `new` with the server-owned metadata
/// of `old`, the status or the rest kept as the subresource says, and the
/// generation raised when the spec changed.
fn merge_update(
    resource: &ResourceType,
    old: &Value,
    mut new: Value,
    subresource: Option<&str>,
) -> Value {
    if subresource == Some("status") {
        let mut merged = old.clone();
        match new.get("status") {
            Some(status) => merged["status"] = status.clone(),
            None => {
                if let Some(map) = merged.as_object_mut() {
                    map.remove("status");
                }
            }
        }
        return merged;
    }
    if subresource == Some("finalize") {
        let mut merged = old.clone();
        merged["spec"]["finalizers"] = new
            .pointer("/spec/finalizers")
            .cloned()
            .unwrap_or_else(|| json!([]));
        return merged;
    }
    // On the main resource, status is the status subresource's to change.
    if resource.has_subresource("status") {
        match old.get("status") {
            Some(status) => new["status"] = status.clone(),
            None => {
                if let Some(map) = new.as_object_mut() {
                    map.remove("status");
                }
            }
        }
    }
    let old_metadata = old.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let metadata = objects::metadata_mut(&mut new);
    for owned in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "namespace",
        "name",
    ] {
        match old_metadata.get(owned) {
            Some(value) => {
                metadata.insert(owned.to_string(), value.clone());
            }
            None => {
                metadata.remove(owned);
            }
        }
    }
    // Field ownership is the server's to keep: what the client sent is ignored.
    match old_metadata.get("managedFields") {
        Some(managed) => {
            metadata.insert("managedFields".to_string(), managed.clone());
        }
        None => {
            metadata.remove("managedFields");
        }
    }
    new
}

/// Checks and stores `candidate` as the new state of `current`.
#[allow(clippy::too_many_arguments)]
async fn store_update(
    api: &Api,
    resource: &ResourceType,
    key: &str,
    current: &Stored,
    candidate: Value,
    subresource: Option<&str>,
    options: &WriteOptions,
    warnings: &mut Vec<String>,
) -> Result<Option<Value>, ApiError> {
    let name = name_of(&current.object).to_string();
    let mut candidate = candidate;
    check_type(resource, &mut candidate)?;
    let given_name = name_of(&candidate);
    if !given_name.is_empty() && given_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({given_name}) does not match the name on the URL ({name})"
        )));
    }
    let validation = if options.field_validation.is_empty() {
        "Warn"
    } else {
        &options.field_validation
    };
    let candidate = decode_typed(resource, candidate, validation, warnings)?;
    let mut merged = merge_update(resource, &current.object, candidate, subresource);
    match (&options.field_manager, &options.applied) {
        (Some(manager), Some(applied)) => {
            merged = crate::managed::apply(
                &current.object,
                merged,
                applied,
                manager,
                &resource.api_version(),
                options.force,
                object_schema(resource),
            )
            .map_err(|conflicts| crate::managed::conflict_error(&conflicts))?;
        }
        (Some(manager), None) => crate::managed::record_update(
            Some(&current.object),
            &mut merged,
            manager,
            &resource.api_version(),
            subresource,
            object_schema(resource),
        ),
        _ => {}
    }
    kinds::apply_defaults(resource, &mut merged);
    objects::drop_empty_metadata(&mut merged);
    // A change to anything but metadata and status is a new generation;
    // compared after defaulting, so an update that only restates defaults
    // (a repeated apply) changes nothing.
    if objects::spec_part(&current.object) != objects::spec_part(&merged) {
        let generation = current
            .object
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        objects::metadata_mut(&mut merged).insert("generation".to_string(), json!(generation + 1));
    }
    let causes = validation::validate(resource, &merged);
    if !causes.is_empty() {
        return Err(ApiError::invalid(resource, &name, causes));
    }
    crate::allocate::on_update(resource, &current.object, &mut merged)?;
    // A finalizer list emptied on an object being deleted completes the delete.
    let finishing = merged.pointer("/metadata/deletionTimestamp").is_some()
        && merged
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_none_or(|finalizers| finalizers.is_empty());
    if options.dry_run {
        return Ok(Some(merged));
    }
    if finishing {
        return match storage::delete_if(api.kv.as_ref(), key, current.mod_revision).await? {
            Written::Done(_) => {
                crate::registry_sync::after_delete(api, resource, &merged);
                Ok(Some(merged))
            }
            Written::Lost => Ok(None),
        };
    }
    let unchanged = {
        let mut before = current.object.clone();
        let mut after = merged.clone();
        for object in [&mut before, &mut after] {
            if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
                metadata.remove("resourceVersion");
                metadata.remove("managedFields");
            }
        }
        before == after
    };
    if unchanged {
        // kube-apiserver writes nothing for a no-op update.
        return Ok(Some(current.object.clone()));
    }
    match write_if(api, resource, key, &merged, current.mod_revision).await? {
        Written::Done(revision) => {
            objects::metadata_mut(&mut merged)
                .insert("resourceVersion".to_string(), json!(revision.to_string()));
            crate::registry_sync::after_write(api, resource, &merged);
            Ok(Some(merged))
        }
        Written::Lost => Ok(None),
    }
}

async fn update(
    api: &Api,
    request: &Request<'_>,
    name: &str,
) -> Result<hyper::Response<Body>, ApiError> {
    let content_type = header(request.parts, http::header::CONTENT_TYPE);
    let candidate = body::decode_object(&content_type, request.body)?;
    let key = key(request, name);
    let Some(current) = read(api, request.resource, &key).await? else {
        return Err(ApiError::not_found(request.resource, name));
    };
    let given_version = candidate
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if !given_version.is_empty() && given_version != current.mod_revision.to_string() {
        return Err(ApiError::conflict(request.resource, name));
    }
    let options = WriteOptions::from_request(request);
    let mut warnings = Vec::new();
    match store_update(
        api,
        request.resource,
        &key,
        &current,
        candidate,
        request.subresource,
        &options,
        &mut warnings,
    )
    .await?
    {
        Some(updated) => Ok(with_warnings(
            answer_object(request, 200, updated),
            &warnings,
        )),
        None => Err(ApiError::conflict(request.resource, name)),
    }
}

/// Applies a patch of `content_type` to `current`.
fn apply_patch(
    resource: &ResourceType,
    content_type: &str,
    current: &Value,
    patch: &[u8],
) -> Result<Value, ApiError> {
    let invalid_patch = |error: String| ApiError {
        code: 422,
        reason: "Invalid",
        message: error,
        details: None,
    };
    match body::media_type(content_type).as_str() {
        "application/json-patch+json" => {
            let operations = body::decode_json(patch)?;
            let mut patched = current.clone();
            apimachinery::patch::json_patch(&mut patched, &operations)
                .map_err(|error| invalid_patch(error.to_string()))?;
            Ok(patched)
        }
        "application/merge-patch+json" => {
            let merge = body::decode_json(patch)?;
            let mut patched = current.clone();
            apimachinery::patch::merge_patch(&mut patched, &merge);
            Ok(patched)
        }
        "application/strategic-merge-patch+json" => {
            let merge = body::decode_json(patch)?;
            if resource.shape == crate::registry::Shape::Custom {
                return Err(ApiError::unsupported_media_type(
                    "application/strategic-merge-patch+json",
                ));
            }
            apimachinery::patch::strategic_merge_patch_for_kind(
                current,
                &merge,
                crate::patch_schema(),
                &resource.api_version(),
                &resource.kind,
            )
            .map_err(|error| match error {
                apimachinery::patch::PatchError::StrategicMergeUnsupported { .. } => {
                    ApiError::unsupported_media_type("application/strategic-merge-patch+json")
                }
                other => invalid_patch(other.to_string()),
            })
        }
        "application/apply-patch+yaml" | "application/apply-patch+cbor" => {
            let applied = body::decode_yaml(patch)?;
            crate::apply::merge_applied(resource, current, &applied)
        }
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

async fn patch(
    api: &Api,
    request: &Request<'_>,
    name: &str,
) -> Result<hyper::Response<Body>, ApiError> {
    let content_type = header(request.parts, http::header::CONTENT_TYPE);
    let media = body::media_type(&content_type);
    let is_apply = media.starts_with("application/apply-patch");
    let mut options = WriteOptions::from_request(request);
    if is_apply {
        if options.field_manager.is_none() {
            return Err(ApiError::bad_request(
                "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
            ));
        }
        options.operation = "Apply";
        options.applied = Some(crate::apply::strip_nulls(body::decode_yaml(request.body)?));
    }
    let key = key(request, name);
    let mut warnings = Vec::new();
    for _ in 0..WRITE_ATTEMPTS {
        let Some(current) = read(api, request.resource, &key).await? else {
            if is_apply && request.subresource.is_none() {
                // Server-side apply creates what does not exist.
                let object = body::decode_yaml(request.body)?;
                let mut object = crate::apply::strip_nulls(object);
                if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut)
                    && metadata.get("name").is_none()
                {
                    metadata.insert("name".to_string(), json!(name));
                }
                if name_of(&object) != name {
                    return Err(ApiError::bad_request(format!(
                        "the name of the object ({}) does not match the name on the URL ({name})",
                        name_of(&object)
                    )));
                }
                let (created, warnings) = create_object_with_warnings(
                    api,
                    request.resource,
                    request.namespace,
                    object,
                    &options,
                )
                .await?;
                return Ok(with_warnings(
                    answer_object(request, 201, created),
                    &warnings,
                ));
            }
            return Err(ApiError::not_found(request.resource, name));
        };
        let patched = apply_patch(
            request.resource,
            &content_type,
            &current.object,
            request.body,
        )?;
        // A resourceVersion in the patch is a precondition.
        let wanted_version = patched
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if !wanted_version.is_empty() && wanted_version != current.mod_revision.to_string() {
            return Err(ApiError::conflict(request.resource, name));
        }
        if let Some(updated) = store_update(
            api,
            request.resource,
            &key,
            &current,
            patched,
            request.subresource,
            &options,
            &mut warnings,
        )
        .await?
        {
            return Ok(with_warnings(
                answer_object(request, 200, updated),
                &warnings,
            ));
        }
    }
    Err(ApiError::conflict(request.resource, name))
}

/// The autoscaling/v1 Scale of a Deployment, ReplicaSet or StatefulSet.
fn scale_of(object: &Value) -> Result<Value, ApiError> {
    let metadata = object.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let selector = object
        .pointer("/spec/selector")
        .and_then(|selector| apimachinery::labels::Selector::from_label_selector(selector).ok())
        .map(|selector| selector.to_string())
        .unwrap_or_default();
    let mut scale_metadata = json!({});
    for field in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(value) = metadata.get(field) {
            scale_metadata[field] = value.clone();
        }
    }
    Ok(json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": scale_metadata,
        "spec": {"replicas": object.pointer("/spec/replicas").cloned().unwrap_or(json!(0))},
        "status": {
            "replicas": object.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector,
        },
    }))
}

async fn update_scale(
    api: &Api,
    request: &Request<'_>,
    name: &str,
    is_patch: bool,
) -> Result<hyper::Response<Body>, ApiError> {
    let key = key(request, name);
    let content_type = header(request.parts, http::header::CONTENT_TYPE);
    for _ in 0..WRITE_ATTEMPTS {
        let Some(current) = read(api, request.resource, &key).await? else {
            return Err(ApiError::not_found(request.resource, name));
        };
        let scale = scale_of(&current.object)?;
        let wanted = if is_patch {
            let media = body::media_type(&content_type);
            let patch = body::decode_json(request.body)?;
            let mut patched = scale.clone();
            match media.as_str() {
                "application/json-patch+json" => {
                    apimachinery::patch::json_patch(&mut patched, &patch).map_err(|error| {
                        ApiError {
                            code: 422,
                            reason: "Invalid",
                            message: error.to_string(),
                            details: None,
                        }
                    })?
                }
                "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
                    apimachinery::patch::merge_patch(&mut patched, &patch)
                }
                other => return Err(ApiError::unsupported_media_type(other)),
            }
            patched
        } else {
            body::decode_object(&content_type, request.body)?
        };
        let given_version = wanted
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !given_version.is_empty() && given_version != current.mod_revision.to_string() {
            return Err(ApiError::conflict(request.resource, name));
        }
        let replicas = wanted
            .pointer("/spec/replicas")
            .cloned()
            .unwrap_or(json!(0));
        if replicas.as_i64().is_none_or(|count| count < 0) {
            return Err(ApiError::invalid(
                request.resource,
                name,
                vec![crate::status::Cause::invalid(
                    "spec.replicas",
                    &replicas,
                    "must be greater than or equal to 0",
                )],
            ));
        }
        let mut candidate = current.object.clone();
        candidate["spec"]["replicas"] = replicas;
        let options = WriteOptions::from_request(request);
        let mut warnings = Vec::new();
        if let Some(updated) = store_update(
            api,
            request.resource,
            &key,
            &current,
            candidate,
            None,
            &options,
            &mut warnings,
        )
        .await?
        {
            return Ok(respond::json(200, &scale_of(&updated)?));
        }
    }
    Err(ApiError::conflict(request.resource, name))
}

/// `pods/binding`: the scheduler's way to place a pod on a node.
async fn bind(
    api: &Api,
    request: &Request<'_>,
    name: &str,
) -> Result<hyper::Response<Body>, ApiError> {
    let content_type = header(request.parts, http::header::CONTENT_TYPE);
    let binding = body::decode_object(&content_type, request.body)?;
    let node = binding
        .pointer("/target/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if node.is_empty() {
        return Err(ApiError::invalid(
            request.resource,
            name,
            vec![crate::status::Cause::required("target.name")],
        ));
    }
    let key = key(request, name);
    let Some(current) = storage::get(api.kv.as_ref(), &key).await? else {
        return Err(ApiError::not_found(request.resource, name));
    };
    let bound = current
        .object
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !bound.is_empty() {
        return Err(ApiError::conflict_message(
            request.resource,
            name,
            &format!("pod {name} is already assigned to node \"{bound}\""),
        ));
    }
    let mut candidate = current.object.clone();
    candidate["spec"]["nodeName"] = json!(node);
    if !request.query.dry_run {
        match write_if(
            api,
            request.resource,
            &key,
            &candidate,
            current.mod_revision,
        )
        .await?
        {
            Written::Done(_) => {}
            Written::Lost => return Err(ApiError::conflict(request.resource, name)),
        }
    }
    Ok(respond::json(
        201,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}

/// `pods/eviction`: a delete that a PodDisruptionBudget may refuse.
async fn evict(
    api: &Api,
    request: &Request<'_>,
    name: &str,
) -> Result<hyper::Response<Body>, ApiError> {
    let key = key(request, name);
    if storage::get(api.kv.as_ref(), &key).await?.is_none() {
        return Err(ApiError::not_found(request.resource, name));
    }
    if let Some(refusal) = crate::gc::eviction_refusal(api, request.namespace, name).await? {
        return Err(ApiError::too_many_requests(refusal));
    }
    delete(api, request, name).await?;
    Ok(respond::json(
        201,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}

/// DeleteOptions from the body (kubectl) or the query (the Python client).
struct DeleteOptions {
    propagation: String,
    grace_period_seconds: Option<i64>,
    precondition_uid: Option<String>,
    precondition_version: Option<String>,
    dry_run: bool,
}

fn delete_options(request: &Request<'_>) -> Result<DeleteOptions, ApiError> {
    let content_type = header(request.parts, http::header::CONTENT_TYPE);
    let from_body = if request.body.is_empty() {
        Value::Null
    } else {
        body::decode_object(&content_type, request.body)?
    };
    let orphan = from_body
        .get("orphanDependents")
        .and_then(Value::as_bool)
        .or(request.query.orphan_dependents);
    let propagation = from_body
        .get("propagationPolicy")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| request.query.propagation_policy.clone())
        .unwrap_or_else(|| {
            if orphan == Some(true) {
                "Orphan".to_string()
            } else {
                "Background".to_string()
            }
        });
    if !matches!(propagation.as_str(), "Background" | "Foreground" | "Orphan") {
        return Err(ApiError::bad_request(format!(
            "DeleteOptions.meta.k8s.io \"\" is invalid: propagationPolicy: Unsupported value: \"{propagation}\": supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\""
        )));
    }
    let dry_run = request.query.dry_run
        || from_body
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|values| values.iter().any(|value| value == "All"));
    Ok(DeleteOptions {
        propagation,
        grace_period_seconds: from_body
            .get("gracePeriodSeconds")
            .and_then(Value::as_i64)
            .or(request.query.grace_period_seconds),
        precondition_uid: from_body
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_string),
        precondition_version: from_body
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string),
        dry_run,
    })
}

async fn delete(
    api: &Api,
    request: &Request<'_>,
    name: &str,
) -> Result<hyper::Response<Body>, ApiError> {
    let options = delete_options(request)?;
    let key = key(request, name);
    for _ in 0..WRITE_ATTEMPTS {
        let Some(current) = storage::get(api.kv.as_ref(), &key).await? else {
            return Err(ApiError::not_found(request.resource, name));
        };
        let uid = objects::uid_of(&current.object).to_string();
        if let Some(wanted) = &options.precondition_uid
            && *wanted != uid
        {
            return Err(ApiError::conflict_message(
                request.resource,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {wanted}, UID in object meta: {uid}"
                ),
            ));
        }
        if let Some(wanted) = &options.precondition_version
            && *wanted != current.mod_revision.to_string()
        {
            return Err(ApiError::conflict_message(
                request.resource,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {wanted}, ResourceVersion in object meta: {}",
                    current.mod_revision
                ),
            ));
        }
        match crate::gc::delete_one(
            api,
            request.resource,
            &key,
            &current,
            &options.propagation,
            options.grace_period_seconds,
            options.dry_run,
        )
        .await?
        {
            crate::gc::Deleted::Gone if returns_deleted_object(request.resource) => {
                return Ok(respond::json(
                    200,
                    &crate::convert::present(request.resource, current.object),
                ));
            }
            crate::gc::Deleted::Gone => {
                return Ok(respond::json(
                    200,
                    &success_status(request.resource, name, &uid),
                ));
            }
            crate::gc::Deleted::Pending(object) => {
                return Ok(respond::json(
                    200,
                    &crate::convert::present(request.resource, object),
                ));
            }
            crate::gc::Deleted::Raced => continue,
        }
    }
    Err(ApiError::conflict(request.resource, name))
}

/// The kinds whose delete answers with the deleted object rather than a
/// `Status` (kube-apiserver's `ReturnDeletedObject` stores).
fn returns_deleted_object(resource: &ResourceType) -> bool {
    resource.group.is_empty()
        && matches!(resource.kind.as_str(), "Pod" | "Service" | "ServiceAccount")
}

async fn delete_collection(
    api: &Api,
    request: &Request<'_>,
) -> Result<hyper::Response<Body>, ApiError> {
    let options = delete_options(request)?;
    let (items, revision, _) =
        read_list(api, request.resource, request.namespace, request.query).await?;
    let mut deleted = Vec::new();
    for item in items {
        match crate::gc::delete_one(
            api,
            request.resource,
            &item.key,
            &item,
            &options.propagation,
            options.grace_period_seconds,
            options.dry_run,
        )
        .await?
        {
            crate::gc::Deleted::Gone => deleted.push(item.object),
            crate::gc::Deleted::Pending(object) => deleted.push(object),
            crate::gc::Deleted::Raced => {}
        }
    }
    Ok(respond::json(
        200,
        &list_object(
            request.resource,
            json!({"resourceVersion": revision.to_string()}),
            deleted,
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_continue_token_names_the_revision_and_the_key_to_go_on_after() {
        let token = encode_continue(42, "/registry/pods/default/p");
        let (revision, start) = decode_continue(&token).unwrap();
        assert_eq!(revision, 42);
        // The next page starts just after the last key given.
        assert_eq!(start, "/registry/pods/default/p\u{0}");
        assert!(start.as_str() > "/registry/pods/default/p");
        let refused = decode_continue("not a token").unwrap_err();
        assert_eq!(refused.code, 400);
    }

    #[test]
    fn unsupported_field_selectors_are_refused_with_kube_apiservers_text() {
        let registry = crate::registry::Registry::new();
        let pods = registry.find("", "v1", "pods").unwrap();
        let supported =
            Query::parse("fieldSelector=spec.nodeName%3Dn1,status.phase!%3DRunning").unwrap();
        assert!(Filter::from_query(&pods, &supported).is_ok());
        let unsupported = Query::parse("fieldSelector=spec.bogus%3Dx").unwrap();
        let error = Filter::from_query(&pods, &unsupported).err().unwrap();
        assert_eq!(error.message, "field label not supported: spec.bogus");
        let bad_label = Query::parse("labelSelector=a%20in%20b").unwrap();
        let error = Filter::from_query(&pods, &bad_label).err().unwrap();
        assert_eq!(
            error.message,
            "unable to parse requirement: found 'b' expected: '('"
        );
    }

    #[test]
    fn an_update_keeps_the_servers_metadata_and_the_status_subresources_status() {
        let registry = crate::registry::Registry::new();
        let deployments = registry.find("apps", "v1", "deployments").unwrap();
        let old = json!({"metadata": {"name": "d", "uid": "u1", "creationTimestamp": "t", "generation": 4},
            "spec": {"replicas": 1}, "status": {"replicas": 1}});
        let new = json!({"metadata": {"name": "d", "uid": "forged", "generation": 99},
            "spec": {"replicas": 2}, "status": {"replicas": 50}});
        let merged = merge_update(&deployments, &old, new.clone(), None);
        assert_eq!(merged["metadata"]["uid"], "u1");
        assert_eq!(merged["metadata"]["generation"], 4);
        assert_eq!(merged["metadata"]["creationTimestamp"], "t");
        assert_eq!(
            merged["status"]["replicas"], 1,
            "status is the status subresource's"
        );
        assert_eq!(merged["spec"]["replicas"], 2);
        let status_only = merge_update(&deployments, &old, new, Some("status"));
        assert_eq!(status_only["status"]["replicas"], 50);
        assert_eq!(
            status_only["spec"]["replicas"], 1,
            "a status update changes only status"
        );
    }
}
