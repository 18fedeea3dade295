//! Decoding of hand-built bodies: the Go JSON rules the kubectl fixtures do
//! not reach (times, pointers set to zero, inline structs, embedded JSON,
//! apiextensions' schema types), the error texts, and the schema's consistency.

use prost::Message as _;
use prost_reflect::{DynamicMessage, Kind, MapKey, MessageDescriptor, Value as Field};
use serde_json::{Value, json};

use crate::schema::Schema;
use crate::{DecodeError, decode};

fn descriptor(name: &str) -> MessageDescriptor {
    Schema::get()
        .pool
        .get_message_by_name(name)
        .unwrap_or_else(|| panic!("no message {name}"))
}

/// Builds a message from a JSON description keyed by proto field names:
/// objects are messages or maps, arrays repeated fields, strings go into
/// string and bytes fields alike.
fn build(descriptor: MessageDescriptor, fields: &Value) -> DynamicMessage {
    let mut msg = DynamicMessage::new(descriptor.clone());
    for (name, value) in fields.as_object().expect("fields are an object") {
        let field = descriptor
            .get_field_by_name(name)
            .unwrap_or_else(|| panic!("{} has no field {name}", descriptor.full_name()));
        let built = if field.is_map() {
            let Kind::Message(entry) = field.kind() else {
                unreachable!("map fields are messages")
            };
            let value_kind = entry.map_entry_value_field().kind();
            Field::Map(
                value
                    .as_object()
                    .expect("map is an object")
                    .iter()
                    .map(|(key, value)| {
                        (
                            MapKey::String(key.clone()),
                            scalar_or_message(&value_kind, value),
                        )
                    })
                    .collect(),
            )
        } else if field.is_list() {
            Field::List(
                value
                    .as_array()
                    .expect("list is an array")
                    .iter()
                    .map(|item| scalar_or_message(&field.kind(), item))
                    .collect(),
            )
        } else {
            scalar_or_message(&field.kind(), value)
        };
        msg.set_field(&field, built);
    }
    msg
}

fn scalar_or_message(kind: &Kind, value: &Value) -> Field {
    match kind {
        Kind::Message(inner) => Field::Message(build(inner.clone(), value)),
        Kind::String => Field::String(value.as_str().expect("string").to_owned()),
        Kind::Bytes => Field::Bytes(
            value
                .as_str()
                .expect("bytes as text")
                .as_bytes()
                .to_vec()
                .into(),
        ),
        Kind::Bool => Field::Bool(value.as_bool().expect("bool")),
        Kind::Int32 => Field::I32(value.as_i64().expect("int") as i32),
        Kind::Int64 => Field::I64(value.as_i64().expect("int")),
        Kind::Double => Field::F64(value.as_f64().expect("float")),
        other => panic!("no builder for {other:?}"),
    }
}

fn envelope_with(api_version: &str, kind: &str, raw: Vec<u8>, extra: Value) -> Vec<u8> {
    let mut unknown = json!({"typeMeta": {"apiVersion": api_version, "kind": kind}});
    unknown
        .as_object_mut()
        .expect("object")
        .extend(extra.as_object().expect("object").clone());
    let mut msg = build(
        descriptor("k8s.io.apimachinery.pkg.runtime.Unknown"),
        &unknown,
    );
    msg.set_field_by_name("raw", Field::Bytes(raw.into()));
    [crate::ENVELOPE_PREFIX, &msg.encode_to_vec()].concat()
}

/// A body for `message` (a full name) with the given proto-shaped fields.
fn body(api_version: &str, kind: &str, message: &str, fields: Value) -> Vec<u8> {
    envelope_with(
        api_version,
        kind,
        build(descriptor(message), &fields).encode_to_vec(),
        json!({}),
    )
}

fn decoded(body: &[u8]) -> Value {
    decode(body)
        .unwrap_or_else(|err| panic!("decode failed: {err}"))
        .object
}

