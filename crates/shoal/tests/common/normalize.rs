//! The normaliser that makes etcdctl outputs of different clusters (etcd's
//! and shoal's, or two etcd's) comparable: it replaces what legitimately
//! differs between fresh clusters with placeholders and keeps the rest.

use serde_json::Value;

/// The ids a cluster chose for itself and the ports the harness chose for
/// it: everything [`normalize`] replaces with placeholders.
#[derive(Clone, Debug)]
pub struct Identities {
    pub cluster_id: u64,
    /// Indexed by member index.
    pub member_ids: Vec<u64>,
    pub client_ports: Vec<u16>,
    pub peer_ports: Vec<u16>,
}

/// Replaces, in etcdctl output, what legitimately differs between two fresh
/// clusters (and so between etcd and shoal) with placeholders; everything
/// else, revisions included, must match. Members are numbered by their
/// index in the cluster (`<member0>` is the member named `m0`).
pub fn normalize(text: &str, identities: &Identities) -> String {
    let member_placeholder = |id: u64| -> Option<String> {
        identities
            .member_ids
            .iter()
            .position(|&member_id| member_id == id)
            .map(|member_idx| format!("<member{member_idx}>"))
    };
    // Replaces a run of ASCII letters and digits that spells a cluster or
    // member id, in decimal (JSON) or in hex (tables, simple output), where
    // the hex is etcd's `%x`: lower case, no padding.
    let replace_ids_in_text = |line: &str| -> String {
        let mut replaced = String::new();
        let mut rest = line;
        while let Some(start) = rest.find(|c: char| c.is_ascii_alphanumeric()) {
            replaced.push_str(&rest[..start]);
            let token_len = rest[start..]
                .find(|c: char| !c.is_ascii_alphanumeric())
                .unwrap_or(rest.len() - start);
            let token = &rest[start..start + token_len];
            let decimal = token.parse::<u64>().ok();
            let hex = u64::from_str_radix(token, 16)
                .ok()
                .filter(|_| !token.contains(|c: char| c.is_ascii_uppercase()));
            let placeholder = [decimal, hex].into_iter().flatten().find_map(|id| {
                if id == identities.cluster_id {
                    Some("<cluster>".to_string())
                } else {
                    member_placeholder(id)
                }
            });
            replaced.push_str(placeholder.as_deref().unwrap_or(token));
            rest = &rest[start + token_len..];
        }
        replaced.push_str(rest);
        replaced
    };

    // Rules for JSON output (`-w json`, and the client library's log lines
    // on stderr), by field name, at any depth.
    fn normalize_json(
        value: &mut Value,
        member_placeholder: &dyn Fn(u64) -> Option<String>,
        replace_ids_in_text: &dyn Fn(&str) -> String,
        cluster_id: u64,
    ) {
        match value {
            Value::Object(fields) => {
                for (name, field) in fields.iter_mut() {
                    let placeholder = match (name.as_str(), &*field) {
                        // The cluster id is derived from random member ids.
                        ("cluster_id", Value::Number(id)) if id.as_u64() == Some(cluster_id) => {
                            Some("<cluster>".to_string())
                        }
                        // Member ids are derived from the peer URLs, whose
                        // ports are random; the leader is a member id too.
                        ("member_id" | "ID" | "leader", Value::Number(id)) => id
                            .as_u64()
                            .and_then(member_placeholder)
                            .or_else(|| Some("<unknown member>".to_string())),
                        // Terms depend on election timing (and shoal uses
                        // pre-vote, which etcd 3.4 does not by default).
                        ("raft_term" | "raftTerm", _) => Some("<term>".to_string()),
                        // The raft log holds configuration and internal
                        // entries whose number is the implementation's own.
                        ("raftIndex" | "raftAppliedIndex", _) => Some("<index>".to_string()),
                        // Backend file sizes are the storage engine's own.
                        ("dbSize" | "dbSizeInUse", _) => Some("<size>".to_string()),
                        // The server version in `endpoint status` (a string;
                        // a key's `version` is a number and is kept).
                        ("version", Value::String(_)) => Some("<version>".to_string()),
                        // Health-check latency.
                        ("took", _) => Some("<took>".to_string()),
                        // The time stamp of a client library log line.
                        ("ts", Value::String(_)) => Some("<ts>".to_string()),
                        // The client library names its connection with a
                        // random UUID: "endpoint://client-<uuid>/<address>".
                        ("target", Value::String(target))
                            if target.starts_with("endpoint://client-") =>
                        {
                            let address = target.splitn(4, '/').nth(3).unwrap_or("");
                            Some(format!("endpoint://client-<uuid>/{address}"))
                        }
                        _ => None,
                    };
                    match placeholder {
                        Some(placeholder) => *field = Value::String(placeholder),
                        None => normalize_json(
                            field,
                            member_placeholder,
                            replace_ids_in_text,
                            cluster_id,
                        ),
                    }
                }
                // `member list` lists members in order of their random ids.
                if let Some(Value::Array(members)) = fields.get_mut("members") {
                    members.sort_by(|a, b| a["name"].to_string().cmp(&b["name"].to_string()));
                }
            }
            Value::Array(values) => {
                for value in values {
                    normalize_json(value, member_placeholder, replace_ids_in_text, cluster_id);
                }
            }
            // Ids inside error texts and other strings, in hex.
            Value::String(text) => *text = replace_ids_in_text(text),
            Value::Number(_) | Value::Bool(_) | Value::Null => {}
        }
    }

    let mut lines: Vec<String> = Vec::new();
    // The column names of the table being read, if inside one.
    let mut table_columns: Option<Vec<String>> = None;
    for line in text.lines() {
        // Ports are picked at random: each member's client and peer
        // address becomes <client{i}> or <peer{i}>.
        let mut line_with_addresses = String::new();
        let mut rest = line;
        while let Some(start) = rest.find("127.0.0.1:") {
            let after_host = &rest[start + "127.0.0.1:".len()..];
            let port_len = after_host
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(after_host.len());
            let port = after_host[..port_len].parse::<u16>().ok();
            let client_idx =
                port.and_then(|port| identities.client_ports.iter().position(|&p| p == port));
            let peer_idx =
                port.and_then(|port| identities.peer_ports.iter().position(|&p| p == port));
            line_with_addresses.push_str(&rest[..start]);
            match (client_idx, peer_idx) {
                (Some(member_idx), _) => {
                    line_with_addresses.push_str(&format!("<client{member_idx}>"))
                }
                (None, Some(member_idx)) => {
                    line_with_addresses.push_str(&format!("<peer{member_idx}>"))
                }
                (None, None) => line_with_addresses
                    .push_str(&rest[start..start + "127.0.0.1:".len() + port_len]),
            }
            rest = &after_host[port_len..];
        }
        line_with_addresses.push_str(rest);
        let line = line_with_addresses;

        let trimmed = line.trim_start();
        if (trimmed.starts_with('{') || trimmed.starts_with('['))
            && let Ok(mut json) = serde_json::from_str::<Value>(trimmed)
        {
            normalize_json(
                &mut json,
                &member_placeholder,
                &replace_ids_in_text,
                identities.cluster_id,
            );
            lines.push(json.to_string());
            table_columns = None;
            continue;
        }

        // Table borders: their widths follow the widths of the cells, which
        // hold ports and timings. Rows are re-rendered without padding.
        if trimmed.starts_with('+') && trimmed.chars().all(|c| c == '+' || c == '-') {
            continue;
        }
        if trimmed.starts_with('|') {
            let cells: Vec<String> = trimmed
                .trim_matches('|')
                .split('|')
                .map(|cell| replace_ids_in_text(cell.trim()))
                .collect();
            let Some(columns) = &table_columns else {
                table_columns = Some(cells.clone());
                lines.push(format!("| {} |", cells.join(" | ")));
                continue;
            };
            let cells: Vec<String> = cells
                .into_iter()
                .zip(
                    columns
                        .iter()
                        .map(String::as_str)
                        .chain(std::iter::repeat("")),
                )
                .map(|(cell, column)| match column {
                    // Same reasons as the JSON fields of the same names.
                    "VERSION" => "<version>".to_string(),
                    "DB SIZE" => "<size>".to_string(),
                    "RAFT TERM" => "<term>".to_string(),
                    "RAFT INDEX" | "RAFT APPLIED INDEX" => "<index>".to_string(),
                    "TOOK" => "<took>".to_string(),
                    _ => cell,
                })
                .collect();
            lines.push(format!("| {} |", cells.join(" | ")));
            continue;
        }
        table_columns = None;

        let line = replace_ids_in_text(&line);
        // Simple `endpoint status`: "endpoint, id, version, db size, is
        // leader, is learner, raft term, raft index, raft applied index,
        // errors"; same reasons as the JSON fields.
        let fields: Vec<&str> = line.split(", ").collect();
        if fields.len() == 10 && fields[0].starts_with("http") {
            let mut fields: Vec<String> = fields.into_iter().map(str::to_string).collect();
            fields[2] = "<version>".to_string();
            fields[3] = "<size>".to_string();
            fields[6] = "<term>".to_string();
            fields[7] = "<index>".to_string();
            fields[8] = "<index>".to_string();
            lines.push(fields.join(", "));
            continue;
        }
        // Simple `endpoint health`: "... took = 1.2ms".
        if let Some((before, _took)) = line.split_once(" took = ") {
            lines.push(format!("{before} took = <took>"));
            continue;
        }
        lines.push(line);
    }

    // `member list` (simple and table) prints members in order of their
    // random ids: sort each run of consecutive rows that start with a member.
    let starts_with_member = |line: &str| line.trim_start_matches("| ").starts_with("<member");
    let mut row_idx = 0;
    while row_idx < lines.len() {
        let run_len = lines[row_idx..]
            .iter()
            .take_while(|line| starts_with_member(line))
            .count();
        lines[row_idx..row_idx + run_len].sort();
        row_idx += run_len.max(1);
    }

    let mut normalized = lines.join("\n");
    if text.ends_with('\n') {
        normalized.push('\n');
    }
    normalized
}
