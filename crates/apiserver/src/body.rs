//! Request bodies: JSON, YAML and Kubernetes protobuf, decoded into JSON
//! values, with the decoder's reason in a 400 when they do not parse.

use serde_json::Value;

use crate::status::ApiError;

/// The media type of a Content-Type header, without parameters.
pub fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Decodes an object body (create, update) by its Content-Type.
pub fn decode_object(content_type: &str, body: &[u8]) -> Result<Value, ApiError> {
    match media_type(content_type).as_str() {
        "application/json" | "" => decode_json(body),
        "application/yaml" | "application/x-yaml" | "text/yaml" => decode_yaml(body),
        "application/vnd.kubernetes.protobuf" => decode_protobuf(body),
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

pub fn decode_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|error| {
        ApiError::bad_request(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf: {error}"
        ))
    })
}

pub fn decode_yaml(body: &[u8]) -> Result<Value, ApiError> {
    serde_yaml_ng::from_slice(body).map_err(|error| {
        ApiError::bad_request(format!("error converting YAML to JSON: yaml: {error}"))
    })
}

/// A protobuf body (kubectl 1.32+ sends them for `kubectl create …`),
/// decoded to the JSON the same object would have been sent as.
fn decode_protobuf(body: &[u8]) -> Result<Value, ApiError> {
    kubepb::decode(body)
        .map(|decoded| decoded.object)
        .map_err(|error| ApiError::bad_request(error.to_string()))
}

/// The `g`, `v` and `as` parameters of one media type in an Accept header
/// (`application/json;as=Table;v=v1;g=meta.k8s.io`), in any order.
pub struct MediaParameters<'a> {
    pub group: Option<&'a str>,
    pub version: Option<&'a str>,
    pub shape: Option<&'a str>,
}

/// Each media type of an Accept header, with its parameters.
pub fn accepted(accept: &str) -> impl Iterator<Item = MediaParameters<'_>> {
    accept.split(',').map(|media| {
        let mut parameters = MediaParameters {
            group: None,
            version: None,
            shape: None,
        };
        for parameter in media.split(';').skip(1) {
            let (key, value) = parameter.split_once('=').unwrap_or((parameter, ""));
            match key.trim() {
                "g" => parameters.group = Some(value.trim()),
                "v" => parameters.version = Some(value.trim()),
                "as" => parameters.shape = Some(value.trim()),
                _ => {}
            }
        }
        parameters
    })
}
