//! etcd's v2 keys API (`/v2/keys/...`), served from the same MVCC store as
//! v3: one key space, one revision sequence. etcd 3.4 keeps v2 in a separate
//! store; shoal maps v2 nodes onto v3 keys so that v2 and v3 clients share
//! data, and a v2 write is an ordinary v3 revision that v3 watchers see.
//!
//! **The mapping.**
//! - The file node `/a/b` is the v3 key `/a/b`; its value is the key's value.
//! - The directory `/a` is the marker key `/a/` with an empty value. No file
//!   can be named with a trailing slash (v2 paths are cleaned), so markers
//!   and files never collide. Writing `/a/b/c` creates the missing markers
//!   `/a/` and `/a/b/` in the same txn, as etcd 2 creates the directories.
//!   A v3 key such as `/x/y` written without markers still shows in v2: `/x`
//!   is then a directory implied by its children.
//! - The root `/` is every key starting with `/`; it has no marker and is
//!   read-only. v3 keys that do not start with `/` are invisible to v2.
//! - Indices are revisions: `X-Etcd-Index` is the store revision,
//!   `modifiedIndex` a key's mod revision, `createdIndex` its create revision.
//! - A TTL is a lease of that many seconds granted for the node and attached
//!   to its key; when the lease expires the key goes, as the node expires.
//!   A lease left without keys (the node was overwritten or deleted) is
//!   revoked.
//! - `POST` names the new key by the index that creates it, zero-padded to
//!   20 digits as etcd does, so a directory's keys sort in creation order.
//! - `?wait=true` is a v3 watch on the node's span starting at `waitIndex`
//!   (or the next revision); the first matching event answers the poll.
//!
//! **Known differences** (see the README): `set` over an existing key keeps
//! its `createdIndex` (a v3 put keeps the create revision; etcd 2 creates the
//! node anew); waits report every put as `set` and every removal as `delete`
//! (a v3 event does not say which v2 verb made it, nor whether a lease
//! expired); a directory's TTL expires the marker only, not its children;
//! listings are always sorted.

mod keys;
mod node;

use std::sync::Arc;

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use store::Member;

use crate::gateway::{Body, full, json_response, text};
use keys::{DeleteOptions, Keys, Outcome, SetOptions};
use node::{Code, V2Error};

const KEYS_PREFIX: &str = "/v2/keys";

pub(crate) async fn handle(member: &Arc<Member>, request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path().to_string();
    if path == "/v2/members" && request.method() == Method::GET {
        return members(member);
    }
    if path == "/v2/machines" && request.method() == Method::GET {
        let urls: Vec<String> = member
            .members()
            .into_iter()
            .flat_map(|listed| listed.client_ur_ls)
            .collect();
        return full(StatusCode::OK, urls.join(", "));
    }
    let Some(key) = path
        .strip_prefix(KEYS_PREFIX)
        .filter(|rest| rest.is_empty() || rest.starts_with('/'))
    else {
        return text(StatusCode::NOT_FOUND, "404 page not found\n");
    };
    let key = clean_path(key);
    let method = request.method().clone();
    if ![
        Method::GET,
        Method::HEAD,
        Method::PUT,
        Method::POST,
        Method::DELETE,
    ]
    .contains(&method)
    {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n");
        response.headers_mut().insert(
            header::ALLOW,
            HeaderValue::from_static("HEAD,GET,PUT,POST,DELETE"),
        );
        return response;
    }
    let query = request.uri().query().unwrap_or_default().to_string();
    let form_body = is_form(&request);
    let limit = usize::try_from(member.max_request_bytes()).unwrap_or(usize::MAX);
    let body = match Limited::new(request.into_body(), limit).collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => {
            return error_response(
                member,
                &V2Error::parameter(Code::InvalidForm, "request body too large"),
            );
        }
    };
    // Go's FormValue: the body's form fields first, then the query's.
    let mut form: Vec<(String, String)> = Vec::new();
    if form_body {
        form.extend(form_urlencoded::parse(&body).into_owned());
    }
    form.extend(form_urlencoded::parse(query.as_bytes()).into_owned());
    let params = Params { form };
    let keys = Keys { member };
    let result = match method {
        Method::GET | Method::HEAD => get(&keys, &key, &params).await,
        Method::PUT => put(&keys, &key, &params).await,
        Method::POST => post(&keys, &key, &params).await,
        _ => delete(&keys, &key, &params).await,
    };
    match result {
        Ok(outcome) => success(member, outcome),
        Err(error) => error_response(member, &error),
    }
}

fn is_form<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/x-www-form-urlencoded"))
}

/// Go's `path.Clean("/" + key)`: one leading slash, no trailing one, no
/// empty, `.` or `..` segments.
fn clean_path(key: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in key.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    format!("/{}", segments.join("/"))
}

/// The request's form and query values.
struct Params {
    form: Vec<(String, String)>,
}

