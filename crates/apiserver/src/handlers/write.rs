//! Writes: create, update and patch (JSON, merge, strategic merge and
//! server-side apply), with typed decoding, defaults, validation, field
//! ownership and the conditional store write.

use super::*;

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
    pub(super) fn from_request(request: &Request<'_>) -> WriteOptions {
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
pub(super) fn object_schema(resource: &ResourceType) -> apimachinery::patch::ObjectSchema<'static> {
    crate::patch_schema()
        .for_kind(&resource.api_version(), &resource.kind)
        .unwrap_or_else(apimachinery::patch::ObjectSchema::schemaless)
}

/// Decodes with the kind's schema: a type error is a 400, unknown fields a
/// 400 under Strict and warnings under Warn.
pub(super) fn decode_typed(
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
pub(super) fn unknown_fields(
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
pub(super) fn check_type(resource: &ResourceType, object: &mut Value) -> Result<(), ApiError> {
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
pub(super) async fn namespace_state(
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

pub(super) async fn create(
    api: &Api,
    request: &Request<'_>,
) -> Result<hyper::Response<Body>, ApiError> {
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

pub(super) async fn create_object_with_warnings(
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
    if resource.group.is_empty() && resource.kind == "Pod" {
        kinds::default_tolerations(
            &mut object,
            api.config.default_not_ready_toleration_seconds,
            api.config.default_unreachable_toleration_seconds,
        );
    }
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
pub(super) fn merge_update(
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
pub(super) async fn store_update(
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
    crate::allocate::drop_type_dependent_fields(resource, &current.object, &mut merged);
    let causes = validation::validate(resource, &merged);
    if !causes.is_empty() {
        return Err(ApiError::invalid(resource, &name, causes));
    }
    crate::allocate::on_update(resource, &current.object, &mut merged)?;
    let node_ports = crate::allocate::on_update_node_ports(
        api,
        resource,
        &current.object,
        &mut merged,
        options.dry_run,
    )
    .await?;
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
        node_ports.abandon(api.kv.as_ref()).await;
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
    let stale = api
        .encrypting
        .as_ref()
        .is_some_and(|encrypting| encrypting.is_stale(key));
    if unchanged && !stale {
        // kube-apiserver writes nothing for a no-op update, unless the
        // stored value is sealed with an older key (then the write moves it
        // to the current one: the last step of a key rotation).
        node_ports.abandon(api.kv.as_ref()).await;
        return Ok(Some(current.object.clone()));
    }
    let written = write_if(api, resource, key, &merged, current.mod_revision).await;
    match written {
        Ok(Written::Done(revision)) => {
            node_ports.commit(api.kv.as_ref()).await;
            objects::metadata_mut(&mut merged)
                .insert("resourceVersion".to_string(), json!(revision.to_string()));
            crate::registry_sync::after_write(api, resource, &merged);
            Ok(Some(merged))
        }
        Ok(Written::Lost) => {
            node_ports.abandon(api.kv.as_ref()).await;
            Ok(None)
        }
        Err(error) => {
            node_ports.abandon(api.kv.as_ref()).await;
            Err(error)
        }
    }
}

pub(super) async fn update(
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
pub(super) fn apply_patch(
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

pub(super) async fn patch(
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

#[cfg(test)]
mod tests {
    use super::*;

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
