//! etcd's messages as the v3 JSON gateway spells them: grpc-gateway's `JSONPb`
//! with `OrigName`, so proto field names as written in the `.proto` files,
//! 64-bit integers as strings, bytes as standard base64, enums by name, and
//! fields holding their default value left out. Decoding accepts the original
//! and the lowerCamelCase spelling of each field, strings or numbers for
//! integers, and ignores unknown fields, as etcd 3.4's gateway does.
//!
//! Each message lists its fields once, in `.proto` order, through
//! [`json_message!`]; the few messages with a `oneof` are written by hand.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use proto::etcdserverpb::watch_create_request::FilterType;
use proto::etcdserverpb::*;
use proto::mvccpb::event::EventType;
use proto::mvccpb::{Event, KeyValue};
use proto::v3electionpb::*;
use proto::v3lockpb::*;
use serde_json::{Map, Value};

/// A message that has etcd's JSON form.
pub(crate) trait JsonMessage: Default {
    fn write_fields(&self, fields: &mut Fields);
    fn read_fields(&mut self, object: &Map<String, Value>) -> Result<(), String>;
}

/// The JSON text of `message`.
pub(crate) fn to_json<M: JsonMessage>(message: &M) -> String {
    let mut fields = Fields::default();
    message.write_fields(&mut fields);
    fields.finish()
}

/// Decodes a message from an already parsed JSON value; `null` is the empty message.
pub(crate) fn from_value<M: JsonMessage>(value: &Value) -> Result<M, String> {
    let mut message = M::default();
    match value {
        Value::Object(object) => message.read_fields(object)?,
        Value::Null => {}
        // jsonpb first reads a message into a map of raw fields.
        other => return Err(cannot_unmarshal(other, "map[string]json.RawMessage")),
    }
    Ok(message)
}

/// The object being written: fields joined by commas, in the order written.
#[derive(Default)]
pub(crate) struct Fields {
    text: String,
}

impl Fields {
    /// Adds `"name":json` when the value is present (not the field's default).
    fn put(&mut self, name: &str, json: Option<String>) {
        let Some(json) = json else { return };
        self.text.push(if self.text.is_empty() { '{' } else { ',' });
        self.text.push_str(&quote(name));
        self.text.push(':');
        self.text.push_str(&json);
    }

    fn finish(mut self) -> String {
        if self.text.is_empty() {
            return "{}".to_string();
        }
        self.text.push('}');
        self.text
    }
}

fn quote(text: &str) -> String {
    go_html_safe(&serde_json::to_string(text).expect("a string always serialises"))
}

/// JSON text with `<`, `>`, `&`, U+2028 and U+2029 escaped as `\u003c`-style
/// sequences, as Go's encoding/json writes strings (its HTML-safe default),
/// which both etcd's v2 API and grpc-gateway's marshaller use. Outside
/// strings JSON never holds these characters, so escaping them wherever they
/// appear escapes exactly the ones inside strings.
pub(crate) fn go_html_safe(json: &str) -> String {
    let mut escaped = String::with_capacity(json.len());
    for character in json.chars() {
        match character {
            '<' => escaped.push_str("\\u003c"),
            '>' => escaped.push_str("\\u003e"),
            '&' => escaped.push_str("\\u0026"),
            '\u{2028}' => escaped.push_str("\\u2028"),
            '\u{2029}' => escaped.push_str("\\u2029"),
            other => escaped.push(other),
        }
    }
    escaped
}

/// The lowerCamelCase JSON name protoc derives from a field name.
fn camel_case(name: &str) -> String {
    let mut camel = String::with_capacity(name.len());
    let mut upper_next = false;
    for character in name.chars() {
        if character == '_' {
            upper_next = true;
        } else if upper_next {
            camel.extend(character.to_uppercase());
            upper_next = false;
        } else {
            camel.push(character);
        }
    }
    camel
}

/// A field's value by its proto name or its JSON name; `null` counts as absent.
fn lookup<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    object
        .get(name)
        .or_else(|| object.get(&camel_case(name)))
        .filter(|value| !value.is_null())
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Go's `encoding/json` text for a value of the wrong JSON type.
fn cannot_unmarshal(value: &Value, go_type: &str) -> String {
    format!(
        "json: cannot unmarshal {} into Go value of type {go_type}",
        json_kind(value)
    )
}

/// The field kinds: how one proto type is written and read.
mod kind {
    use super::*;

