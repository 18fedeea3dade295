//! Property tests: selector printing and parsing agree, merge patch is idempotent
//! on a document's own content, JSON patch is all or nothing, and strategic merge
//! patch without a schema or directives is JSON merge patch.

use apimachinery::labels::{Operator, Requirement, Selector};
use apimachinery::patch::{ObjectSchema, json_patch, merge_patch, strategic_merge_patch};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

fn label_key() -> impl Strategy<Value = String> {
    let name = "[A-Za-z0-9]([-A-Za-z0-9_.]{0,10}[A-Za-z0-9])?";
    let prefix = proptest::option::of("[a-z0-9]{1,5}(\\.[a-z0-9]([-a-z0-9]{0,3}[a-z0-9])?){0,2}");
    (prefix, name).prop_map(|(prefix, name)| match prefix {
        Some(prefix) => format!("{prefix}/{name}"),
        None => name,
    })
}

fn label_value() -> impl Strategy<Value = String> {
    "([A-Za-z0-9]([-A-Za-z0-9_.]{0,8}[A-Za-z0-9])?)?"
}

fn requirement() -> impl Strategy<Value = Requirement> {
    let set_values = proptest::collection::vec(label_value(), 1..4).prop_map(|mut values| {
        // The parser reads a value set sorted and without duplicates.
        values.sort();
        values.dedup();
        values
    });
    let operator = prop_oneof![
        Just(Operator::Equals),
        Just(Operator::DoubleEquals),
        Just(Operator::NotEquals),
        Just(Operator::In),
        Just(Operator::NotIn),
        Just(Operator::Exists),
        Just(Operator::DoesNotExist),
        Just(Operator::GreaterThan),
        Just(Operator::LessThan),
    ];
    (
        label_key(),
        operator,
        set_values,
        label_value(),
        0u32..100_000,
    )
        .prop_map(|(key, operator, set_values, value, number)| {
            let values = match operator {
                Operator::In | Operator::NotIn => set_values,
                Operator::Exists | Operator::DoesNotExist => Vec::new(),
                Operator::GreaterThan | Operator::LessThan => vec![number.to_string()],
                _ => vec![value],
            };
            Requirement::new(key, operator, values).expect("generated requirements are valid")
        })
}

/// JSON without nulls, so that a document used as a merge patch removes nothing.
fn json_without_nulls() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(|number| json!(number)),
        "[a-z]{0,4}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-d]", inner, 0..4)
                .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
}

/// JSON with nulls anywhere, and object keys that are never directives.
fn json_with_nulls() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(|number| json!(number)),
        "[a-z]{0,4}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-d]", inner, 0..4)
                .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
}

fn json_object(values: impl Strategy<Value = Value>) -> impl Strategy<Value = Value> {
    proptest::collection::btree_map("[a-d]", values, 0..5)
        .prop_map(|members| Value::Object(members.into_iter().collect::<Map<String, Value>>()))
}

/// JSON whose keys include the strategic merge directives, to probe error paths.
fn json_with_directives() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<i8>().prop_map(|number| json!(number)),
        prop_oneof![
            Just("delete"),
            Just("replace"),
            Just("merge"),
            Just("a"),
            Just("b")
        ]
        .prop_map(|text| json!(text)),
    ];
    let key = prop_oneof![
        Just("$patch".to_string()),
        Just("$retainKeys".to_string()),
        Just("$setElementOrder/a".to_string()),
        Just("$deleteFromPrimitiveList/a".to_string()),
        Just("name".to_string()),
        "[a-b]",
    ];
    leaf.prop_recursive(4, 32, 4, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(key.clone(), inner, 0..4)
                .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
}

fn json_patch_operation() -> impl Strategy<Value = Value> {
    let path = prop_oneof!["/[a-d]", "/[a-d]/[a-d0-3]", "/[a-d]/-", Just(String::new())];
    (
        prop_oneof![
            Just("add"),
            Just("remove"),
            Just("replace"),
            Just("move"),
            Just("copy"),
            Just("test")
        ],
        path.clone(),
        path,
        json_without_nulls(),
    )
        .prop_map(
            |(op, path, from, value)| json!({"op": op, "path": path, "from": from, "value": value}),
        )
}

proptest! {
    #[test]
    fn selector_display_parses_back_to_the_same_selector(
        requirements in proptest::collection::vec(requirement(), 0..5)
    ) {
        let selector = Selector::from_requirements(requirements);
        let printed = selector.to_string();
        let parsed = Selector::parse(&printed)
            .unwrap_or_else(|error| panic!("{printed:?}: {error}"));
        prop_assert_eq!(&parsed, &selector);
        prop_assert_eq!(parsed.to_string(), printed);
    }

    #[test]
    fn strategic_merge_never_panics(original in json_with_directives(), patch in json_with_directives()) {
        let mut schema = apimachinery::patch::PatchSchema::new();
        let merge = |key: Option<&str>| apimachinery::patch::FieldPatchMeta {
            strategy: apimachinery::patch::PatchStrategy::Merge,
            merge_key: key.map(str::to_string),
            retain_keys: true,
        };
        schema
            .add_field("T", "a", merge(Some("name")), Some("T"))
            .add_field("T", "b", merge(None), Some("T"));
        let root = schema.for_type("T").expect("declared above");
        let _ = strategic_merge_patch(&original, &patch, root);
        let _ = strategic_merge_patch(&original, &patch, ObjectSchema::schemaless());
    }

    #[test]
    fn field_selector_parsing_never_panics(input in ".{0,40}") {
        let _ = apimachinery::fields::FieldSelector::parse(&input);
    }

    #[test]
    fn label_selector_parsing_never_panics(input in ".{0,40}") {
        let _ = Selector::parse(&input);
    }

    #[test]
    fn merge_patch_with_the_targets_own_content_is_identity(target in json_object(json_without_nulls())) {
        let mut patched = target.clone();
        merge_patch(&mut patched, &target);
        prop_assert_eq!(&patched, &target);
        // So is a patch of some of the target's own members.
        let Value::Object(members) = &target else { unreachable!("json_object makes objects") };
        let subset: Map<String, Value> = members.iter().step_by(2).map(|(k, v)| (k.clone(), v.clone())).collect();
        let mut patched = target.clone();
        merge_patch(&mut patched, &Value::Object(subset));
        prop_assert_eq!(patched, target);
    }

    #[test]
    fn json_patch_failure_leaves_target_unchanged(
        target in json_object(json_without_nulls()),
        operations in proptest::collection::vec(json_patch_operation(), 0..6),
        force_failure in any::<bool>(),
    ) {
        let mut operations = operations;
        if force_failure {
            operations.push(json!({"op": "test", "path": "/zz", "value": "never there"}));
        }
        let mut patched = target.clone();
        if json_patch(&mut patched, &Value::Array(operations)).is_err() {
            prop_assert_eq!(patched, target);
        } else {
            prop_assert!(!force_failure);
        }
    }

    #[test]
    fn schemaless_strategic_merge_without_directives_is_merge_patch(
        original in json_object(json_with_nulls()),
        patch in json_object(json_with_nulls()),
    ) {
        let mut expected = original.clone();
        merge_patch(&mut expected, &patch);
        let result = strategic_merge_patch(&original, &patch, ObjectSchema::schemaless());
        prop_assert_eq!(result, Ok(expected));
    }
}
