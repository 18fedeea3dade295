//! Field selectors (`?fieldSelector=metadata.name=x,status.phase!=Running`), as
//! Kubernetes' `fields.ParseSelector` reads them, with its escapes and error texts.

use std::fmt;

/// Why a field selector was rejected. The texts are kube-apiserver's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FieldSelectorError {
    /// A term with no `=`, `==` or `!=`.
    #[error("invalid selector: '{selector}'; can't understand '{term}'")]
    Unparseable { selector: String, term: String },
    /// A backslash followed by something other than `\`, `,` or `=`, or at the end.
    #[error("invalid field selector: invalid escape sequence: {sequence}")]
    InvalidEscape { sequence: String },
    /// A bare `=` in a value. Upstream prints the character's code point (Go's `%v`
    /// of a rune), so `a=b=c` reports 61.
    #[error("invalid field selector: unescaped character in value: {}", *.character as u32)]
    UnescapedCharacter { character: char },
    /// The server has no getter for this field on this kind.
    #[error("field label not supported: {field}")]
    UnsupportedField { field: String },
}

/// Whether a term requires equality or inequality.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldOperator {
    /// `f=v` or `f==v`
    Equals,
    /// `f!=v`
    NotEquals,
}

/// One `field<op>value` term, with the value unescaped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldRequirement {
    pub field: String,
    pub operator: FieldOperator,
    pub value: String,
}

impl FieldRequirement {
    /// Whether an object, given by its field getter, satisfies the term. A field the
    /// getter does not know reads as the empty string, as upstream's `Fields.Get` does.
    pub fn matches(&self, field: &dyn Fn(&str) -> Option<String>) -> bool {
        let actual = field(&self.field).unwrap_or_default();
        match self.operator {
            FieldOperator::Equals => actual == self.value,
            FieldOperator::NotEquals => actual != self.value,
        }
    }
}

impl fmt::Display for FieldRequirement {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let operator = match self.operator {
            FieldOperator::Equals => "=",
            FieldOperator::NotEquals => "!=",
        };
        write!(
            formatter,
            "{}{operator}{}",
            self.field,
            escape_value(&self.value)
        )
    }
}

/// A conjunction of field terms. The empty selector matches everything.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct FieldSelector {
    /// In the order of their raw text, sorted, as upstream keeps them.
    requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// Parses `f=v,g!=w,...`. Commas, `=` and backslashes inside a value are written
    /// `\,`, `\=` and `\\`; a field name takes no escapes, so the first operator in a
    /// term ends it.
    pub fn parse(selector: &str) -> Result<FieldSelector, FieldSelectorError> {
        let mut terms = split_terms(selector);
        terms.sort_unstable();
        let mut requirements = Vec::new();
        for term in terms {
            if term.is_empty() {
                continue;
            }
            let Some((field, operator, raw_value)) = split_term(term) else {
                return Err(FieldSelectorError::Unparseable {
                    selector: selector.to_string(),
                    term: term.to_string(),
                });
            };
            requirements.push(FieldRequirement {
                field: field.to_string(),
                operator,
                value: unescape_value(raw_value)?,
            });
        }
        Ok(FieldSelector { requirements })
    }

    /// The selector that matches everything.
    pub fn everything() -> FieldSelector {
        FieldSelector::default()
    }

    /// A selector of one `field=value` term (what a watch on one object uses).
    pub fn one_term_equal(field: impl Into<String>, value: impl Into<String>) -> FieldSelector {
        FieldSelector {
            requirements: vec![FieldRequirement {
                field: field.into(),
                operator: FieldOperator::Equals,
                value: value.into(),
            }],
        }
    }

    /// Whether the selector places no restriction.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The terms.
    pub fn requirements(&self) -> &[FieldRequirement] {
        &self.requirements
    }

    /// The field names used, in order, without repeats.
    pub fn fields(&self) -> Vec<&str> {
        let mut fields: Vec<&str> = Vec::new();
        for requirement in &self.requirements {
            if !fields.contains(&requirement.field.as_str()) {
                fields.push(&requirement.field);
            }
        }
        fields
    }

    /// Checks every field name against the fields a kind supports; the first one
    /// not supported gives kube-apiserver's `field label not supported: <name>`.
    pub fn check_supported(
        &self,
        is_supported: impl Fn(&str) -> bool,
    ) -> Result<(), FieldSelectorError> {
        match self.fields().into_iter().find(|field| !is_supported(field)) {
            Some(field) => Err(FieldSelectorError::UnsupportedField {
                field: field.to_string(),
            }),
            None => Ok(()),
        }
    }

    /// Whether an object, given by its field getter, satisfies every term.
    pub fn matches(&self, field: &dyn Fn(&str) -> Option<String>) -> bool {
        self.requirements
            .iter()
            .all(|requirement| requirement.matches(field))
    }

    /// The value the selector requires `field` to equal, if a term requires one
    /// (for index look-ups, e.g. `metadata.name` or `spec.nodeName`).
    pub fn requires_exact_match(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|requirement| {
                requirement.field == field && requirement.operator == FieldOperator::Equals
            })
            .map(|requirement| requirement.value.as_str())
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (requirement_idx, requirement) in self.requirements.iter().enumerate() {
            if requirement_idx > 0 {
                formatter.write_str(",")?;
            }
            write!(formatter, "{requirement}")?;
        }
        Ok(())
    }
}