#[test]
fn pod_pointers_inline_structs_and_times() {
    let pod = body(
        "v1",
        "Pod",
        "k8s.io.api.core.v1.Pod",
        json!({
            "metadata": {
                "name": "p",
                "creationTimestamp": {"seconds": 1_704_067_200},
                "managedFields": [{
                    "manager": "kubectl",
                    "time": {"seconds": 1_704_067_200, "nanos": 999},
                    "fieldsV1": {"Raw": "{\"f:metadata\":{}}"}
                }]
            },
            "spec": {
                "containers": [{
                    "name": "c",
                    "livenessProbe": {"handler": {"httpGet": {"port": {"type": 1, "strVal": "http"}}}, "initialDelaySeconds": 0},
                    "ports": [{"containerPort": 80}]
                }],
                "terminationGracePeriodSeconds": 0,
                "enableServiceLinks": false,
                "hostNetwork": false,
                "volumes": [{"name": "scratch", "volumeSource": {"emptyDir": {"sizeLimit": {"string": "1Gi"}}}}]
            }
        }),
    );
    assert_eq!(
        decoded(&pod),
        json!({
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": {
                "name": "p",
                "creationTimestamp": "2024-01-01T00:00:00Z",
                "managedFields": [{"manager": "kubectl", "time": "2024-01-01T00:00:00Z", "fieldsV1": {"f:metadata": {}}}]
            },
            "spec": {
                "containers": [{
                    "name": "c",
                    "livenessProbe": {"httpGet": {"port": "http"}},
                    "ports": [{"containerPort": 80}],
                    "resources": {}
                }],
                "terminationGracePeriodSeconds": 0,
                "enableServiceLinks": false,
                "volumes": [{"name": "scratch", "emptyDir": {"sizeLimit": "1Gi"}}]
            },
            "status": {}
        })
    );
}

#[test]
fn event_micro_time_and_zero_time() {
    let event = body(
        "events.k8s.io/v1",
        "Event",
        "k8s.io.api.events.v1.Event",
        json!({"metadata": {"name": "e"}, "eventTime": {"seconds": 1_704_067_200, "nanos": 123_456_789}, "reason": "Pulled"}),
    );
    assert_eq!(
        decoded(&event),
        json!({
            "kind": "Event",
            "apiVersion": "events.k8s.io/v1",
            "metadata": {"name": "e", "creationTimestamp": null},
            "eventTime": "2024-01-01T00:00:00.123456Z",
            "reason": "Pulled",
            "regarding": {},
            "deprecatedSource": {},
            "deprecatedFirstTimestamp": null,
            "deprecatedLastTimestamp": null
        })
    );
}

#[test]
fn secret_bytes_are_base64_and_map_keys_sorted() {
    let secret = body(
        "v1",
        "Secret",
        "k8s.io.api.core.v1.Secret",
        json!({"metadata": {"name": "s"}, "data": {"b": "q", "a": ""}, "type": "Opaque"}),
    );
    let object = decoded(&secret);
    assert_eq!(object["data"], json!({"a": "", "b": "cQ=="}));
    let keys: Vec<&String> = object["data"]
        .as_object()
        .expect("data is an object")
        .keys()
        .collect();
    assert_eq!(keys, ["a", "b"]);
}

