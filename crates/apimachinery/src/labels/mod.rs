//! Label selectors: the `-l` / `?labelSelector=` string form, the structured
//! `metav1.LabelSelector` form, matching, and the canonical string form.

mod parse;
mod structured;
mod validation;

use std::collections::BTreeMap;
use std::fmt;

pub(crate) use validation::{GoQuoted, go_string_slice};
pub use validation::{
    is_valid_label_key, is_valid_label_value, label_key_errors, label_value_errors,
};

/// How a requirement relates a label's value to the requirement's values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operator {
    /// `k=v`
    Equals,
    /// `k==v`
    DoubleEquals,
    /// `k!=v`; also matches objects without the label.
    NotEquals,
    /// `k in (a,b)`
    In,
    /// `k notin (a,b)`; also matches objects without the label.
    NotIn,
    /// `k`
    Exists,
    /// `!k`
    DoesNotExist,
    /// `k>5`, compared as 64-bit integers.
    GreaterThan,
    /// `k<5`, compared as 64-bit integers.
    LessThan,
}

impl Operator {
    /// The operator's name in Kubernetes' `selection.Operator`.
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::Equals => "=",
            Operator::DoubleEquals => "==",
            Operator::NotEquals => "!=",
            Operator::In => "in",
            Operator::NotIn => "notin",
            Operator::Exists => "exists",
            Operator::DoesNotExist => "!",
            Operator::GreaterThan => "gt",
            Operator::LessThan => "lt",
        }
    }
}

/// One field-level validation failure, shown as kube-apiserver shows a
/// `field.Error` of type "Invalid value".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidField {
    /// The field path (`key`, `values[0][app]`, or `<nil>` when there is none).
    pub field: String,
    /// The offending value as Go would print it (quoted string, `[]string{...}`).
    pub value: String,
    /// Why it is invalid.
    pub detail: String,
}

impl fmt::Display for InvalidField {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{}: Invalid value: {}: {}",
            self.field, self.value, self.detail
        )
    }
}

/// Every problem found with one requirement, shown as Go's error aggregate:
/// one message alone, several as `[first, second]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidFields(pub Vec<InvalidField>);

impl fmt::Display for InvalidFields {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut messages: Vec<String> = Vec::new();
        for error in &self.0 {
            let message = error.to_string();
            if !messages.contains(&message) {
                messages.push(message);
            }
        }
        if messages.len() == 1 {
            formatter.write_str(&messages[0])
        } else {
            write!(formatter, "[{}]", messages.join(", "))
        }
    }
}

impl std::error::Error for InvalidFields {}

/// Why a requirement could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequirementError {
    /// A token other than the grammar allows.
    #[error("found '{found}', expected: {expected}")]
    Unexpected {
        found: String,
        expected: &'static str,
    },
    /// `in`/`notin` not followed by `(`; upstream's message has no comma here.
    #[error("found '{found}' expected: '('")]
    MissingOpenParenthesis { found: String },
    /// The key, operator or values broke a validation rule.
    #[error("{0}")]
    Invalid(InvalidFields),
}

/// Why a label selector was rejected. The texts are kube-apiserver's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// A requirement of the string form did not parse.
    #[error("unable to parse requirement: {0}")]
    Requirement(RequirementError),
    /// Something other than a requirement where one was expected, or junk after one.
    #[error("found '{found}', expected: {expected}")]
    Unexpected {
        found: String,
        expected: &'static str,
    },
    /// A `matchExpressions` operator other than In, NotIn, Exists, DoesNotExist.
    #[error("{} is not a valid pod selector operator", GoQuoted(.operator))]
    UnknownOperator { operator: String },
    /// A `matchLabels` entry or `matchExpressions` item broke a validation rule.
    #[error("{0}")]
    Invalid(InvalidFields),
    /// The structured form is not shaped like a `metav1.LabelSelector`.
    #[error("invalid label selector: {reason}")]
    Malformed { reason: String },
}

