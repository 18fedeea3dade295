//! A pod template's hash, which names a Deployment's ReplicaSets
//! (`<deployment>-<hash>`) and labels their pods (`pod-template-hash`), and
//! template equality that ignores that label.
//!
//! As upstream: FNV-32a over the template, then the collision count's eight
//! little-endian bytes when there is one, the decimal sum re-spelled in the
//! alphabet that cannot make words. Upstream hashes Go's `%#v` rendering of
//! its struct; shoal hashes the template's JSON, so the names differ from a
//! real cluster's (nothing depends on them being equal: the controller finds
//! a template's ReplicaSet by comparing templates, never by hash).

use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::Value;

/// The label on a Deployment's ReplicaSets, their selectors and their pods.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";

/// Upstream's `SafeEncodeString` alphabet (no vowels, no 0/1/3).
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

const FNV32_OFFSET: u32 = 2_166_136_261;
const FNV32_PRIME: u32 = 16_777_619;

fn fnv32a(mut hash: u32, bytes: &[u8]) -> u32 {
    for byte in bytes {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(FNV32_PRIME);
    }
    hash
}

/// The hash of `template` (without its own `pod-template-hash` label) and
/// the Deployment's collision count.
pub fn template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut template = template.clone();
    if let Some(labels) = template
        .metadata
        .as_mut()
        .and_then(|meta| meta.labels.as_mut())
    {
        labels.remove(POD_TEMPLATE_HASH);
    }
    let rendered = normalized(&template).to_string();
    let mut hash = fnv32a(FNV32_OFFSET, rendered.as_bytes());
    if let Some(count) = collision_count {
        let mut bytes = [0u8; 8];
        bytes[..4].copy_from_slice(&(count as u32).to_le_bytes());
        hash = fnv32a(hash, &bytes);
    }
    hash.to_string()
        .bytes()
        .map(|digit| char::from(SAFE_ALPHABET[usize::from(digit) % SAFE_ALPHABET.len()]))
        .collect()
}

/// The template as JSON with the hash label gone and empty values dropped
/// (Go's semantic equality holds nil and empty maps and lists equal).
fn normalized(template: &PodTemplateSpec) -> Value {
    let mut value = serde_json::to_value(template).unwrap_or(Value::Null);
    if let Some(labels) = value
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove(POD_TEMPLATE_HASH);
    }
    drop_empty(&mut value);
    value
}

fn drop_empty(value: &mut Value) -> bool {
    match value {
        Value::Null => true,
        Value::Object(map) => {
            map.retain(|_, inner| !drop_empty(inner));
            map.is_empty()
        }
        Value::Array(items) => {
            for item in items.iter_mut() {
                drop_empty(item);
            }
            items.is_empty()
        }
        _ => false,
    }
}

/// Upstream's `EqualIgnoreHash`: the templates are the same but for the
/// `pod-template-hash` label.
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    normalized(a) == normalized(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn template(image: &str) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..ObjectMeta::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "web".into(),
                    image: Some(image.into()),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
        }
    }

    #[test]
    fn the_hash_uses_the_safe_alphabet_and_depends_on_template_and_collisions() {
        let one = template_hash(&template("busybox:1"), None);
        assert!(!one.is_empty() && one.len() <= 10, "{one}");
        assert!(
            one.bytes().all(|byte| SAFE_ALPHABET.contains(&byte)),
            "{one}"
        );
        assert_eq!(one, template_hash(&template("busybox:1"), None));
        assert_ne!(one, template_hash(&template("busybox:2"), None));
        assert_ne!(one, template_hash(&template("busybox:1"), Some(1)));
        assert_ne!(
            template_hash(&template("busybox:1"), Some(1)),
            template_hash(&template("busybox:1"), Some(2))
        );
    }

    #[test]
    fn fnv32a_matches_the_reference_vectors() {
        assert_eq!(fnv32a(FNV32_OFFSET, b""), 0x811c_9dc5);
        assert_eq!(fnv32a(FNV32_OFFSET, b"a"), 0xe40c_292c);
        assert_eq!(fnv32a(FNV32_OFFSET, b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn equality_ignores_the_hash_label_and_empty_values() {
        let plain = template("busybox:1");
        let mut labelled = plain.clone();
        let labels = labelled.metadata.as_mut().unwrap().labels.as_mut().unwrap();
        labels.insert(POD_TEMPLATE_HASH.into(), "abc".into());
        assert!(equal_ignore_hash(&plain, &labelled));
        assert_eq!(
            template_hash(&plain, None),
            template_hash(&labelled, None),
            "the hash of an RS's template is its Deployment's"
        );
        let mut with_empty_args = plain.clone();
        with_empty_args.spec.as_mut().unwrap().containers[0].args = Some(vec![]);
        assert!(equal_ignore_hash(&plain, &with_empty_args));
        assert!(!equal_ignore_hash(&plain, &template("busybox:2")));
    }
}
