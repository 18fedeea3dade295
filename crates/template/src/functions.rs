//! The template functions: confd's (over the keys of the snapshot being
//! rendered) and shoal's `endpoints` and `service` (over its Services).
//!
//! gtmpl calls functions through plain `fn` pointers, with no state of their
//! own, so the snapshot a render reads is put in a thread-local [`Scope`] for
//! the render's duration (rendering is synchronous, on one thread).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::rc::Rc;

use gtmpl::{Func, FuncError, Value};
use serde_json::Value as Json;

use crate::data::{ServiceName, Snapshot};

/// What a render reads, and what it found out while reading.
pub struct Scope {
    pub snapshot: Rc<Snapshot>,
    /// Services the template named: watched in `--watch` mode.
    pub used: RefCell<BTreeSet<ServiceName>>,
    /// The last function called and its first argument, for naming the
    /// template line of a failed call.
    pub last_call: RefCell<Option<(&'static str, String)>>,
}

thread_local! {
    static SCOPE: RefCell<Option<Rc<Scope>>> = const { RefCell::new(None) };
}

/// Runs `render` with `scope` as the current render's scope.
pub fn with_scope<T>(scope: Rc<Scope>, render: impl FnOnce() -> T) -> T {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            SCOPE.with(|current| current.borrow_mut().take());
        }
    }
    SCOPE.with(|current| *current.borrow_mut() = Some(scope));
    let _reset = Reset;
    render()
}

fn scope(function: &'static str, args: &[Value]) -> Result<Rc<Scope>, FuncError> {
    let scope = SCOPE
        .with(|current| current.borrow().clone())
        .ok_or_else(|| FuncError::Generic(format!("{function}: called outside a render")))?;
    let first = args
        .first()
        .map(|value| value.to_string())
        .unwrap_or_default();
    *scope.last_call.borrow_mut() = Some((function, first));
    Ok(scope)
}

/// Every function a template may call, by name.
pub const FUNCTIONS: &[(&str, Func)] = &[
    ("get", get),
    ("gets", gets),
    ("getv", getv),
    ("getvs", getvs),
    ("exists", exists),
    ("ls", ls),
    ("lsdir", lsdir),
    ("json", json),
    ("jsonArray", json_array),
    ("base", base),
    ("dir", dir),
    ("split", split),
    ("join", join),
    ("toUpper", to_upper),
    ("toLower", to_lower),
    ("contains", contains),
    ("replace", replace),
    ("trimSuffix", trim_suffix),
    ("getenv", getenv),
    ("map", map),
    ("reverse", reverse),
    ("parseBool", parse_bool),
    ("atoi", atoi),
    ("add", add),
    ("sub", sub),
    ("mul", mul),
    ("div", div),
    ("mod", modulo),
    ("seq", seq),
    ("fileExists", file_exists),
    ("lookupIP", lookup_ip),
    ("endpoints", endpoints),
    ("service", service),
];

fn error(text: impl Into<String>) -> FuncError {
    FuncError::Generic(text.into())
}

fn arity(
    function: &str,
    args: &[Value],
    range: std::ops::RangeInclusive<usize>,
) -> Result<(), FuncError> {
    if range.contains(&args.len()) {
        Ok(())
    } else if range.start() == range.end() {
        Err(FuncError::ExactlyXArgs(
            function.to_string(),
            *range.start(),
        ))
    } else {
        Err(error(format!(
            "{function} takes {} to {} arguments, got {}",
            range.start(),
            range.end(),
            args.len()
        )))
    }
}

fn string(function: &str, value: &Value) -> Result<String, FuncError> {
    match value {
        Value::String(text) => Ok(text.clone()),
        other => Err(error(format!("{function}: expected a string, got {other}"))),
    }
}

fn integer(function: &str, value: &Value) -> Result<i64, FuncError> {
    match value {
        Value::Number(number) => number
            .as_i64()
            .ok_or_else(|| error(format!("{function}: {number} is not an integer"))),
        Value::String(text) => text
            .parse()
            .map_err(|_| error(format!("{function}: {text:?} is not an integer"))),
        other => Err(error(format!(
            "{function}: expected an integer, got {other}"
        ))),
    }
}

