//! Watches: `?watch=true` as a chunked stream of JSON lines, one event per
//! line and each flushed, from a resourceVersion (or from the current state,
//! sent as ADDED events first), with selectors applied, bookmarks when
//! asked, the watch-list protocol (`sendInitialEvents=true`), and a 410
//! `Expired` ERROR event when the version asked for was compacted.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::{Value, json};

use std::sync::Arc;

use futures::StreamExt as _;

use crate::cache::{Change, ChangeKind};
use crate::handlers::{Filter, Request, list_prefix};
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
                    vec![object],
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
    let cache = api.caches.get(&resource.key_prefix());
    let mut encoder = Encoder {
        resource: std::sync::Arc::clone(&resource),
        table_version: table::wants_table(&accept),
        include_object: query.include_object.clone(),
        headers_sent: false,
    };
    let (sender, receiver) = tokio::sync::mpsc::channel::<Bytes>(EVENT_BUFFER);
    let after = if initial_state { None } else { Some(asked) };
    let (mut source, initial, backlog, revision) = match cache.subscribe(after).await {
        Ok(subscription) => {
            // The current state, read from the store at the very revision
            // the cache's changes continue from.
            let initial = if initial_state {
                let end = client::prefix_end(prefix.as_bytes());
                storage::page(
                    api.kv.as_ref(),
                    prefix.as_bytes(),
                    &end,
                    subscription.revision,
                    0,
                    true,
                )
                .await?
                .objects
            } else {
                Vec::new()
            };
            (
                Source::Cache(subscription.live),
                initial,
                subscription.backlog,
                subscription.revision,
            )
        }
        // Older than the cache's window (a list read before the cache
        // started, say): the store's history may still have it.
        Err(too_old) => {
            tracing::debug!(
                asked,
                oldest = too_old.oldest,
                "watch older than the cache's window; watching the store"
            );
            let updates = api
                .kv
                .watch(client::WatchRequest {
                    key: prefix.as_bytes().to_vec(),
                    range_end: client::prefix_end(prefix.as_bytes()),
                    start_revision: asked + 1,
                    prev_kv: true,
                })
                .await?;
            (Source::Store(updates), Vec::new(), Vec::new(), asked)
        }
    };
    let timeout = query
        .timeout_seconds
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TIMEOUT);
    let bookmarks = query.allow_watch_bookmarks;
    tokio::spawn(async move {
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut last_revision = revision;
        let mut lines = Vec::new();
        for item in initial {
            let object = crate::convert::present(&resource, item.object);
            if filter.matches(&resource, &object) {
                lines.push(encoder.line("ADDED", object));
            }
        }
        if watch_list {
            lines.push(encoder.bookmark(revision, true));
        }
        for change in backlog {
            if let Some(line) = change_line(&resource, &filter, &mut encoder, &prefix, &change) {
                lines.push(line);
            }
        }
        for line in lines {
            if sender.send(line).await.is_err() {
                return;
            }
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
                next = source.next() => {
                    let changes = match next {
                        Next::Changes(changes) => changes,
                        Next::Progress(progress) => {
                            last_revision = last_revision.max(progress);
                            continue;
                        }
                        Next::Expired(compacted) => {
                            let _ = sender
                                .send(encoder.line("ERROR", expired_event(asked, compacted)))
                                .await;
                            return;
                        }
                        Next::End => return,
                    };
                    for change in changes {
                        if change.revision <= revision {
                            continue;
                        }
                        last_revision = last_revision.max(change.revision);
                        if let Some(line) = change_line(&resource, &filter, &mut encoder, &prefix, &change)
                            && sender.send(line).await.is_err()
                        {
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

/// Where a watch's changes come from: the resource's cache, or (for a
/// version older than the cache's window) a store watch of its own.
enum Source {
    Cache(tokio::sync::broadcast::Receiver<Arc<Change>>),
    Store(client::WatchStream),
}

enum Next {
    Changes(Vec<Arc<Change>>),
    Progress(i64),
    /// The version asked for was compacted away: 410.
    Expired(i64),
    /// The watch ends; the client re-watches.
    End,
}

impl Source {
    async fn next(&mut self) -> Next {
        match self {
            Source::Cache(live) => match live.recv().await {
                Ok(change) if change.kind == ChangeKind::Resync => Next::End,
                Ok(change) => Next::Changes(vec![change]),
                // Too slow, or the cache is gone: the client re-watches.
                Err(_) => Next::End,
            },
            Source::Store(updates) => match updates.next().await {
                Some(Ok(client::WatchUpdate::Events { events, .. })) => Next::Changes(
                    crate::cache::changes_from(events)
                        .into_iter()
                        .map(Arc::new)
                        .collect(),
                ),
                Some(Ok(client::WatchUpdate::Progress { revision })) => Next::Progress(revision),
                Some(Err(client::ClientError::Compacted { compact_revision })) => {
                    Next::Expired(compact_revision)
                }
                _ => Next::End,
            },
        }
    }
}

/// A cached change as this watcher sees it: selectors decide whether it is
/// an add, a modification or a removal, or nothing at all.
fn change_line(
    resource: &ResourceType,
    filter: &Filter,
    encoder: &mut Encoder,
    prefix: &str,
    change: &Change,
) -> Option<Bytes> {
    if !change.key.starts_with(prefix) {
        return None;
    }
    if crate::convert::converts(resource) {
        let object = crate::convert::present(resource, (*change.object()?).clone());
        let previous = change
            .previous()
            .map(|previous| crate::convert::present(resource, (*previous).clone()));
        let converted = Change::from_value(
            change.revision,
            change.key.clone(),
            change.kind,
            object,
            previous,
        );
        return event_line(resource, filter, encoder, &converted);
    }
    event_line(resource, filter, encoder, change)
}

fn event_line(
    resource: &ResourceType,
    filter: &Filter,
    encoder: &mut Encoder,
    change: &Change,
) -> Option<Bytes> {
    let now_matches = filter.matches_lazily(resource, &change.labels, || change.object());
    let event_type = match change.kind {
        ChangeKind::Deleted if now_matches => "DELETED",
        ChangeKind::Added if now_matches => "ADDED",
        ChangeKind::Modified => {
            let before = change.previous_labels.as_ref().is_some_and(|labels| {
                filter.matches_lazily(resource, labels, || change.previous())
            });
            match (before, now_matches) {
                (true, true) => "MODIFIED",
                (false, true) => "ADDED",
                (true, false) => "DELETED",
                (false, false) => return None,
            }
        }
        _ => return None,
    };
    if encoder.table_version.is_none() {
        // The plain form: the object's JSON, encoded once for every watcher.
        let mut line = Vec::with_capacity(change.object_json.len() + 32);
        line.extend_from_slice(b"{\"type\":\"");
        line.extend_from_slice(event_type.as_bytes());
        line.extend_from_slice(b"\",\"object\":");
        line.extend_from_slice(&change.object_json);
        line.extend_from_slice(b"}\n");
        return Some(Bytes::from(line));
    }
    Some(encoder.line(event_type, (*change.object()?).clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::Query;
    use serde_json::json;

    fn pod(labels: Value, revision: i64) -> Arc<Value> {
        Arc::new(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default", "labels": labels, "resourceVersion": revision.to_string()}}))
    }

    fn change(kind: ChangeKind, now: Arc<Value>, before: Option<Arc<Value>>) -> Change {
        Change::from_value(
            7,
            "/registry/pods/default/p".into(),
            kind,
            (*now).clone(),
            before.map(|before| (*before).clone()),
        )
    }

    /// The event type each line carries, or None when the watcher sees nothing.
    fn seen(selector: &str, change: &Change) -> Option<String> {
        let registry = crate::registry::Registry::new();
        let resource = registry.find("", "v1", "pods").unwrap();
        let query = Query::parse(&format!("labelSelector={selector}")).unwrap();
        let filter = Filter::from_query(&resource, &query).unwrap();
        let mut encoder = Encoder {
            resource: Arc::clone(&resource),
            table_version: None,
            include_object: None,
            headers_sent: false,
        };
        let line = change_line(
            &resource,
            &filter,
            &mut encoder,
            "/registry/pods/default/",
            change,
        )?;
        assert!(line.ends_with(b"\n"), "every event is one line");
        let event: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(event["object"]["metadata"]["name"], "p");
        Some(event["type"].as_str().unwrap().to_string())
    }

    #[test]
    fn a_modification_is_seen_through_the_watchers_selector() {
        let web = pod(json!({"app": "web"}), 7);
        let db = pod(json!({"app": "db"}), 6);
        let stays = change(
            ChangeKind::Modified,
            web.clone(),
            Some(pod(json!({"app": "web"}), 6)),
        );
        let arrives = change(ChangeKind::Modified, web.clone(), Some(db.clone()));
        let leaves = change(
            ChangeKind::Modified,
            pod(json!({"app": "db"}), 7),
            Some(pod(json!({"app": "web"}), 6)),
        );
        let elsewhere = change(ChangeKind::Modified, pod(json!({"app": "db"}), 7), Some(db));
        assert_eq!(seen("app=web", &stays).as_deref(), Some("MODIFIED"));
        assert_eq!(seen("app=web", &arrives).as_deref(), Some("ADDED"));
        assert_eq!(seen("app=web", &leaves).as_deref(), Some("DELETED"));
        assert_eq!(seen("app=web", &elsewhere), None);
        assert_eq!(
            seen("", &change(ChangeKind::Deleted, web.clone(), None)).as_deref(),
            Some("DELETED")
        );
        assert_eq!(
            seen("app!=web", &change(ChangeKind::Added, web, None)),
            None
        );
    }

    #[test]
    fn a_change_outside_the_watched_namespace_is_not_seen() {
        let mut other = change(ChangeKind::Added, pod(json!({}), 7), None);
        other.key = "/registry/pods/other/p".into();
        assert_eq!(seen("", &other), None);
    }

    #[test]
    fn expired_events_carry_kube_apiservers_status() {
        let status = expired_event(5, 10);
        assert_eq!(status["code"], 410);
        assert_eq!(status["reason"], "Expired");
        assert_eq!(status["message"], "too old resource version: 5 (10)");
    }
}