    pub mod bytes {
        use super::*;
        pub fn write(value: &Bytes) -> Option<String> {
            (!value.is_empty()).then(|| quote(&BASE64.encode(value)))
        }
        pub fn read(value: &Value) -> Result<Bytes, String> {
            let Value::String(text) = value else {
                return Err(cannot_unmarshal(value, "[]uint8"));
            };
            decode_base64(text).map(Bytes::from)
        }
    }

    pub mod int64 {
        use super::*;
        pub fn write(value: &i64) -> Option<String> {
            (*value != 0).then(|| quote(&value.to_string()))
        }
        pub fn read(value: &Value) -> Result<i64, String> {
            integer(value, "int64")
        }
    }

    pub mod uint64 {
        use super::*;
        pub fn write(value: &u64) -> Option<String> {
            (*value != 0).then(|| quote(&value.to_string()))
        }
        pub fn read(value: &Value) -> Result<u64, String> {
            integer(value, "uint64")
        }
    }

    pub mod uint32 {
        use super::*;
        pub fn write(value: &u32) -> Option<String> {
            (*value != 0).then(|| value.to_string())
        }
        pub fn read(value: &Value) -> Result<u32, String> {
            integer(value, "uint32")
        }
    }

    pub mod boolean {
        use super::*;
        pub fn write(value: &bool) -> Option<String> {
            value.then(|| "true".to_string())
        }
        pub fn read(value: &Value) -> Result<bool, String> {
            value
                .as_bool()
                .ok_or_else(|| cannot_unmarshal(value, "bool"))
        }
    }

    pub mod string {
        use super::*;
        pub fn write(value: &str) -> Option<String> {
            (!value.is_empty()).then(|| quote(value))
        }
        pub fn read(value: &Value) -> Result<String, String> {
            value
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| cannot_unmarshal(value, "string"))
        }
    }

    pub mod strings {
        use super::*;
        pub fn write(values: &[String]) -> Option<String> {
            (!values.is_empty()).then(|| {
                let items: Vec<String> = values.iter().map(|value| quote(value)).collect();
                format!("[{}]", items.join(","))
            })
        }
        pub fn read(value: &Value) -> Result<Vec<String>, String> {
            list(value, string::read)
        }
    }

    pub mod bytes_list {
        use super::*;
        pub fn write(values: &[Bytes]) -> Option<String> {
            (!values.is_empty()).then(|| {
                let items: Vec<String> = values
                    .iter()
                    .map(|value| quote(&BASE64.encode(value)))
                    .collect();
                format!("[{}]", items.join(","))
            })
        }
        pub fn read(value: &Value) -> Result<Vec<Bytes>, String> {
            list(value, bytes::read)
        }
    }

    /// An embedded message: written whenever it is set, even if empty.
    pub mod message {
        use super::*;
        pub fn write<M: JsonMessage>(value: &Option<M>) -> Option<String> {
            value.as_ref().map(to_json)
        }
        pub fn read<M: JsonMessage>(value: &Value) -> Result<Option<M>, String> {
            from_value(value).map(Some)
        }
    }

    pub mod messages {
        use super::*;
        pub fn write<M: JsonMessage>(values: &[M]) -> Option<String> {
            (!values.is_empty()).then(|| {
                let items: Vec<String> = values.iter().map(to_json).collect();
                format!("[{}]", items.join(","))
            })
        }
        pub fn read<M: JsonMessage>(value: &Value) -> Result<Vec<M>, String> {
            list(value, from_value)
        }
    }

    fn list<T>(
        value: &Value,
        read: impl Fn(&Value) -> Result<T, String>,
    ) -> Result<Vec<T>, String> {
        let Value::Array(items) = value else {
            return Err(cannot_unmarshal(value, "[]"));
        };
        items.iter().map(read).collect()
    }

    /// jsonpb takes an integer as a JSON number or as a string holding one.
    fn integer<T: std::str::FromStr + TryFrom<i64> + TryFrom<u64>>(
        value: &Value,
        go_type: &str,
    ) -> Result<T, String> {
        let out_of_range =
            || format!("json: cannot unmarshal number into Go value of type {go_type}");
        match value {
            Value::Number(number) => {
                if let Some(signed) = number.as_i64() {
                    T::try_from(signed).map_err(|_| out_of_range())
                } else if let Some(unsigned) = number.as_u64() {
                    T::try_from(unsigned).map_err(|_| out_of_range())
                } else {
                    Err(out_of_range())
                }
            }
            Value::String(text) => text.parse().map_err(|_| {
                // jsonpb strips the quotes and parses what is inside as JSON.
                match text.chars().next() {
                    Some(first) if !first.is_ascii_digit() && first != '-' => {
                        format!("invalid character '{first}' looking for beginning of value")
                    }
                    Some(_) => out_of_range(),
                    None => "unexpected end of JSON input".to_string(),
                }
            }),
            other => Err(cannot_unmarshal(other, go_type)),
        }
    }
}

