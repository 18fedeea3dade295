//! Image names as users write them: `NAME[:TAG]`, where NAME may start with a
//! registry host (`localhost:5000/app:1.0`). The tag defaults to `latest`.

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct ImageRef {
    pub name: String,
    pub tag: String,
}

#[derive(Debug, thiserror::Error)]
pub enum InvalidReference {
    #[error("invalid image name {0:?}: use lower-case letters, digits, '.', '_', '-' and '/'")]
    Name(String),
    #[error("invalid image tag {0:?}: use letters, digits, '.', '_' and '-' (at most 128)")]
    Tag(String),
}

pub const DEFAULT_TAG: &str = "latest";

impl ImageRef {
    pub fn parse(text: &str) -> Result<ImageRef, InvalidReference> {
        // A ':' after the last '/' separates the tag; one before it belongs to
        // a registry host's port.
        let last_slash = text.rfind('/').map_or(0, |index| index + 1);
        let (name, tag) = match text[last_slash..].rfind(':') {
            Some(colon) => (&text[..last_slash + colon], &text[last_slash + colon + 1..]),
            None => (text, DEFAULT_TAG),
        };
        validate_name(name)?;
        validate_tag(tag)?;
        Ok(ImageRef {
            name: name.to_string(),
            tag: tag.to_string(),
        })
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}:{}", self.name, self.tag)
    }
}

fn validate_name(name: &str) -> Result<(), InvalidReference> {
    let invalid = || InvalidReference::Name(name.to_string());
    if name.is_empty() || name.len() > 255 {
        return Err(invalid());
    }
    for (component_idx, component) in name.split('/').enumerate() {
        // Only the first component, a registry host, may carry a port or
        // upper-case letters.
        let is_host = component_idx == 0 && name.contains('/') && component.contains([':', '.']);
        let valid_byte = |byte: u8| {
            byte.is_ascii_lowercase()
                || byte.is_ascii_digit()
                || matches!(byte, b'.' | b'_' | b'-')
                || (is_host && (byte == b':' || byte.is_ascii_uppercase()))
        };
        if component.is_empty()
            || !component.bytes().all(valid_byte)
            || !component.as_bytes()[0].is_ascii_alphanumeric()
        {
            return Err(invalid());
        }
    }
    Ok(())
}

fn validate_tag(tag: &str) -> Result<(), InvalidReference> {
    let valid = !tag.is_empty()
        && tag.len() <= 128
        && (tag.as_bytes()[0].is_ascii_alphanumeric() || tag.as_bytes()[0] == b'_')
        && tag
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(InvalidReference::Tag(tag.to_string()))
    }
}

/// Whether `name` is `prefix` or lies under it, by whole path components
/// (`example.com/app` covers `example.com/app/web` but not `example.com/apple`).
pub fn name_has_prefix(name: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    name == prefix
        || name
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_defaults_to_latest_and_ports_are_not_tags() {
        let parsed = ImageRef::parse("busybox").unwrap();
        assert_eq!(
            (parsed.name.as_str(), parsed.tag.as_str()),
            ("busybox", "latest")
        );
        let parsed = ImageRef::parse("localhost:5000/tools/busybox:1.36").unwrap();
        assert_eq!(parsed.name, "localhost:5000/tools/busybox");
        assert_eq!(parsed.tag, "1.36");
        let parsed = ImageRef::parse("localhost:5000/busybox").unwrap();
        assert_eq!(parsed.tag, "latest");
    }

    #[test]
    fn bad_names_and_tags_are_refused() {
        for text in [
            "", "Busybox", "a b", "app:", "/app", "app//x", "app:t@g", "-app",
        ] {
            assert!(ImageRef::parse(text).is_err(), "{text:?} should be refused");
        }
    }

    #[test]
    fn prefixes_match_whole_components() {
        assert!(name_has_prefix("example.com/app", "example.com/app"));
        assert!(name_has_prefix("example.com/app/web", "example.com/app"));
        assert!(name_has_prefix("example.com/app/web", "example.com/"));
        assert!(!name_has_prefix("example.com/apple", "example.com/app"));
    }
}