/// Escapes a literal for use as a field selector value.
pub fn escape_value(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for character in value.chars() {
        if matches!(character, '\\' | ',' | '=') {
            escaped.push('\\');
        }
        escaped.push(character);
    }
    escaped
}

/// Reverses [`escape_value`]; a bare `,` or `=` or an unknown escape is an error.
pub fn unescape_value(raw: &str) -> Result<String, FieldSelectorError> {
    let mut value = String::with_capacity(raw.len());
    let mut characters = raw.chars();
    while let Some(character) = characters.next() {
        match character {
            '\\' => match characters.next() {
                Some(escaped @ ('\\' | ',' | '=')) => value.push(escaped),
                Some(other) => {
                    return Err(FieldSelectorError::InvalidEscape {
                        sequence: format!("\\{other}"),
                    });
                }
                None => {
                    return Err(FieldSelectorError::InvalidEscape {
                        sequence: "\\".to_string(),
                    });
                }
            },
            ',' | '=' => return Err(FieldSelectorError::UnescapedCharacter { character }),
            other => value.push(other),
        }
    }
    Ok(value)
}

/// Splits at commas not preceded by an escaping backslash; escapes stay in the terms.
fn split_terms(selector: &str) -> Vec<&str> {
    if selector.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut after_backslash = false;
    for (position, character) in selector.char_indices() {
        if after_backslash {
            after_backslash = false;
        } else if character == '\\' {
            after_backslash = true;
        } else if character == ',' {
            terms.push(&selector[start..position]);
            start = position + 1;
        }
    }
    terms.push(&selector[start..]);
    terms
}

/// Splits a term at the first operator; at one position `!=` wins over `==` over `=`.
fn split_term(term: &str) -> Option<(&str, FieldOperator, &str)> {
    for (position, _) in term.char_indices() {
        let rest = &term[position..];
        for (operator_text, operator) in [
            ("!=", FieldOperator::NotEquals),
            ("==", FieldOperator::Equals),
            ("=", FieldOperator::Equals),
        ] {
            if let Some(value) = rest.strip_prefix(operator_text) {
                return Some((&term[..position], operator, value));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn getter(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |field| {
            pairs
                .iter()
                .find(|(name, _)| *name == field)
                .map(|(_, value)| value.to_string())
        }
    }

    #[test]
    fn parses_and_matches() {
        let pod = getter(&[("metadata.name", "web-1"), ("status.phase", "Running")]);
        for (selector, expected) in [
            ("", true),
            ("metadata.name=web-1", true),
            ("metadata.name==web-1", true),
            ("metadata.name!=web-1", false),
            ("metadata.name=web-1,status.phase!=Pending", true),
            ("status.phase=Pending,metadata.name=web-1", false),
            ("spec.nodeName=", true),
            ("spec.nodeName!=", false),
        ] {
            assert_eq!(
                FieldSelector::parse(selector).unwrap().matches(&pod),
                expected,
                "{selector}"
            );
        }
    }

    #[test]
    fn escapes() {
        let selector = FieldSelector::parse(r"a=x\,y,b=p\=q\\").unwrap();
        assert_eq!(selector.requires_exact_match("a"), Some("x,y"));
        assert_eq!(selector.requires_exact_match("b"), Some(r"p=q\"));
        assert_eq!(selector.to_string(), r"a=x\,y,b=p\=q\\");
        assert_eq!(
            FieldSelector::parse(&selector.to_string()).unwrap(),
            selector
        );
    }

    #[test]
    fn upstream_error_texts() {
        let error = |selector: &str| FieldSelector::parse(selector).unwrap_err().to_string();
        assert_eq!(
            error("abc"),
            "invalid selector: 'abc'; can't understand 'abc'"
        );
        assert_eq!(
            error("a=b,c"),
            "invalid selector: 'a=b,c'; can't understand 'c'"
        );
        assert_eq!(
            error(r"a=b\c"),
            r"invalid field selector: invalid escape sequence: \c"
        );
        assert_eq!(
            error(r"a=b\"),
            r"invalid field selector: invalid escape sequence: \"
        );
        assert_eq!(
            error("a=b=c"),
            "invalid field selector: unescaped character in value: 61"
        );
        let selector = FieldSelector::parse("metadata.name=a,spec.foo=b").unwrap();
        assert_eq!(selector.fields(), vec!["metadata.name", "spec.foo"]);
        assert_eq!(
            selector
                .check_supported(|field| field.starts_with("metadata."))
                .unwrap_err()
                .to_string(),
            "field label not supported: spec.foo"
        );
    }

    #[test]
    fn operator_precedence_and_exact_match() {
        let selector = FieldSelector::parse("a!=b,c==d,e=").unwrap();
        assert_eq!(
            selector.requirements()[0].operator,
            FieldOperator::NotEquals
        );
        assert_eq!(selector.requires_exact_match("a"), None);
        assert_eq!(selector.requires_exact_match("c"), Some("d"));
        assert_eq!(selector.requires_exact_match("e"), Some(""));
        assert_eq!(
            FieldSelector::one_term_equal("metadata.name", "x").to_string(),
            "metadata.name=x"
        );
    }
}
