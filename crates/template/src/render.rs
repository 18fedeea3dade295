//! A template rendered from one snapshot, and its errors as one line that
//! names the template file and line.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;

use gtmpl::{Context, Template};

use crate::data::{ServiceName, Snapshot};
use crate::functions::{FUNCTIONS, Scope, with_scope};

/// A render that failed: the template file, the line when it is known, and
/// what went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}{}: {message}", line.map(|line| format!(":{line}")).unwrap_or_default())]
pub struct RenderError {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
}

/// What a render made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub text: String,
    /// The Services the template named (whether or not they were read).
    pub services: BTreeSet<ServiceName>,
}

/// Renders `text` (the template file `file`) from `snapshot`.
pub fn render(file: &str, text: &str, snapshot: Rc<Snapshot>) -> Result<Rendered, RenderError> {
    let mut template = Template::with_name(file);
    template.add_funcs(FUNCTIONS);
    if let Err(parse) = template.parse(crate::compat::rewrite_range_else(text)) {
        let (line, message) = parse_error_line(&parse.to_string(), file, text);
        return Err(RenderError {
            file: file.to_string(),
            line,
            message,
        });
    }
    let scope = Rc::new(Scope {
        snapshot,
        used: RefCell::new(BTreeSet::new()),
        last_call: RefCell::new(None),
    });
    let outcome = with_scope(scope.clone(), || template.render(&Context::empty()));
    match outcome {
        Ok(text) => Ok(Rendered {
            text,
            services: scope.used.take(),
        }),
        Err(exec) => {
            let message = exec.to_string();
            let line = exec_error_line(&message, scope.last_call.borrow().as_ref(), text);
            Err(RenderError {
                file: file.to_string(),
                line,
                message,
            })
        }
    }
}

/// gtmpl's parse errors read `template: NAME:LINE:MESSAGE`. Its line is
/// where the lexer stood, which for an undefined function is the line after
/// the call when the call ends a line; the function's own line is found in
/// the text instead.
fn parse_error_line(error: &str, file: &str, text: &str) -> (Option<usize>, String) {
    let prefix = format!("template: {file}:");
    let Some(rest) = error.strip_prefix(&prefix) else {
        return (None, error.to_string());
    };
    let Some((line, message)) = rest.split_once(':') else {
        return (None, error.to_string());
    };
    let message = message.trim().to_string();
    if let Some(function) = message
        .strip_prefix("function ")
        .and_then(|rest| rest.strip_suffix(" not defined"))
        && let Some(found) = line_of_action_with(text, &[function])
    {
        return (Some(found), message);
    }
    (line.parse().ok(), message)
}

