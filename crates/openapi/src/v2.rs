//! `/openapi/v2` for kubectl 1.27 and 1.28: a Swagger 2.0 document encoded as
//! gnostic's `openapi_v2.Document` protobuf, the only form client-go reads.
//!
//! Those kubectl versions fetch it before any `apply`, `create -f` or `replace`,
//! and look in it for a PATCH operation of the object's kind that takes a
//! `fieldValidation` query parameter; finding one, they leave validation to the
//! server. The document therefore carries every operation with its parameters
//! and `x-kubernetes-*` extensions, but no definitions: kubectl 1.27 and 1.28
//! read schemas (explain, apply's patch metadata) from `/openapi/v3`, and fall
//! back to their compiled-in types for patch metadata.

use serde_json::Value;

use crate::{KUBERNETES_VERSION, Resource};

/// The `Content-Type` of the protobuf document. kubectl asks for it as
/// `application/com.github.proto-openapi.spec.v2@v1.0+protobuf` (kube-openapi's
/// deprecated spelling, also to be accepted), but `@` is not allowed in a media
/// type and Go's `mime.ParseMediaType` rejects an answer carrying it, so the
/// server answers with this dotted form, as kube-apiserver does.
pub const V2_PROTOBUF_MEDIA_TYPE: &str =
    "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// Field numbers of gnostic's `openapiv2/OpenAPIv2.proto`.
mod field {
    pub const DOCUMENT_SWAGGER: u32 = 1;
    pub const DOCUMENT_INFO: u32 = 2;
    pub const DOCUMENT_PATHS: u32 = 8;
    pub const INFO_TITLE: u32 = 1;
    pub const INFO_VERSION: u32 = 2;
    pub const PATHS_PATH: u32 = 2;
    pub const NAMED_NAME: u32 = 1;
    pub const NAMED_VALUE: u32 = 2;
    pub const PATH_ITEM_PARAMETERS: u32 = 9;
    pub const OPERATION_TAGS: u32 = 1;
    pub const OPERATION_DESCRIPTION: u32 = 3;
    pub const OPERATION_OPERATION_ID: u32 = 5;
    pub const OPERATION_PARAMETERS: u32 = 8;
    pub const OPERATION_VENDOR_EXTENSION: u32 = 13;
    pub const PARAMETERS_ITEM_PARAMETER: u32 = 1;
    pub const PARAMETER_NON_BODY: u32 = 2;
    pub const NON_BODY_QUERY: u32 = 3;
    pub const NON_BODY_PATH: u32 = 4;
    /// `required`, `in`, `description`, `name` are 1 to 4 in both the query and
    /// the path parameter messages; `type` is 6 in one and 5 in the other.
    pub const PARAMETER_REQUIRED: u32 = 1;
    pub const PARAMETER_IN: u32 = 2;
    pub const PARAMETER_DESCRIPTION: u32 = 3;
    pub const PARAMETER_NAME: u32 = 4;
    pub const QUERY_PARAMETER_TYPE: u32 = 6;
    pub const PATH_PARAMETER_TYPE: u32 = 5;
    pub const ANY_YAML: u32 = 2;
}

/// PathItem's operation fields, by the method's name.
fn operation_field(method: &str) -> Option<u32> {
    match method {
        "get" => Some(2),
        "put" => Some(3),
        "post" => Some(4),
        "delete" => Some(5),
        "options" => Some(6),
        "head" => Some(7),
        "patch" => Some(8),
        _ => None,
    }
}

/// Protobuf wire-format writing, just what the document needs.
#[derive(Default)]
struct Writer {
    bytes: Vec<u8>,
}

impl Writer {
    fn varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.bytes.push((value as u8 & 0x7f) | 0x80);
            value >>= 7;
        }
        self.bytes.push(value as u8);
    }

    fn length_delimited(&mut self, field: u32, payload: &[u8]) {
        self.varint(u64::from(field) << 3 | 2);
        self.varint(payload.len() as u64);
        self.bytes.extend_from_slice(payload);
    }

    fn string(&mut self, field: u32, value: &str) {
        if !value.is_empty() {
            self.length_delimited(field, value.as_bytes());
        }
    }

    fn bool(&mut self, field: u32, value: bool) {
        if value {
            self.varint(u64::from(field) << 3);
            self.varint(1);
        }
    }

    fn message(&mut self, field: u32, build: impl FnOnce(&mut Writer)) {
        let mut inner = Writer::default();
        build(&mut inner);
        self.length_delimited(field, &inner.bytes);
    }
}