/// Go's `base64.StdEncoding` (padding required; CR and LF ignored) with its
/// error text, which reports the offset of the first bad byte.
pub(crate) fn decode_base64(text: &str) -> Result<Vec<u8>, String> {
    let cleaned: String = text.chars().filter(|c| *c != '\r' && *c != '\n').collect();
    BASE64.decode(cleaned.as_bytes()).map_err(|error| {
        let offset = match error {
            base64::DecodeError::InvalidByte(offset, _)
            | base64::DecodeError::InvalidLastSymbol(offset, _) => offset,
            base64::DecodeError::InvalidLength(length) => length - length % 4,
            // Go reports a short last quantum at its start.
            base64::DecodeError::InvalidPadding => cleaned
                .find('=')
                .unwrap_or(cleaned.len() - cleaned.len() % 4),
        };
        format!("illegal base64 data at input byte {offset}")
    })
}

fn write_enum(name: Option<&'static str>, value: i32) -> Option<String> {
    (value != 0).then(|| name.map_or_else(|| value.to_string(), quote))
}

fn read_enum(
    value: &Value,
    from_name: impl Fn(&str) -> Option<i32>,
    go_type: &str,
) -> Result<i32, String> {
    match value {
        Value::String(name) => {
            from_name(name).ok_or_else(|| format!("unknown value {value} for enum {go_type}"))
        }
        Value::Number(number) => number
            .as_i64()
            .and_then(|number| i32::try_from(number).ok())
            .ok_or_else(|| cannot_unmarshal(value, go_type)),
        other => Err(cannot_unmarshal(other, go_type)),
    }
}

/// Implements [`JsonMessage`] from a list of `field: "proto_name" => kind`,
/// where kind is a module of [`kind`] or `enumeration(Type)`.
macro_rules! json_message {
    ($message:ty { $($field:ident : $name:literal => $kind:ident $(($enum:ty))?),* $(,)? }) => {
        impl JsonMessage for $message {
            #[allow(unused_variables)]
            fn write_fields(&self, fields: &mut Fields) {
                $( json_message!(@write fields, $name, self.$field, $kind $(($enum))?); )*
            }
            #[allow(unused_variables)]
            fn read_fields(&mut self, object: &Map<String, Value>) -> Result<(), String> {
                $(
                    if let Some(value) = lookup(object, $name) {
                        self.$field = json_message!(@read value, $kind $(($enum))?)?;
                    }
                )*
                Ok(())
            }
        }
    };
    (@write $fields:ident, $name:literal, $value:expr, enumeration($enum:ty)) => {
        $fields.put($name, write_enum(<$enum>::try_from($value).ok().map(|e| e.as_str_name()), $value))
    };
    (@write $fields:ident, $name:literal, $value:expr, enumerations($enum:ty)) => {
        $fields.put($name, (!$value.is_empty()).then(|| {
            let items: Vec<String> = $value
                .iter()
                .map(|value| {
                    <$enum>::try_from(*value)
                        .map(|e| quote(e.as_str_name()))
                        .unwrap_or_else(|_| value.to_string())
                })
                .collect();
            format!("[{}]", items.join(","))
        }))
    };
    (@write $fields:ident, $name:literal, $value:expr, $kind:ident) => {
        $fields.put($name, kind::$kind::write(&$value))
    };
    (@read $value:ident, enumeration($enum:ty)) => {
        read_enum($value, |name| <$enum>::from_str_name(name).map(|e| e as i32), stringify!($enum))
    };
    (@read $value:ident, enumerations($enum:ty)) => {
        match $value {
            Value::Array(items) => items
                .iter()
                .map(|item| {
                    read_enum(item, |name| <$enum>::from_str_name(name).map(|e| e as i32), stringify!($enum))
                })
                .collect::<Result<Vec<i32>, String>>(),
            other => Err(cannot_unmarshal(other, "[]")),
        }
    };
    (@read $value:ident, $kind:ident) => {
        kind::$kind::read($value)
    };
}

json_message!(ResponseHeader {
    cluster_id: "cluster_id" => uint64,
    member_id: "member_id" => uint64,
    revision: "revision" => int64,
    raft_term: "raft_term" => uint64,
});

