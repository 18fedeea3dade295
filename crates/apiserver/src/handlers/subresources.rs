//! The scale, binding and eviction subresources.

use super::write::store_update;
use super::*;

/// The autoscaling/v1 Scale of a Deployment, ReplicaSet or StatefulSet.
pub(super) fn scale_of(object: &Value) -> Result<Value, ApiError> {
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

pub(super) async fn update_scale(
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
pub(super) async fn bind(
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
pub(super) async fn evict(
    api: &Api,
    request: &Request<'_>,
    name: &str,
) -> Result<hyper::Response<Body>, ApiError> {
    let key = key(request, name);
    let _judged_alone = api.evictions.lock().await;
    let Some(pod) = storage::get(api.kv.as_ref(), &key).await? else {
        return Err(ApiError::not_found(request.resource, name));
    };
    // A pod already being deleted, or finished, disrupts nothing more.
    let phase = pod.object.pointer("/status/phase").and_then(|p| p.as_str());
    let settled = pod.object.pointer("/metadata/deletionTimestamp").is_some()
        || matches!(phase, Some("Succeeded" | "Failed"));
    if !settled
        && let Some(refusal) = crate::gc::eviction_refusal(api, request.namespace, name).await?
    {
        return Err(ApiError::too_many_requests(refusal));
    }
    delete(api, request, name).await?;
    Ok(respond::json(
        201,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}
