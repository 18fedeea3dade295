//! Label key and value validation, with the messages kube-apiserver gives for them.

use std::fmt;

/// The longest label value, and the longest name part of a label key.
pub const LABEL_MAX_LENGTH: usize = 63;
/// The longest DNS subdomain, the longest label-key prefix.
pub const DNS1123_SUBDOMAIN_MAX_LENGTH: usize = 253;

const LABEL_KEY_NAME_MESSAGE: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_KEY_NAME_REGEX: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const LABEL_VALUE_MESSAGE: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_REGEX: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const DNS1123_SUBDOMAIN_MESSAGE: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_REGEX: &str =
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";

/// Kubernetes' way of explaining a regex mismatch: the rule, examples, and the regex.
fn regex_error(message: &str, regex: &str, examples: &[&str]) -> String {
    let mut text = String::from(message);
    text.push_str(" (e.g. ");
    for (example_idx, example) in examples.iter().enumerate() {
        if example_idx > 0 {
            // Upstream joins with " or " after a trailing ", ", hence the double space.
            text.push_str(" or ");
        }
        text.push('\'');
        text.push_str(example);
        text.push_str("', ");
    }
    text.push_str("regex used for validation is '");
    text.push_str(regex);
    text.push_str("')");
    text
}

fn max_length_error(max_length: usize) -> String {
    format!("must be no more than {max_length} bytes")
}

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`: what a label key's name part and a
/// non-empty label value look like.
fn is_label_name_shape(text: &str) -> bool {
    let bytes = text.as_bytes();
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    first.is_ascii_alphanumeric()
        && last.is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'))
}

/// Dot-separated lowercase RFC 1123 labels.
fn is_dns1123_subdomain_shape(text: &str) -> bool {
    !text.is_empty()
        && text.split('.').all(|label| {
            let bytes = label.as_bytes();
            match (bytes.first(), bytes.last()) {
                (Some(first), Some(last)) => {
                    is_lower_alphanumeric(*first)
                        && is_lower_alphanumeric(*last)
                        && bytes
                            .iter()
                            .all(|byte| is_lower_alphanumeric(*byte) || *byte == b'-')
                }
                _ => false,
            }
        })
}

fn is_lower_alphanumeric(byte: u8) -> bool {
    byte.is_ascii_lowercase() || byte.is_ascii_digit()
}

/// The problems with a DNS (RFC 1123) subdomain; empty when it is valid.
pub fn dns1123_subdomain_errors(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > DNS1123_SUBDOMAIN_MAX_LENGTH {
        errors.push(max_length_error(DNS1123_SUBDOMAIN_MAX_LENGTH));
    }
    if !is_dns1123_subdomain_shape(value) {
        errors.push(regex_error(
            DNS1123_SUBDOMAIN_MESSAGE,
            DNS1123_SUBDOMAIN_REGEX,
            &["example.com"],
        ));
    }
    errors
}

/// The problems with a label key (`[prefix/]name`); empty when it is valid.
pub fn label_key_errors(key: &str) -> Vec<String> {
    let mut errors = Vec::new();
    let parts: Vec<&str> = key.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errors.push("prefix part must be non-empty".to_string());
            } else {
                errors.extend(
                    dns1123_subdomain_errors(prefix)
                        .into_iter()
                        .map(|message| format!("prefix part {message}")),
                );
            }
            *name
        }
        _ => {
            return vec![format!(
                "a valid label key {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(
                    LABEL_KEY_NAME_MESSAGE,
                    LABEL_KEY_NAME_REGEX,
                    &["MyName", "my.name", "123-abc"]
                )
            )];
        }
    };
    if name.is_empty() {
        errors.push("name part must be non-empty".to_string());
    } else if name.len() > LABEL_MAX_LENGTH {
        errors.push(format!("name part {}", max_length_error(LABEL_MAX_LENGTH)));
    }
    if !is_label_name_shape(name) {
        errors.push(format!(
            "name part {}",
            regex_error(
                LABEL_KEY_NAME_MESSAGE,
                LABEL_KEY_NAME_REGEX,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errors
}

/// The problems with a label value; empty when it is valid (the empty value is).
pub fn label_value_errors(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > LABEL_MAX_LENGTH {
        errors.push(max_length_error(LABEL_MAX_LENGTH));
    }
    if !value.is_empty() && !is_label_name_shape(value) {
        errors.push(regex_error(
            LABEL_VALUE_MESSAGE,
            LABEL_VALUE_REGEX,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errors
}

/// Whether `key` is a valid label key.
pub fn is_valid_label_key(key: &str) -> bool {
    label_key_errors(key).is_empty()
}

/// Whether `value` is a valid label value.
pub fn is_valid_label_value(value: &str) -> bool {
    label_value_errors(value).is_empty()
}

/// A string quoted the way Go's `%q` quotes it, as kube-apiserver's messages show
/// bad values.
pub(crate) struct GoQuoted<'a>(pub &'a str);

impl fmt::Display for GoQuoted<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("\"")?;
        for character in self.0.chars() {
            match character {
                '"' => formatter.write_str("\\\"")?,
                '\\' => formatter.write_str("\\\\")?,
                '\n' => formatter.write_str("\\n")?,
                '\t' => formatter.write_str("\\t")?,
                '\r' => formatter.write_str("\\r")?,
                character if (character as u32) < 0x20 || character == '\u{7f}' => {
                    write!(formatter, "\\x{:02x}", character as u32)?
                }
                character => write!(formatter, "{character}")?,
            }
        }
        formatter.write_str("\"")
    }
}

/// A list of strings as Go's `%#v` shows a `[]string`; `None` is a nil slice.
pub(crate) fn go_string_slice(values: Option<&[String]>) -> String {
    match values {
        None => "[]string(nil)".to_string(),
        Some(values) => {
            let quoted: Vec<String> = values
                .iter()
                .map(|value| GoQuoted(value).to_string())
                .collect();
            format!("[]string{{{}}}", quoted.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert!(is_valid_label_key("app"));
        assert!(is_valid_label_key("app.kubernetes.io/name"));
        assert!(is_valid_label_key("A_b-c.D"));
        assert!(!is_valid_label_key("-app"));
        assert!(!is_valid_label_key("a/b/c"));
        assert!(!is_valid_label_key("Example.com/x"));
        assert!(!is_valid_label_key(&"a".repeat(64)));
        assert!(is_valid_label_key(&"a".repeat(63)));
        assert_eq!(
            label_key_errors("/a"),
            vec!["prefix part must be non-empty".to_string()]
        );
        assert_eq!(label_key_errors("a/").len(), 2);
    }

    #[test]
    fn key_message_is_upstreams() {
        assert_eq!(
            label_key_errors("-a"),
            vec!["name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')".to_string()]
        );
    }

    #[test]
    fn values() {
        assert!(is_valid_label_value(""));
        assert!(is_valid_label_value("v1.2_3-x"));
        assert!(!is_valid_label_value("a b"));
        assert!(!is_valid_label_value("a/b"));
        assert!(!is_valid_label_value("_a"));
        assert!(!is_valid_label_value(&"a".repeat(64)));
    }

    #[test]
    fn go_quoting() {
        assert_eq!(GoQuoted("a\"b\\\n").to_string(), r#""a\"b\\\n""#);
        assert_eq!(go_string_slice(None), "[]string(nil)");
        assert_eq!(
            go_string_slice(Some(&["a".to_string(), "b".to_string()])),
            r#"[]string{"a", "b"}"#
        );
    }
}