fn strings(values: impl IntoIterator<Item = String>) -> Value {
    Value::Array(values.into_iter().map(Value::String).collect())
}

/// confd's KVPair: `.Key` and `.Value`.
fn pair(key: &str, value: &str) -> Value {
    Value::Object(HashMap::from([
        ("Key".to_string(), Value::from(key)),
        ("Value".to_string(), Value::from(value)),
    ]))
}

fn get(args: &[Value]) -> Result<Value, FuncError> {
    arity("get", args, 1..=1)?;
    let scope = scope("get", args)?;
    let key = string("get", &args[0])?;
    match scope.snapshot.keys.get(&key) {
        Some(value) => Ok(pair(&key, value)),
        None => Err(error(format!("key does not exist: {key}"))),
    }
}

fn matching<'a>(snapshot: &'a Snapshot, pattern: &str) -> Vec<(&'a String, &'a String)> {
    snapshot
        .keys
        .iter()
        .filter(|(key, _)| path_match(pattern, key))
        .collect()
}

fn gets(args: &[Value]) -> Result<Value, FuncError> {
    arity("gets", args, 1..=1)?;
    let scope = scope("gets", args)?;
    let pattern = string("gets", &args[0])?;
    Ok(Value::Array(
        matching(&scope.snapshot, &pattern)
            .into_iter()
            .map(|(key, value)| pair(key, value))
            .collect(),
    ))
}

fn getv(args: &[Value]) -> Result<Value, FuncError> {
    arity("getv", args, 1..=2)?;
    let scope = scope("getv", args)?;
    let key = string("getv", &args[0])?;
    match (scope.snapshot.keys.get(&key), args.get(1)) {
        (Some(value), _) => Ok(Value::from(value.as_str())),
        (None, Some(default)) => Ok(Value::String(string("getv", default)?)),
        (None, None) => Err(error(format!("key does not exist: {key}"))),
    }
}

fn getvs(args: &[Value]) -> Result<Value, FuncError> {
    arity("getvs", args, 1..=1)?;
    let scope = scope("getvs", args)?;
    let pattern = string("getvs", &args[0])?;
    let mut values: Vec<String> = matching(&scope.snapshot, &pattern)
        .into_iter()
        .map(|(_, value)| value.clone())
        .collect();
    // confd sorts the values themselves, not by key.
    values.sort();
    Ok(strings(values))
}

fn exists(args: &[Value]) -> Result<Value, FuncError> {
    arity("exists", args, 1..=1)?;
    let scope = scope("exists", args)?;
    let key = string("exists", &args[0])?;
    Ok(Value::Bool(scope.snapshot.keys.contains_key(&key)))
}

fn ls(args: &[Value]) -> Result<Value, FuncError> {
    arity("ls", args, 1..=1)?;
    let scope = scope("ls", args)?;
    let path = string("ls", &args[0])?;
    Ok(strings(children(scope.snapshot.keys.keys(), &path, false)))
}

fn lsdir(args: &[Value]) -> Result<Value, FuncError> {
    arity("lsdir", args, 1..=1)?;
    let scope = scope("lsdir", args)?;
    let path = string("lsdir", &args[0])?;
    Ok(strings(children(scope.snapshot.keys.keys(), &path, true)))
}

/// The names directly under `path` in the key tree (sorted, once each); with
/// `only_dirs`, only those that have keys under them. A key equal to `path`
/// lists its own last name, as confd's `ls` does.
pub fn children<'a>(
    keys: impl Iterator<Item = &'a String>,
    path: &str,
    only_dirs: bool,
) -> Vec<String> {
    let base: Vec<&str> = path.split('/').filter(|part| !part.is_empty()).collect();
    let mut names = BTreeSet::new();
    for key in keys {
        let terms: Vec<&str> = key.split('/').filter(|part| !part.is_empty()).collect();
        if !terms.starts_with(&base) {
            continue;
        }
        let rest = &terms[base.len()..];
        match rest {
            [] if !only_dirs => {
                if let Some(last) = terms.last() {
                    names.insert(last.to_string());
                }
            }
            [] => {}
            [child] if !only_dirs => {
                names.insert(child.to_string());
            }
            [_] => {}
            [child, ..] => {
                names.insert(child.to_string());
            }
        }
    }
    names.into_iter().collect()
}

