//! The lexer and recursive-descent parser for the string form of label selectors,
//! following the grammar and error texts of Kubernetes' `labels.Parse`.

use super::{
    GoQuoted, InvalidField, InvalidFields, Operator, Requirement, RequirementError, SelectorError,
    label_key_errors,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token {
    EndOfString,
    ClosedParenthesis,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    Identifier,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenParenthesis,
}

/// Where the parser is: `in` and `notin` are operators after a key and plain
/// identifiers everywhere else (`in in (in)` is a valid selector).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    KeyAndOperator,
    Values,
}

fn is_whitespace(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special_symbol(byte: u8) -> bool {
    matches!(byte, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

/// Splits the input into tokens; the last is always `EndOfString`. Lexing cannot
/// fail: every special symbol is a token by itself.
fn lex(input: &str) -> Vec<(Token, &str)> {
    let bytes = input.as_bytes();
    let mut tokens = Vec::new();
    let mut position = 0;
    loop {
        while position < bytes.len() && is_whitespace(bytes[position]) {
            position += 1;
        }
        if position >= bytes.len() {
            tokens.push((Token::EndOfString, ""));
            return tokens;
        }
        let start = position;
        if is_special_symbol(bytes[position]) {
            let two = input.get(position..position + 2);
            let (token, length) = match (two, bytes[position]) {
                (Some("!="), _) => (Token::NotEquals, 2),
                (Some("=="), _) => (Token::DoubleEquals, 2),
                (_, b'=') => (Token::Equals, 1),
                (_, b'!') => (Token::DoesNotExist, 1),
                (_, b'(') => (Token::OpenParenthesis, 1),
                (_, b')') => (Token::ClosedParenthesis, 1),
                (_, b',') => (Token::Comma, 1),
                (_, b'>') => (Token::GreaterThan, 1),
                _ => (Token::LessThan, 1),
            };
            position += length;
            tokens.push((token, &input[start..position]));
        } else {
            // Special symbols and whitespace are ASCII, so the split lands on a
            // character boundary.
            while position < bytes.len()
                && !is_special_symbol(bytes[position])
                && !is_whitespace(bytes[position])
            {
                position += 1;
            }
            let word = &input[start..position];
            let token = match word {
                "in" => Token::In,
                "notin" => Token::NotIn,
                _ => Token::Identifier,
            };
            tokens.push((token, word));
        }
    }
}

struct Parser<'a> {
    tokens: Vec<(Token, &'a str)>,
    position: usize,
}

impl<'a> Parser<'a> {
    fn lookahead(&self, context: Context) -> (Token, &'a str) {
        let (token, literal) = self
            .tokens
            .get(self.position)
            .copied()
            .unwrap_or((Token::EndOfString, ""));
        match (context, token) {
            (Context::Values, Token::In | Token::NotIn) => (Token::Identifier, literal),
            _ => (token, literal),
        }
    }

    fn consume(&mut self, context: Context) -> (Token, &'a str) {
        let item = self.lookahead(context);
        if self.position < self.tokens.len() {
            self.position += 1;
        }
        item
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, SelectorError> {
        let mut requirements = Vec::new();
        loop {
            let (token, literal) = self.lookahead(Context::Values);
            match token {
                Token::Identifier | Token::DoesNotExist => {
                    requirements.push(
                        self.parse_requirement()
                            .map_err(SelectorError::Requirement)?,
                    );
                    let (token, literal) = self.consume(Context::Values);
                    match token {
                        Token::EndOfString => return Ok(requirements),
                        Token::Comma => {
                            let (next, next_literal) = self.lookahead(Context::Values);
                            if next != Token::Identifier && next != Token::DoesNotExist {
                                return Err(SelectorError::Unexpected {
                                    found: next_literal.to_string(),
                                    expected: "identifier after ','",
                                });
                            }
                        }
                        _ => {
                            return Err(SelectorError::Unexpected {
                                found: literal.to_string(),
                                expected: "',' or 'end of string'",
                            });
                        }
                    }
                }
                Token::EndOfString => return Ok(requirements),
                _ => {
                    return Err(SelectorError::Unexpected {
                        found: literal.to_string(),
                        expected: "!, identifier, or 'end of string'",
                    });
                }
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<Requirement, RequirementError> {
        let (key, inferred) = self.parse_key_and_infer_operator()?;
        if let Some(operator) = inferred {
            return Requirement::new(key, operator, Vec::new()).map_err(RequirementError::Invalid);
        }
        let operator = self.parse_operator()?;
        let values = match operator {
            Operator::In | Operator::NotIn => self.parse_values()?,
            _ => vec![self.parse_exact_value()?],
        };
        Requirement::new(key, operator, values).map_err(RequirementError::Invalid)
    }

    /// Reads `[!]key`; infers Exists or DoesNotExist when no operator follows.
    fn parse_key_and_infer_operator(
        &mut self,
    ) -> Result<(&'a str, Option<Operator>), RequirementError> {
        let (mut token, mut literal) = self.consume(Context::Values);
        let negated = token == Token::DoesNotExist;
        if negated {
            (token, literal) = self.consume(Context::Values);
        }
        if token != Token::Identifier {
            return Err(RequirementError::Unexpected {
                found: literal.to_string(),
                expected: "identifier",
            });
        }
        let key_errors = label_key_errors(literal);
        if !key_errors.is_empty() {
            // Upstream validates the key here with no field path, which Go prints as "<nil>".
            return Err(RequirementError::Invalid(InvalidFields(vec![
                InvalidField {
                    field: "<nil>".to_string(),
                    value: GoQuoted(literal).to_string(),
                    detail: key_errors.join("; "),
                },
            ])));
        }
        if negated {
            return Ok((literal, Some(Operator::DoesNotExist)));
        }
        let (next, _) = self.lookahead(Context::Values);
        if next == Token::EndOfString || next == Token::Comma {
            return Ok((literal, Some(Operator::Exists)));
        }
        Ok((literal, None))
    }

    fn parse_operator(&mut self) -> Result<Operator, RequirementError> {
        let (token, literal) = self.consume(Context::KeyAndOperator);
        Ok(match token {
            Token::In => Operator::In,
            Token::Equals => Operator::Equals,
            Token::DoubleEquals => Operator::DoubleEquals,
            Token::GreaterThan => Operator::GreaterThan,
            Token::LessThan => Operator::LessThan,
            Token::NotIn => Operator::NotIn,
            Token::NotEquals => Operator::NotEquals,
            _ => {
                return Err(RequirementError::Unexpected {
                    found: literal.to_string(),
                    expected: "in, notin, =, ==, !=, gt, lt",
                });
            }
        })
    }

    /// Reads `(a,b,...)`; returns the values sorted and without duplicates.
    fn parse_values(&mut self) -> Result<Vec<String>, RequirementError> {
        let (token, literal) = self.consume(Context::Values);
        if token != Token::OpenParenthesis {
            return Err(RequirementError::MissingOpenParenthesis {
                found: literal.to_string(),
            });
        }
        let (token, literal) = self.lookahead(Context::Values);
        let mut values = match token {
            Token::Identifier | Token::Comma => self.parse_identifiers_list()?,
            Token::ClosedParenthesis => {
                self.consume(Context::Values);
                return Ok(vec![String::new()]);
            }
            _ => {
                return Err(RequirementError::Unexpected {
                    found: literal.to_string(),
                    expected: "',', ')' or identifier",
                });
            }
        };
        // parse_identifiers_list returns only when `)` is next.
        self.consume(Context::Values);
        values.sort();
        values.dedup();
        Ok(values)
    }

    /// Reads a possibly empty, comma-separated list of possibly empty values, up to
    /// (not including) the closing parenthesis.
    fn parse_identifiers_list(&mut self) -> Result<Vec<String>, RequirementError> {
        let mut values: Vec<String> = Vec::new();
        loop {
            let (token, literal) = self.consume(Context::Values);
            match token {
                Token::Identifier => {
                    values.push(literal.to_string());
                    let (next, next_literal) = self.lookahead(Context::Values);
                    match next {
                        Token::Comma => continue,
                        Token::ClosedParenthesis => return Ok(values),
                        _ => {
                            return Err(RequirementError::Unexpected {
                                found: next_literal.to_string(),
                                expected: "',' or ')'",
                            });
                        }
                    }
                }
                Token::Comma => {
                    // A leading, trailing or doubled comma stands for an empty value.
                    if values.is_empty() {
                        values.push(String::new());
                    }
                    match self.lookahead(Context::Values).0 {
                        Token::ClosedParenthesis => {
                            values.push(String::new());
                            return Ok(values);
                        }
                        Token::Comma => values.push(String::new()),
                        _ => {}
                    }
                }
                _ => {
                    return Err(RequirementError::Unexpected {
                        found: literal.to_string(),
                        expected: "',', or identifier",
                    });
                }
            }
        }
    }

    fn parse_exact_value(&mut self) -> Result<String, RequirementError> {
        let (token, _) = self.lookahead(Context::Values);
        if token == Token::EndOfString || token == Token::Comma {
            return Ok(String::new());
        }
        let (token, literal) = self.consume(Context::Values);
        if token == Token::Identifier {
            return Ok(literal.to_string());
        }
        Err(RequirementError::Unexpected {
            found: literal.to_string(),
            expected: "identifier",
        })
    }
}

pub(super) fn parse(input: &str) -> Result<Vec<Requirement>, SelectorError> {
    Parser {
        tokens: lex(input),
        position: 0,
    }
    .parse()
}

#[cfg(test)]
mod tests {
    use super::super::Selector;
    use std::collections::BTreeMap;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    fn error(selector: &str) -> String {
        match Selector::parse(selector) {
            Ok(parsed) => panic!("{selector:?} parsed as {parsed}"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn canonical_forms() {
        let cases = [
            ("", ""),
            ("   ", ""),
            ("x=a", "x=a"),
            ("y==b", "y==b"),
            ("z!=c", "z!=c"),
            ("x=a,y!=b", "x=a,y!=b"),
            ("y!=b,x=a", "x=a,y!=b"),
            ("x in (b,a)", "x in (a,b)"),
            ("x  in  ( a , b , a )", "x in (a,b)"),
            ("x notin (a)", "x notin (a)"),
            (
                "x in (foo,,baz),y,z notin ()",
                "x in (,baz,foo),y,z notin ()",
            ),
            ("x in (,)", "x in ()"),
            ("!x", "!x"),
            ("! x", "!x"),
            ("x>1", "x>1"),
            ("x<10", "x<10"),
            ("x=", "x="),
            ("x=,y=b", "x=,y=b"),
            ("in in (in)", "in in (in)"),
            ("notin notin (notin,in)", "notin notin (in,notin)"),
            ("example.com/app=web", "example.com/app=web"),
            ("x=a\t,\ny=b", "x=a,y=b"),
        ];
        for (input, canonical) in cases {
            let selector =
                Selector::parse(input).unwrap_or_else(|error| panic!("{input}: {error}"));
            assert_eq!(selector.to_string(), canonical, "{input}");
        }
    }

    #[test]
    fn upstream_error_texts() {
        let cases = [
            (
                "a in b",
                "unable to parse requirement: found 'b' expected: '('",
            ),
            (
                "x=a||y=b",
                "unable to parse requirement: values[0][x]: Invalid value: \"a||y\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
            ),
            (
                "a b",
                "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt",
            ),
            ("a,", "found '', expected: identifier after ','"),
            (
                ",a",
                "found ',', expected: !, identifier, or 'end of string'",
            ),
            ("a=b c", "found 'c', expected: ',' or 'end of string'"),
            ("!a=b", "found '=', expected: ',' or 'end of string'"),
            (
                "a=(",
                "unable to parse requirement: found '(', expected: identifier",
            ),
            (
                "a in (b c)",
                "unable to parse requirement: found 'c', expected: ',' or ')'",
            ),
            (
                "a in (=)",
                "unable to parse requirement: found '=', expected: ',', ')' or identifier",
            ),
            (
                "a in (b,=)",
                "unable to parse requirement: found '=', expected: ',', or identifier",
            ),
            (
                "x>a",
                "unable to parse requirement: values[0]: Invalid value: \"a\": for 'Gt', 'Lt' operators, the value must be an integer",
            ),
            (
                "-x",
                "unable to parse requirement: <nil>: Invalid value: \"-x\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(error(input), expected, "{input}");
        }
    }

    #[test]
    fn matching() {
        let pod = labels(&[("app", "web"), ("tier", "front"), ("replicas", "3")]);
        let matching = [
            "",
            "app=web",
            "app==web",
            "app!=db",
            "missing!=x",
            "app in (web,db)",
            "app notin (db)",
            "missing notin (db)",
            "app",
            "!missing",
            "replicas>2",
            "replicas<4",
            "app=web,tier=front",
        ];
        for selector in matching {
            assert!(
                Selector::parse(selector).unwrap().matches(&pod),
                "{selector}"
            );
        }
        let not_matching = [
            "app=db",
            "app!=web",
            "app in (db)",
            "app notin (web)",
            "missing",
            "!app",
            "replicas>3",
            "app>1",
            "missing<1",
            "app=web,tier=back",
        ];
        for selector in not_matching {
            assert!(
                !Selector::parse(selector).unwrap().matches(&pod),
                "{selector}"
            );
        }
    }

    #[test]
    fn exact_match_and_emptiness() {
        let selector = Selector::parse("a=1,b in (2),c in (3,4),d!=5").unwrap();
        assert_eq!(selector.requires_exact_match("a"), Some("1"));
        assert_eq!(selector.requires_exact_match("b"), Some("2"));
        assert_eq!(selector.requires_exact_match("c"), None);
        assert_eq!(selector.requires_exact_match("d"), None);
        assert!(Selector::parse("").unwrap().is_empty());
        assert!(Selector::everything().is_empty());
        assert!(!Selector::nothing().is_empty());
        assert!(!Selector::nothing().matches(&BTreeMap::new()));
    }
}
