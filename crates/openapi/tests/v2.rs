//! `/openapi/v2` protobuf: decoded with a minimal wire-format reader, it holds
//! what kubectl 1.27 and 1.28 look for (a PATCH operation per kind with
//! `x-kubernetes-group-version-kind` and a `fieldValidation` query parameter).

mod served;

use openapi::v2_protobuf;
use serde_json::{Value, json};

/// One field of a message: its number and, for length-delimited fields, bytes.
#[derive(Debug)]
enum Field<'a> {
    Bytes(u32, &'a [u8]),
    Varint(u32, u64),
}

fn read_varint(bytes: &[u8], position: &mut usize) -> u64 {
    let mut value = 0u64;
    let mut shift = 0;
    loop {
        let byte = bytes[*position];
        *position += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return value;
        }
        shift += 7;
    }
}

fn fields(bytes: &[u8]) -> Vec<Field<'_>> {
    let mut position = 0;
    let mut fields = Vec::new();
    while position < bytes.len() {
        let key = read_varint(bytes, &mut position);
        let number = (key >> 3) as u32;
        match key & 7 {
            0 => fields.push(Field::Varint(number, read_varint(bytes, &mut position))),
            2 => {
                let length = read_varint(bytes, &mut position) as usize;
                fields.push(Field::Bytes(number, &bytes[position..position + length]));
                position += length;
            }
            wire_type => panic!("unexpected wire type {wire_type}"),
        }
    }
    fields
}

fn all(bytes: &[u8], number: u32) -> Vec<&[u8]> {
    fields(bytes)
        .into_iter()
        .filter_map(|field| match field {
            Field::Bytes(n, value) if n == number => Some(value),
            _ => None,
        })
        .collect()
}

fn one(bytes: &[u8], number: u32) -> &[u8] {
    all(bytes, number)
        .first()
        .copied()
        .unwrap_or_else(|| panic!("field {number} missing"))
}

fn text(bytes: &[u8], number: u32) -> String {
    String::from_utf8(one(bytes, number).to_vec()).expect("utf-8")
}

/// The path items of a document by path.
fn path_items(document: &[u8]) -> Vec<(String, &[u8])> {
    all(one(document, 8), 2)
        .into_iter()
        .map(|named| (text(named, 1), one(named, 2)))
        .collect()
}

/// An operation's vendor extensions, their YAML values parsed (they are JSON).
fn extensions(operation: &[u8]) -> Vec<(String, Value)> {
    all(operation, 13)
        .into_iter()
        .map(|named| {
            let yaml = text(one(named, 2), 2);
            (text(named, 1), serde_json::from_str(&yaml).expect("JSON"))
        })
        .collect()
}

/// An operation's query parameter names.
fn query_parameters(operation: &[u8]) -> Vec<String> {
    all(operation, 8)
        .into_iter()
        .filter_map(|item| {
            let non_body = one(one(item, 1), 2);
            all(non_body, 3).first().map(|query| text(query, 4))
        })
        .collect()
}

#[test]
fn document_header() {
    let document = v2_protobuf(&served::resources());
    assert_eq!(text(&document, 1), "2.0");
    let info = one(&document, 2);
    assert_eq!(text(info, 1), "Kubernetes");
    assert_eq!(text(info, 2), openapi::KUBERNETES_VERSION);
}

#[test]
fn every_kind_has_a_patch_operation_that_takes_field_validation() {
    let document = v2_protobuf(&served::resources());
    let items = path_items(&document);
    for (group, kind) in [
        ("apps", "Deployment"),
        ("", "Pod"),
        ("", "Namespace"),
        ("batch", "Job"),
        ("example.com", "Widget"),
        ("apiextensions.k8s.io", "CustomResourceDefinition"),
    ] {
        let gvk = json!({"group": group, "kind": kind, "version": "v1"});
        let patch = items
            .iter()
            .filter_map(|(_, item)| all(item, 8).first().copied())
            .find(|operation| {
                extensions(operation)
                    .iter()
                    .any(|(name, value)| name == "x-kubernetes-group-version-kind" && *value == gvk)
            })
            .unwrap_or_else(|| panic!("no PATCH operation for {gvk}"));
        assert!(
            query_parameters(patch)
                .iter()
                .any(|name| name == "fieldValidation"),
            "{gvk}"
        );
        assert!(
            extensions(patch)
                .iter()
                .any(|(name, value)| name == "x-kubernetes-action" && value == "patch")
        );
    }
}

#[test]
fn path_items_carry_their_path_parameters() {
    let document = v2_protobuf(&served::resources());
    let items = path_items(&document);
    let (_, deployment) = items
        .iter()
        .find(|(path, _)| path == "/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
        .expect("deployment path");
    let path_parameters: Vec<String> = all(deployment, 9)
        .into_iter()
        .filter_map(|item| {
            let non_body = one(one(item, 1), 2);
            all(non_body, 4).first().map(|path| text(path, 4))
        })
        .collect();
    assert_eq!(path_parameters, ["name", "namespace"]);
    let required = fields(one(one(one(all(deployment, 9)[0], 1), 2), 4))
        .into_iter()
        .any(|field| matches!(field, Field::Varint(1, 1)));
    assert!(required);
    // get, put, patch, delete.
    for operation_field in [2, 3, 5, 8] {
        assert_eq!(all(deployment, operation_field).len(), 1);
    }
}

#[test]
fn no_resources_give_an_empty_but_valid_document() {
    let document = v2_protobuf(&[]);
    assert_eq!(text(&document, 1), "2.0");
    assert!(path_items(&document).is_empty());
}