/// Go's `path.Match`: `*` is any run of non-`/` characters, `?` one of
/// them, `[...]` a class (ranges, `^` to negate), `\` escapes. A malformed
/// pattern matches nothing.
pub fn path_match(pattern: &str, name: &str) -> bool {
    fn class(pattern: &[char], character: char) -> Option<(bool, usize)> {
        // `pattern` starts after the `[`; returns (matched, length consumed).
        let mut index = 0;
        let negated = pattern.first() == Some(&'^');
        if negated {
            index += 1;
        }
        let mut matched = false;
        let mut first = true;
        loop {
            let &start = pattern.get(index)?;
            if start == ']' && !first {
                return Some((matched != negated, index + 1));
            }
            first = false;
            let mut low = start;
            index += 1;
            if low == '\\' {
                low = *pattern.get(index)?;
                index += 1;
            }
            let mut high = low;
            if pattern.get(index) == Some(&'-') && pattern.get(index + 1).is_some_and(|&c| c != ']')
            {
                high = pattern[index + 1];
                index += 2;
                if high == '\\' {
                    high = *pattern.get(index)?;
                    index += 1;
                }
            }
            if low <= character && character <= high {
                matched = true;
            }
        }
    }
    fn matches(pattern: &[char], name: &[char]) -> bool {
        match pattern.first() {
            None => name.is_empty(),
            Some('*') => {
                let rest = &pattern[1..];
                (0..=name.len())
                    .take_while(|&skipped| skipped == 0 || name[skipped - 1] != '/')
                    .any(|skipped| matches(rest, &name[skipped..]))
            }
            Some('?') => {
                name.first().is_some_and(|&c| c != '/') && matches(&pattern[1..], &name[1..])
            }
            Some('[') => match name.first() {
                Some(&c) if c != '/' => match class(&pattern[1..], c) {
                    Some((true, used)) => matches(&pattern[1 + used..], &name[1..]),
                    _ => false,
                },
                _ => false,
            },
            Some('\\') => {
                pattern.len() > 1
                    && name.first() == Some(&pattern[1])
                    && matches(&pattern[2..], &name[1..])
            }
            Some(&literal) => name.first() == Some(&literal) && matches(&pattern[1..], &name[1..]),
        }
    }
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    matches(&pattern, &name)
}

/// A JSON value as a template value (objects become maps, so `.field` and
/// `index` reach into them).
pub fn from_json(value: &Json) -> Value {
    match value {
        Json::Null => Value::Nil,
        Json::Bool(flag) => Value::Bool(*flag),
        Json::Number(number) => {
            if let Some(integer) = number.as_i64() {
                Value::from(integer)
            } else if let Some(unsigned) = number.as_u64() {
                Value::from(unsigned)
            } else {
                Value::from(number.as_f64().unwrap_or(f64::NAN))
            }
        }
        Json::String(text) => Value::from(text.as_str()),
        Json::Array(items) => Value::Array(items.iter().map(from_json).collect()),
        Json::Object(fields) => Value::Map(
            fields
                .iter()
                .map(|(name, field)| (name.clone(), from_json(field)))
                .collect(),
        ),
    }
}

fn json(args: &[Value]) -> Result<Value, FuncError> {
    arity("json", args, 1..=1)?;
    let text = string("json", &args[0])?;
    match serde_json::from_str::<Json>(&text) {
        Ok(object @ Json::Object(_)) => Ok(from_json(&object)),
        Ok(_) => Err(error(format!("json: {text:?} is not a JSON object"))),
        Err(parse) => Err(error(format!("json: {parse}"))),
    }
}

