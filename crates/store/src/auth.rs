//! etcd's auth store: users with bcrypt password hashes, roles with key-range
//! permissions, the enabled flag and the auth revision, and the simple tokens
//! Authenticate hands out. Changes arrive as applied raft entries (so every
//! member holds the same users, roles and tokens); permission checks read the
//! in-memory state, with each user's permissions merged into sorted,
//! disjoint key intervals when the state changes.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use prost::Message as _;
use proto::authpb::{Permission, Role, User, UserAddOptions, permission};
use proto::shoalpb::{AuthState, RaftRequest, RequestHeader};
use redb::{TableDefinition, WriteTransaction};

/// etcd's name for the administrator, and for the role that makes one.
pub const ROOT_USER: &str = "root";
pub const ROOT_ROLE: &str = "root";

/// etcd's default bcrypt cost (`--bcrypt-cost`).
pub const DEFAULT_BCRYPT_COST: u32 = 10;
/// etcd's default lifetime of an unused simple token (`--auth-token-ttl`).
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(300);

/// "state" -> the encoded `AuthState`. Auth changes are rare and the state
/// small, so each change rewrites it whole.
const AUTH_STATE: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("auth_state");

/// The auth errors, with etcd's texts (the gRPC code is the API's business).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum AuthError {
    #[error("etcdserver: root user does not exist")]
    RootUserNotExist,
    #[error("etcdserver: root user does not have root role")]
    RootRoleNotExist,
    #[error("etcdserver: user name already exists")]
    UserAlreadyExist,
    #[error("etcdserver: user name is empty")]
    UserEmpty,
    #[error("etcdserver: user name not found")]
    UserNotFound,
    #[error("etcdserver: role name already exists")]
    RoleAlreadyExist,
    #[error("etcdserver: role name not found")]
    RoleNotFound,
    #[error("etcdserver: role name is empty")]
    RoleEmpty,
    #[error("etcdserver: authentication failed, invalid user ID or password")]
    AuthFailed,
    #[error("etcdserver: permission denied")]
    PermissionDenied,
    #[error("etcdserver: role is not granted to the user")]
    RoleNotGranted,
    #[error("etcdserver: permission is not granted to the role")]
    PermissionNotGranted,
    #[error("etcdserver: authentication is not enabled")]
    AuthNotEnabled,
    #[error("etcdserver: invalid auth token")]
    InvalidAuthToken,
    #[error("etcdserver: invalid auth management")]
    InvalidAuthMgmt,
    #[error("etcdserver: revision of auth store is old")]
    AuthOldRevision,
}

/// Who a request comes from: the user and the auth revision the caller's
/// credentials were checked at (etcd's `AuthInfo`). Revision 0 means no user.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthInfo {
    pub username: String,
    pub revision: u64,
}

impl AuthInfo {
    /// The header a proposal carries so the apply re-checks as this caller.
    pub fn header(&self) -> RequestHeader {
        RequestHeader {
            username: self.username.clone(),
            auth_revision: self.revision,
        }
    }
}

/// What an operation needs on its keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// A key interval `[start, end)`; `end == None` is "every key from start on".
type Interval = (Vec<u8>, Option<Vec<u8>>);

/// One user's permissions, merged across its roles.
#[derive(Debug, Default)]
struct UserPermissions {
    root: bool,
    read: Vec<Interval>,
    write: Vec<Interval>,
}

#[derive(Debug, Default)]
struct State {
    enabled: bool,
    revision: u64,
    users: BTreeMap<String, User>,
    roles: BTreeMap<String, Role>,
    permissions: HashMap<String, UserPermissions>,
}

/// Knobs from the member's flags.
#[derive(Clone, Copy, Debug)]
pub struct AuthSettings {
    pub bcrypt_cost: u32,
    pub token_ttl: Duration,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            bcrypt_cost: DEFAULT_BCRYPT_COST,
            token_ttl: DEFAULT_TOKEN_TTL,
        }
    }
}

struct SimpleToken {
    username: String,
    expires: Instant,
}

