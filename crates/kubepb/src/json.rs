//! Writes a decoded message as the JSON Go's `encoding/json` would write for
//! the same Kubernetes object: Go's field names and `omitempty` rules, and the
//! hand-written `MarshalJSON` of the apimachinery and apiextensions types.

use prost_reflect::{
    DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor, ReflectMessage,
    Value as Field,
};
use serde_json::{Map, Number, Value};

use crate::DecodeError;
use crate::schema::{GoField, Schema};
use crate::text;

const META: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.";
const EXTENSIONS: &str = "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.";

/// Where in the object a value sits, for error messages ("spec.template.metadata").
#[derive(Clone, Copy)]
pub(crate) struct Path<'a> {
    parent: Option<&'a Path<'a>>,
    segment: Segment<'a>,
    /// How many envelopes (RawExtensions holding protobuf objects) enclose this value.
    pub(crate) nesting: u32,
}

#[derive(Clone, Copy)]
enum Segment<'a> {
    Root,
    Field(&'a str),
    Index(usize),
    Key(&'a str),
}

impl<'a> Path<'a> {
    pub(crate) fn root(nesting: u32) -> Path<'static> {
        Path {
            parent: None,
            segment: Segment::Root,
            nesting,
        }
    }

    fn field(&'a self, name: &'a str) -> Path<'a> {
        Path {
            parent: Some(self),
            segment: Segment::Field(name),
            nesting: self.nesting,
        }
    }

    fn index(&'a self, idx: usize) -> Path<'a> {
        Path {
            parent: Some(self),
            segment: Segment::Index(idx),
            nesting: self.nesting,
        }
    }

    fn key(&'a self, key: &'a str) -> Path<'a> {
        Path {
            parent: Some(self),
            segment: Segment::Key(key),
            nesting: self.nesting,
        }
    }

    fn render(&self) -> String {
        let mut text = self.parent.map(Path::render).unwrap_or_default();
        match self.segment {
            Segment::Root => {}
            Segment::Field(name) if text.is_empty() => text.push_str(name),
            Segment::Field(name) => {
                text.push('.');
                text.push_str(name);
            }
            Segment::Index(idx) => text.push_str(&format!("[{idx}]")),
            Segment::Key(key) => text.push_str(&format!("[{key:?}]")),
        }
        text
    }

    fn error(&self, problem: impl Into<String>) -> DecodeError {
        let path = self.render();
        DecodeError::Field {
            path: if path.is_empty() {
                "(object)".to_owned()
            } else {
                path
            },
            problem: problem.into(),
        }
    }
}

/// The JSON of one message.
pub(crate) fn message(
    schema: &Schema,
    msg: &DynamicMessage,
    path: Path<'_>,
) -> Result<Value, DecodeError> {
    let descriptor = msg.descriptor();
    if let Some(special) = special(schema, &descriptor, msg, path)? {
        return Ok(special);
    }
    let mut object = Map::new();
    write_fields(schema, msg, &mut object, path)?;
    Ok(Value::Object(object))
}

/// Writes the message's fields into `object`, in Go struct order; `inline`
/// fields write theirs into the same object.
fn write_fields(
    schema: &Schema,
    msg: &DynamicMessage,
    object: &mut Map<String, Value>,
    path: Path<'_>,
) -> Result<(), DecodeError> {
    let descriptor = msg.descriptor();
    let go_fields = schema.go_fields(descriptor.full_name());
    for go in go_fields {
        let Some(field) = descriptor.get_field(go.number) else {
            continue;
        };
        write_field(schema, msg, &field, go, object, path)?;
    }
    // A field the Go table does not know (only if the table and the protos
    // drifted apart): written as a pointer with omitempty under its proto name.
    for field in descriptor.fields() {
        if go_fields.iter().all(|go| go.number != field.number()) {
            let go = GoField {
                number: field.number(),
                json_name: field.name().to_owned(),
                pointer: true,
                omit_empty: true,
                inline: false,
                skip: false,
            };
            write_field(schema, msg, &field, &go, object, path)?;
        }
    }
    Ok(())
}