/// gtmpl's execution errors carry no position, so the line is found from
/// what failed: the last function called (its name and first argument), or
/// the field named in a `no field` error.
fn exec_error_line(
    message: &str,
    last_call: Option<&(&'static str, String)>,
    text: &str,
) -> Option<usize> {
    if let Some(rest) = message.strip_prefix("no field ")
        && let Some(field) = rest.split_whitespace().next()
    {
        return line_of_action_with(text, &[&format!(".{field}")]);
    }
    let (function, argument) = last_call?;
    line_of_action_with(text, &[function, &format!("{argument:?}")])
        .or_else(|| line_of_action_with(text, &[function]))
}

/// The first line (from 1) holding an action (`{{ … }}`) that contains every
/// one of `needles`.
fn line_of_action_with(text: &str, needles: &[&str]) -> Option<usize> {
    let mut offset = 0;
    while let Some(start) = text[offset..].find("{{") {
        let start = offset + start;
        let end = text[start..]
            .find("}}")
            .map_or(text.len(), |end| start + end + 2);
        let action = &text[start..end];
        if let Some(found) = needles
            .iter()
            .map(|needle| action.find(needle))
            .collect::<Option<Vec<usize>>>()
            .and_then(|positions| positions.into_iter().min())
        {
            return Some(text[..start + found].matches('\n').count() + 1);
        }
        offset = end;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(keys: &[(&str, &str)]) -> Rc<Snapshot> {
        Rc::new(Snapshot {
            keys: keys
                .iter()
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .collect(),
            ..Default::default()
        })
    }

    #[test]
    fn a_confd_template_renders_unchanged() {
        let template = r#"upstream {{getv "/app/name"}} {
{{- range gets "/app/upstream/*"}}
    server {{.Value}}; # {{base .Key}}
{{- end}}
}
{{range $dir := lsdir "/app/services"}}{{$dir}}:{{range getvs (printf "/app/services/%s/*" $dir)}} {{.}}{{end}};{{end}}
{{if exists "/app/tls"}}tls{{else}}plain{{end}} {{getv "/app/missing" "fallback"}}
{{with $cfg := json (getv "/app/cfg")}}{{$cfg.IP}}{{end}} {{range jsonArray (getv "/app/list")}}[{{.}}]{{end}}
{{join (split "a:b" ":") ","}} {{toUpper "x"}} {{if contains "abc" "b"}}yes{{end}} {{replace "a.b.c" "." "_" -1}}
{{range $i, $name := ls "/app/upstream"}}{{$i}}={{$name}} {{end}}"#;
        let rendered = render(
            "nginx.tmpl",
            template,
            snapshot(&[
                ("/app/name", "web"),
                ("/app/upstream/b", "10.0.0.2:80"),
                ("/app/upstream/a", "10.0.0.1:80"),
                ("/app/services/db/1", "db1"),
                ("/app/services/db/2", "db2"),
                ("/app/services/cache/1", "c1"),
                ("/app/cfg", r#"{"IP": "192.0.2.1"}"#),
                ("/app/list", r#"["x", "y"]"#),
            ]),
        )
        .expect("renders");
        assert_eq!(
            rendered.text,
            "upstream web {
    server 10.0.0.1:80; # a
    server 10.0.0.2:80; # b
}
cache: c1;db: db1 db2;
plain fallback
192.0.2.1 [x][y]
a,b X yes a_b_c
0=a 1=b "
        );
    }

    #[test]
    fn a_missing_key_names_its_line() {
        let error = render(
            "/etc/t.tmpl",
            "first\n{{getv \"/app/name\"}}\nthird {{getv \"/app/port\"}}\n",
            snapshot(&[("/app/name", "web")]),
        )
        .expect_err("no /app/port");
        assert_eq!(
            error.to_string(),
            "/etc/t.tmpl:3: key does not exist: /app/port"
        );
    }

    #[test]
    fn a_syntax_error_names_its_line() {
        let error = render("t.tmpl", "a\nb\n{{end}}\n", snapshot(&[])).expect_err("stray end");
        assert_eq!(error.line, Some(3));
        assert!(error.message.contains("unexpected"), "{error}");
        let error = render("t.tmpl", "a\n{{nosuch 1}}\nc\n", snapshot(&[])).expect_err("undefined");
        assert_eq!(error.to_string(), "t.tmpl:2: function nosuch not defined");
    }

    #[test]
    fn a_missing_field_names_its_line() {
        let error = render(
            "t.tmpl",
            "{{range gets \"/a/*\"}}\n{{.Key}}\n{{.Nope}}{{end}}\n",
            snapshot(&[("/a/b", "1")]),
        )
        .expect_err("no field Nope");
        assert_eq!(error.line, Some(3));
    }

    #[test]
    fn a_range_else_runs_only_for_an_empty_list() {
        let template = "{{range gets \"/a/*\"}}[{{.Value}}]{{else}}none{{end}} {{range gets \"/b/*\"}}[{{.Value}}]{{else}}none{{end}}";
        let rendered = render("t.tmpl", template, snapshot(&[("/a/x", "1")])).expect("renders");
        assert_eq!(rendered.text, "[1] none");
    }

    #[test]
    fn services_and_their_endpoints_render_from_the_snapshot() {
        use crate::data::{ServiceData, ServiceName};
        let slice = |name: &str, ips: &[&str]| {
            serde_json::json!({
                "metadata": {"name": name, "labels": {"kubernetes.io/service-name": "web"}},
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                "endpoints": ips.iter().map(|ip| serde_json::json!({"addresses": [ip]})).collect::<Vec<_>>()
            })
        };
        let web = ServiceName::parse("default/web").unwrap();
        let missing = ServiceName::parse("default/gone").unwrap();
        let mut snapshot = Snapshot::default();
        snapshot.services.insert(
            web,
            ServiceData {
                service: Some(serde_json::json!({
                    "spec": {"type": "ClusterIP", "clusterIP": "10.43.0.20", "clusterIPs": ["10.43.0.20"],
                             "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]}
                })),
                // An address in two slices (a pod moving between them) is listed once.
                slices: vec![slice("web-a", &["10.42.1.2", "10.42.0.9"]), slice("web-b", &["10.42.0.9"])],
            },
        );
        snapshot.services.insert(missing, ServiceData::default());
        let snapshot = Rc::new(snapshot);
        let rendered = render(
            "t.tmpl",
            "{{with service \"web\"}}{{.ClusterIP}} {{.Type}}{{range .Ports}} {{.Name}}:{{.Port}}->{{.TargetPort}}{{end}}{{end}}\n\
             {{range endpoints \"default/web\"}}{{.IP}}:{{.Port}} {{end}}\n\
             {{len (endpoints \"default/gone\")}}",
            snapshot.clone(),
        )
        .expect("renders");
        assert_eq!(
            rendered.text,
            "10.43.0.20 ClusterIP http:80->http\n10.42.0.9:8080 10.42.1.2:8080 \n0"
        );
        let error = render("t.tmpl", "\n{{service \"default/gone\"}}", snapshot)
            .expect_err("no such service");
        assert_eq!(
            error.to_string(),
            "t.tmpl:2: service default/gone does not exist"
        );
    }

    #[test]
    fn the_services_named_are_reported() {
        let rendered = render(
            "t.tmpl",
            "{{range endpoints \"default/web\"}}{{.IP}}{{end}}{{service \"kube-system/kube-dns\"}}",
            snapshot(&[]),
        )
        .expect("renders");
        let names: Vec<String> = rendered.services.iter().map(ToString::to_string).collect();
        assert_eq!(names, ["default/web", "kube-system/kube-dns"]);
    }
}