/// A `NamedAny` vendor extension; gnostic keeps the value as YAML text, and
/// JSON is YAML.
fn vendor_extension(writer: &mut Writer, field: u32, name: &str, value: &Value) {
    writer.message(field, |named| {
        named.string(field::NAMED_NAME, name);
        named.message(field::NAMED_VALUE, |any| {
            any.string(field::ANY_YAML, &value.to_string());
        });
    });
}

/// A `ParametersItem` from a v3 parameter object (`in`, `name`, `schema.type`).
fn parameter(writer: &mut Writer, field: u32, parameter: &Value) {
    let location = parameter["in"].as_str().unwrap_or_default();
    let (sub_schema, type_field) = match location {
        "query" => (field::NON_BODY_QUERY, field::QUERY_PARAMETER_TYPE),
        "path" => (field::NON_BODY_PATH, field::PATH_PARAMETER_TYPE),
        _ => return,
    };
    writer.message(field, |item| {
        item.message(field::PARAMETERS_ITEM_PARAMETER, |parameter_message| {
            parameter_message.message(field::PARAMETER_NON_BODY, |non_body| {
                non_body.message(sub_schema, |schema| {
                    schema.bool(
                        field::PARAMETER_REQUIRED,
                        parameter["required"].as_bool().unwrap_or(false),
                    );
                    schema.string(field::PARAMETER_IN, location);
                    schema.string(
                        field::PARAMETER_DESCRIPTION,
                        parameter["description"].as_str().unwrap_or_default(),
                    );
                    schema.string(
                        field::PARAMETER_NAME,
                        parameter["name"].as_str().unwrap_or_default(),
                    );
                    schema.string(
                        type_field,
                        parameter["schema"]["type"].as_str().unwrap_or_default(),
                    );
                });
            });
        });
    });
}

fn operation(writer: &mut Writer, field: u32, operation: &Value) {
    writer.message(field, |message| {
        for tag in operation["tags"].as_array().into_iter().flatten() {
            message.string(field::OPERATION_TAGS, tag.as_str().unwrap_or_default());
        }
        message.string(
            field::OPERATION_DESCRIPTION,
            operation["description"].as_str().unwrap_or_default(),
        );
        message.string(
            field::OPERATION_OPERATION_ID,
            operation["operationId"].as_str().unwrap_or_default(),
        );
        for item in operation["parameters"].as_array().into_iter().flatten() {
            parameter(message, field::OPERATION_PARAMETERS, item);
        }
        for name in ["x-kubernetes-action", "x-kubernetes-group-version-kind"] {
            if let Some(value) = operation.get(name) {
                vendor_extension(message, field::OPERATION_VENDOR_EXTENSION, name, value);
            }
        }
    });
}

/// `/openapi/v2` as gnostic protobuf: every operation of every served
/// group-version, with its parameters and extensions, and no definitions.
pub fn v2_protobuf(resources: &[Resource]) -> Vec<u8> {
    let mut document = Writer::default();
    document.string(field::DOCUMENT_SWAGGER, "2.0");
    document.message(field::DOCUMENT_INFO, |info| {
        info.string(field::INFO_TITLE, "Kubernetes");
        info.string(field::INFO_VERSION, KUBERNETES_VERSION);
    });
    document.message(field::DOCUMENT_PATHS, |paths| {
        for (group, version) in crate::group_versions(resources) {
            let served: Vec<&Resource> = resources
                .iter()
                .filter(|resource| resource.group == group && resource.version == version)
                .collect();
            for (path, item) in crate::paths::paths(&served, group, version) {
                paths.message(field::PATHS_PATH, |named| {
                    named.string(field::NAMED_NAME, &path);
                    named.message(field::NAMED_VALUE, |path_item| {
                        let Some(item) = item.as_object() else {
                            return;
                        };
                        for (method, body) in item {
                            if let Some(operation_field) = operation_field(method) {
                                operation(path_item, operation_field, body);
                            }
                        }
                        for item_parameter in item
                            .get("parameters")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                        {
                            parameter(path_item, field::PATH_ITEM_PARAMETERS, item_parameter);
                        }
                    });
                });
            }
        }
    });
    document.bytes
}