/// One condition on one label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    key: String,
    operator: Operator,
    values: Vec<String>,
}

impl Requirement {
    /// Builds a requirement, checking it as Kubernetes' `labels.NewRequirement` does.
    /// Every problem is reported, not only the first.
    pub fn new(
        key: impl Into<String>,
        operator: Operator,
        values: Vec<String>,
    ) -> Result<Requirement, InvalidFields> {
        let key = key.into();
        let mut errors = Vec::new();
        let key_errors = label_key_errors(&key);
        if !key_errors.is_empty() {
            errors.push(InvalidField {
                field: "key".to_string(),
                value: GoQuoted(&key).to_string(),
                detail: key_errors.join("; "),
            });
        }
        let values_invalid = |detail: &str| InvalidField {
            field: "values".to_string(),
            value: go_string_slice(Some(&values)),
            detail: detail.to_string(),
        };
        match operator {
            Operator::In | Operator::NotIn => {
                if values.is_empty() {
                    errors.push(values_invalid(
                        "for 'in', 'notin' operators, values set can't be empty",
                    ));
                }
            }
            Operator::Equals | Operator::DoubleEquals | Operator::NotEquals => {
                if values.len() != 1 {
                    errors.push(values_invalid(
                        "exact-match compatibility requires one single value",
                    ));
                }
            }
            Operator::Exists | Operator::DoesNotExist => {
                if !values.is_empty() {
                    errors.push(values_invalid(
                        "values set must be empty for exists and does not exist",
                    ));
                }
            }
            Operator::GreaterThan | Operator::LessThan => {
                if values.len() != 1 {
                    errors.push(values_invalid(
                        "for 'Gt', 'Lt' operators, exactly one value is required",
                    ));
                }
                for (value_idx, value) in values.iter().enumerate() {
                    if value.parse::<i64>().is_err() {
                        errors.push(InvalidField {
                            field: format!("values[{value_idx}]"),
                            value: GoQuoted(value).to_string(),
                            detail: "for 'Gt', 'Lt' operators, the value must be an integer"
                                .to_string(),
                        });
                    }
                }
            }
        }
        for (value_idx, value) in values.iter().enumerate() {
            let value_errors = label_value_errors(value);
            if !value_errors.is_empty() {
                errors.push(InvalidField {
                    field: format!("values[{value_idx}][{key}]"),
                    value: GoQuoted(value).to_string(),
                    detail: value_errors.join("; "),
                });
            }
        }
        if errors.is_empty() {
            Ok(Requirement {
                key,
                operator,
                values,
            })
        } else {
            Err(InvalidFields(errors))
        }
    }

    /// The label key this requirement looks at.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The requirement's operator.
    pub fn operator(&self) -> Operator {
        self.operator
    }

    /// The values, in the order given (the string parser gives them sorted and
    /// without duplicates).
    pub fn values(&self) -> &[String] {
        &self.values
    }

    /// Whether labels, given by a getter, satisfy this requirement.
    pub fn matches_with<'a>(&self, label: impl Fn(&str) -> Option<&'a str>) -> bool {
        let has_value = |value: &str| self.values.iter().any(|wanted| wanted == value);
        match self.operator {
            Operator::In | Operator::Equals | Operator::DoubleEquals => {
                label(&self.key).is_some_and(has_value)
            }
            Operator::NotIn | Operator::NotEquals => !label(&self.key).is_some_and(has_value),
            Operator::Exists => label(&self.key).is_some(),
            Operator::DoesNotExist => label(&self.key).is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let Some(actual) = label(&self.key).and_then(|value| value.parse::<i64>().ok())
                else {
                    return false;
                };
                let [bound] = self.values.as_slice() else {
                    return false;
                };
                let Ok(bound) = bound.parse::<i64>() else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    actual > bound
                } else {
                    actual < bound
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.operator == Operator::DoesNotExist {
            formatter.write_str("!")?;
        }
        formatter.write_str(&self.key)?;
        let (operator, parenthesised) = match self.operator {
            Operator::Exists | Operator::DoesNotExist => return Ok(()),
            Operator::Equals => ("=", false),
            Operator::DoubleEquals => ("==", false),
            Operator::NotEquals => ("!=", false),
            Operator::GreaterThan => (">", false),
            Operator::LessThan => ("<", false),
            Operator::In => (" in ", true),
            Operator::NotIn => (" notin ", true),
        };
        formatter.write_str(operator)?;
        if parenthesised {
            formatter.write_str("(")?;
        }
        let mut values: Vec<&str> = self.values.iter().map(String::as_str).collect();
        values.sort_unstable();
        formatter.write_str(&values.join(","))?;
        if parenthesised {
            formatter.write_str(")")?;
        }
        Ok(())
    }
}