json_message!(KeyValue {
    key: "key" => bytes,
    create_revision: "create_revision" => int64,
    mod_revision: "mod_revision" => int64,
    version: "version" => int64,
    value: "value" => bytes,
    lease: "lease" => int64,
});

json_message!(Event {
    r#type: "type" => enumeration(EventType),
    kv: "kv" => message,
    prev_kv: "prev_kv" => message,
});

json_message!(RangeRequest {
    key: "key" => bytes,
    range_end: "range_end" => bytes,
    limit: "limit" => int64,
    revision: "revision" => int64,
    sort_order: "sort_order" => enumeration(SortOrder),
    sort_target: "sort_target" => enumeration(SortTarget),
    serializable: "serializable" => boolean,
    keys_only: "keys_only" => boolean,
    count_only: "count_only" => boolean,
    min_mod_revision: "min_mod_revision" => int64,
    max_mod_revision: "max_mod_revision" => int64,
    min_create_revision: "min_create_revision" => int64,
    max_create_revision: "max_create_revision" => int64,
});

json_message!(RangeResponse {
    header: "header" => message,
    kvs: "kvs" => messages,
    more: "more" => boolean,
    count: "count" => int64,
});

json_message!(PutRequest {
    key: "key" => bytes,
    value: "value" => bytes,
    lease: "lease" => int64,
    prev_kv: "prev_kv" => boolean,
    ignore_value: "ignore_value" => boolean,
    ignore_lease: "ignore_lease" => boolean,
});

json_message!(PutResponse {
    header: "header" => message,
    prev_kv: "prev_kv" => message,
});

json_message!(DeleteRangeRequest {
    key: "key" => bytes,
    range_end: "range_end" => bytes,
    prev_kv: "prev_kv" => boolean,
});

json_message!(DeleteRangeResponse {
    header: "header" => message,
    deleted: "deleted" => int64,
    prev_kvs: "prev_kvs" => messages,
});

json_message!(TxnRequest {
    compare: "compare" => messages,
    success: "success" => messages,
    failure: "failure" => messages,
});

json_message!(TxnResponse {
    header: "header" => message,
    succeeded: "succeeded" => boolean,
    responses: "responses" => messages,
});

json_message!(CompactionRequest {
    revision: "revision" => int64,
    physical: "physical" => boolean,
});

json_message!(CompactionResponse {
    header: "header" => message,
});

json_message!(HashRequest {});

json_message!(HashResponse {
    header: "header" => message,
    hash: "hash" => uint32,
});

json_message!(HashKvRequest {
    revision: "revision" => int64,
});

json_message!(HashKvResponse {
    header: "header" => message,
    hash: "hash" => uint32,
    compact_revision: "compact_revision" => int64,
});

json_message!(SnapshotRequest {});

json_message!(SnapshotResponse {
    header: "header" => message,
    remaining_bytes: "remaining_bytes" => uint64,
    blob: "blob" => bytes,
});

json_message!(WatchCreateRequest {
    key: "key" => bytes,
    range_end: "range_end" => bytes,
    start_revision: "start_revision" => int64,
    progress_notify: "progress_notify" => boolean,
    filters: "filters" => enumerations(FilterType),
    prev_kv: "prev_kv" => boolean,
    watch_id: "watch_id" => int64,
    fragment: "fragment" => boolean,
});

json_message!(WatchCancelRequest {
    watch_id: "watch_id" => int64,
});

json_message!(WatchProgressRequest {});

json_message!(WatchResponse {
    header: "header" => message,
    watch_id: "watch_id" => int64,
    created: "created" => boolean,
    canceled: "canceled" => boolean,
    compact_revision: "compact_revision" => int64,
    cancel_reason: "cancel_reason" => string,
    fragment: "fragment" => boolean,
    events: "events" => messages,
});

json_message!(LeaseGrantRequest {
    ttl: "TTL" => int64,
    id: "ID" => int64,
});

json_message!(LeaseGrantResponse {
    header: "header" => message,
    id: "ID" => int64,
    ttl: "TTL" => int64,
    error: "error" => string,
});

json_message!(LeaseRevokeRequest {
    id: "ID" => int64,
});

json_message!(LeaseRevokeResponse {
    header: "header" => message,
});

json_message!(LeaseKeepAliveRequest {
    id: "ID" => int64,
});

json_message!(LeaseKeepAliveResponse {
    header: "header" => message,
    id: "ID" => int64,
    ttl: "TTL" => int64,
});

json_message!(LeaseTimeToLiveRequest {
    id: "ID" => int64,
    keys: "keys" => boolean,
});

