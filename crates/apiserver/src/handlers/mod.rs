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

mod delete;
mod list;
mod subresources;
mod write;

use delete::{delete, delete_collection};
use list::list;
pub use list::{Filter, list_prefix, read_list};
use subresources::{bind, evict, scale_of, update_scale};
pub use write::{WriteOptions, create_object};
use write::{create, patch, update};

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
pub(super) const WRITE_ATTEMPTS: usize = 5;

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
        (_, Some(name), Some(subresource @ ("log" | "exec" | "attach"))) => {
            crate::node_proxy::serve(api, &request, name, subresource).await
        }
        (_, Some(_), Some("portforward" | "proxy")) => Err(node_not_serving(&request)),
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
pub(super) fn deprecation_warnings(resource: &ResourceType) -> Vec<String> {
    if resource.group.is_empty() && resource.plural == "endpoints" {
        return vec![
            "v1 Endpoints is deprecated in v1.33+; use discovery.k8s.io/v1 EndpointSlice"
                .to_string(),
        ];
    }
    Vec::new()
}

pub(super) fn node_not_serving(request: &Request<'_>) -> ApiError {
    ApiError::bad_request(format!(
        "pod {} cannot be reached through {}: shoal's node agents do not serve it yet",
        request.name.unwrap_or(""),
        request.subresource.unwrap_or("")
    ))
}

/// The key of the object a request names (or of `name` in its namespace).
pub(super) fn key(request: &Request<'_>, name: &str) -> String {
    request.resource.key(request.namespace, name)
}

/// An object answer, as a Table when kubectl asked for one.
pub(super) fn answer_object(
    request: &Request<'_>,
    code: u16,
    object: Value,
) -> hyper::Response<Body> {
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
pub(crate) async fn read(
    api: &Api,
    resource: &ResourceType,
    key: &str,
) -> Result<Option<Stored>, ApiError> {
    Ok(storage::get(api.kv.as_ref(), key).await?.map(|mut stored| {
        stored.object = crate::convert::present(resource, stored.object);
        stored
    }))
}

/// Stores an object of `resource` if the key's revision is `expected`.
pub(super) async fn write_if(
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

pub(crate) async fn get(api: &Api, request: &Request<'_>, name: &str) -> Result<Value, ApiError> {
    match read(api, request.resource, &key(request, name)).await? {
        Some(stored) => Ok(stored.object),
        None => Err(ApiError::not_found(request.resource, name)),
    }
}

/// Adds `Warning` headers, as kube-apiserver sends them (`299 - "…"`).
pub(super) fn with_warnings(
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