fn json_array(args: &[Value]) -> Result<Value, FuncError> {
    arity("jsonArray", args, 1..=1)?;
    let text = string("jsonArray", &args[0])?;
    match serde_json::from_str::<Json>(&text) {
        Ok(array @ Json::Array(_)) => Ok(from_json(&array)),
        Ok(_) => Err(error(format!("jsonArray: {text:?} is not a JSON array"))),
        Err(parse) => Err(error(format!("jsonArray: {parse}"))),
    }
}

/// Go's `path.Base`.
pub fn path_base(path: &str) -> String {
    if path.is_empty() {
        return ".".to_string();
    }
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return "/".to_string();
    }
    trimmed.rsplit('/').next().unwrap_or(trimmed).to_string()
}

/// Go's `path.Dir` (without its cleaning of `.` and `..`).
pub fn path_dir(path: &str) -> String {
    match path.rfind('/') {
        None => ".".to_string(),
        Some(0) => "/".to_string(),
        Some(slash) => {
            let dir = path[..slash].trim_end_matches('/');
            if dir.is_empty() {
                "/".to_string()
            } else {
                dir.to_string()
            }
        }
    }
}

fn base(args: &[Value]) -> Result<Value, FuncError> {
    arity("base", args, 1..=1)?;
    Ok(Value::String(path_base(&string("base", &args[0])?)))
}

fn dir(args: &[Value]) -> Result<Value, FuncError> {
    arity("dir", args, 1..=1)?;
    Ok(Value::String(path_dir(&string("dir", &args[0])?)))
}

fn split(args: &[Value]) -> Result<Value, FuncError> {
    arity("split", args, 2..=2)?;
    let text = string("split", &args[0])?;
    let separator = string("split", &args[1])?;
    Ok(if separator.is_empty() {
        // Go splits into characters.
        strings(text.chars().map(String::from))
    } else {
        strings(text.split(separator.as_str()).map(String::from))
    })
}

fn join(args: &[Value]) -> Result<Value, FuncError> {
    arity("join", args, 2..=2)?;
    let separator = string("join", &args[1])?;
    match &args[0] {
        Value::Array(items) => Ok(Value::String(
            items
                .iter()
                .map(Value::to_string)
                .collect::<Vec<_>>()
                .join(&separator),
        )),
        other => Err(error(format!("join: expected a list, got {other}"))),
    }
}

fn to_upper(args: &[Value]) -> Result<Value, FuncError> {
    arity("toUpper", args, 1..=1)?;
    Ok(Value::String(string("toUpper", &args[0])?.to_uppercase()))
}

fn to_lower(args: &[Value]) -> Result<Value, FuncError> {
    arity("toLower", args, 1..=1)?;
    Ok(Value::String(string("toLower", &args[0])?.to_lowercase()))
}

fn contains(args: &[Value]) -> Result<Value, FuncError> {
    arity("contains", args, 2..=2)?;
    let text = string("contains", &args[0])?;
    Ok(Value::Bool(text.contains(&string("contains", &args[1])?)))
}

/// Go's `strings.Replace(s, old, new, n)`: `n` < 0 replaces every one.
fn replace(args: &[Value]) -> Result<Value, FuncError> {
    arity("replace", args, 4..=4)?;
    let text = string("replace", &args[0])?;
    let old = string("replace", &args[1])?;
    let new = string("replace", &args[2])?;
    let count = integer("replace", &args[3])?;
    Ok(Value::String(if count < 0 {
        text.replace(&old, &new)
    } else {
        text.replacen(&old, &new, count as usize)
    }))
}

fn trim_suffix(args: &[Value]) -> Result<Value, FuncError> {
    arity("trimSuffix", args, 2..=2)?;
    let text = string("trimSuffix", &args[0])?;
    let suffix = string("trimSuffix", &args[1])?;
    Ok(Value::String(
        text.strip_suffix(suffix.as_str())
            .unwrap_or(&text)
            .to_string(),
    ))
}

fn getenv(args: &[Value]) -> Result<Value, FuncError> {
    arity("getenv", args, 1..=2)?;
    let name = string("getenv", &args[0])?;
    match (std::env::var(&name), args.get(1)) {
        (Ok(value), _) if !value.is_empty() => Ok(Value::String(value)),
        (_, Some(default)) => Ok(Value::String(string("getenv", default)?)),
        _ => Ok(Value::String(String::new())),
    }
}