json_message!(LeaseTimeToLiveResponse {
    header: "header" => message,
    id: "ID" => int64,
    ttl: "TTL" => int64,
    granted_ttl: "grantedTTL" => int64,
    keys: "keys" => bytes_list,
});

json_message!(LeaseLeasesRequest {});

json_message!(LeaseStatus {
    id: "ID" => int64,
});

json_message!(LeaseLeasesResponse {
    header: "header" => message,
    leases: "leases" => messages,
});

json_message!(proto::etcdserverpb::Member {
    id: "ID" => uint64,
    name: "name" => string,
    peer_ur_ls: "peerURLs" => strings,
    client_ur_ls: "clientURLs" => strings,
    is_learner: "isLearner" => boolean,
});

json_message!(MemberAddRequest {
    peer_ur_ls: "peerURLs" => strings,
    is_learner: "isLearner" => boolean,
});

json_message!(MemberAddResponse {
    header: "header" => message,
    member: "member" => message,
    members: "members" => messages,
});

json_message!(MemberRemoveRequest {
    id: "ID" => uint64,
});

json_message!(MemberRemoveResponse {
    header: "header" => message,
    members: "members" => messages,
});

json_message!(MemberUpdateRequest {
    id: "ID" => uint64,
    peer_ur_ls: "peerURLs" => strings,
});

json_message!(MemberUpdateResponse {
    header: "header" => message,
    members: "members" => messages,
});

json_message!(MemberListRequest {
    linearizable: "linearizable" => boolean,
});

json_message!(MemberListResponse {
    header: "header" => message,
    members: "members" => messages,
});

json_message!(MemberPromoteRequest {
    id: "ID" => uint64,
});

json_message!(MemberPromoteResponse {
    header: "header" => message,
    members: "members" => messages,
});

json_message!(DefragmentRequest {});

json_message!(DefragmentResponse {
    header: "header" => message,
});

json_message!(MoveLeaderRequest {
    target_id: "targetID" => uint64,
});

json_message!(MoveLeaderResponse {
    header: "header" => message,
});

json_message!(AlarmRequest {
    action: "action" => enumeration(alarm_request::AlarmAction),
    member_id: "memberID" => uint64,
    alarm: "alarm" => enumeration(AlarmType),
});

json_message!(AlarmMember {
    member_id: "memberID" => uint64,
    alarm: "alarm" => enumeration(AlarmType),
});

json_message!(AlarmResponse {
    header: "header" => message,
    alarms: "alarms" => messages,
});

json_message!(StatusRequest {});

json_message!(StatusResponse {
    header: "header" => message,
    version: "version" => string,
    db_size: "dbSize" => int64,
    leader: "leader" => uint64,
    raft_index: "raftIndex" => uint64,
    raft_term: "raftTerm" => uint64,
    raft_applied_index: "raftAppliedIndex" => uint64,
    errors: "errors" => strings,
    db_size_in_use: "dbSizeInUse" => int64,
    is_learner: "isLearner" => boolean,
});

json_message!(LockRequest {
    name: "name" => bytes,
    lease: "lease" => int64,
});

json_message!(LockResponse {
    header: "header" => message,
    key: "key" => bytes,
});

json_message!(UnlockRequest {
    key: "key" => bytes,
});

json_message!(UnlockResponse {
    header: "header" => message,
});

json_message!(CampaignRequest {
    name: "name" => bytes,
    lease: "lease" => int64,
    value: "value" => bytes,
});

json_message!(CampaignResponse {
    header: "header" => message,
    leader: "leader" => message,
});

json_message!(LeaderKey {
    name: "name" => bytes,
    key: "key" => bytes,
    rev: "rev" => int64,
    lease: "lease" => int64,
});

json_message!(LeaderRequest {
    name: "name" => bytes,
});

json_message!(LeaderResponse {
    header: "header" => message,
    kv: "kv" => message,
});

json_message!(ResignRequest {
    leader: "leader" => message,
});

json_message!(ResignResponse {
    header: "header" => message,
});

json_message!(ProclaimRequest {
    leader: "leader" => message,
    value: "value" => bytes,
});

json_message!(ProclaimResponse {
    header: "header" => message,
});

