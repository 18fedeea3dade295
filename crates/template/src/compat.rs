//! Where gtmpl differs from Go's text/template, the template text is
//! rewritten before parsing so that it behaves as Go's would. Only one case
//! is handled: gtmpl runs a `range`'s `{{else}}` branch even when the range
//! had elements; Go runs it only when there were none. A range with an else
//! becomes `{{if PIPE}}{{range …}}BODY{{end}}{{else}}ELSE{{end}}`, on the
//! same lines, so the lines errors name do not move.

/// One action: its byte range in the text and its parts.
struct Action {
    start: usize,
    end: usize,
    /// `-` when the action opens with `{{- `, else empty.
    left_trim: &'static str,
    /// The words inside, without delimiters and trim markers.
    inner_start: usize,
    inner_end: usize,
}

/// The actions of `text`, in order. Quoted strings and comments inside an
/// action are stepped over, so a `}}` in them does not end it.
fn actions(text: &str) -> Vec<Action> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut position = 0;
    while let Some(offset) = text[position..].find("{{") {
        let start = position + offset;
        let mut cursor = start + 2;
        let left_trim = if text[cursor..].starts_with("- ") {
            "-"
        } else {
            ""
        };
        if !left_trim.is_empty() {
            cursor += 2;
        }
        let inner_start = cursor;
        let mut end = None;
        while cursor < bytes.len() {
            match bytes[cursor] {
                b'"' | b'`' | b'\'' => {
                    let quote = bytes[cursor];
                    cursor += 1;
                    while cursor < bytes.len() && bytes[cursor] != quote {
                        if bytes[cursor] == b'\\' && quote != b'`' {
                            cursor += 1;
                        }
                        cursor += 1;
                    }
                    cursor += 1;
                }
                b'/' if text[cursor..].starts_with("/*") => {
                    cursor = text[cursor..]
                        .find("*/")
                        .map_or(bytes.len(), |close| cursor + close + 2);
                }
                b'}' if text[cursor..].starts_with("}}") => {
                    end = Some(cursor);
                    break;
                }
                _ => cursor += 1,
            }
        }
        let Some(close) = end else { break };
        let inner_end = if text[..close].ends_with(" -") {
            close - 2
        } else {
            close
        };
        found.push(Action {
            start,
            end: close + 2,
            left_trim,
            inner_start,
            inner_end: inner_end.max(inner_start),
        });
        position = close + 2;
    }
    found
}

/// The first word of an action (`if`, `range`, `else`, `end`, …).
fn keyword<'a>(text: &'a str, action: &Action) -> &'a str {
    text[action.inner_start..action.inner_end]
        .split_whitespace()
        .next()
        .unwrap_or("")
}

/// A range's pipeline without its variable declaration (`$i, $v :=`).
fn range_pipeline(inner: &str) -> &str {
    let after_keyword = inner.trim_start().trim_start_matches("range");
    match after_keyword.find(":=") {
        // A declaration comes before any string, so the first `:=` is it
        // when it precedes every quote.
        Some(declaration) if !after_keyword[..declaration].contains(['"', '`']) => {
            after_keyword[declaration + 2..].trim()
        }
        _ => after_keyword.trim(),
    }
}

/// `text` with every `range … else … end` made to behave as Go's.
pub fn rewrite_range_else(text: &str) -> String {
    struct Frame {
        is_range: bool,
        range_idx: usize,
        else_idx: Option<usize>,
    }
    let actions = actions(text);
    let mut stack: Vec<Frame> = Vec::new();
    // (range action, else action) pairs to rewrite.
    let mut rewrites: Vec<(usize, usize)> = Vec::new();
    for (action_idx, action) in actions.iter().enumerate() {
        match keyword(text, action) {
            "if" | "with" | "define" | "block" => stack.push(Frame {
                is_range: false,
                range_idx: action_idx,
                else_idx: None,
            }),
            "range" => stack.push(Frame {
                is_range: true,
                range_idx: action_idx,
                else_idx: None,
            }),
            "else" => {
                if let Some(frame) = stack.last_mut()
                    && frame.else_idx.is_none()
                {
                    frame.else_idx = Some(action_idx);
                }
            }
            "end" => {
                if let Some(frame) = stack.pop()
                    && frame.is_range
                    && let Some(else_idx) = frame.else_idx
                {
                    rewrites.push((frame.range_idx, else_idx));
                }
            }
            _ => {}
        }
    }
    if rewrites.is_empty() {
        return text.to_string();
    }
    // Edits as (position, replaced length, new text), applied from the end.
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    for (range_idx, else_idx) in rewrites {
        let range = &actions[range_idx];
        let inner = &text[range.inner_start..range.inner_end];
        let opening = format!(
            "{{{{{}if {}}}}}{{{{{}",
            trim_marker(range.left_trim),
            range_pipeline(inner),
            &text[range.inner_start..range.end]
        );
        edits.push((range.start, range.end - range.start, opening));
        let otherwise = &actions[else_idx];
        let closing = format!(
            "{{{{{}end}}}}{{{{{}",
            trim_marker(otherwise.left_trim),
            &text[otherwise.inner_start..otherwise.end]
        );
        edits.push((otherwise.start, otherwise.end - otherwise.start, closing));
    }
    edits.sort_by_key(|edit| std::cmp::Reverse(edit.0));
    let mut rewritten = text.to_string();
    for (position, length, replacement) in edits {
        rewritten.replace_range(position..position + length, &replacement);
    }
    rewritten
}

fn trim_marker(left_trim: &str) -> &'static str {
    if left_trim.is_empty() { "" } else { "- " }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_else_becomes_an_if_around_the_range() {
        assert_eq!(
            rewrite_range_else("{{range $i, $e := gets \"/a/*\"}}x{{else}}none{{end}}"),
            "{{if gets \"/a/*\"}}{{range $i, $e := gets \"/a/*\"}}x{{end}}{{else}}none{{end}}"
        );
        assert_eq!(
            rewrite_range_else("{{- range .}}\n  x\n{{- else -}}\n  none\n{{end}}"),
            "{{- if .}}{{range .}}\n  x\n{{- end}}{{else -}}\n  none\n{{end}}"
        );
    }

    #[test]
    fn other_blocks_and_strings_are_left_alone() {
        let text = "{{if 1}}{{range .}}{{if 2}}a{{else}}b{{end}}{{end}}{{else}}c{{end}}{{\"}}\"}}";
        assert_eq!(rewrite_range_else(text), text);
    }

    #[test]
    fn nested_ranges_with_else_are_each_rewritten() {
        assert_eq!(
            rewrite_range_else("{{range .A}}{{range .B}}b{{else}}nb{{end}}{{else}}na{{end}}"),
            "{{if .A}}{{range .A}}{{if .B}}{{range .B}}b{{end}}{{else}}nb{{end}}{{end}}{{else}}na{{end}}"
        );
    }
}