fn write_field(
    schema: &Schema,
    msg: &DynamicMessage,
    field: &FieldDescriptor,
    go: &GoField,
    object: &mut Map<String, Value>,
    parent: Path<'_>,
) -> Result<(), DecodeError> {
    if go.skip {
        return Ok(());
    }
    let path = parent.field(&go.json_name);
    if go.inline {
        if let Field::Message(inner) = msg.get_field(field).as_ref() {
            return write_fields(schema, inner, object, path);
        }
        return Err(path.error("inline field is not a message"));
    }
    let present = msg.has_field(field);
    let value = msg.get_field(field);
    let json = if field.is_list() || field.is_map() {
        let empty = match value.as_ref() {
            Field::List(items) => items.is_empty(),
            Field::Map(entries) => entries.is_empty(),
            _ => true,
        };
        // Go sees no difference between a nil and an empty slice or map once
        // it has come through protobuf: both decode as nil, which is `null`.
        if empty {
            if go.omit_empty {
                None
            } else {
                Some(Value::Null)
            }
        } else {
            Some(element(schema, field, &value, path)?)
        }
    } else if go.pointer || field.kind() == Kind::Bytes {
        // Pointers, and []byte (nil unless sent), are present exactly when sent.
        if present {
            Some(element(schema, field, &value, path)?)
        } else if go.omit_empty {
            None
        } else {
            Some(Value::Null)
        }
    } else {
        // A value field: Go's protobuf encoder writes it even when zero, so
        // presence says nothing; `omitempty` decides on the value.
        let json = element(schema, field, &value, path)?;
        let message_name = match field.kind() {
            Kind::Message(inner) => Some(inner.full_name().to_owned()),
            _ => None,
        };
        // Structs are never empty to encoding/json; named slices are.
        let omittable = go.omit_empty
            && match &message_name {
                Some(name) => schema.is_slice_wrapper(name) && json.is_null(),
                None => is_zero(&json),
            };
        if omittable { None } else { Some(json) }
    };
    if let Some(json) = json {
        object.insert(go.json_name.clone(), json);
    }
    Ok(())
}

fn is_zero(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(flag) => !flag,
        Value::Number(number) => number.as_f64() == Some(0.0),
        Value::String(text) => text.is_empty(),
        Value::Array(items) => items.is_empty(),
        Value::Object(_) => false,
    }
}

/// The JSON of a field's value: a scalar, a message, a list or a map.
fn element(
    schema: &Schema,
    field: &FieldDescriptor,
    value: &Field,
    path: Path<'_>,
) -> Result<Value, DecodeError> {
    Ok(match value {
        Field::Bool(flag) => Value::Bool(*flag),
        Field::I32(number) => Value::from(*number),
        Field::I64(number) => Value::from(*number),
        Field::U32(number) => Value::from(*number),
        Field::U64(number) => Value::from(*number),
        Field::F32(number) => float(f64::from(*number), path)?,
        Field::F64(number) => float(*number, path)?,
        Field::String(text) => Value::String(text.clone()),
        Field::Bytes(bytes) => Value::String(text::base64(bytes)),
        Field::EnumNumber(number) => Value::from(*number),
        Field::Message(inner) => message(schema, inner, path)?,
        Field::List(items) => {
            let mut array = Vec::with_capacity(items.len());
            for (idx, item) in items.iter().enumerate() {
                array.push(element(schema, field, item, path.index(idx))?);
            }
            Value::Array(array)
        }
        Field::Map(entries) => {
            let value_field =
                map_value_field(field).ok_or_else(|| path.error("map without a value field"))?;
            let mut keyed: Vec<(String, &Field)> = entries
                .iter()
                .map(|(key, value)| (map_key(key), value))
                .collect();
            // encoding/json sorts map keys.
            keyed.sort_by(|left, right| left.0.cmp(&right.0));
            let mut object = Map::new();
            for (key, value) in keyed {
                let json = element(schema, &value_field, value, path.key(&key))?;
                object.insert(key, json);
            }
            Value::Object(object)
        }
    })
}