impl Params {
    fn get(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Go's `strconv.ParseBool`; absent is `None`, bad is etcd's 209.
    fn boolean(&self, name: &str) -> Result<Option<bool>, V2Error> {
        match self.get(name) {
            None => Ok(None),
            Some("1" | "t" | "T" | "TRUE" | "true" | "True") => Ok(Some(true)),
            Some("0" | "f" | "F" | "FALSE" | "false" | "False") => Ok(Some(false)),
            Some(_) => Err(V2Error::parameter(
                Code::InvalidField,
                format!("invalid value for \"{name}\""),
            )),
        }
    }

    fn flag(&self, name: &str) -> Result<bool, V2Error> {
        Ok(self.boolean(name)?.unwrap_or(false))
    }

    fn unsigned(&self, name: &str, code: Code) -> Result<Option<i64>, V2Error> {
        match self.get(name) {
            None => Ok(None),
            Some(text) => text
                .parse::<u64>()
                .ok()
                .and_then(|number| i64::try_from(number).ok())
                .map(Some)
                .ok_or_else(|| V2Error::parameter(code, format!("invalid value for \"{name}\""))),
        }
    }

    /// `ttl=`: empty means no TTL, as in etcd.
    fn ttl(&self) -> Result<Option<i64>, V2Error> {
        match self.get("ttl") {
            None | Some("") => Ok(None),
            Some(_) => self.unsigned("ttl", Code::TtlNaN),
        }
    }

    fn prev_value(&self) -> Result<Option<String>, V2Error> {
        match self.get("prevValue") {
            Some("") => Err(V2Error::parameter(
                Code::PrevValueRequired,
                "\"prevValue\" cannot be empty",
            )),
            other => Ok(other.map(str::to_string)),
        }
    }
}

async fn get(keys: &Keys<'_>, path: &str, params: &Params) -> Result<Outcome, V2Error> {
    let wait_index = params.unsigned("waitIndex", Code::IndexNaN)?;
    let recursive = params.flag("recursive")?;
    params.flag("sorted")?;
    params.flag("quorum")?;
    let wait = params.flag("wait")?;
    if wait {
        return keys.wait(path, recursive, wait_index).await;
    }
    keys.get(path, recursive).await
}

async fn put(keys: &Keys<'_>, path: &str, params: &Params) -> Result<Outcome, V2Error> {
    let prev_index = params.unsigned("prevIndex", Code::IndexNaN)?;
    let dir = params.flag("dir")?;
    let ttl_seconds = params.ttl()?;
    let prev_exist = params.boolean("prevExist")?;
    let refresh = params.flag("refresh")?;
    let prev_value = params.prev_value()?;
    let value = params.get("value").unwrap_or_default().to_string();
    if refresh {
        if !value.is_empty() {
            return Err(V2Error::parameter(
                Code::RefreshValue,
                "A value was provided on a refresh",
            ));
        }
        if ttl_seconds.is_none() {
            return Err(V2Error::parameter(
                Code::RefreshTtlRequired,
                "No TTL value set",
            ));
        }
    }
    let no_value = params.flag("noValueOnSuccess")?;
    let mut outcome = keys
        .set(
            path,
            SetOptions {
                value,
                dir,
                ttl_seconds,
                prev_exist,
                prev_value,
                prev_index,
                refresh,
            },
        )
        .await?;
    if no_value {
        outcome.answer.node.value = None;
    }
    Ok(outcome)
}

async fn post(keys: &Keys<'_>, path: &str, params: &Params) -> Result<Outcome, V2Error> {
    let ttl_seconds = params.ttl()?;
    let value = params.get("value").unwrap_or_default().to_string();
    keys.create_in_order(path, value, ttl_seconds).await
}

async fn delete(keys: &Keys<'_>, path: &str, params: &Params) -> Result<Outcome, V2Error> {
    let prev_index = params.unsigned("prevIndex", Code::IndexNaN)?;
    let options = DeleteOptions {
        dir: params.flag("dir")?,
        recursive: params.flag("recursive")?,
        prev_value: params.prev_value()?,
        prev_index,
    };
    keys.delete(path, options).await
}

fn cluster_id_header(member: &Member) -> HeaderValue {
    HeaderValue::from_str(&format!("{:x}", member.cluster_id()))
        .expect("hex digits are a valid header value")
}

fn index_header(index: i64) -> HeaderValue {
    HeaderValue::from_str(&index.to_string()).expect("digits are a valid header value")
}

fn success(member: &Member, outcome: Outcome) -> Response<Body> {
    let status = if outcome.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut response = json_response(status, node::go_encoder_body(&outcome.answer));
    let raft = member.status();
    let headers = response.headers_mut();
    headers.insert("x-etcd-cluster-id", cluster_id_header(member));
    headers.insert("x-etcd-index", index_header(outcome.index));
    headers.insert("x-raft-index", index_header(raft.commit_index as i64));
    headers.insert("x-raft-term", index_header(raft.term as i64));
    response
}

fn error_response(member: &Member, error: &V2Error) -> Response<Body> {
    let mut response = json_response(error.code.http_status(), error.body());
    let headers = response.headers_mut();
    headers.insert("x-etcd-cluster-id", cluster_id_header(member));
    headers.insert("x-etcd-index", index_header(error.index));
    response
}

/// One member in `/v2/members`, fields in etcd's order.
#[derive(serde::Serialize)]
struct ListedMember {
    id: String,
    name: String,
    #[serde(rename = "peerURLs")]
    peer_urls: Vec<String>,
    #[serde(rename = "clientURLs")]
    client_urls: Vec<String>,
}

#[derive(serde::Serialize)]
struct MemberList {
    members: Vec<ListedMember>,
}

/// `/v2/members`, which etcd's v2 clients read to find the cluster's endpoints.
fn members(member: &Member) -> Response<Body> {
    let members = member
        .members()
        .into_iter()
        .map(|listed| ListedMember {
            id: format!("{:x}", listed.id),
            name: listed.name,
            peer_urls: listed.peer_ur_ls,
            client_urls: listed.client_ur_ls,
        })
        .collect();
    json_response(
        StatusCode::OK,
        node::go_encoder_body(&MemberList { members }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_cleaned_as_go_cleans_them() {
        assert_eq!(clean_path(""), "/");
        assert_eq!(clean_path("/"), "/");
        assert_eq!(clean_path("/a//b/"), "/a/b");
        assert_eq!(clean_path("/a/./b/../c"), "/a/c");
    }
}