/// confd's `map "k1" v1 "k2" v2 …`.
fn map(args: &[Value]) -> Result<Value, FuncError> {
    if !args.len().is_multiple_of(2) {
        return Err(error("map: expected key and value pairs"));
    }
    let mut entries = HashMap::new();
    for entry in args.chunks(2) {
        entries.insert(string("map", &entry[0])?, entry[1].clone());
    }
    Ok(Value::Map(entries))
}

fn reverse(args: &[Value]) -> Result<Value, FuncError> {
    arity("reverse", args, 1..=1)?;
    match &args[0] {
        Value::Array(items) => Ok(Value::Array(items.iter().rev().cloned().collect())),
        other => Err(error(format!("reverse: expected a list, got {other}"))),
    }
}

/// Go's `strconv.ParseBool`.
fn parse_bool(args: &[Value]) -> Result<Value, FuncError> {
    arity("parseBool", args, 1..=1)?;
    let text = string("parseBool", &args[0])?;
    match text.as_str() {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(Value::Bool(true)),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(Value::Bool(false)),
        _ => Err(error(format!("parseBool: invalid syntax: {text:?}"))),
    }
}

fn atoi(args: &[Value]) -> Result<Value, FuncError> {
    arity("atoi", args, 1..=1)?;
    let text = string("atoi", &args[0])?;
    text.parse::<i64>()
        .map(Value::from)
        .map_err(|_| error(format!("atoi: invalid syntax: {text:?}")))
}

fn arithmetic(
    function: &str,
    args: &[Value],
    operation: fn(i64, i64) -> Option<i64>,
) -> Result<Value, FuncError> {
    arity(function, args, 2..=2)?;
    let left = integer(function, &args[0])?;
    let right = integer(function, &args[1])?;
    operation(left, right).map(Value::from).ok_or_else(|| {
        error(format!(
            "{function}: cannot compute with {left} and {right}"
        ))
    })
}

fn add(args: &[Value]) -> Result<Value, FuncError> {
    arithmetic("add", args, i64::checked_add)
}

fn sub(args: &[Value]) -> Result<Value, FuncError> {
    arithmetic("sub", args, i64::checked_sub)
}

fn mul(args: &[Value]) -> Result<Value, FuncError> {
    arithmetic("mul", args, i64::checked_mul)
}

fn div(args: &[Value]) -> Result<Value, FuncError> {
    arithmetic("div", args, i64::checked_div)
}

fn modulo(args: &[Value]) -> Result<Value, FuncError> {
    arithmetic("mod", args, i64::checked_rem)
}

/// confd's `seq first last`: the integers from `first` to `last`, both in.
fn seq(args: &[Value]) -> Result<Value, FuncError> {
    arity("seq", args, 2..=2)?;
    let first = integer("seq", &args[0])?;
    let last = integer("seq", &args[1])?;
    const MAX_LENGTH: i64 = 1_000_000;
    if last.saturating_sub(first) >= MAX_LENGTH {
        return Err(error(format!("seq: more than {MAX_LENGTH} numbers")));
    }
    Ok(Value::Array((first..=last).map(Value::from).collect()))
}

fn file_exists(args: &[Value]) -> Result<Value, FuncError> {
    arity("fileExists", args, 1..=1)?;
    Ok(Value::Bool(
        std::path::Path::new(&string("fileExists", &args[0])?).exists(),
    ))
}

/// The host's addresses, sorted as text (confd's `lookupIP`); none when the
/// name does not resolve.
fn lookup_ip(args: &[Value]) -> Result<Value, FuncError> {
    use std::net::ToSocketAddrs as _;
    arity("lookupIP", args, 1..=1)?;
    let host = string("lookupIP", &args[0])?;
    let addresses: BTreeSet<String> = (host.as_str(), 0)
        .to_socket_addrs()
        .map(|found| found.map(|address| address.ip().to_string()).collect())
        .unwrap_or_default();
    Ok(strings(addresses))
}