pub struct AuthStore {
    state: RwLock<State>,
    /// Simple tokens: every member applies Authenticate, so a token works on
    /// any of them; each is forgotten after `token_ttl` without use.
    tokens: Mutex<HashMap<String, SimpleToken>>,
    settings: RwLock<AuthSettings>,
    /// Password checks run one at a time on a member: with bcrypt's cost this
    /// bounds how fast anyone can try passwords against it.
    password_checks: tokio::sync::Semaphore,
}

impl std::fmt::Debug for AuthStore {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state.read();
        formatter
            .debug_struct("AuthStore")
            .field("enabled", &state.enabled)
            .field("revision", &state.revision)
            .finish_non_exhaustive()
    }
}

/// What applying an auth request produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthApplied {
    Done,
    Token(String),
}

impl Default for AuthStore {
    fn default() -> Self {
        AuthStore {
            state: RwLock::new(State {
                // etcd's auth store starts at revision 1 (its bucket's first value).
                revision: 1,
                ..State::default()
            }),
            tokens: Mutex::new(HashMap::new()),
            settings: RwLock::new(AuthSettings::default()),
            password_checks: tokio::sync::Semaphore::new(1),
        }
    }
}

/// Whether a raft request is one of the auth store's.
pub fn is_auth_request(request: &RaftRequest) -> bool {
    request.auth_enable.is_some()
        || request.auth_disable.is_some()
        || request.authenticate.is_some()
        || request.auth_user_add.is_some()
        || request.auth_user_delete.is_some()
        || request.auth_user_change_password.is_some()
        || request.auth_user_grant_role.is_some()
        || request.auth_user_revoke_role.is_some()
        || request.auth_role_add.is_some()
        || request.auth_role_delete.is_some()
        || request.auth_role_grant_permission.is_some()
        || request.auth_role_revoke_permission.is_some()
}

fn storage(error: impl std::fmt::Display) -> String {
    error.to_string()
}

impl AuthStore {
    pub fn configure(&self, settings: AuthSettings) {
        *self.settings.write() = settings;
    }

    pub fn settings(&self) -> AuthSettings {
        *self.settings.read()
    }

    /// Loads the state a previous run stored (nothing on a new member).
    pub fn load(&self, db: &mvcc::Db) -> Result<(), String> {
        let rtx = db.begin_read().map_err(storage)?;
        let stored = match rtx.open_table(AUTH_STATE) {
            Ok(table) => table
                .get("state")
                .map_err(storage)?
                .map(|value| AuthState::decode(value.value()).map_err(storage))
                .transpose()?,
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(error) => return Err(error.to_string()),
        };
        if let Some(stored) = stored {
            self.replace(&stored);
        }
        Ok(())
    }

    /// The whole state, for snapshots.
    pub fn export(&self) -> AuthState {
        let state = self.state.read();
        AuthState {
            enabled: state.enabled,
            revision: state.revision,
            users: state.users.values().cloned().collect(),
            roles: state.roles.values().cloned().collect(),
        }
    }

    /// Replaces the whole state with a snapshot's, on disk and in memory.
    pub fn restore(&self, wtx: &WriteTransaction, stored: &AuthState) -> Result<(), String> {
        self.replace(stored);
        self.tokens.lock().clear();
        self.persist(wtx)
    }

    fn replace(&self, stored: &AuthState) {
        let mut state = self.state.write();
        state.enabled = stored.enabled;
        state.revision = stored.revision.max(1);
        state.users = stored
            .users
            .iter()
            .map(|user| {
                (
                    String::from_utf8_lossy(&user.name).into_owned(),
                    user.clone(),
                )
            })
            .collect();
        state.roles = stored
            .roles
            .iter()
            .map(|role| {
                (
                    String::from_utf8_lossy(&role.name).into_owned(),
                    role.clone(),
                )
            })
            .collect();
        refresh_permissions(&mut state);
    }

    fn persist(&self, wtx: &WriteTransaction) -> Result<(), String> {
        let encoded = self.export().encode_to_vec();
        wtx.open_table(AUTH_STATE)
            .map_err(storage)?
            .insert("state", encoded.as_slice())
            .map_err(storage)?;
        Ok(())
    }

    pub fn is_enabled(&self) -> bool {
        self.state.read().enabled
    }

    pub fn revision(&self) -> u64 {
        self.state.read().revision
    }