#[test]
fn controller_revision_raw_extension_holds_json_or_an_envelope() {
    let revision = body(
        "apps/v1",
        "ControllerRevision",
        "k8s.io.api.apps.v1.ControllerRevision",
        json!({"metadata": {"name": "r"}, "data": {"raw": "{\"spec\":{\"replicas\":1}}"}, "revision": 0}),
    );
    assert_eq!(decoded(&revision)["data"], json!({"spec": {"replicas": 1}}));

    let config_map = body(
        "v1",
        "ConfigMap",
        "k8s.io.api.core.v1.ConfigMap",
        json!({"metadata": {"name": "c"}, "data": {"k": "v"}}),
    );
    let mut revision = build(
        descriptor("k8s.io.api.apps.v1.ControllerRevision"),
        &json!({"metadata": {"name": "r"}}),
    );
    let mut data = DynamicMessage::new(descriptor("k8s.io.apimachinery.pkg.runtime.RawExtension"));
    data.set_field_by_name("raw", Field::Bytes(config_map.into()));
    revision.set_field_by_name("data", Field::Message(data));
    let nested = envelope_with(
        "apps/v1",
        "ControllerRevision",
        revision.encode_to_vec(),
        json!({}),
    );
    assert_eq!(
        decoded(&nested)["data"],
        json!({"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "c", "creationTimestamp": null}, "data": {"k": "v"}})
    );
}

#[test]
fn crd_schema_types_marshal_like_apiextensions() {
    let crd = body(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinition",
        json!({
            "metadata": {"name": "widgets.example.com"},
            "spec": {
                "group": "example.com",
                "names": {"plural": "widgets", "kind": "Widget"},
                "scope": "Namespaced",
                "versions": [{
                    "name": "v1",
                    "served": true,
                    "storage": true,
                    "schema": {"openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {"type": "object", "xKubernetesPreserveUnknownFields": true, "default": {"raw": "{\"a\":1}"}},
                            "tags": {"type": "array", "items": {"schema": {"type": "string"}}},
                            "size": {"type": "number", "maximum": 10.5, "multipleOf": 2.0}
                        },
                        "additionalProperties": {"allows": false},
                        "ref": "#/x"
                    }}
                }]
            }
        }),
    );
    let object = decoded(&crd);
    assert_eq!(
        object["spec"]["versions"][0]["schema"]["openAPIV3Schema"],
        json!({
            "type": "object",
            "$ref": "#/x",
            "properties": {
                "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true, "default": {"a": 1}},
                "tags": {"type": "array", "items": {"type": "string"}},
                "size": {"type": "number", "maximum": 10.5, "multipleOf": 2}
            },
            "additionalProperties": false
        })
    );
    assert_eq!(
        object["spec"]["names"],
        json!({"plural": "widgets", "kind": "Widget"})
    );
}

#[test]
fn delete_options_are_accepted_under_any_group_version() {
    let options = body(
        "apps/v1",
        "DeleteOptions",
        "k8s.io.apimachinery.pkg.apis.meta.v1.DeleteOptions",
        json!({"propagationPolicy": "Foreground", "gracePeriodSeconds": 0}),
    );
    assert_eq!(
        decoded(&options),
        json!({"kind": "DeleteOptions", "apiVersion": "apps/v1", "propagationPolicy": "Foreground", "gracePeriodSeconds": 0})
    );
}

#[test]
fn error_texts() {
    let message = |body: &[u8]| decode(body).expect_err("must fail").to_string();
    assert_eq!(message(b""), "empty data");
    assert_eq!(
        message(b"{\"kind\":\"Pod\"}"),
        "provided data does not appear to be a protobuf message, expected prefix [107 56 115 0]"
    );
    assert_eq!(
        message(&envelope_with("v1", "", vec![], json!({}))),
        "Object 'Kind' is missing in protobuf envelope"
    );
    assert_eq!(
        message(&envelope_with("", "Pod", vec![], json!({}))),
        "Object 'apiVersion' is missing in protobuf envelope"
    );
    assert_eq!(
        message(&envelope_with("v1", "Gadget", vec![], json!({}))),
        "no kind \"Gadget\" is registered for version \"v1\""
    );
    assert_eq!(
        message(&envelope_with("apps/v1", "Pod", vec![], json!({}))),
        "no kind \"Pod\" is registered for version \"apps/v1\""
    );
    assert_eq!(
        message(&envelope_with(
            "v1",
            "Pod",
            vec![],
            json!({"contentEncoding": "gzip"})
        )),
        "unsupported content encoding \"gzip\" in protobuf envelope"
    );
    assert!(message(b"k8s\0\x0a\xff").starts_with("malformed protobuf envelope: "));

    // A truncated container name: the error names the message and field path.
    let pod = build(
        descriptor("k8s.io.api.core.v1.Pod"),
        &json!({"spec": {"containers": [{"name": "container-name"}]}}),
    )
    .encode_to_vec();
    let truncated = envelope_with("v1", "Pod", pod[..pod.len() - 3].to_vec(), json!({}));
    let text = message(&truncated);
    assert_eq!(
        text,
        "malformed Pod message: spec: length 18 overruns the 15 bytes left"
    );
    // Truncated inside the container instead: the path goes down to it.
    let mut cut = pod.clone();
    cut[1] -= 3; // spec's length
    cut[3] -= 3; // containers[0]'s length
    let text = message(&envelope_with(
        "v1",
        "Pod",
        cut[..cut.len() - 3].to_vec(),
        json!({}),
    ));
    assert_eq!(
        text,
        "malformed Pod message: spec.containers[0].name: length 14 overruns the 11 bytes left"
    );

    let far_future = body(
        "v1",
        "Namespace",
        "k8s.io.api.core.v1.Namespace",
        json!({"metadata": {"creationTimestamp": {"seconds": i64::MAX}}}),
    );
    assert_eq!(
        message(&far_future),
        "metadata.creationTimestamp: time out of range: year outside of range [0,9999]"
    );
    let impossible = body(
        "v1",
        "Service",
        "k8s.io.api.core.v1.Service",
        json!({"spec": {"ports": [{"port": 80, "targetPort": {"type": 7}}]}}),
    );
    assert_eq!(
        message(&impossible),
        "spec.ports[0].targetPort: impossible IntOrString.Type 7"
    );
    assert!(matches!(
        decode(&impossible),
        Err(DecodeError::Field { .. })
    ));
}

