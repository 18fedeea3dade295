//! The subset of client-go's JSONPath that CRD `additionalPrinterColumns` use:
//! fields (`.a.b`, `['a.b']`, escaped `\.`), indices (`[0]`, `[-1]`),
//! wildcards (`[*]`, `.*`) and filters (`[?(@.type=="Ready")]`).

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct JsonPath {
    steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    Index(i64),
    Wildcard,
    Filter(Filter),
}

#[derive(Debug, Clone, PartialEq)]
struct Filter {
    /// Relative path from `@`.
    operand: Vec<Step>,
    /// `None` for an existence test `[?(@.x)]`.
    comparison: Option<(Comparison, Value)>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Comparison {
    Equal,
    NotEqual,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
}

#[derive(Debug, PartialEq)]
pub(crate) struct ParseError;

impl JsonPath {
    pub(crate) fn parse(text: &str) -> Result<JsonPath, ParseError> {
        let mut text = text.trim();
        if let Some(inner) = text
            .strip_prefix('{')
            .and_then(|rest| rest.strip_suffix('}'))
        {
            text = inner.trim();
        }
        let text = text.strip_prefix('$').unwrap_or(text);
        let mut parser = Parser {
            chars: text.chars().collect(),
            position: 0,
        };
        let steps = parser.steps(false)?;
        if steps.is_empty() || parser.position != parser.chars.len() {
            return Err(ParseError);
        }
        Ok(JsonPath { steps })
    }

    /// The first value the path selects, if any (a present null counts).
    pub(crate) fn first<'a>(&self, root: &'a Value) -> Option<&'a Value> {
        evaluate(&self.steps, root).into_iter().next()
    }
}

fn evaluate<'a>(steps: &[Step], root: &'a Value) -> Vec<&'a Value> {
    let mut current = vec![root];
    for step in steps {
        let mut next = Vec::new();
        for value in current {
            match step {
                Step::Field(key) => {
                    if let Some(found) = value.as_object().and_then(|object| object.get(key)) {
                        next.push(found);
                    }
                }
                Step::Index(index) => {
                    if let Some(array) = value.as_array() {
                        let len = array.len() as i64;
                        let resolved = if *index < 0 { index + len } else { *index };
                        if (0..len).contains(&resolved) {
                            next.push(&array[resolved as usize]);
                        }
                    }
                }
                Step::Wildcard => match value {
                    Value::Array(items) => next.extend(items.iter()),
                    Value::Object(object) => {
                        // Go ranges over map keys in random order; sorted is the stable choice.
                        let mut keys: Vec<&String> = object.keys().collect();
                        keys.sort();
                        next.extend(keys.into_iter().filter_map(|key| object.get(key)));
                    }
                    _ => {}
                },
                Step::Filter(filter) => {
                    if let Some(items) = value.as_array() {
                        next.extend(items.iter().filter(|item| filter.matches(item)));
                    }
                }
            }
        }
        current = next;
    }
    current
}

impl Filter {
    fn matches(&self, item: &Value) -> bool {
        let Some(left) = evaluate(&self.operand, item).into_iter().next() else {
            return false;
        };
        let Some((comparison, right)) = &self.comparison else {
            return true;
        };
        let ordering = match (left, right) {
            (Value::String(left), Value::String(right)) => Some(left.cmp(right)),
            (Value::Number(left), Value::Number(right)) => left
                .as_f64()
                .zip(right.as_f64())
                .and_then(|(left, right)| left.partial_cmp(&right)),
            (Value::Bool(left), Value::Bool(right)) => Some(left.cmp(right)),
            _ => None,
        };
        match (comparison, ordering) {
            (Comparison::Equal, Some(ordering)) => ordering.is_eq(),
            (Comparison::NotEqual, Some(ordering)) => ordering.is_ne(),
            (Comparison::NotEqual, None) => true,
            (Comparison::Less, Some(ordering)) => ordering.is_lt(),
            (Comparison::LessOrEqual, Some(ordering)) => ordering.is_le(),
            (Comparison::Greater, Some(ordering)) => ordering.is_gt(),
            (Comparison::GreaterOrEqual, Some(ordering)) => ordering.is_ge(),
            _ => false,
        }
    }
}