    /// The user a simple token stands for, at the current auth revision. A
    /// token is good for `token_ttl` after its last use.
    pub fn info_from_token(&self, token: &str) -> Option<AuthInfo> {
        let ttl = self.settings.read().token_ttl;
        let now = Instant::now();
        let mut tokens = self.tokens.lock();
        let entry = tokens.get_mut(token)?;
        if entry.expires <= now {
            tokens.remove(token);
            return None;
        }
        entry.expires = now + ttl;
        Some(AuthInfo {
            username: entry.username.clone(),
            revision: self.revision(),
        })
    }

    /// The raft index a simple token was issued at (its suffix), to wait for
    /// on a member that has not applied it yet.
    pub fn token_index(token: &str) -> Option<u64> {
        token.rsplit_once('.')?.1.parse().ok()
    }

    /// The user of a verified client certificate (etcd's AuthInfoFromTLS).
    pub fn info_from_common_name(&self, common_name: &str) -> AuthInfo {
        AuthInfo {
            username: common_name.to_owned(),
            revision: self.revision(),
        }
    }

    /// etcd's CheckPassword: the auth revision the password was good at.
    /// bcrypt is slow on purpose; call from a blocking-capable context.
    pub async fn check_password(&self, name: &str, password: &str) -> Result<u64, AuthError> {
        let (hash, revision) = {
            let state = self.state.read();
            if !state.enabled {
                return Err(AuthError::AuthNotEnabled);
            }
            let user = state.users.get(name).ok_or(AuthError::AuthFailed)?;
            if user
                .options
                .as_ref()
                .is_some_and(|options| options.no_password)
            {
                return Err(AuthError::AuthFailed);
            }
            (user.password.clone(), state.revision)
        };
        let _turn = self
            .password_checks
            .acquire()
            .await
            .map_err(|_| AuthError::AuthFailed)?;
        let password = password.to_owned();
        let matches = tokio::task::spawn_blocking(move || {
            let hash = String::from_utf8_lossy(&hash).into_owned();
            bcrypt::verify(password, &hash).unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        if matches {
            Ok(revision)
        } else {
            Err(AuthError::AuthFailed)
        }
    }

    /// A bcrypt hash of `password` at the configured cost ("$2a$", as Go's
    /// bcrypt writes it), made before proposing so raft never carries the password.
    pub async fn hash_password(&self, password: &str) -> Result<String, String> {
        let cost = self.settings.read().bcrypt_cost;
        let password = password.to_owned();
        tokio::task::spawn_blocking(move || {
            let salt: [u8; 16] = rand::random();
            bcrypt::hash_with_salt(password, cost, salt)
                .map(|parts| parts.format_for_version(bcrypt::Version::TwoA))
                .map_err(|error| error.to_string())
        })
        .await
        .map_err(|error| error.to_string())?
    }

    /// etcd's IsAdminPermitted.
    pub fn check_admin(&self, info: &AuthInfo) -> Result<(), AuthError> {
        let state = self.state.read();
        if !state.enabled {
            return Ok(());
        }
        if info.username.is_empty() {
            return Err(AuthError::UserEmpty);
        }
        let user = state
            .users
            .get(&info.username)
            .ok_or(AuthError::UserNotFound)?;
        if !has_root_role(user) {
            return Err(AuthError::PermissionDenied);
        }
        Ok(())
    }

    /// Whether the user has the role (etcd's HasRole, for RoleGet by non-admins).
    pub fn has_role(&self, username: &str, role: &str) -> bool {
        self.state
            .read()
            .users
            .get(username)
            .is_some_and(|user| user.roles.iter().any(|held| held == role))
    }

    /// etcd's isOpPermitted: may `info` read or write `[key, range_end)`?
    pub fn check(
        &self,
        info: &AuthInfo,
        key: &[u8],
        range_end: &[u8],
        access: Access,
    ) -> Result<(), AuthError> {
        let state = self.state.read();
        if !state.enabled {
            return Ok(());
        }
        if info.revision == 0 {
            return Err(AuthError::UserEmpty);
        }
        if info.revision < state.revision {
            return Err(AuthError::AuthOldRevision);
        }
        let Some(permissions) = state.permissions.get(&info.username) else {
            return Err(AuthError::PermissionDenied);
        };
        if permissions.root {
            return Ok(());
        }
        let intervals = match access {
            Access::Read => &permissions.read,
            Access::Write => &permissions.write,
        };
        if covers(intervals, key, range_end) {
            Ok(())
        } else {
            Err(AuthError::PermissionDenied)
        }
    }

    /// Users and roles, for the read-only calls (served from applied state).
    pub fn user_get(&self, name: &str) -> Result<Vec<String>, AuthError> {
        let state = self.state.read();
        let user = state.users.get(name).ok_or(AuthError::UserNotFound)?;
        Ok(user.roles.clone())
    }

    pub fn user_list(&self) -> Vec<String> {
        self.state.read().users.keys().cloned().collect()
    }

    pub fn role_get(&self, name: &str) -> Result<Vec<Permission>, AuthError> {
        let state = self.state.read();
        let role = state.roles.get(name).ok_or(AuthError::RoleNotFound)?;
        Ok(role.key_permission.clone())
    }

    pub fn role_list(&self) -> Vec<String> {
        self.state.read().roles.keys().cloned().collect()
    }

    /// Whether the request needs the admin (root) role (etcd's needAdminPermission).
    fn needs_admin(request: &RaftRequest) -> bool {
        is_auth_request(request) && request.authenticate.is_none()
    }

    /// Applies one auth request from the log. `index` is the entry's raft
    /// index (a simple token's suffix). Storage failures are `Err(String)`;
    /// refusals are `Ok(Err(_))` for the client.
    pub fn apply(
        &self,
        wtx: &WriteTransaction,
        request: &RaftRequest,
        index: u64,
    ) -> Result<Result<AuthApplied, AuthError>, String> {
        if Self::needs_admin(request)
            && let Some(header) = &request.header
        {
            let info = AuthInfo {
                username: header.username.clone(),
                revision: header.auth_revision,
            };
            if let Err(error) = self.check_admin(&info) {
                return Ok(Err(error));
            }
        }
        let outcome = self.apply_change(request, index);
        if let Ok(AuthApplied::Done) = &outcome {
            self.persist(wtx)?;
        }
        Ok(outcome)
    }

    fn apply_change(&self, request: &RaftRequest, index: u64) -> Result<AuthApplied, AuthError> {
        let mut state = self.state.write();
        let state = &mut *state;
        if request.auth_enable.is_some() {
            if state.enabled {
                return Ok(AuthApplied::Done);
            }
            let root = state
                .users
                .get(ROOT_USER)
                .ok_or(AuthError::RootUserNotExist)?;
            if !has_root_role(root) {
                return Err(AuthError::RootRoleNotExist);
            }
            // etcd turns auth on without a new revision.
            state.enabled = true;
            return Ok(AuthApplied::Done);
        }
        if request.auth_disable.is_some() {
            if state.enabled {
                state.enabled = false;
                state.revision += 1;
                self.tokens.lock().clear();
            }
            return Ok(AuthApplied::Done);
        }
        if let Some(authenticate) = &request.authenticate {
            if !state.enabled {
                return Err(AuthError::AuthNotEnabled);
            }
            let user = state
                .users
                .get(&authenticate.name)
                .ok_or(AuthError::AuthFailed)?;
            if user
                .options
                .as_ref()
                .is_some_and(|options| options.no_password)
            {
                return Err(AuthError::AuthFailed);
            }
            let token = format!("{}.{index}", authenticate.simple_token);
            let ttl = self.settings.read().token_ttl;
            let now = Instant::now();
            let mut tokens = self.tokens.lock();
            tokens.retain(|_, held| held.expires > now);
            tokens.insert(
                token.clone(),
                SimpleToken {
                    username: authenticate.name.clone(),
                    expires: now + ttl,
                },
            );
            return Ok(AuthApplied::Token(token));
        }
        if let Some(add) = &request.auth_user_add {
            if add.name.is_empty() {
                return Err(AuthError::UserEmpty);
            }
            if state.users.contains_key(&add.name) {
                return Err(AuthError::UserAlreadyExist);
            }
            let no_password = add
                .options
                .as_ref()
                .is_some_and(|options| options.no_password);
            let password = if no_password {
                bytes::Bytes::new()
            } else {
                bytes::Bytes::from(add.hashed_password.clone())
            };
            state.users.insert(
                add.name.clone(),
                User {
                    name: bytes::Bytes::from(add.name.clone()),
                    password,
                    roles: Vec::new(),
                    options: Some(add.options.unwrap_or(UserAddOptions { no_password: false })),
                },
            );
        } else if let Some(delete) = &request.auth_user_delete {
            if state.enabled && delete.name == ROOT_USER {
                return Err(AuthError::InvalidAuthMgmt);
            }
            if state.users.remove(&delete.name).is_none() {
                return Err(AuthError::UserNotFound);
            }
            self.forget_tokens_of(&delete.name);
        } else if let Some(change) = &request.auth_user_change_password {
            let user = state
                .users
                .get_mut(&change.name)
                .ok_or(AuthError::UserNotFound)?;
            user.password = bytes::Bytes::from(change.hashed_password.clone());
            self.forget_tokens_of(&change.name);
        } else if let Some(grant) = &request.auth_user_grant_role {
            if !state.users.contains_key(&grant.user) {
                return Err(AuthError::UserNotFound);
            }
            if grant.role != ROOT_ROLE && !state.roles.contains_key(&grant.role) {
                return Err(AuthError::RoleNotFound);
            }
            let user = state.users.get_mut(&grant.user).expect("checked above");
            if user.roles.contains(&grant.role) {
                // etcd ignores a grant of a role the user has, without a new revision.
                return Ok(AuthApplied::Done);
            }
            user.roles.push(grant.role.clone());
            user.roles.sort();
        } else if let Some(revoke) = &request.auth_user_revoke_role {
            if state.enabled && revoke.name == ROOT_USER && revoke.role == ROOT_ROLE {
                return Err(AuthError::InvalidAuthMgmt);
            }
            let user = state
                .users
                .get_mut(&revoke.name)
                .ok_or(AuthError::UserNotFound)?;
            let before = user.roles.len();
            user.roles.retain(|role| role != &revoke.role);
            if user.roles.len() == before {
                return Err(AuthError::RoleNotGranted);
            }
        } else if let Some(add) = &request.auth_role_add {
            if add.name.is_empty() {
                return Err(AuthError::RoleEmpty);
            }
            if state.roles.contains_key(&add.name) {
                return Err(AuthError::RoleAlreadyExist);
            }
            state.roles.insert(
                add.name.clone(),
                Role {
                    name: bytes::Bytes::from(add.name.clone()),
                    key_permission: Vec::new(),
                },
            );
        } else if let Some(delete) = &request.auth_role_delete {
            if state.enabled && delete.role == ROOT_ROLE {
                return Err(AuthError::InvalidAuthMgmt);
            }
            if state.roles.remove(&delete.role).is_none() {
                return Err(AuthError::RoleNotFound);
            }
            for user in state.users.values_mut() {
                user.roles.retain(|role| role != &delete.role);
            }
        } else if let Some(grant) = &request.auth_role_grant_permission {
            let role = state
                .roles
                .get_mut(&grant.name)
                .ok_or(AuthError::RoleNotFound)?;
            let granted = grant.perm.clone().unwrap_or_default();
            match role
                .key_permission
                .iter_mut()
                .find(|held| held.key == granted.key && held.range_end == granted.range_end)
            {
                Some(held) => held.perm_type = granted.perm_type,
                None => {
                    role.key_permission.push(granted);
                    // Sorted by key, as etcd keeps them (a stable sort: equal
                    // keys stay in the order they were granted).
                    role.key_permission.sort_by(|a, b| a.key.cmp(&b.key));
                }
            }
        } else if let Some(revoke) = &request.auth_role_revoke_permission {
            let role = state
                .roles
                .get_mut(&revoke.role)
                .ok_or(AuthError::RoleNotFound)?;
            let before = role.key_permission.len();
            role.key_permission
                .retain(|held| held.key != revoke.key || held.range_end != revoke.range_end);
            if role.key_permission.len() == before {
                return Err(AuthError::PermissionNotGranted);
            }
        } else {
            return Ok(AuthApplied::Done);
        }
        state.revision += 1;
        refresh_permissions(state);
        Ok(AuthApplied::Done)
    }

    fn forget_tokens_of(&self, username: &str) {
        self.tokens
            .lock()
            .retain(|_, held| held.username != username);
    }
}

fn has_root_role(user: &User) -> bool {
    user.roles.iter().any(|role| role == ROOT_ROLE)
}

/// Rebuilds every user's merged permissions (etcd's refreshRangePermCache).
fn refresh_permissions(state: &mut State) {
    let mut all = HashMap::new();
    for (name, user) in &state.users {
        let mut permissions = UserPermissions {
            root: has_root_role(user),
            ..UserPermissions::default()
        };
        for role_name in &user.roles {
            let Some(role) = state.roles.get(role_name) else {
                continue;
            };
            for permission in &role.key_permission {
                let Some(interval) = interval_of(&permission.key, &permission.range_end) else {
                    continue;
                };
                let kind = permission::Type::try_from(permission.perm_type)
                    .unwrap_or(permission::Type::Read);
                if matches!(kind, permission::Type::Read | permission::Type::Readwrite) {
                    permissions.read.push(interval.clone());
                }
                if matches!(kind, permission::Type::Write | permission::Type::Readwrite) {
                    permissions.write.push(interval);
                }
            }
        }
        permissions.read = merge(std::mem::take(&mut permissions.read));
        permissions.write = merge(std::mem::take(&mut permissions.write));
        all.insert(name.clone(), permissions);
    }
    state.permissions = all;
}

/// A permission's keys as an interval: a key alone is `[key, key\0)`, a
/// range end of "\0" reaches every key from `key` on.
fn interval_of(key: &[u8], range_end: &[u8]) -> Option<Interval> {
    if range_end.is_empty() {
        let mut next = key.to_vec();
        next.push(0);
        return Some((key.to_vec(), Some(next)));
    }
    if range_end == [0] {
        return Some((key.to_vec(), None));
    }
    if range_end <= key {
        return None;
    }
    Some((key.to_vec(), Some(range_end.to_vec())))
}

/// Sorts intervals and joins those that overlap or touch.
fn merge(mut intervals: Vec<Interval>) -> Vec<Interval> {
    intervals.sort();
    let mut merged: Vec<Interval> = Vec::with_capacity(intervals.len());
    for (start, end) in intervals {
        if let Some((_, last_end)) = merged.last_mut() {
            let joins = match last_end {
                None => true,
                Some(last) => start <= *last,
            };
            if joins {
                *last_end = match (last_end.take(), end) {
                    (None, _) | (_, None) => None,
                    (Some(a), Some(b)) => Some(a.max(b)),
                };
                continue;
            }
        }
        merged.push((start, end));
    }
    merged
}

/// Whether merged intervals hold every key of a request's range (a point
/// when `range_end` is empty, from `key` on when it is "\0").
fn covers(intervals: &[Interval], key: &[u8], range_end: &[u8]) -> bool {
    let wanted_end: Option<&[u8]> = if range_end.is_empty() {
        // A single key: it must lie in some interval.
        return intervals.iter().any(|(start, end)| {
            start.as_slice() <= key && end.as_ref().is_none_or(|end| key < end.as_slice())
        });
    } else if range_end == [0] {
        None
    } else {
        Some(range_end)
    };
    // The intervals are disjoint and not touching, so one must hold it all.
    intervals.iter().any(|(start, end)| {
        start.as_slice() <= key
            && match (end, wanted_end) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(end), Some(wanted)) => wanted <= end.as_slice(),
            }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn permitted(perms: &[(&[u8], &[u8])], key: &[u8], range_end: &[u8]) -> bool {
        let intervals = merge(
            perms
                .iter()
                .filter_map(|(key, end)| interval_of(key, end))
                .collect(),
        );
        covers(&intervals, key, range_end)
    }

    #[test]
    fn a_single_key_permission_covers_that_key_only() {
        assert!(permitted(&[(b"a", b"")], b"a", b""));
        assert!(!permitted(&[(b"a", b"")], b"b", b""));
        assert!(!permitted(&[(b"a", b"")], b"a", b"b"));
        assert!(permitted(&[(b"a", b"")], b"a", b"a\0"));
    }

    #[test]
    fn prefix_and_from_key_permissions_cover_their_ranges() {
        assert!(permitted(&[(b"foo/", b"foo0")], b"foo/bar", b""));
        assert!(permitted(&[(b"foo/", b"foo0")], b"foo/", b"foo0"));
        assert!(!permitted(&[(b"foo/", b"foo0")], b"foo/", b"\0"));
        assert!(!permitted(&[(b"foo/", b"foo0")], b"fop", b""));
        assert!(permitted(&[(b"m", b"\0")], b"zzz", b""));
        assert!(permitted(&[(b"m", b"\0")], b"m", b"\0"));
        assert!(!permitted(&[(b"m", b"\0")], b"a", b"\0"));
    }

    fn change(auth: &AuthStore, request: RaftRequest) -> Result<AuthApplied, AuthError> {
        auth.apply_change(&request, 7)
    }

    fn user_add(name: &str) -> RaftRequest {
        RaftRequest {
            auth_user_add: Some(proto::etcdserverpb::AuthUserAddRequest {
                name: name.into(),
                hashed_password: "$2a$04$not-a-real-hash".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn grant_role(user: &str, role: &str) -> RaftRequest {
        RaftRequest {
            auth_user_grant_role: Some(proto::etcdserverpb::AuthUserGrantRoleRequest {
                user: user.into(),
                role: role.into(),
            }),
            ..Default::default()
        }
    }

    fn enable() -> RaftRequest {
        RaftRequest {
            auth_enable: Some(proto::etcdserverpb::AuthEnableRequest {}),
            ..Default::default()
        }
    }

    #[test]
    fn auth_turns_on_only_with_a_root_user_holding_the_root_role() {
        let auth = AuthStore::default();
        assert_eq!(change(&auth, enable()), Err(AuthError::RootUserNotExist));
        change(&auth, user_add("root")).unwrap();
        assert_eq!(change(&auth, enable()), Err(AuthError::RootRoleNotExist));
        change(&auth, grant_role("root", "root")).unwrap();
        let revision = auth.revision();
        assert_eq!(change(&auth, enable()), Ok(AuthApplied::Done));
        assert!(auth.is_enabled());
        // etcd turns auth on without a new auth revision.
        assert_eq!(auth.revision(), revision);
        let delete_root = RaftRequest {
            auth_user_delete: Some(proto::etcdserverpb::AuthUserDeleteRequest {
                name: "root".into(),
            }),
            ..Default::default()
        };
        assert_eq!(change(&auth, delete_root), Err(AuthError::InvalidAuthMgmt));
    }

    #[test]
    fn a_caller_checked_at_an_older_revision_is_refused_as_old() {
        let auth = AuthStore::default();
        change(&auth, user_add("root")).unwrap();
        change(&auth, grant_role("root", "root")).unwrap();
        change(&auth, enable()).unwrap();
        let root = AuthInfo {
            username: "root".into(),
            revision: auth.revision(),
        };
        assert_eq!(auth.check(&root, b"any", b"", Access::Write), Ok(()));
        change(&auth, user_add("alice")).unwrap();
        assert_eq!(
            auth.check(&root, b"any", b"", Access::Write),
            Err(AuthError::AuthOldRevision)
        );
        let alice = AuthInfo {
            username: "alice".into(),
            revision: auth.revision(),
        };
        assert_eq!(
            auth.check(&alice, b"any", b"", Access::Read),
            Err(AuthError::PermissionDenied)
        );
        assert_eq!(
            auth.check(&AuthInfo::default(), b"any", b"", Access::Read),
            Err(AuthError::UserEmpty)
        );
        // A second grant of a role the user holds changes nothing.
        let revision = auth.revision();
        change(&auth, grant_role("root", "root")).unwrap();
        assert_eq!(auth.revision(), revision);
    }

    #[test]
    fn touching_permissions_join_into_one_range() {
        let perms: &[(&[u8], &[u8])] = &[(b"a", b"c"), (b"c", b"e"), (b"x", b"")];
        assert!(permitted(perms, b"a", b"e"));
        assert!(!permitted(perms, b"a", b"f"));
        assert!(permitted(perms, b"x", b""));
        assert!(!permitted(perms, b"e", b"x\0"));
    }
}