fn map_value_field(field: &FieldDescriptor) -> Option<FieldDescriptor> {
    match field.kind() {
        Kind::Message(entry) => Some(entry.map_entry_value_field()),
        _ => None,
    }
}

fn map_key(key: &MapKey) -> String {
    match key {
        MapKey::Bool(flag) => flag.to_string(),
        MapKey::I32(number) => number.to_string(),
        MapKey::I64(number) => number.to_string(),
        MapKey::U32(number) => number.to_string(),
        MapKey::U64(number) => number.to_string(),
        MapKey::String(text) => text.clone(),
    }
}

/// Go writes an integral float64 without a fraction ("1", not "1.0"), so such
/// a value reads back as a JSON integer.
fn float(number: f64, path: Path<'_>) -> Result<Value, DecodeError> {
    if number.fract() == 0.0 && number.abs() < 9.0e15 {
        return Ok(Value::from(number as i64));
    }
    Number::from_f64(number)
        .map(Value::Number)
        .ok_or_else(|| path.error(format!("unsupported float value {number}")))
}

/// The types with their own `MarshalJSON` upstream; `None` for the others.
fn special(
    schema: &Schema,
    descriptor: &MessageDescriptor,
    msg: &DynamicMessage,
    path: Path<'_>,
) -> Result<Option<Value>, DecodeError> {
    let name = descriptor.full_name();
    if let Some(meta) = name.strip_prefix(META) {
        return Ok(match meta {
            "Time" => Some(time(msg, 0, path)?),
            "MicroTime" => Some(time(msg, 6, path)?),
            "Duration" => Some(Value::String(text::go_duration(int(msg, 1)))),
            "FieldsV1" => Some(embedded_json(&bytes(msg, 1), path)?),
            _ if schema.is_slice_wrapper(name) => Some(slice_items(schema, msg, path)?),
            _ => None,
        });
    }
    Ok(match name {
        "k8s.io.apimachinery.pkg.runtime.RawExtension" => {
            Some(raw_extension(&bytes(msg, 1), path)?)
        }
        "k8s.io.apimachinery.pkg.util.intstr.IntOrString" => Some(match int(msg, 1) {
            0 => Value::from(int(msg, 2)),
            1 => Value::String(string(msg, 3)),
            other => return Err(path.error(format!("impossible IntOrString.Type {other}"))),
        }),
        // The string a Quantity was sent with; a zero Quantity writes "0".
        "k8s.io.apimachinery.pkg.api.resource.Quantity" => {
            Some(Value::String(match string(msg, 1) {
                text if text.is_empty() => "0".to_owned(),
                text => text,
            }))
        }
        _ => match name.strip_prefix(EXTENSIONS) {
            Some("JSON") => Some(embedded_json(&bytes(msg, 1), path)?),
            Some("JSONSchemaPropsOrBool") => Some(match present_message(msg, 2) {
                Some(schema_props) => message(schema, &schema_props, path)?,
                None => Value::Bool(matches!(
                    msg.get_field_by_number(1).as_deref(),
                    Some(Field::Bool(true))
                )),
            }),
            Some("JSONSchemaPropsOrArray") => Some(one_of_list(schema, msg, 2, 1, path)?),
            Some("JSONSchemaPropsOrStringArray") => Some(one_of_list(schema, msg, 2, 1, path)?),
            _ if schema.is_slice_wrapper(name) => Some(slice_items(schema, msg, path)?),
            _ => None,
        },
    })
}

