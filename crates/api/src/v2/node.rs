//! What the v2 API sends: nodes, actions and errors, in etcd 2's JSON shapes
//! (field order and omissions as etcd's `NodeExtern`, `Response` and `Error`).

use std::time::{Duration, SystemTime};

use serde::Serialize;

/// One node (a key with a value, or a directory) as etcd's v2 API shows it.
#[derive(Serialize, Clone, Debug, Default)]
pub(crate) struct Node {
    /// `None` only for the root directory, which etcd shows without a key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dir: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiration: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<Node>>,
    #[serde(rename = "modifiedIndex", skip_serializing_if = "is_zero")]
    pub modified_index: i64,
    #[serde(rename = "createdIndex", skip_serializing_if = "is_zero")]
    pub created_index: i64,
}

fn is_zero(index: &i64) -> bool {
    *index == 0
}

impl Node {
    /// Sets `ttl` and `expiration` for a node whose lease has `ttl_seconds` left.
    pub fn expire_in(&mut self, ttl_seconds: i64) {
        let expiration = SystemTime::now() + Duration::from_secs(ttl_seconds.max(0) as u64);
        self.expiration = Some(rfc3339_nano(expiration));
        self.ttl = Some(ttl_seconds);
    }
}

/// The body of a successful v2 answer.
#[derive(Serialize, Debug)]
pub(crate) struct Answer {
    pub action: &'static str,
    pub node: Node,
    #[serde(rename = "prevNode", skip_serializing_if = "Option::is_none")]
    pub prev_node: Option<Node>,
}

/// etcd's v2 error codes (`etcd/error`), each with its message and HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Code {
    KeyNotFound = 100,
    TestFailed = 101,
    NotFile = 102,
    NotDir = 104,
    NodeExist = 105,
    RootReadOnly = 107,
    DirNotEmpty = 108,
    PrevValueRequired = 201,
    TtlNaN = 202,
    IndexNaN = 203,
    InvalidField = 209,
    InvalidForm = 210,
    RefreshValue = 211,
    RefreshTtlRequired = 212,
    RaftInternal = 300,
    LeaderElect = 301,
    EventIndexCleared = 401,
}

impl Code {
    pub fn message(self) -> &'static str {
        match self {
            Code::KeyNotFound => "Key not found",
            Code::TestFailed => "Compare failed",
            Code::NotFile => "Not a file",
            Code::NotDir => "Not a directory",
            Code::NodeExist => "Key already exists",
            Code::RootReadOnly => "Root is read only",
            Code::DirNotEmpty => "Directory not empty",
            Code::PrevValueRequired => "PrevValue is Required in POST form",
            Code::TtlNaN => "The given TTL in POST form is not a number",
            Code::IndexNaN => "The given index in POST form is not a number",
            Code::InvalidField => "Invalid field",
            Code::InvalidForm => "Invalid POST form",
            Code::RefreshValue => "Value provided on refresh",
            Code::RefreshTtlRequired => "A TTL must be provided on refresh",
            Code::RaftInternal => "Raft Internal Error",
            Code::LeaderElect => "During Leader Election",
            Code::EventIndexCleared => "The event in requested index is outdated and cleared",
        }
    }

    /// etcd's `Error.StatusCode`.
    pub fn http_status(self) -> http::StatusCode {
        use http::StatusCode;
        match self {
            Code::KeyNotFound => StatusCode::NOT_FOUND,
            Code::NotFile | Code::DirNotEmpty => StatusCode::FORBIDDEN,
            Code::TestFailed | Code::NodeExist => StatusCode::PRECONDITION_FAILED,
            Code::RaftInternal | Code::LeaderElect => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// A v2 error: the code, what it is about, and the store index it was seen at.
#[derive(Debug, Clone)]
pub(crate) struct V2Error {
    pub code: Code,
    pub cause: String,
    pub index: i64,
}

impl V2Error {
    pub fn new(code: Code, cause: impl Into<String>, index: i64) -> V2Error {
        V2Error {
            code,
            cause: cause.into(),
            index,
        }
    }

    /// A bad request parameter, refused before the store is read (index 0).
    pub fn parameter(code: Code, cause: impl Into<String>) -> V2Error {
        V2Error::new(code, cause, 0)
    }

    pub fn body(&self) -> String {
        go_encoder_body(&ErrorBody {
            error_code: self.code as i32,
            message: self.code.message(),
            cause: &self.cause,
            index: self.index,
        })
    }
}

/// etcd's v2 error body (`etcd/error.Error`); every field is always present.
#[derive(Serialize)]
struct ErrorBody<'a> {
    #[serde(rename = "errorCode")]
    error_code: i32,
    message: &'a str,
    cause: &'a str,
    index: i64,
}

/// A JSON body as Go's `json.NewEncoder(w).Encode(v)` writes it, which is how
/// etcd's v2 API answers: HTML-safe strings and a newline at the end.
pub(crate) fn go_encoder_body(value: &impl Serialize) -> String {
    let json = serde_json::to_string(value).expect("v2 bodies always serialise");
    let mut body = crate::gateway::json::go_html_safe(&json);
    body.push('\n');
    body
}

/// Go's `time.RFC3339Nano` in UTC: trailing zeros of the fraction dropped.
pub(crate) fn rfc3339_nano(time: SystemTime) -> String {
    // humantime always writes nine fraction digits; Go's RFC3339Nano drops
    // trailing zeros, and the fraction with them when it is zero.
    let text = humantime::format_rfc3339_nanos(time).to_string();
    match text.trim_end_matches('Z').split_once('.') {
        Some((seconds, fraction)) if fraction.trim_end_matches('0').is_empty() => {
            format!("{seconds}Z")
        }
        Some((seconds, fraction)) => format!("{seconds}.{}Z", fraction.trim_end_matches('0')),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn times_are_written_as_go_writes_rfc3339_nano() {
        let time = UNIX_EPOCH + Duration::new(1_795_762_259, 659_309_000);
        assert_eq!(rfc3339_nano(time), "2026-11-27T06:50:59.659309Z");
        assert_eq!(rfc3339_nano(UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn nodes_omit_what_etcd_omits() {
        let node = Node {
            key: Some("/dir".into()),
            dir: true,
            modified_index: 10,
            created_index: 10,
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&node).unwrap(),
            r#"{"key":"/dir","dir":true,"modifiedIndex":10,"createdIndex":10}"#
        );
    }
}
