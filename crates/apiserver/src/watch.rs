//! Watches: `?watch=true` as a chunked stream of JSON lines, one event per
//! line and each flushed, from a resourceVersion (or from the current state,
//! sent as ADDED events first), with selectors applied, bookmarks when
//! asked, the watch-list protocol (`sendInitialEvents=true`), and a 410
//! `Expired` ERROR event when the version asked for was compacted.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use http_body_util::BodyExt;
use serde_json::{Value, json};

use crate::handlers::{Filter, Request, list_prefix};
use crate::objects;
use crate::registry::ResourceType;
use crate::respond;
use crate::server::Body;
use crate::status::ApiError;
use crate::storage;
use crate::table;
use crate::{Api, header};

/// How long a watch with no `timeoutSeconds` stays open (kube-apiserver
/// picks 30–60 minutes); clients re-watch when it ends.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(45 * 60);
const BOOKMARK_EVERY: Duration = Duration::from_secs(60);
/// Events buffered for a slow client before the watch waits for it.
const EVENT_BUFFER: usize = 256;

/// How one watch renders its events.
struct Encoder {
    resource: std::sync::Arc<ResourceType>,
    table_version: Option<&'static str>,
    include_object: Option<String>,
    headers_sent: bool,
}

impl Encoder {
    fn line(&mut self, event_type: &str, object: Value) -> Bytes {
        let object = match self.table_version {
            Some(version) if event_type != "BOOKMARK" && event_type != "ERROR" => {
                let revision = object
                    .pointer("/metadata/resourceVersion")
                    .cloned()
                    .unwrap_or(Value::Null);
                let rendered = table::table(
                    &self.resource,
                    &[object],
                    self.include_object.as_deref(),
                    version,
                    !self.headers_sent,
                    &json!({"resourceVersion": revision}),
                );
                self.headers_sent = true;
                rendered
            }
            _ => object,
        };
        let mut bytes =
            serde_json::to_vec(&json!({"type": event_type, "object": object})).unwrap_or_default();
        bytes.push(b'\n');
        Bytes::from(bytes)
    }

    fn bookmark(&mut self, revision: i64, initial_events_end: bool) -> Bytes {
        let mut metadata =
            json!({"resourceVersion": revision.to_string(), "creationTimestamp": null});
        if initial_events_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let object = json!({
            "kind": self.resource.kind,
            "apiVersion": self.resource.api_version(),
            "metadata": metadata,
        });
        self.line("BOOKMARK", object)
    }
}

fn expired_event(asked: i64, compacted: i64) -> Value {
    let mut status =
        ApiError::expired(format!("too old resource version: {asked} ({compacted})")).to_status();
    if let Some(map) = status.as_object_mut() {
        map.remove("details");
    }
    status
}

pub async fn serve(api: &Api, request: &Request<'_>) -> hyper::Response<Body> {
    match start(api, request).await {
        Ok(response) => response,
        Err(error) => respond::error(&error),
    }
}

