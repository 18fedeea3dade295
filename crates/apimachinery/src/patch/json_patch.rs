//! JSON patch (RFC 6902): a list of add, remove, replace, move, copy and test
//! operations on JSON pointers (RFC 6901), applied all or nothing.

use serde_json::Value;

use super::{PatchError, values_equal};

/// Applies a JSON patch to `target`. The operations apply in order to a copy;
/// `target` changes only if every one succeeds, so on error it is as it was.
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), PatchError> {
    let Value::Array(operations) = patch else {
        return Err(PatchError::MalformedOperation {
            op_idx: 0,
            reason: "a JSON patch must be a list of operations".to_string(),
        });
    };
    let mut document = target.clone();
    for (op_idx, operation) in operations.iter().enumerate() {
        apply_operation(&mut document, op_idx, operation)?;
    }
    *target = document;
    Ok(())
}

fn malformed(op_idx: usize, reason: impl Into<String>) -> PatchError {
    PatchError::MalformedOperation {
        op_idx,
        reason: reason.into(),
    }
}

fn apply_operation(
    document: &mut Value,
    op_idx: usize,
    operation: &Value,
) -> Result<(), PatchError> {
    let Value::Object(fields) = operation else {
        return Err(malformed(op_idx, "an operation must be an object"));
    };
    let op = match fields.get("op") {
        Some(Value::String(op)) => op.as_str(),
        _ => return Err(malformed(op_idx, "missing \"op\"")),
    };
    let op: &'static str = match op {
        "add" => "add",
        "remove" => "remove",
        "replace" => "replace",
        "move" => "move",
        "copy" => "copy",
        "test" => "test",
        other => {
            return Err(PatchError::UnknownOperation {
                op: other.to_string(),
            });
        }
    };
    let string_field = |name: &str| match fields.get(name) {
        Some(Value::String(text)) => Ok(text.as_str()),
        _ => Err(malformed(op_idx, format!("{op} needs a string \"{name}\""))),
    };
    let value_field = || {
        fields
            .get("value")
            .ok_or_else(|| malformed(op_idx, format!("{op} needs a \"value\"")))
    };
    let path = string_field("path")?;
    let tokens = parse_pointer(op, path)?;
    match op {
        "add" => add(document, op, path, &tokens, value_field()?.clone()),
        "remove" => remove(document, path, &tokens).map(|_| ()),
        "replace" => {
            let value = value_field()?.clone();
            let Some(slot) = get_mut(document, &tokens) else {
                return Err(if parent_exists(document, &tokens) {
                    PatchError::MissingKey {
                        path: path.to_string(),
                    }
                } else {
                    PatchError::MissingPath {
                        op,
                        path: path.to_string(),
                    }
                });
            };
            *slot = value;
            Ok(())
        }
        "move" => {
            let from = string_field("from")?;
            let from_tokens = parse_pointer(op, from)?;
            if from_tokens == tokens {
                return get(document, &from_tokens).map(|_| ()).ok_or_else(|| {
                    PatchError::MissingFrom {
                        op,
                        from: from.to_string(),
                    }
                });
            }
            if tokens.starts_with(&from_tokens) {
                return Err(PatchError::MoveIntoChild {
                    from: from.to_string(),
                    path: path.to_string(),
                });
            }
            if get(document, &from_tokens).is_none() {
                return Err(PatchError::MissingFrom {
                    op,
                    from: from.to_string(),
                });
            }
            let value = remove(document, from, &from_tokens)?;
            add(document, op, path, &tokens, value)
        }
        "copy" => {
            let from = string_field("from")?;
            let from_tokens = parse_pointer(op, from)?;
            let value =
                get(document, &from_tokens)
                    .cloned()
                    .ok_or_else(|| PatchError::MissingFrom {
                        op,
                        from: from.to_string(),
                    })?;
            add(document, op, path, &tokens, value)
        }
        _ => {
            let expected = value_field()?;
            match get(document, &tokens) {
                Some(actual) if values_equal(actual, expected) => Ok(()),
                _ => Err(PatchError::TestFailed {
                    path: path.to_string(),
                }),
            }
        }
    }
}

/// Splits a JSON pointer into unescaped reference tokens; `""` is the whole document.
fn parse_pointer(op: &'static str, pointer: &str) -> Result<Vec<String>, PatchError> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err(PatchError::InvalidPointer {
            op,
            path: pointer.to_string(),
        });
    };
    Ok(rest
        .split('/')
        .map(|token| token.replace("~1", "/").replace("~0", "~"))
        .collect())
}