fn service_name(
    function: &'static str,
    args: &[Value],
) -> Result<(Rc<Scope>, ServiceName), FuncError> {
    let scope = scope(function, args)?;
    let text = string(function, &args[0])?;
    let name = ServiceName::parse(&text).ok_or_else(|| {
        error(format!(
            "{function}: {text:?} is not a service name (namespace/name)"
        ))
    })?;
    scope.used.borrow_mut().insert(name.clone());
    Ok((scope, name))
}

/// `endpoints "ns/name" ["port-name"]`: one entry per ready address and
/// port of the Service's EndpointSlices (see the crate docs).
fn endpoints(args: &[Value]) -> Result<Value, FuncError> {
    arity("endpoints", args, 1..=2)?;
    let (scope, name) = service_name("endpoints", args)?;
    let port_name = args
        .get(1)
        .map(|port| string("endpoints", port))
        .transpose()?;
    let Some(data) = scope.snapshot.services.get(&name) else {
        // Not read yet: the render is done again once it is.
        return Ok(Value::Array(Vec::new()));
    };
    let mut found: BTreeMap<(IpAddr, i64, String), Value> = BTreeMap::new();
    for slice in &data.slices {
        for entry in ready_endpoints(slice, port_name.as_deref()) {
            found.entry(entry.0).or_insert(entry.1);
        }
    }
    Ok(Value::Array(found.into_values().collect()))
}

/// The ready (address, port) pairs of one EndpointSlice, keyed for sorting.
fn ready_endpoints(slice: &Json, port_name: Option<&str>) -> Vec<((IpAddr, i64, String), Value)> {
    let empty = Vec::new();
    let ports: Vec<(String, i64, String)> = match slice.get("ports").and_then(Json::as_array) {
        // No ports: the slice stands for every port of its addresses.
        None => vec![(String::new(), 0, "TCP".to_string())],
        Some(ports) if ports.is_empty() => vec![(String::new(), 0, "TCP".to_string())],
        Some(ports) => ports
            .iter()
            .map(|port| {
                (
                    port.get("name")
                        .and_then(Json::as_str)
                        .unwrap_or("")
                        .to_string(),
                    port.get("port").and_then(Json::as_i64).unwrap_or(0),
                    port.get("protocol")
                        .and_then(Json::as_str)
                        .unwrap_or("TCP")
                        .to_string(),
                )
            })
            .collect(),
    };
    let mut entries = Vec::new();
    for endpoint in slice
        .get("endpoints")
        .and_then(Json::as_array)
        .unwrap_or(&empty)
    {
        // The API says an unknown readiness is to be read as ready.
        let ready = endpoint
            .pointer("/conditions/ready")
            .and_then(Json::as_bool)
            .unwrap_or(true);
        if !ready {
            continue;
        }
        let text = |pointer: &str| {
            endpoint
                .pointer(pointer)
                .and_then(Json::as_str)
                .unwrap_or("")
                .to_string()
        };
        let pod_name = if text("/targetRef/kind") == "Pod" {
            text("/targetRef/name")
        } else {
            String::new()
        };
        for address in endpoint
            .get("addresses")
            .and_then(Json::as_array)
            .unwrap_or(&empty)
        {
            let Some(address) = address.as_str() else {
                continue;
            };
            let Ok(ip) = address.parse::<IpAddr>() else {
                continue;
            };
            for (name, port, protocol) in &ports {
                if port_name.is_some_and(|wanted| wanted != name) {
                    continue;
                }
                let value = Value::Object(HashMap::from([
                    ("IP".to_string(), Value::from(address)),
                    ("Port".to_string(), Value::from(*port)),
                    ("PortName".to_string(), Value::from(name.as_str())),
                    ("Protocol".to_string(), Value::from(protocol.as_str())),
                    ("NodeName".to_string(), Value::from(text("/nodeName"))),
                    ("Hostname".to_string(), Value::from(text("/hostname"))),
                    ("PodName".to_string(), Value::from(pod_name.clone())),
                ]));
                entries.push(((ip, *port, protocol.clone()), value));
            }
        }
    }
    entries
}

