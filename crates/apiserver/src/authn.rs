//! Bearer tokens: the static token file (kube-apiserver's
//! `--token-auth-file`). Each line is CSV — `token,user,uid[,"group1,group2"]`
//! — and a request whose `Authorization: Bearer TOKEN` names one is that
//! user. Tokens are kept only as SHA-256 digests, so the lookup compares
//! digests (a hash-map probe) rather than the secrets themselves.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::server::User;

#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("cannot read the token file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("token file {path}, line {line}: {problem}")]
    Line {
        path: PathBuf,
        line: usize,
        problem: String,
    },
}

/// The users of a static token file.
#[derive(Debug, Default, Clone)]
pub struct TokenFile {
    users: HashMap<[u8; 32], User>,
}

impl TokenFile {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<TokenFile, TokenFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        TokenFile::parse(&text).map_err(|(line, problem)| TokenFileError::Line {
            path: path.to_path_buf(),
            line,
            problem,
        })
    }

    /// Parses a token file's text; an error gives the 1-based line number.
    pub fn parse(text: &str) -> Result<TokenFile, (usize, String)> {
        let mut users = HashMap::new();
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            if line.trim().is_empty() {
                continue;
            }
            let fields = csv_fields(line).map_err(|problem| (number, problem))?;
            if fields.len() < 3 {
                return Err((
                    number,
                    format!(
                        "expected at least 3 columns (token, user name, user uid), found {}",
                        fields.len()
                    ),
                ));
            }
            let token = fields[0].as_str();
            if token.is_empty() {
                return Err((number, "the token is empty".into()));
            }
            if fields[1].is_empty() {
                return Err((number, "the user name is empty".into()));
            }
            let mut groups: Vec<String> = fields
                .get(3)
                .map(|groups| {
                    groups
                        .split(',')
                        .map(str::trim)
                        .filter(|group| !group.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            groups.push("system:authenticated".into());
            let user = User {
                name: fields[1].clone(),
                groups,
            };
            if users.insert(digest(token), user).is_some() {
                return Err((number, "the token is listed twice".into()));
            }
        }
        Ok(TokenFile { users })
    }

    /// The user `token` names, if any.
    pub fn user(&self, token: &str) -> Option<&User> {
        self.users.get(&digest(token))
    }

    /// Adds `token` for `user` (shoal's dashboard token, beside the token
    /// file's users); `false`, and nothing changed, if `token` is taken.
    pub fn insert(&mut self, token: &str, user: User) -> bool {
        let digest = digest(token);
        if self.users.contains_key(&digest) {
            return false;
        }
        self.users.insert(digest, user);
        true
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The token of an `Authorization: Bearer TOKEN` header. `Some("")` for a
/// bearer header without a token (a failed authentication, not an absent
/// one).
pub fn bearer_token(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// One CSV record (RFC 4180 quoting: a quoted field may hold commas and
/// doubled quotes).
fn csv_fields(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.trim_end_matches('\r').chars().peekable();
    let mut quoted = false;
    let mut at_field_start = true;
    while let Some(char) = chars.next() {
        match (quoted, char) {
            (false, '"') if at_field_start => {
                quoted = true;
                at_field_start = false;
            }
            (true, '"') => {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    field.push('"');
                } else {
                    quoted = false;
                    if !matches!(chars.peek(), None | Some(',')) {
                        return Err("a quoted field must end at a comma".into());
                    }
                }
            }
            (false, ',') => {
                fields.push(std::mem::take(&mut field));
                at_field_start = true;
            }
            (_, char) => {
                if !quoted && char == '"' {
                    return Err("a bare quote in an unquoted field".into());
                }
                field.push(char);
                at_field_start = false;
            }
        }
    }
    if quoted {
        return Err("a quoted field is not closed".into());
    }
    fields.push(field);
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_users_and_groups() {
        let file = TokenFile::parse(
            "secret1,alice,1001,\"dev,ops\"\n\nsecret2,bob,1002\nsecret3,carol,1003,\"\"\n",
        )
        .unwrap();
        assert_eq!(file.len(), 3);
        let alice = file.user("secret1").unwrap();
        assert_eq!(alice.name, "alice");
        assert_eq!(alice.groups, ["dev", "ops", "system:authenticated"]);
        assert_eq!(
            file.user("secret2").unwrap().groups,
            ["system:authenticated"]
        );
        assert_eq!(file.user("secret3").unwrap().name, "carol");
        assert!(file.user("secret").is_none());
        assert!(file.user("").is_none());
    }

    #[test]
    fn names_the_bad_line() {
        let error = TokenFile::parse("t1,alice,1\nt2,bob\n").unwrap_err();
        assert_eq!(error.0, 2);
        assert!(error.1.contains("at least 3 columns"), "{}", error.1);
        assert_eq!(TokenFile::parse(",alice,1\n").unwrap_err().0, 1);
        assert_eq!(TokenFile::parse("t,,1\n").unwrap_err().0, 1);
        assert_eq!(TokenFile::parse("t,a,1,\"g\n").unwrap_err().0, 1);
        let twice = TokenFile::parse("t,a,1\nt,b,2\n").unwrap_err();
        assert_eq!(twice, (2, "the token is listed twice".to_string()));
    }

    #[test]
    fn bearer_header() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(bearer_token(&headers), None);
        headers.insert(http::header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer_token(&headers), Some("abc"));
        headers.insert(http::header::AUTHORIZATION, "bearer".parse().unwrap());
        assert_eq!(bearer_token(&headers), Some(""));
        headers.insert(http::header::AUTHORIZATION, "Basic eDp5".parse().unwrap());
        assert_eq!(bearer_token(&headers), None);
    }
}