/// An array index as RFC 6901 writes one: digits, no leading zero, no sign.
fn array_index(token: &str) -> Option<usize> {
    let well_formed = !token.is_empty()
        && token.bytes().all(|byte| byte.is_ascii_digit())
        && (token == "0" || !token.starts_with('0'));
    if well_formed {
        token.parse().ok()
    } else {
        None
    }
}

fn get<'a>(document: &'a Value, tokens: &[String]) -> Option<&'a Value> {
    tokens
        .iter()
        .try_fold(document, |current, token| match current {
            Value::Object(members) => members.get(token),
            Value::Array(items) => items.get(array_index(token)?),
            _ => None,
        })
}

fn get_mut<'a>(document: &'a mut Value, tokens: &[String]) -> Option<&'a mut Value> {
    tokens
        .iter()
        .try_fold(document, |current, token| match current {
            Value::Object(members) => members.get_mut(token),
            Value::Array(items) => items.get_mut(array_index(token)?),
            _ => None,
        })
}

fn parent_exists(document: &Value, tokens: &[String]) -> bool {
    match tokens.split_last() {
        None => true,
        Some((_, parent)) => {
            matches!(
                get(document, parent),
                Some(Value::Object(_) | Value::Array(_))
            )
        }
    }
}

fn add(
    document: &mut Value,
    op: &'static str,
    path: &str,
    tokens: &[String],
    value: Value,
) -> Result<(), PatchError> {
    let Some((last, parent_tokens)) = tokens.split_last() else {
        *document = value;
        return Ok(());
    };
    let missing_path = || PatchError::MissingPath {
        op,
        path: path.to_string(),
    };
    match get_mut(document, parent_tokens).ok_or_else(missing_path)? {
        Value::Object(members) => {
            members.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(items) => {
            let index = if last == "-" {
                Some(items.len())
            } else {
                array_index(last).filter(|index| *index <= items.len())
            };
            let Some(index) = index else {
                return Err(PatchError::InvalidIndex {
                    op,
                    path: path.to_string(),
                    index: last.clone(),
                });
            };
            items.insert(index, value);
            Ok(())
        }
        _ => Err(missing_path()),
    }
}

fn remove(document: &mut Value, path: &str, tokens: &[String]) -> Result<Value, PatchError> {
    let missing_path = || PatchError::MissingPath {
        op: "remove",
        path: path.to_string(),
    };
    let Some((last, parent_tokens)) = tokens.split_last() else {
        return Err(missing_path());
    };
    match get_mut(document, parent_tokens).ok_or_else(missing_path)? {
        Value::Object(members) => members
            .remove(last)
            .ok_or_else(|| PatchError::NonexistentKey {
                path: path.to_string(),
                key: last.clone(),
            }),
        Value::Array(items) => match array_index(last).filter(|index| *index < items.len()) {
            Some(index) => Ok(items.remove(index)),
            None => Err(PatchError::InvalidIndex {
                op: "remove",
                path: path.to_string(),
                index: last.clone(),
            }),
        },
        _ => Err(missing_path()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn apply(document: Value, patch: Value) -> Result<Value, String> {
        let mut document = document;
        json_patch(&mut document, &patch)
            .map(|()| document)
            .map_err(|error| error.to_string())
    }

    /// Examples of RFC 6902 appendix A.
    #[test]
    fn rfc6902_examples() {
        let cases = [
            (
                json!({"foo":"bar"}),
                json!([{"op":"add","path":"/baz","value":"qux"}]),
                json!({"baz":"qux","foo":"bar"}),
            ),
            (
                json!({"foo":["bar","baz"]}),
                json!([{"op":"add","path":"/foo/1","value":"qux"}]),
                json!({"foo":["bar","qux","baz"]}),
            ),
            (
                json!({"baz":"qux","foo":"bar"}),
                json!([{"op":"remove","path":"/baz"}]),
                json!({"foo":"bar"}),
            ),
            (
                json!({"foo":["bar","qux","baz"]}),
                json!([{"op":"remove","path":"/foo/1"}]),
                json!({"foo":["bar","baz"]}),
            ),
            (
                json!({"baz":"qux","foo":"bar"}),
                json!([{"op":"replace","path":"/baz","value":"boo"}]),
                json!({"baz":"boo","foo":"bar"}),
            ),
            (
                json!({"foo":{"bar":"baz","waldo":"fred"},"qux":{"corge":"grault"}}),
                json!([{"op":"move","from":"/foo/waldo","path":"/qux/thud"}]),
                json!({"foo":{"bar":"baz"},"qux":{"corge":"grault","thud":"fred"}}),
            ),
            (
                json!({"foo":["all","grass","cows","eat"]}),
                json!([{"op":"move","from":"/foo/1","path":"/foo/3"}]),
                json!({"foo":["all","cows","eat","grass"]}),
            ),
            (
                json!({"baz":"qux","foo":["a",2,"c"]}),
                json!([{"op":"test","path":"/baz","value":"qux"},{"op":"test","path":"/foo/1","value":2}]),
                json!({"baz":"qux","foo":["a",2,"c"]}),
            ),
            (
                json!({"foo":"bar"}),
                json!([{"op":"add","path":"/child","value":{"grandchild":{}}}]),
                json!({"foo":"bar","child":{"grandchild":{}}}),
            ),
            (
                json!({"foo":["bar"]}),
                json!([{"op":"add","path":"/foo/-","value":["abc","def"]}]),
                json!({"foo":["bar",["abc","def"]]}),
            ),
            (
                json!({"/":9,"~1":10}),
                json!([{"op":"test","path":"/~01","value":10}]),
                json!({"/":9,"~1":10}),
            ),
            (
                json!({"a":{"b":1}}),
                json!([{"op":"copy","from":"/a","path":"/c"}]),
                json!({"a":{"b":1},"c":{"b":1}}),
            ),
            (
                json!({"a":1}),
                json!([{"op":"replace","path":"","value":[1]}]),
                json!([1]),
            ),
            (
                json!({"a":1.0}),
                json!([{"op":"test","path":"/a","value":1}]),
                json!({"a":1.0}),
            ),
        ];
        for (document, patch, expected) in cases {
            assert_eq!(apply(document, patch.clone()), Ok(expected), "{patch}");
        }
    }

    #[test]
    fn error_texts_name_op_and_path() {
        let document = json!({"foo":"bar","list":[1,2]});
        let cases = [
            (
                json!([{"op":"test","path":"/foo","value":"baz"}]),
                "testing value /foo failed: test failed",
            ),
            (
                json!([{"op":"add","path":"/baz/bat","value":"qux"}]),
                "add operation does not apply: doc is missing path: \"/baz/bat\": missing value",
            ),
            (
                json!([{"op":"replace","path":"/nope","value":1}]),
                "replace operation does not apply: doc is missing key: /nope: missing value",
            ),
            (
                json!([{"op":"remove","path":"/nope"}]),
                "error in remove for path: '/nope': Unable to remove nonexistent key: nope: missing value",
            ),
            (
                json!([{"op":"remove","path":"/list/5"}]),
                "error in remove for path: '/list/5': Unable to access invalid index: 5: invalid index referenced",
            ),
            (
                json!([{"op":"add","path":"/list/3","value":0}]),
                "error in add for path: '/list/3': Unable to access invalid index: 3: invalid index referenced",
            ),
            (
                json!([{"op":"move","from":"/nope","path":"/x"}]),
                "move operation does not apply: doc is missing from path: /nope: missing value",
            ),
            (
                json!([{"op":"copy","from":"/nope","path":"/x"}]),
                "copy operation does not apply: doc is missing from path: /nope: missing value",
            ),
            (json!([{"op":"frob","path":"/x"}]), "Unexpected kind: frob"),
            (
                json!([{"op":"move","from":"/list","path":"/list/0"}]),
                "move operation does not apply: /list is a parent of /list/0",
            ),
        ];
        for (patch, expected) in cases {
            assert_eq!(
                apply(document.clone(), patch.clone()),
                Err(expected.to_string()),
                "{patch}"
            );
        }
    }

    #[test]
    fn failure_leaves_target_unchanged() {
        let original = json!({"a":1});
        let mut target = original.clone();
        let patch = json!([{"op":"add","path":"/b","value":2},{"op":"test","path":"/a","value":5}]);
        assert!(json_patch(&mut target, &patch).is_err());
        assert_eq!(target, original);
    }
}