impl JsonMessage for Compare {
    fn write_fields(&self, fields: &mut Fields) {
        fields.put(
            "result",
            write_enum(
                CompareResult::try_from(self.result)
                    .ok()
                    .map(|e| e.as_str_name()),
                self.result,
            ),
        );
        fields.put(
            "target",
            write_enum(
                CompareTarget::try_from(self.target)
                    .ok()
                    .map(|e| e.as_str_name()),
                self.target,
            ),
        );
        fields.put("key", kind::bytes::write(&self.key));
        // A oneof member is written even when it holds its type's default.
        match &self.target_union {
            Some(TargetUnion::Version(value)) => {
                fields.put("version", Some(quote(&value.to_string())))
            }
            Some(TargetUnion::CreateRevision(value)) => {
                fields.put("create_revision", Some(quote(&value.to_string())))
            }
            Some(TargetUnion::ModRevision(value)) => {
                fields.put("mod_revision", Some(quote(&value.to_string())))
            }
            Some(TargetUnion::Value(value)) => {
                fields.put("value", Some(quote(&BASE64.encode(value))))
            }
            Some(TargetUnion::Lease(value)) => fields.put("lease", Some(quote(&value.to_string()))),
            None => {}
        }
        fields.put("range_end", kind::bytes::write(&self.range_end));
    }

    fn read_fields(&mut self, object: &Map<String, Value>) -> Result<(), String> {
        if let Some(value) = lookup(object, "result") {
            self.result = read_enum(
                value,
                |name| CompareResult::from_str_name(name).map(|e| e as i32),
                "etcdserverpb.Compare_CompareResult",
            )?;
        }
        if let Some(value) = lookup(object, "target") {
            self.target = read_enum(
                value,
                |name| CompareTarget::from_str_name(name).map(|e| e as i32),
                "etcdserverpb.Compare_CompareTarget",
            )?;
        }
        if let Some(value) = lookup(object, "key") {
            self.key = kind::bytes::read(value)?;
        }
        if let Some(value) = lookup(object, "range_end") {
            self.range_end = kind::bytes::read(value)?;
        }
        if let Some(value) = lookup(object, "version") {
            self.target_union = Some(TargetUnion::Version(kind::int64::read(value)?));
        }
        if let Some(value) = lookup(object, "create_revision") {
            self.target_union = Some(TargetUnion::CreateRevision(kind::int64::read(value)?));
        }
        if let Some(value) = lookup(object, "mod_revision") {
            self.target_union = Some(TargetUnion::ModRevision(kind::int64::read(value)?));
        }
        if let Some(value) = lookup(object, "value") {
            self.target_union = Some(TargetUnion::Value(kind::bytes::read(value)?));
        }
        if let Some(value) = lookup(object, "lease") {
            self.target_union = Some(TargetUnion::Lease(kind::int64::read(value)?));
        }
        Ok(())
    }
}

impl JsonMessage for RequestOp {
    fn write_fields(&self, fields: &mut Fields) {
        use request_op::Request;
        match &self.request {
            Some(Request::RequestRange(request)) => {
                fields.put("request_range", Some(to_json(request)))
            }
            Some(Request::RequestPut(request)) => fields.put("request_put", Some(to_json(request))),
            Some(Request::RequestDeleteRange(request)) => {
                fields.put("request_delete_range", Some(to_json(request)))
            }
            Some(Request::RequestTxn(request)) => fields.put("request_txn", Some(to_json(request))),
            None => {}
        }
    }

    fn read_fields(&mut self, object: &Map<String, Value>) -> Result<(), String> {
        use request_op::Request;
        if let Some(value) = lookup(object, "request_range") {
            self.request = Some(Request::RequestRange(from_value(value)?));
        }
        if let Some(value) = lookup(object, "request_put") {
            self.request = Some(Request::RequestPut(from_value(value)?));
        }
        if let Some(value) = lookup(object, "request_delete_range") {
            self.request = Some(Request::RequestDeleteRange(from_value(value)?));
        }
        if let Some(value) = lookup(object, "request_txn") {
            self.request = Some(Request::RequestTxn(from_value(value)?));
        }
        Ok(())
    }
}

impl JsonMessage for ResponseOp {
    fn write_fields(&self, fields: &mut Fields) {
        use response_op::Response;
        match &self.response {
            Some(Response::ResponseRange(response)) => {
                fields.put("response_range", Some(to_json(response)))
            }
            Some(Response::ResponsePut(response)) => {
                fields.put("response_put", Some(to_json(response)))
            }
            Some(Response::ResponseDeleteRange(response)) => {
                fields.put("response_delete_range", Some(to_json(response)))
            }
            Some(Response::ResponseTxn(response)) => {
                fields.put("response_txn", Some(to_json(response)))
            }
            None => {}
        }
    }