/// `metav1.Time` and `metav1.MicroTime`: null when zero, else RFC 3339 in UTC.
fn time(msg: &DynamicMessage, fraction_digits: u32, path: Path<'_>) -> Result<Value, DecodeError> {
    let seconds = int(msg, 1);
    let nanos = int(msg, 2);
    if nanos == 0 && (seconds == 0 || seconds == text::GO_ZERO_TIME_UNIX_SECONDS) {
        return Ok(Value::Null);
    }
    // Go's time.Unix carries nanos outside [0, 1e9) into the seconds.
    let seconds = seconds.checked_add(nanos.div_euclid(1_000_000_000));
    let nanos = nanos.rem_euclid(1_000_000_000) as u32;
    seconds
        .and_then(|seconds| text::rfc3339(seconds, nanos, fraction_digits))
        .map(Value::String)
        .ok_or_else(|| path.error("time out of range: year outside of range [0,9999]"))
}

/// `[]byte` holding JSON, as in `FieldsV1` and apiextensions' `JSON`: null when empty.
fn embedded_json(raw: &[u8], path: Path<'_>) -> Result<Value, DecodeError> {
    if raw.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(raw)
        .map_err(|err| path.error(format!("embedded JSON does not parse: {err}")))
}

/// `runtime.RawExtension`: embedded JSON, or an embedded protobuf object in
/// its own envelope, which is decoded the same way as a request body.
fn raw_extension(raw: &[u8], path: Path<'_>) -> Result<Value, DecodeError> {
    if raw.starts_with(crate::ENVELOPE_PREFIX) {
        return crate::decode_nested(raw, path.nesting + 1)
            .map(|decoded| decoded.object)
            .map_err(|err| path.error(format!("embedded object: {err}")));
    }
    embedded_json(raw, path)
}

/// A Go named slice type (`type Verbs []string`): its `items`, null when empty.
fn slice_items(
    schema: &Schema,
    msg: &DynamicMessage,
    path: Path<'_>,
) -> Result<Value, DecodeError> {
    let descriptor = msg.descriptor();
    let Some(items) = descriptor.get_field(1) else {
        return Err(path.error("slice type without items"));
    };
    let value = msg.get_field(&items);
    match value.as_ref() {
        Field::List(list) if list.is_empty() => Ok(Value::Null),
        other => element(schema, &items, other, path),
    }
}

/// The apiextensions "schema or list" types: the list when it has items, else
/// the schema (null when unset).
fn one_of_list(
    schema: &Schema,
    msg: &DynamicMessage,
    list_number: u32,
    schema_number: u32,
    path: Path<'_>,
) -> Result<Value, DecodeError> {
    let descriptor = msg.descriptor();
    if let Some(list) = descriptor.get_field(list_number) {
        let value = msg.get_field(&list);
        if matches!(value.as_ref(), Field::List(items) if !items.is_empty()) {
            return element(schema, &list, &value, path);
        }
    }
    match present_message(msg, schema_number) {
        Some(schema_props) => message(schema, &schema_props, path),
        None => Ok(Value::Null),
    }
}

fn present_message(msg: &DynamicMessage, number: u32) -> Option<DynamicMessage> {
    if !msg.has_field_by_number(number) {
        return None;
    }
    match msg.get_field_by_number(number)?.into_owned() {
        Field::Message(inner) => Some(inner),
        _ => None,
    }
}

fn int(msg: &DynamicMessage, number: u32) -> i64 {
    match msg.get_field_by_number(number).as_deref() {
        Some(Field::I32(value)) => i64::from(*value),
        Some(Field::I64(value)) => *value,
        _ => 0,
    }
}

fn string(msg: &DynamicMessage, number: u32) -> String {
    match msg.get_field_by_number(number).as_deref() {
        Some(Field::String(value)) => value.clone(),
        _ => String::new(),
    }
}

fn bytes(msg: &DynamicMessage, number: u32) -> Vec<u8> {
    match msg.get_field_by_number(number).as_deref() {
        Some(Field::Bytes(value)) => value.to_vec(),
        _ => Vec::new(),
    }
}