/// A conjunction of requirements on labels.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Selector {
    /// Sorted by key (stably: requirements on one key keep their order).
    requirements: Vec<Requirement>,
    /// The selector of an absent `metav1.LabelSelector`: matches nothing.
    matches_nothing: bool,
}

impl Selector {
    /// Parses the string form (`a=b,c in (d,e),!f`). The empty string selects everything.
    pub fn parse(selector: &str) -> Result<Selector, SelectorError> {
        parse::parse(selector).map(Selector::from_requirements)
    }

    /// The selector that matches every set of labels.
    pub fn everything() -> Selector {
        Selector::default()
    }

    /// The selector that matches no set of labels (what a null `metav1.LabelSelector` means).
    pub fn nothing() -> Selector {
        Selector {
            requirements: Vec::new(),
            matches_nothing: true,
        }
    }

    /// A selector from requirements, sorted by key as Kubernetes sorts them.
    pub fn from_requirements(mut requirements: Vec<Requirement>) -> Selector {
        requirements.sort_by(|left, right| left.key.cmp(&right.key));
        Selector {
            requirements,
            matches_nothing: false,
        }
    }

    /// The selector requiring exactly these labels (`matchLabels`, a Service's selector).
    /// Keys and values are validated.
    pub fn from_labels(labels: &BTreeMap<String, String>) -> Result<Selector, SelectorError> {
        let requirements = labels
            .iter()
            .map(|(key, value)| {
                Requirement::new(key.clone(), Operator::Equals, vec![value.clone()])
                    .map_err(SelectorError::Invalid)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Selector::from_requirements(requirements))
    }

    /// Whether this selector places no restriction (matches everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty() && !self.matches_nothing
    }

    /// Whether this is the selector that matches nothing.
    pub fn matches_nothing(&self) -> bool {
        self.matches_nothing
    }

    /// The requirements, sorted by key.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Whether a set of labels satisfies every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matches_with(|key| labels.get(key).map(String::as_str))
    }

    /// Whether labels, given by a getter, satisfy every requirement.
    pub fn matches_with<'a>(&self, label: impl Fn(&str) -> Option<&'a str>) -> bool {
        !self.matches_nothing
            && self
                .requirements
                .iter()
                .all(|requirement| requirement.matches_with(&label))
    }

    /// The single value the selector requires `key` to have, if it requires one
    /// (`k=v`, `k==v`, `k in (v)`), for index look-ups.
    pub fn requires_exact_match(&self, key: &str) -> Option<&str> {
        let requirement = self.requirements.iter().find(|r| r.key == key)?;
        match (requirement.operator, requirement.values.as_slice()) {
            (Operator::Equals | Operator::DoubleEquals | Operator::In, [value]) => Some(value),
            _ => None,
        }
    }
}

impl fmt::Display for Selector {
    /// The canonical string form, as Kubernetes prints a selector; it parses back
    /// to the same selector.
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

impl std::str::FromStr for Selector {
    type Err = SelectorError;

    fn from_str(selector: &str) -> Result<Selector, SelectorError> {
        Selector::parse(selector)
    }
}