    fn read_fields(&mut self, object: &Map<String, Value>) -> Result<(), String> {
        use response_op::Response;
        if let Some(value) = lookup(object, "response_range") {
            self.response = Some(Response::ResponseRange(from_value(value)?));
        }
        if let Some(value) = lookup(object, "response_put") {
            self.response = Some(Response::ResponsePut(from_value(value)?));
        }
        if let Some(value) = lookup(object, "response_delete_range") {
            self.response = Some(Response::ResponseDeleteRange(from_value(value)?));
        }
        if let Some(value) = lookup(object, "response_txn") {
            self.response = Some(Response::ResponseTxn(from_value(value)?));
        }
        Ok(())
    }
}

impl JsonMessage for WatchRequest {
    fn write_fields(&self, fields: &mut Fields) {
        use watch_request::RequestUnion;
        match &self.request_union {
            Some(RequestUnion::CreateRequest(request)) => {
                fields.put("create_request", Some(to_json(request)))
            }
            Some(RequestUnion::CancelRequest(request)) => {
                fields.put("cancel_request", Some(to_json(request)))
            }
            Some(RequestUnion::ProgressRequest(request)) => {
                fields.put("progress_request", Some(to_json(request)))
            }
            None => {}
        }
    }

    fn read_fields(&mut self, object: &Map<String, Value>) -> Result<(), String> {
        use watch_request::RequestUnion;
        if let Some(value) = lookup(object, "create_request") {
            self.request_union = Some(RequestUnion::CreateRequest(from_value(value)?));
        }
        if let Some(value) = lookup(object, "cancel_request") {
            self.request_union = Some(RequestUnion::CancelRequest(from_value(value)?));
        }
        if let Some(value) = lookup(object, "progress_request") {
            self.request_union = Some(RequestUnion::ProgressRequest(from_value(value)?));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_response_is_written_as_etcd_writes_it() {
        let response = RangeResponse {
            header: Some(ResponseHeader {
                cluster_id: 15875391935852295136,
                member_id: 7,
                revision: 2,
                raft_term: 2,
            }),
            kvs: vec![KeyValue {
                key: Bytes::from_static(b"foo"),
                create_revision: 2,
                mod_revision: 2,
                version: 1,
                value: Bytes::from_static(b"bar"),
                lease: 0,
            }],
            more: false,
            count: 1,
        };
        assert_eq!(
            to_json(&response),
            r#"{"header":{"cluster_id":"15875391935852295136","member_id":"7","revision":"2","raft_term":"2"},"kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"2","version":"1","value":"YmFy"}],"count":"1"}"#
        );
    }

    #[test]
    fn requests_accept_both_spellings_numbers_and_enum_names() {
        let value: Value = serde_json::from_str(
            r#"{"key":"Zm9v","rangeEnd":"Zm9w","limit":3,"revision":"4","sort_order":"DESCEND","sort_target":2,"unknown":1}"#,
        )
        .unwrap();
        let request: RangeRequest = from_value(&value).unwrap();
        assert_eq!(request.key, Bytes::from_static(b"foo"));
        assert_eq!(request.range_end, Bytes::from_static(b"fop"));
        assert_eq!((request.limit, request.revision), (3, 4));
        assert_eq!((request.sort_order, request.sort_target), (2, 2));
    }

    #[test]
    fn decoding_errors_use_go_texts() {
        let bad_base64: Value = serde_json::from_str(r#"{"key":"Zm9"}"#).unwrap();
        assert_eq!(
            from_value::<RangeRequest>(&bad_base64).unwrap_err(),
            "illegal base64 data at input byte 0"
        );
        let bad_integer: Value = serde_json::from_str(r#"{"key":"Zm9v","limit":"x"}"#).unwrap();
        assert_eq!(
            from_value::<RangeRequest>(&bad_integer).unwrap_err(),
            "invalid character 'x' looking for beginning of value"
        );
        assert_eq!(
            from_value::<RangeRequest>(&Value::Array(vec![])).unwrap_err(),
            "json: cannot unmarshal array into Go value of type map[string]json.RawMessage"
        );
    }

    #[test]
    fn oneofs_and_enums_round_trip() {
        let text = r#"{"compare":[{"target":"VALUE","key":"Zm9v","value":"YmFy"}],"success":[{"request_put":{"key":"Zm9v","value":"YmF6"}}]}"#;
        let request: TxnRequest = from_value(&serde_json::from_str(text).unwrap()).unwrap();
        assert_eq!(to_json(&request), text);
        let event = Event {
            r#type: EventType::Delete as i32,
            kv: Some(KeyValue::default()),
            prev_kv: None,
        };
        assert_eq!(to_json(&event), r#"{"type":"DELETE","kv":{}}"#);
    }
}

// etcd's Auth service and its authpb types.
use proto::authpb::{Permission, UserAddOptions, permission};
use proto::etcdserverpb::{
    AuthDisableRequest, AuthDisableResponse, AuthEnableRequest, AuthEnableResponse,
    AuthRoleAddRequest, AuthRoleAddResponse, AuthRoleDeleteRequest, AuthRoleDeleteResponse,
    AuthRoleGetRequest, AuthRoleGetResponse, AuthRoleGrantPermissionRequest,
    AuthRoleGrantPermissionResponse, AuthRoleListRequest, AuthRoleListResponse,
    AuthRoleRevokePermissionRequest, AuthRoleRevokePermissionResponse, AuthStatusRequest,
    AuthStatusResponse, AuthUserAddRequest, AuthUserAddResponse, AuthUserChangePasswordRequest,
    AuthUserChangePasswordResponse, AuthUserDeleteRequest, AuthUserDeleteResponse,
    AuthUserGetRequest, AuthUserGetResponse, AuthUserGrantRoleRequest, AuthUserGrantRoleResponse,
    AuthUserListRequest, AuthUserListResponse, AuthUserRevokeRoleRequest,
    AuthUserRevokeRoleResponse, AuthenticateRequest, AuthenticateResponse,
};

json_message!(UserAddOptions {
    no_password: "no_password" => boolean,
});
json_message!(Permission {
    perm_type: "permType" => enumeration(permission::Type),
    key: "key" => bytes,
    range_end: "range_end" => bytes,
});
json_message!(AuthEnableRequest {});
json_message!(AuthDisableRequest {});
json_message!(AuthStatusRequest {});
json_message!(AuthUserListRequest {});
json_message!(AuthRoleListRequest {});
json_message!(AuthenticateRequest {
    name: "name" => string,
    password: "password" => string,
});
json_message!(AuthUserAddRequest {
    name: "name" => string,
    password: "password" => string,
    options: "options" => message,
    hashed_password: "hashedPassword" => string,
});
json_message!(AuthUserGetRequest { name: "name" => string });
json_message!(AuthUserDeleteRequest { name: "name" => string });
json_message!(AuthUserChangePasswordRequest {
    name: "name" => string,
    password: "password" => string,
    hashed_password: "hashedPassword" => string,
});
json_message!(AuthUserGrantRoleRequest {
    user: "user" => string,
    role: "role" => string,
});
json_message!(AuthUserRevokeRoleRequest {
    name: "name" => string,
    role: "role" => string,
});
json_message!(AuthRoleAddRequest { name: "name" => string });
json_message!(AuthRoleGetRequest { role: "role" => string });
json_message!(AuthRoleDeleteRequest { role: "role" => string });
json_message!(AuthRoleGrantPermissionRequest {
    name: "name" => string,
    perm: "perm" => message,
});
json_message!(AuthRoleRevokePermissionRequest {
    role: "role" => string,
    key: "key" => bytes,
    range_end: "range_end" => bytes,
});
json_message!(AuthEnableResponse { header: "header" => message });
json_message!(AuthDisableResponse { header: "header" => message });
json_message!(AuthStatusResponse {
    header: "header" => message,
    enabled: "enabled" => boolean,
    auth_revision: "authRevision" => uint64,
});
json_message!(AuthenticateResponse {
    header: "header" => message,
    token: "token" => string,
});
json_message!(AuthUserAddResponse { header: "header" => message });
json_message!(AuthUserGetResponse {
    header: "header" => message,
    roles: "roles" => strings,
});
json_message!(AuthUserDeleteResponse { header: "header" => message });
json_message!(AuthUserChangePasswordResponse { header: "header" => message });
json_message!(AuthUserGrantRoleResponse { header: "header" => message });
json_message!(AuthUserRevokeRoleResponse { header: "header" => message });
json_message!(AuthRoleAddResponse { header: "header" => message });
json_message!(AuthRoleGetResponse {
    header: "header" => message,
    perm: "perm" => messages,
});
json_message!(AuthRoleListResponse {
    header: "header" => message,
    roles: "roles" => strings,
});
json_message!(AuthUserListResponse {
    header: "header" => message,
    users: "users" => strings,
});
json_message!(AuthRoleDeleteResponse { header: "header" => message });
json_message!(AuthRoleGrantPermissionResponse { header: "header" => message });
json_message!(AuthRoleRevokePermissionResponse { header: "header" => message });