/// `service "ns/name"`: the Service's addresses and ports (see the crate docs).
fn service(args: &[Value]) -> Result<Value, FuncError> {
    arity("service", args, 1..=1)?;
    let (scope, name) = service_name("service", args)?;
    let Some(data) = scope.snapshot.services.get(&name) else {
        // Not read yet: the render is done again once it is. Its fields are
        // there, empty, so the template's field accesses succeed meanwhile.
        return Ok(service_value(&name, &Json::Null));
    };
    let Some(object) = &data.service else {
        return Err(error(format!("service {name} does not exist")));
    };
    Ok(service_value(&name, object))
}

/// A Service object as the template sees it.
fn service_value(name: &ServiceName, object: &Json) -> Value {
    let text = |pointer: &str| {
        object
            .pointer(pointer)
            .and_then(Json::as_str)
            .unwrap_or("")
            .to_string()
    };
    let list = |pointer: &str| {
        object
            .pointer(pointer)
            .and_then(Json::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(Json::as_str)
                    .map(String::from)
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    let ports: Vec<Value> = object
        .pointer("/spec/ports")
        .and_then(Json::as_array)
        .map(|ports| {
            ports
                .iter()
                .map(|port| {
                    let number = |field: &str| port.get(field).and_then(Json::as_i64).unwrap_or(0);
                    let target_port = match port.get("targetPort") {
                        Some(Json::String(named)) => Value::from(named.as_str()),
                        Some(Json::Number(number)) => Value::from(number.as_i64().unwrap_or(0)),
                        _ => Value::from(number("port")),
                    };
                    Value::Object(HashMap::from([
                        (
                            "Name".to_string(),
                            Value::from(port.get("name").and_then(Json::as_str).unwrap_or("")),
                        ),
                        ("Port".to_string(), Value::from(number("port"))),
                        ("TargetPort".to_string(), target_port),
                        ("NodePort".to_string(), Value::from(number("nodePort"))),
                        (
                            "Protocol".to_string(),
                            Value::from(
                                port.get("protocol").and_then(Json::as_str).unwrap_or("TCP"),
                            ),
                        ),
                    ]))
                })
                .collect()
        })
        .unwrap_or_default();
    Value::Object(HashMap::from([
        ("Name".to_string(), Value::from(name.name.as_str())),
        (
            "Namespace".to_string(),
            Value::from(name.namespace.as_str()),
        ),
        ("Type".to_string(), Value::from(text("/spec/type"))),
        (
            "ClusterIP".to_string(),
            Value::from(text("/spec/clusterIP")),
        ),
        ("ClusterIPs".to_string(), strings(list("/spec/clusterIPs"))),
        (
            "ExternalIPs".to_string(),
            strings(list("/spec/externalIPs")),
        ),
        ("Ports".to_string(), Value::Array(ports)),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_match_is_go_path_match() {
        assert!(path_match("/app/upstream/*", "/app/upstream/a"));
        assert!(!path_match("/app/upstream/*", "/app/upstream/a/b"));
        assert!(!path_match("/app/upstream/*", "/app/upstreams"));
        assert!(path_match("/app/*/host", "/app/db/host"));
        assert!(path_match("/app/db?", "/app/db1"));
        assert!(!path_match("/app/db?", "/app/db/"));
        assert!(path_match("/app/[a-c]x", "/app/bx"));
        assert!(!path_match("/app/[^a-c]x", "/app/bx"));
        assert!(path_match("/app/[^a-c]x", "/app/dx"));
        assert!(path_match("/a\\*b", "/a*b"));
        assert!(!path_match("/a\\*b", "/axb"));
        assert!(
            !path_match("/app/[a-c", "/app/b"),
            "a malformed class matches nothing"
        );
        assert!(path_match("*", "anything"));
        assert!(path_match("/app/db/host", "/app/db/host"));
    }

    #[test]
    fn children_lists_names_and_directories_as_confd() {
        let keys: Vec<String> = [
            "/app/db/host",
            "/app/db/port",
            "/app/name",
            "/apps/x",
            "/app/web/a/b",
        ]
        .iter()
        .map(|key| key.to_string())
        .collect();
        assert_eq!(children(keys.iter(), "/app", false), ["db", "name", "web"]);
        assert_eq!(children(keys.iter(), "/app/", true), ["db", "web"]);
        assert_eq!(children(keys.iter(), "/app/db", false), ["host", "port"]);
        assert_eq!(children(keys.iter(), "/app/name", false), ["name"]);
        assert!(children(keys.iter(), "/nothing", false).is_empty());
    }

    #[test]
    fn base_and_dir_are_gos() {
        assert_eq!(path_base("/app/db/host"), "host");
        assert_eq!(path_base("/app/db/"), "db");
        assert_eq!(path_base("/"), "/");
        assert_eq!(path_base(""), ".");
        assert_eq!(path_dir("/app/db/host"), "/app/db");
        assert_eq!(path_dir("/app"), "/");
        assert_eq!(path_dir("host"), ".");
    }

    #[test]
    fn json_values_keep_their_shape() {
        let value = from_json(
            &serde_json::json!({"IP": "10.0.0.1", "ports": [80, 443], "up": true, "x": null}),
        );
        let Value::Map(fields) = value else {
            panic!("a map")
        };
        assert_eq!(fields["IP"], Value::from("10.0.0.1"));
        assert_eq!(
            fields["ports"],
            Value::Array(vec![Value::from(80i64), Value::from(443i64)])
        );
        assert_eq!(fields["up"], Value::Bool(true));
        assert_eq!(fields["x"], Value::Nil);
    }

    #[test]
    fn string_functions_follow_go() {
        assert_eq!(
            split(&[Value::from("a,b,,c"), Value::from(",")]).unwrap(),
            strings(["a", "b", "", "c"].map(String::from))
        );
        assert_eq!(
            join(&[strings(["a", "b"].map(String::from)), Value::from("-")]).unwrap(),
            Value::from("a-b")
        );
        assert_eq!(
            replace(&[
                Value::from("aaa"),
                Value::from("a"),
                Value::from("b"),
                Value::from(2i64)
            ])
            .unwrap(),
            Value::from("bba")
        );
        assert_eq!(
            replace(&[
                Value::from("aaa"),
                Value::from("a"),
                Value::from("b"),
                Value::from(-1i64)
            ])
            .unwrap(),
            Value::from("bbb")
        );
        assert_eq!(to_upper(&[Value::from("ab")]).unwrap(), Value::from("AB"));
        assert_eq!(
            trim_suffix(&[Value::from("a.conf"), Value::from(".conf")]).unwrap(),
            Value::from("a")
        );
        assert!(parse_bool(&[Value::from("maybe")]).is_err());
        assert_eq!(
            seq(&[Value::from(1i64), Value::from(3i64)])
                .unwrap()
                .to_string(),
            Value::Array(vec![1i64.into(), 2i64.into(), 3i64.into()]).to_string()
        );
        assert!(div(&[Value::from(1i64), Value::from(0i64)]).is_err());
    }

    #[test]
    fn ready_endpoints_skip_unready_ones_and_filter_by_port_name() {
        let slice = serde_json::json!({
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "metrics", "port": 9090}],
            "endpoints": [
                {"addresses": ["10.42.0.5"], "conditions": {"ready": true}, "nodeName": "n1",
                 "targetRef": {"kind": "Pod", "name": "web-1"}},
                {"addresses": ["10.42.1.7"], "conditions": {"ready": false}},
                {"addresses": ["10.42.0.3"]}
            ]
        });
        let all = ready_endpoints(&slice, None);
        assert_eq!(all.len(), 4, "two ready addresses, two ports each");
        let http: Vec<String> = ready_endpoints(&slice, Some("http"))
            .into_iter()
            .map(|((ip, port, _), _)| format!("{ip}:{port}"))
            .collect();
        assert_eq!(http, ["10.42.0.5:8080", "10.42.0.3:8080"]);
        let Value::Object(first) = &ready_endpoints(&slice, Some("http"))[0].1 else {
            panic!("an object")
        };
        assert_eq!(first["PodName"], Value::from("web-1"));
        assert_eq!(first["NodeName"], Value::from("n1"));
    }
}