#[test]
fn envelopes_nested_too_deep_are_refused() {
    let mut current = body("v1", "ConfigMap", "k8s.io.api.core.v1.ConfigMap", json!({}));
    for _ in 0..20 {
        let mut revision = DynamicMessage::new(descriptor("k8s.io.api.apps.v1.ControllerRevision"));
        let mut data =
            DynamicMessage::new(descriptor("k8s.io.apimachinery.pkg.runtime.RawExtension"));
        data.set_field_by_name("raw", Field::Bytes(current.into()));
        revision.set_field_by_name("data", Field::Message(data));
        current = envelope_with(
            "apps/v1",
            "ControllerRevision",
            revision.encode_to_vec(),
            json!({}),
        );
    }
    let text = decode(&current).expect_err("too deep").to_string();
    assert!(
        text.contains("protobuf objects nested more than 8 deep"),
        "{text}"
    );
}

/// Every field of every message a kind can reach has its Go JSON facts in
/// go_fields.txt, and every row there names a real field: the table and the
/// vendored protos come from the same upstream release.
#[test]
fn go_table_covers_every_reachable_field() {
    let schema = Schema::get();
    // Types whose JSON is written by hand in json.rs rather than from the table.
    let hand_written = [
        "k8s.io.apimachinery.pkg.apis.meta.v1.Time",
        "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime",
        "k8s.io.apimachinery.pkg.apis.meta.v1.Duration",
        "k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1",
        "k8s.io.apimachinery.pkg.runtime.RawExtension",
        "k8s.io.apimachinery.pkg.util.intstr.IntOrString",
        "k8s.io.apimachinery.pkg.api.resource.Quantity",
        "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.JSON",
        "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrBool",
        "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrArray",
        "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrStringArray",
    ];
    let mut seen = std::collections::HashSet::new();
    let mut pending: Vec<MessageDescriptor> =
        schema.kinds().map(|(_, message)| message.clone()).collect();
    let mut missing = Vec::new();
    assert!(pending.len() > 100, "only {} kinds", pending.len());
    while let Some(message) = pending.pop() {
        let name = message.full_name().to_owned();
        if !seen.insert(name.clone())
            || hand_written.contains(&name.as_str())
            || schema.is_slice_wrapper(&name)
        {
            continue;
        }
        let go_fields = schema.go_fields(&name);
        for field in message.fields() {
            if !go_fields.iter().any(|go| go.number == field.number()) {
                missing.push(format!("{name}.{} has no Go row", field.name()));
            }
            if let Kind::Message(inner) = field.kind() {
                if inner.is_map_entry() {
                    if let Kind::Message(value) = inner.map_entry_value_field().kind() {
                        pending.push(value);
                    }
                } else {
                    pending.push(inner);
                }
            }
        }
        for go in go_fields {
            if message.get_field(go.number).is_none() {
                missing.push(format!(
                    "{name} has no field {} ({})",
                    go.number, go.json_name
                ));
            }
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}
