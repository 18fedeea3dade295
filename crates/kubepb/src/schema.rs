//! The schema the decoder walks: the upstream messages (a descriptor set built
//! from `proto/` by `build.rs`) and, from `go_fields.txt`, what only the Go
//! types say: JSON names, pointers, `omitempty`, `inline`, and which
//! apiVersion/kind pairs name which message.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use prost_reflect::{DescriptorPool, MessageDescriptor};

static DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/k8s.fds"));
static GO_FIELDS: &str = include_str!("go_fields.txt");

/// How the Go struct field behind one proto field is written as JSON.
#[derive(Debug, Clone)]
pub(crate) struct GoField {
    pub(crate) number: u32,
    pub(crate) json_name: String,
    /// A pointer (or the field is otherwise nilable on its own): present in
    /// JSON exactly when present on the wire.
    pub(crate) pointer: bool,
    pub(crate) omit_empty: bool,
    /// `json:",inline"`: the message's fields are written into the parent object.
    pub(crate) inline: bool,
    /// `json:"-"`: only the special-cased types have such fields.
    pub(crate) skip: bool,
}

pub(crate) struct Schema {
    pub(crate) pool: DescriptorPool,
    /// (apiVersion, kind) to the message it names.
    kinds: HashMap<(String, String), MessageDescriptor>,
    /// Message full name to its Go fields, in Go struct order.
    fields: HashMap<String, Vec<GoField>>,
    /// Messages wrapping a Go named slice type (`type Verbs []string`).
    slices: HashSet<String>,
}

impl Schema {
    /// The schema, built on first use from data compiled into the crate.
    pub(crate) fn get() -> &'static Schema {
        static SCHEMA: OnceLock<Schema> = OnceLock::new();
        SCHEMA.get_or_init(Schema::build)
    }

    fn build() -> Schema {
        // Both inputs are compiled into the crate and checked by the tests,
        // so a failure here is a build defect, not bad input.
        let pool = DescriptorPool::decode(DESCRIPTOR_SET)
            .expect("descriptor set built by build.rs decodes");
        let mut kinds = HashMap::new();
        let mut fields: HashMap<String, Vec<GoField>> = HashMap::new();
        let mut slices = HashSet::new();
        for line in GO_FIELDS.lines().filter(|line| !line.starts_with('#')) {
            let words: Vec<&str> = line.split(' ').collect();
            match words.as_slice() {
                ["kind", api_version, kind, message] => {
                    let descriptor = pool
                        .get_message_by_name(message)
                        .expect("go_fields.txt kind names a message");
                    kinds.insert((api_version.to_string(), kind.to_string()), descriptor);
                }
                ["slice", message] => {
                    slices.insert(message.to_string());
                }
                ["field", message, number, json_name, flags @ ..] => {
                    fields
                        .entry(message.to_string())
                        .or_default()
                        .push(GoField {
                            number: number.parse().expect("go_fields.txt field number"),
                            json_name: json_name.to_string(),
                            pointer: flags.contains(&"ptr"),
                            omit_empty: flags.contains(&"omitempty"),
                            inline: flags.contains(&"inline"),
                            skip: flags.contains(&"skip"),
                        });
                }
                _ => panic!("go_fields.txt: unreadable line {line:?}"),
            }
        }
        Schema {
            pool,
            kinds,
            fields,
            slices,
        }
    }

    /// The message for a kind, looking in meta/v1 for the kinds every group
    /// version shares (client-go sends `DeleteOptions` as e.g. `apps/v1`).
    pub(crate) fn kind(&self, api_version: &str, kind: &str) -> Option<MessageDescriptor> {
        if let Some(message) = self.kinds.get(&(api_version.to_owned(), kind.to_owned())) {
            return Some(message.clone());
        }
        const SHARED_KINDS: &[&str] = &[
            "CreateOptions",
            "DeleteOptions",
            "GetOptions",
            "ListOptions",
            "PatchOptions",
            "UpdateOptions",
            "Status",
            "WatchEvent",
        ];
        if SHARED_KINDS.contains(&kind) {
            return self
                .pool
                .get_message_by_name(&format!("k8s.io.apimachinery.pkg.apis.meta.v1.{kind}"));
        }
        None
    }

    pub(crate) fn go_fields(&self, message: &str) -> &[GoField] {
        self.fields.get(message).map_or(&[], Vec::as_slice)
    }

    pub(crate) fn is_slice_wrapper(&self, message: &str) -> bool {
        self.slices.contains(message)
    }

    #[cfg(test)]
    pub(crate) fn kinds(&self) -> impl Iterator<Item = (&(String, String), &MessageDescriptor)> {
        self.kinds.iter()
    }
}
