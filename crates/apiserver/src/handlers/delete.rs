//! Delete and deletecollection: preconditions, propagation and the object
//! or `Status` answered.

use super::list::list_object;
use super::*;

/// DeleteOptions from the body (kubectl) or the query (the Python client).
pub(super) struct DeleteOptions {
    propagation: String,
    grace_period_seconds: Option<i64>,
    precondition_uid: Option<String>,
    precondition_version: Option<String>,
    dry_run: bool,
}

pub(super) fn delete_options(request: &Request<'_>) -> Result<DeleteOptions, ApiError> {
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

pub(super) async fn delete(
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
pub(super) fn returns_deleted_object(resource: &ResourceType) -> bool {
    resource.group.is_empty()
        && matches!(resource.kind.as_str(), "Pod" | "Service" | "ServiceAccount")
}

pub(super) async fn delete_collection(
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
