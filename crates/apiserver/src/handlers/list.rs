//! Lists: selectors (`Filter`), pages read from the store at one revision
//! with continue tokens, and the list or Table answered.

use super::*;

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
pub(super) fn encode_continue(revision: i64, last_key: &str) -> String {
    use base64::Engine as _;
    let token = json!({"v": "meta.k8s.io/v1", "rv": revision, "start": format!("{last_key}\u{0}")});
    base64::engine::general_purpose::URL_SAFE.encode(token.to_string())
}

pub(super) fn decode_continue(token: &str) -> Result<(i64, String), ApiError> {
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

pub(super) async fn list(
    api: &Api,
    request: &Request<'_>,
) -> Result<hyper::Response<Body>, ApiError> {
    let resource = request.resource;
    let (items, revision, next) =
        read_list(api, resource, request.namespace, request.query).await?;
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if let Some(next) = &next {
        metadata["continue"] = json!(next);
        if let Some(remaining) = remaining_item_count(api, request, next).await {
            metadata["remainingItemCount"] = json!(remaining);
        }
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

/// How many objects follow a page (kube-apiserver's `remainingItemCount`):
/// a count of the keys after its continue point at its revision, so a
/// client can show a total without reading every page. Only without
/// selectors, whose matches a count of keys cannot tell.
async fn remaining_item_count(api: &Api, request: &Request<'_>, next: &str) -> Option<i64> {
    let empty = |selector: &Option<String>| selector.as_deref().is_none_or(str::is_empty);
    if !empty(&request.query.label_selector) || !empty(&request.query.field_selector) {
        return None;
    }
    // The token's start is the key just after the page's last.
    let (revision, start) = decode_continue(next).ok()?;
    let prefix = list_prefix(request.resource, request.namespace);
    let response = api
        .kv
        .range(proto::etcdserverpb::RangeRequest {
            key: start.into_bytes().into(),
            range_end: client::prefix_end(prefix.as_bytes()).into(),
            revision,
            count_only: true,
            ..Default::default()
        })
        .await
        .ok()?;
    Some(response.count)
}

/// A `<Kind>List` of `items` (moved in, not copied: `json!` would copy them).
pub(super) fn list_object(resource: &ResourceType, metadata: Value, items: Vec<Value>) -> Value {
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
}