struct Parser {
    chars: Vec<char>,
    position: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.position).copied()
    }

    fn eat(&mut self, expected: char) -> bool {
        if self.peek() == Some(expected) {
            self.position += 1;
            true
        } else {
            false
        }
    }

    fn skip_spaces(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.position += 1;
        }
    }

    /// Steps until the end, or (inside a filter) until a comparison or `)`.
    fn steps(&mut self, in_filter: bool) -> Result<Vec<Step>, ParseError> {
        let mut steps = Vec::new();
        loop {
            match self.peek() {
                None => return Ok(steps),
                Some('.') => {
                    self.position += 1;
                    if self.eat('*') {
                        steps.push(Step::Wildcard);
                    } else {
                        steps.push(Step::Field(self.field_name()?));
                    }
                }
                Some('[') => {
                    self.position += 1;
                    steps.push(self.bracket()?);
                }
                Some(_) if in_filter => return Ok(steps),
                Some(_) => return Err(ParseError),
            }
        }
    }

    fn field_name(&mut self) -> Result<String, ParseError> {
        let mut name = String::new();
        while let Some(next) = self.peek() {
            match next {
                '\\' if self.chars.get(self.position + 1) == Some(&'.') => {
                    name.push('.');
                    self.position += 2;
                }
                '.' | '[' | ']' | '(' | ')' | '=' | '!' | '<' | '>' | ' ' | '@' | '$' | '{'
                | '}' | ',' => break,
                other => {
                    name.push(other);
                    self.position += 1;
                }
            }
        }
        if name.is_empty() {
            Err(ParseError)
        } else {
            Ok(name)
        }
    }

    fn bracket(&mut self) -> Result<Step, ParseError> {
        self.skip_spaces();
        let step = match self.peek() {
            Some('*') => {
                self.position += 1;
                Step::Wildcard
            }
            Some(quote @ ('\'' | '"')) => {
                self.position += 1;
                Step::Field(self.quoted(quote)?)
            }
            Some('?') => {
                self.position += 1;
                if !self.eat('(') {
                    return Err(ParseError);
                }
                let filter = self.filter()?;
                self.skip_spaces();
                if !self.eat(')') {
                    return Err(ParseError);
                }
                Step::Filter(filter)
            }
            _ => Step::Index(self.integer()?),
        };
        self.skip_spaces();
        if !self.eat(']') {
            return Err(ParseError);
        }
        Ok(step)
    }

    fn quoted(&mut self, quote: char) -> Result<String, ParseError> {
        let mut text = String::new();
        loop {
            match self.peek() {
                None => return Err(ParseError),
                Some('\\') => {
                    self.position += 1;
                    text.push(self.peek().ok_or(ParseError)?);
                    self.position += 1;
                }
                Some(next) if next == quote => {
                    self.position += 1;
                    return Ok(text);
                }
                Some(next) => {
                    text.push(next);
                    self.position += 1;
                }
            }
        }
    }

    fn integer(&mut self) -> Result<i64, ParseError> {
        let start = self.position;
        self.eat('-');
        while self.peek().is_some_and(|next| next.is_ascii_digit()) {
            self.position += 1;
        }
        let text: String = self.chars[start..self.position].iter().collect();
        text.parse().map_err(|_| ParseError)
    }

    fn filter(&mut self) -> Result<Filter, ParseError> {
        self.skip_spaces();
        if !self.eat('@') {
            return Err(ParseError);
        }
        let operand = self.steps(true)?;
        self.skip_spaces();
        let comparison = match (self.peek(), self.chars.get(self.position + 1)) {
            (Some('='), Some('=')) => Some((Comparison::Equal, 2)),
            (Some('!'), Some('=')) => Some((Comparison::NotEqual, 2)),
            (Some('<'), Some('=')) => Some((Comparison::LessOrEqual, 2)),
            (Some('>'), Some('=')) => Some((Comparison::GreaterOrEqual, 2)),
            (Some('<'), _) => Some((Comparison::Less, 1)),
            (Some('>'), _) => Some((Comparison::Greater, 1)),
            _ => None,
        };
        let Some((comparison, width)) = comparison else {
            return Ok(Filter {
                operand,
                comparison: None,
            });
        };
        self.position += width;
        self.skip_spaces();
        let literal = match self.peek() {
            Some(quote @ ('\'' | '"')) => {
                self.position += 1;
                Value::String(self.quoted(quote)?)
            }
            _ => {
                let start = self.position;
                while self
                    .peek()
                    .is_some_and(|next| next.is_ascii_alphanumeric() || "-+.".contains(next))
                {
                    self.position += 1;
                }
                let text: String = self.chars[start..self.position].iter().collect();
                serde_json::from_str::<Value>(&text)
                    .ok()
                    .filter(|value| value.is_number() || value.is_boolean())
                    .ok_or(ParseError)?
            }
        };
        Ok(Filter {
            operand,
            comparison: Some((comparison, literal)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn first(path: &str, value: &Value) -> Option<Value> {
        JsonPath::parse(path).expect("parses").first(value).cloned()
    }

    #[test]
    fn fields_indices_and_filters() {
        let object = json!({
            "spec": {"replicas": 3, "labels": {"app.kubernetes.io/name": "web"}},
            "status": {"conditions": [
                {"type": "Synced", "status": "False"},
                {"type": "Ready", "status": "True", "count": 2}
            ]}
        });
        assert_eq!(first(".spec.replicas", &object), Some(json!(3)));
        assert_eq!(first("{.spec.replicas}", &object), Some(json!(3)));
        assert_eq!(
            first(".spec.labels['app.kubernetes.io/name']", &object),
            Some(json!("web"))
        );
        assert_eq!(
            first(".spec.labels.app\\.kubernetes\\.io/name", &object),
            Some(json!("web"))
        );
        assert_eq!(
            first(".status.conditions[?(@.type==\"Ready\")].status", &object),
            Some(json!("True"))
        );
        assert_eq!(
            first(".status.conditions[?(@.count>1)].type", &object),
            Some(json!("Ready"))
        );
        assert_eq!(
            first(".status.conditions[-1].type", &object),
            Some(json!("Ready"))
        );
        assert_eq!(
            first(".status.conditions[*].type", &object),
            Some(json!("Synced"))
        );
        assert_eq!(first(".status.conditions[5].type", &object), None);
        assert_eq!(first(".spec.missing.deeper", &object), None);
    }

    #[test]
    fn malformed_paths_are_errors() {
        for path in ["", "spec", ".spec[", ".spec[?(@.a==)]", ".a[\"x]", ".a..b"] {
            assert_eq!(JsonPath::parse(path), Err(ParseError), "{path:?}");
        }
    }
}