async fn start(api: &Api, request: &Request<'_>) -> Result<hyper::Response<Body>, ApiError> {
    let resource = std::sync::Arc::clone(request.resource);
    let query = request.query;
    let filter = Filter::from_query(&resource, query)?;
    let accept = header(request.parts, http::header::ACCEPT);
    let version_text = query.resource_version.clone().unwrap_or_default();
    let watch_list = query.send_initial_events == Some(true);
    if watch_list && query.resource_version_match.as_deref() != Some("NotOlderThan") {
        return Err(ApiError {
            code: 422,
            reason: "Invalid",
            message: "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan".to_string(),
            details: None,
        });
    }
    let initial_state = watch_list
        || (query.send_initial_events.is_none()
            && (version_text.is_empty() || version_text == "0"));
    let asked: i64 = if version_text.is_empty() {
        0
    } else {
        version_text.parse().map_err(|_| {
            ApiError::bad_request(format!("invalid resource version: {version_text:?}"))
        })?
    };
    let prefix = list_prefix(&resource, request.namespace);
    let kv = std::sync::Arc::clone(&api.kv);
    let mut initial = Vec::new();
    let start_revision = if initial_state {
        let (items, revision) = storage::list(kv.as_ref(), &prefix, 0, false).await?;
        initial = items
            .into_iter()
            .filter(|item| filter.matches(&resource, &item.object))
            .map(|item| item.object)
            .collect();
        revision
    } else {
        asked
    };
    let mut encoder = Encoder {
        resource: std::sync::Arc::clone(&resource),
        table_version: table::wants_table(&accept),
        include_object: query.include_object.clone(),
        headers_sent: false,
    };
    let updates = kv
        .watch(client::WatchRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: client::prefix_end(prefix.as_bytes()),
            start_revision: start_revision + 1,
            prev_kv: true,
        })
        .await?;
    let timeout = query
        .timeout_seconds
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TIMEOUT);
    let bookmarks = query.allow_watch_bookmarks;
    let (sender, receiver) = tokio::sync::mpsc::channel::<Bytes>(EVENT_BUFFER);
    tokio::spawn(async move {
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut updates = updates;
        let mut last_revision = start_revision;
        for object in initial {
            if sender.send(encoder.line("ADDED", object)).await.is_err() {
                return;
            }
        }
        if watch_list
            && sender
                .send(encoder.bookmark(start_revision, true))
                .await
                .is_err()
        {
            return;
        }
        let mut ticker = tokio::time::interval(BOOKMARK_EVERY);
        ticker.tick().await;
        loop {
            tokio::select! {
                () = &mut deadline => return,
                () = sender.closed() => return,
                _ = ticker.tick(), if bookmarks => {
                    if sender.send(encoder.bookmark(last_revision, false)).await.is_err() {
                        return;
                    }
                }
                update = updates.next() => {
                    let lines = match update {
                        None => return,
                        Some(Err(client::ClientError::Compacted { compact_revision })) => {
                            let _ = sender
                                .send(encoder.line("ERROR", expired_event(start_revision, compact_revision)))
                                .await;
                            return;
                        }
                        Some(Err(error)) => {
                            tracing::debug!(%error, "watch ended by the store");
                            return;
                        }
                        Some(Ok(client::WatchUpdate::Progress { revision })) => {
                            last_revision = last_revision.max(revision);
                            continue;
                        }
                        Some(Ok(client::WatchUpdate::Events { revision, events })) => {
                            last_revision = last_revision.max(revision);
                            events_to_lines(&resource, &filter, &mut encoder, events)
                        }
                    };
                    for line in lines {
                        if sender.send(line).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    });
    let stream = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|bytes| {
            (
                Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(bytes)),
                receiver,
            )
        })
    });
    let body = BodyExt::boxed(http_body_util::StreamBody::new(stream));
    Ok(hyper::Response::builder()
        .status(200)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header("Cache-Control", "no-cache, private")
        .body(body)
        .unwrap_or_else(|_| hyper::Response::new(respond::full(Bytes::new()))))
}

/// Store events as watch events: selectors decide whether a change is seen
/// as an add, a modification or a removal.
fn events_to_lines(
    resource: &ResourceType,
    filter: &Filter,
    encoder: &mut Encoder,
    events: Vec<proto::mvccpb::Event>,
) -> Vec<Bytes> {
    use proto::mvccpb::event::EventType;
    let mut lines = Vec::new();
    for event in events {
        let Some(kv) = event.kv else { continue };
        let previous = event
            .prev_kv
            .as_ref()
            .and_then(|prev| objects::from_stored(&prev.value, prev.mod_revision));
        if event.r#type == EventType::Delete as i32 {
            let Some(mut object) = previous else { continue };
            if !filter.matches(resource, &object) {
                continue;
            }
            objects::metadata_mut(&mut object).insert(
                "resourceVersion".to_string(),
                Value::String(kv.mod_revision.to_string()),
            );
            lines.push(encoder.line("DELETED", object));
            continue;
        }
        let Some(object) = objects::from_stored(&kv.value, kv.mod_revision) else {
            continue;
        };
        let now_matches = filter.matches(resource, &object);
        let before_matched = previous
            .as_ref()
            .is_some_and(|previous| filter.matches(resource, previous));
        let event_type = match (
            kv.create_revision == kv.mod_revision,
            before_matched,
            now_matches,
        ) {
            (true, _, true) => "ADDED",
            (false, true, true) => "MODIFIED",
            (false, false, true) => "ADDED",
            (false, true, false) => "DELETED",
            _ => continue,
        };
        lines.push(encoder.line(event_type, object));
    }
    lines
}
