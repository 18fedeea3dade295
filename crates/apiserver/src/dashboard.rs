//! The API server's side of the web dashboard (the `ui` crate): the page's
//! files at `/ui/`, served to anyone (they hold no cluster data), and
//! `GET /ui/api/store`, the store's health as JSON for a page that cannot
//! speak etcd's gRPC, served only to an authenticated user like any
//! non-resource URL.

use bytes::Bytes;
use serde_json::{Value, json};

use crate::Api;
use crate::respond;
use crate::server::Body;

/// The page's file for a `GET` or `HEAD` of `/ui`, `/ui/` or `/ui/FILE`,
/// before authentication; `None` for any other request (`/ui/api/...`
/// included: that is data, and goes through authentication).
pub(crate) fn page(method: &http::Method, path: &str) -> Option<hyper::Response<Body>> {
    if method != http::Method::GET && method != http::Method::HEAD {
        return None;
    }
    if path == "/ui" {
        return Some(
            hyper::Response::builder()
                .status(301)
                .header(http::header::LOCATION, "/ui/")
                .body(respond::full(Bytes::new()))
                .unwrap_or_else(|_| hyper::Response::new(respond::full(Bytes::new()))),
        );
    }
    let file = path.strip_prefix("/ui/")?;
    if file.starts_with("api/") {
        return None;
    }
    let response = match ui::asset(file) {
        Some(asset) => hyper::Response::builder()
            .status(200)
            .header(http::header::CONTENT_TYPE, asset.content_type)
            .header("Content-Security-Policy", ui::CONTENT_SECURITY_POLICY)
            .header("X-Content-Type-Options", "nosniff")
            .header("Referrer-Policy", "no-referrer")
            .header(http::header::CACHE_CONTROL, "no-cache")
            .body(if method == http::Method::HEAD {
                respond::full(Bytes::new())
            } else {
                respond::full(Bytes::from_static(asset.bytes))
            }),
        None => hyper::Response::builder()
            .status(404)
            .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(respond::full(Bytes::from_static(b"not found\n"))),
    };
    Some(response.unwrap_or_else(|_| hyper::Response::new(respond::full(Bytes::new()))))
}

/// `GET /ui/api/store`: members, leader, revision, raft term and index, DB
/// size. What the store cannot tell now is left out and the reason given in
/// `error`: the answer is always 200, so a page shows what it can during an
/// election or with a member down.
pub(crate) async fn store(api: &Api) -> hyper::Response<Body> {
    let (members, status) = tokio::join!(api.kv.member_list(), api.kv.status());
    respond::json(200, &store_json(members, status))
}

fn store_json(
    members: Result<proto::etcdserverpb::MemberListResponse, client::ClientError>,
    status: Result<proto::etcdserverpb::StatusResponse, client::ClientError>,
) -> Value {
    let mut errors = Vec::new();
    let leader = status.as_ref().map_or(0, |status| status.leader);
    let members: Vec<Value> = match members {
        Ok(list) => list
            .members
            .iter()
            .map(|member| {
                json!({
                    "id": format!("{:x}", member.id),
                    "name": member.name,
                    "peerURLs": member.peer_ur_ls,
                    "clientURLs": member.client_ur_ls,
                    "isLearner": member.is_learner,
                    "isLeader": leader != 0 && member.id == leader,
                })
            })
            .collect(),
        Err(error) => {
            errors.push(format!("member list: {error}"));
            Vec::new()
        }
    };
    let mut answer = json!({ "members": members, "hasLeader": leader != 0 });
    match status {
        Ok(status) => {
            let header = status.header.unwrap_or_default();
            answer["memberId"] = json!(format!("{:x}", header.member_id));
            answer["leader"] = json!(format!("{:x}", status.leader));
            answer["revision"] = json!(header.revision);
            answer["raftTerm"] = json!(status.raft_term);
            answer["raftIndex"] = json!(status.raft_index);
            answer["raftAppliedIndex"] = json!(status.raft_applied_index);
            answer["dbSizeBytes"] = json!(status.db_size);
            answer["dbSizeInUseBytes"] = json!(status.db_size_in_use);
            answer["version"] = json!(status.version);
            answer["errors"] = json!(status.errors);
        }
        Err(error) => errors.push(format!("status: {error}")),
    }
    if !errors.is_empty() {
        answer["error"] = json!(errors.join("; "));
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::etcdserverpb::{Member, MemberListResponse, ResponseHeader, StatusResponse};

    #[test]
    fn the_page_is_served_without_data_and_the_data_path_is_not() {
        let page = page(&http::Method::GET, "/ui/").expect("the page");
        assert_eq!(page.status(), 200);
        assert!(
            page.headers()["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("script-src 'self'")
        );
        assert_eq!(
            super::page(&http::Method::GET, "/ui").unwrap().status(),
            301
        );
        assert_eq!(
            super::page(&http::Method::GET, "/ui/nothing.js")
                .unwrap()
                .status(),
            404
        );
        assert!(super::page(&http::Method::GET, "/ui/api/store").is_none());
        assert!(super::page(&http::Method::POST, "/ui/").is_none());
        assert!(super::page(&http::Method::GET, "/uix").is_none());
        assert!(super::page(&http::Method::GET, "/api/v1/pods").is_none());
    }

    #[test]
    fn store_health_names_the_leader_and_answers_partially_without_status() {
        let members = MemberListResponse {
            members: vec![
                Member {
                    id: 0xa,
                    name: "one".into(),
                    ..Default::default()
                },
                Member {
                    id: 0xb,
                    name: "two".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let status = StatusResponse {
            header: Some(ResponseHeader {
                member_id: 0xa,
                revision: 42,
                ..Default::default()
            }),
            leader: 0xb,
            db_size: 4096,
            ..Default::default()
        };
        let answer = store_json(Ok(members.clone()), Ok(status));
        assert_eq!(answer["revision"], 42);
        assert_eq!(answer["members"][1]["isLeader"], true);
        assert_eq!(answer["members"][0]["isLeader"], false);
        assert_eq!(answer["hasLeader"], true);
        assert_eq!(answer["dbSizeBytes"], 4096);
        assert!(answer.get("error").is_none());

        let partial = store_json(
            Ok(members),
            Err(client::ClientError::Unavailable("no leader".into())),
        );
        assert_eq!(partial["members"].as_array().unwrap().len(), 2);
        assert_eq!(partial["hasLeader"], false);
        assert!(
            partial["error"].as_str().unwrap().contains("no leader"),
            "{partial}"
        );
    }
}
