//! Decodes Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`)
//! into the JSON the same object has when a client sends it as JSON.
//!
//! A body is the 4 bytes `k8s\0` and a `runtime.Unknown` whose `typeMeta` names
//! the apiVersion and kind and whose `raw` is the object's message
//! (`k8s.io.api.apps.v1.Deployment`, …). The messages come from upstream's
//! `generated.proto` files, vendored under `proto/`; what protobuf does not say
//! about the Go JSON encoding (names, pointers, `omitempty`, `inline`) comes
//! from `src/go_fields.txt`, generated from upstream's Go types. Both are made
//! by `tools/vendor_upstream.py`. The tests compare against real kubectl
//! bodies, which `tools/capture_fixtures.py` records.

mod json;
mod schema;
mod text;
mod wire;

use prost_reflect::{DynamicMessage, Value as Field};
use serde_json::Value;

use crate::schema::Schema;

/// The magic bytes every Kubernetes protobuf body starts with.
pub const ENVELOPE_PREFIX: &[u8] = b"k8s\0";

/// Envelopes nested in RawExtensions deeper than this are refused, so that a
/// body cannot make the decoder recurse without bound.
const MAX_NESTING: u32 = 8;

/// A decoded body: the envelope's type and the object as Go-shaped JSON, with
/// `kind` and `apiVersion` set from the envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub api_version: String,
    pub kind: String,
    pub object: Value,
}

/// Why a body could not be decoded. The texts are meant for a 400 answer;
/// the first three are the texts Kubernetes' own serializer uses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty data")]
    Empty,
    #[error(
        "provided data does not appear to be a protobuf message, expected prefix [107 56 115 0]"
    )]
    MissingPrefix,
    #[error("Object 'Kind' is missing in protobuf envelope")]
    MissingKind,
    #[error("Object 'apiVersion' is missing in protobuf envelope")]
    MissingApiVersion,
    #[error("malformed protobuf envelope: {0}")]
    Envelope(String),
    #[error("unsupported content encoding {0:?} in protobuf envelope")]
    ContentEncoding(String),
    #[error("unsupported content type {0:?} in protobuf envelope")]
    ContentType(String),
    #[error("no kind {kind:?} is registered for version {api_version:?}")]
    UnknownKind { api_version: String, kind: String },
    /// The object's bytes do not decode as its message; `detail` names the
    /// message and field where decoding stopped.
    #[error("malformed {kind} message: {detail}")]
    Malformed { kind: String, detail: String },
    /// The message decoded but a value in it has no JSON form.
    #[error("{path}: {problem}")]
    Field { path: String, problem: String },
    #[error("protobuf objects nested more than {MAX_NESTING} deep")]
    TooDeep,
}

/// Decodes one protobuf request body.
pub fn decode(body: &[u8]) -> Result<Decoded, DecodeError> {
    decode_nested(body, 0)
}

fn decode_nested(body: &[u8], nesting: u32) -> Result<Decoded, DecodeError> {
    if nesting > MAX_NESTING {
        return Err(DecodeError::TooDeep);
    }
    if body.is_empty() {
        return Err(DecodeError::Empty);
    }
    let unknown_bytes = body
        .strip_prefix(ENVELOPE_PREFIX)
        .ok_or(DecodeError::MissingPrefix)?;
    let schema = Schema::get();
    let unknown_descriptor = schema
        .pool
        .get_message_by_name("k8s.io.apimachinery.pkg.runtime.Unknown")
        .expect("runtime.Unknown is in the vendored protos");
    let unknown = DynamicMessage::decode(unknown_descriptor, unknown_bytes)
        .map_err(|err| DecodeError::Envelope(err.to_string()))?;
    let envelope = Envelope::read(&unknown);
    if envelope.kind.is_empty() {
        return Err(DecodeError::MissingKind);
    }
    if envelope.api_version.is_empty() {
        return Err(DecodeError::MissingApiVersion);
    }
    if !envelope.content_encoding.is_empty() {
        return Err(DecodeError::ContentEncoding(envelope.content_encoding));
    }
    if !matches!(
        envelope.content_type.as_str(),
        "" | "application/vnd.kubernetes.protobuf"
    ) {
        return Err(DecodeError::ContentType(envelope.content_type));
    }
    let Some(descriptor) = schema.kind(&envelope.api_version, &envelope.kind) else {
        return Err(DecodeError::UnknownKind {
            api_version: envelope.api_version,
            kind: envelope.kind,
        });
    };
    let message = match DynamicMessage::decode(descriptor.clone(), envelope.raw.as_slice()) {
        Ok(message) => message,
        Err(err) => {
            // prost names the fields it was inside, but not the one whose
            // length overran; the scan finds that one when it can.
            let detail =
                wire::first_fault(&descriptor, &envelope.raw).unwrap_or_else(|| err.to_string());
            return Err(DecodeError::Malformed {
                kind: envelope.kind,
                detail,
            });
        }
    };
    let fields = json::message(schema, &message, json::Path::root(nesting))?;
    // TypeMeta comes first in Go's structs and is omitempty; the envelope
    // checks above mean both are set.
    let mut object = serde_json::Map::new();
    object.insert("kind".to_owned(), Value::String(envelope.kind.clone()));
    object.insert(
        "apiVersion".to_owned(),
        Value::String(envelope.api_version.clone()),
    );
    if let Value::Object(fields) = fields {
        object.extend(fields);
    }
    Ok(Decoded {
        api_version: envelope.api_version,
        kind: envelope.kind,
        object: Value::Object(object),
    })
}

/// The fields of a `runtime.Unknown`.
struct Envelope {
    api_version: String,
    kind: String,
    raw: Vec<u8>,
    content_encoding: String,
    content_type: String,
}

impl Envelope {
    fn read(unknown: &DynamicMessage) -> Envelope {
        let string = |msg: &DynamicMessage, number| match msg.get_field_by_number(number).as_deref()
        {
            Some(Field::String(text)) => text.clone(),
            _ => String::new(),
        };
        let (api_version, kind) = match unknown.get_field_by_number(1).as_deref() {
            Some(Field::Message(type_meta)) => (string(type_meta, 1), string(type_meta, 2)),
            _ => (String::new(), String::new()),
        };
        let raw = match unknown.get_field_by_number(2).as_deref() {
            Some(Field::Bytes(raw)) => raw.to_vec(),
            _ => Vec::new(),
        };
        Envelope {
            api_version,
            kind,
            raw,
            content_encoding: string(unknown, 3),
            content_type: string(unknown, 4),
        }
    }
}

#[cfg(test)]
mod tests;
