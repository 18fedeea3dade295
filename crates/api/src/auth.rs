//! Who is calling, and etcd's Auth service. A request names its user by a
//! token in its `token` metadata (`authorization` for the JSON gateway and
//! newer clients) or, with client-certificate authentication, by its
//! certificate's common name (`ConnInfo`); the checks themselves are the
//! store's (`store::auth`), made here before a request is served and again
//! when a write applies.

use std::sync::Arc;

use proto::etcdserverpb::auth_server::Auth;
use proto::etcdserverpb::{
    AuthDisableRequest, AuthDisableResponse, AuthEnableRequest, AuthEnableResponse,
    AuthRoleAddRequest, AuthRoleAddResponse, AuthRoleDeleteRequest, AuthRoleDeleteResponse,
    AuthRoleGetRequest, AuthRoleGetResponse, AuthRoleGrantPermissionRequest,
    AuthRoleGrantPermissionResponse, AuthRoleListRequest, AuthRoleListResponse,
    AuthRoleRevokePermissionRequest, AuthRoleRevokePermissionResponse, AuthStatusRequest,
    AuthStatusResponse, AuthUserAddRequest, AuthUserAddResponse, AuthUserChangePasswordRequest,
    AuthUserChangePasswordResponse, AuthUserDeleteRequest, AuthUserDeleteResponse,
    AuthUserGetRequest, AuthUserGetResponse, AuthUserGrantRoleRequest, AuthUserGrantRoleResponse,
    AuthUserListRequest, AuthUserListResponse, AuthUserRevokeRoleRequest,
    AuthUserRevokeRoleResponse, AuthenticateRequest, AuthenticateResponse, ResponseHeader,
};
use proto::shoalpb::RaftRequest;
use store::auth::{Access, AuthError, AuthInfo};
use store::{Member, StoreError};
use tonic::{Request, Response, Status};

use crate::conn::ConnInfo;
use crate::errors;

/// etcd's metadata keys for the token (rpctypes.TokenFieldNameGRPC and
/// TokenFieldNameSwagger).
const TOKEN_HEADER: &str = "token";
const AUTHORIZATION_HEADER: &str = "authorization";

/// What a request presents to say who it is: a token, or the common name of
/// its connection's verified certificate.
#[derive(Clone, Debug, Default)]
pub(crate) struct Credentials {
    token: Option<String>,
    common_name: Option<Arc<str>>,
}

impl Credentials {
    pub(crate) fn from_parts(headers: &http::HeaderMap, conn: Option<&Arc<ConnInfo>>) -> Self {
        let token = headers
            .get(TOKEN_HEADER)
            .or_else(|| headers.get(AUTHORIZATION_HEADER))
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        Credentials {
            token,
            common_name: conn.and_then(|conn| conn.cert_common_name.clone()),
        }
    }

    /// Whether the request presented nothing (the common case with auth off).
    pub(crate) fn is_empty(&self) -> bool {
        self.token.is_none() && self.common_name.is_none()
    }

    pub(crate) fn of<T>(request: &Request<T>) -> Self {
        let token = request
            .metadata()
            .get(TOKEN_HEADER)
            .or_else(|| request.metadata().get(AUTHORIZATION_HEADER))
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        Credentials {
            token,
            common_name: request
                .extensions()
                .get::<Arc<ConnInfo>>()
                .and_then(|conn| conn.cert_common_name.clone()),
        }
    }

    /// etcd's AuthInfoFromCtx: a token must be valid (even with auth off, as
    /// in etcd); without one, the certificate's user; else nobody (whom every
    /// check refuses with `user name is empty` once auth is on).
    pub(crate) async fn caller(&self, member: &Member) -> Result<AuthInfo, Status> {
        if let Some(token) = &self.token {
            return member
                .auth_info_from_token(token)
                .await
                .map_err(errors::from_store);
        }
        Ok(self.caller_without_token(member))
    }

    /// `caller` without waiting for a token this member has not applied yet
    /// (for the watch stream, whose requests are handled synchronously).
    pub(crate) fn caller_now(&self, member: &Member) -> Result<AuthInfo, AuthError> {
        if let Some(token) = &self.token {
            return member
                .auth()
                .info_from_token(token)
                .ok_or(AuthError::InvalidAuthToken);
        }
        Ok(self.caller_without_token(member))
    }

    fn caller_without_token(&self, member: &Member) -> AuthInfo {
        match &self.common_name {
            Some(name) => member.auth().info_from_common_name(name),
            None => AuthInfo::default(),
        }
    }
}

/// Checks `access` to `[key, range_end)` for the caller.
pub(crate) fn check(
    member: &Member,
    caller: &AuthInfo,
    key: &[u8],
    range_end: &[u8],
    access: Access,
) -> Result<(), Status> {
    member
        .auth()
        .check(caller, key, range_end, access)
        .map_err(auth_status)
}

pub(crate) fn auth_status(error: AuthError) -> Status {
    errors::from_store(StoreError::Auth(error))
}

/// The text of etcd's auth package for an error (`auth: ...`), which the
/// calls that pass it on unconverted (maintenance) send.
pub(crate) fn go_auth_text(error: &AuthError) -> &'static str {
    match error {
        AuthError::RootUserNotExist => "auth: root user does not exist",
        AuthError::RootRoleNotExist => "auth: root user does not have root role",
        AuthError::UserAlreadyExist => "auth: user already exists",
        AuthError::UserEmpty => "auth: user name is empty",
        AuthError::UserNotFound => "auth: user not found",
        AuthError::RoleAlreadyExist => "auth: role already exists",
        AuthError::RoleNotFound => "auth: role not found",
        AuthError::RoleEmpty => "auth: role name is empty",
        AuthError::AuthFailed => "auth: authentication failed, invalid user ID or password",
        AuthError::PermissionDenied => "auth: permission denied",
        AuthError::RoleNotGranted => "auth: role is not granted to the user",
        AuthError::PermissionNotGranted => "auth: permission is not granted to the role",
        AuthError::AuthNotEnabled => "auth: authentication is not enabled",
        AuthError::AuthOldRevision => "auth: revision in header is old",
        AuthError::InvalidAuthToken => "auth: invalid auth token",
        AuthError::InvalidAuthMgmt => "auth: invalid auth management",
    }
}

pub struct AuthService {
    pub member: Arc<Member>,
}

impl AuthService {
    fn header(&self) -> Option<ResponseHeader> {
        Some(self.member.current_header())
    }

    async fn change<T>(&self, request: &Request<T>, change: RaftRequest) -> Result<(), Status> {
        let caller = Credentials::of(request).caller(&self.member).await?;
        self.member
            .auth_change(&caller, change)
            .await
            .map_err(errors::from_store)?;
        Ok(())
    }

    /// The admin check of the calls etcd sends through raft and answers from
    /// the applied state; shoal answers them from its applied state after a
    /// read barrier.
    async fn admin_read<T>(&self, request: &Request<T>) -> Result<AuthInfo, Status> {
        let caller = Credentials::of(request).caller(&self.member).await?;
        self.member
            .linearizable_barrier()
            .await
            .map_err(errors::from_store)?;
        Ok(caller)
    }
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn auth_enable(
        &self,
        request: Request<AuthEnableRequest>,
    ) -> Result<Response<AuthEnableResponse>, Status> {
        let change = RaftRequest {
            auth_enable: Some(AuthEnableRequest {}),
            ..Default::default()
        };
        self.change(&request, change).await?;
        Ok(Response::new(AuthEnableResponse {
            header: self.header(),
        }))
    }

    async fn auth_disable(
        &self,
        request: Request<AuthDisableRequest>,
    ) -> Result<Response<AuthDisableResponse>, Status> {
        let change = RaftRequest {
            auth_disable: Some(AuthDisableRequest {}),
            ..Default::default()
        };
        self.change(&request, change).await?;
        Ok(Response::new(AuthDisableResponse {
            header: self.header(),
        }))
    }

    async fn auth_status(
        &self,
        request: Request<AuthStatusRequest>,
    ) -> Result<Response<AuthStatusResponse>, Status> {
        self.admin_read(&request).await?;
        let auth = self.member.auth();
        Ok(Response::new(AuthStatusResponse {
            header: self.header(),
            enabled: auth.is_enabled(),
            auth_revision: auth.revision(),
        }))
    }

    async fn authenticate(
        &self,
        request: Request<AuthenticateRequest>,
    ) -> Result<Response<AuthenticateResponse>, Status> {
        let request = request.into_inner();
        let token = self
            .member
            .authenticate(&request.name, &request.password)
            .await
            .map_err(errors::from_store)?;
        Ok(Response::new(AuthenticateResponse {
            header: self.header(),
            token,
        }))
    }

    async fn user_add(
        &self,
        request: Request<AuthUserAddRequest>,
    ) -> Result<Response<AuthUserAddResponse>, Status> {
        let mut add = request.get_ref().clone();
        let no_password = add
            .options
            .as_ref()
            .is_some_and(|options| options.no_password);
        if !no_password && add.hashed_password.is_empty() {
            add.hashed_password = self
                .member
                .auth()
                .hash_password(&add.password)
                .await
                .map_err(Status::internal)?;
        }
        // The password itself never enters the log.
        add.password = String::new();
        let change = RaftRequest {
            auth_user_add: Some(add),
            ..Default::default()
        };
        self.change(&request, change).await?;
        Ok(Response::new(AuthUserAddResponse {
            header: self.header(),
        }))
    }

    async fn user_get(
        &self,
        request: Request<AuthUserGetRequest>,
    ) -> Result<Response<AuthUserGetResponse>, Status> {
        let caller = self.admin_read(&request).await?;
        let name = &request.get_ref().name;
        // A user may read itself without being an admin (etcd's UserGet).
        if let Err(error) = self.member.auth().check_admin(&caller)
            && *name != caller.username
        {
            return Err(auth_status(error));
        }
        let roles = self.member.auth().user_get(name).map_err(auth_status)?;
        Ok(Response::new(AuthUserGetResponse {
            header: self.header(),
            roles,
        }))
    }

    async fn user_list(
        &self,
        request: Request<AuthUserListRequest>,
    ) -> Result<Response<AuthUserListResponse>, Status> {
        let caller = self.admin_read(&request).await?;
        self.member
            .auth()
            .check_admin(&caller)
            .map_err(auth_status)?;
        Ok(Response::new(AuthUserListResponse {
            header: self.header(),
            users: self.member.auth().user_list(),
        }))
    }

    async fn user_delete(
        &self,
        request: Request<AuthUserDeleteRequest>,
    ) -> Result<Response<AuthUserDeleteResponse>, Status> {
        let change = RaftRequest {
            auth_user_delete: Some(request.get_ref().clone()),
            ..Default::default()
        };
        self.change(&request, change).await?;
        Ok(Response::new(AuthUserDeleteResponse {
            header: self.header(),
        }))
    }

    async fn user_change_password(
        &self,
        request: Request<AuthUserChangePasswordRequest>,
    ) -> Result<Response<AuthUserChangePasswordResponse>, Status> {
        let mut change_password = request.get_ref().clone();
        if change_password.hashed_password.is_empty() {
            change_password.hashed_password = self
                .member
                .auth()
                .hash_password(&change_password.password)
                .await
                .map_err(Status::internal)?;
        }
        change_password.password = String::new();
        let change = RaftRequest {
            auth_user_change_password: Some(change_password),
            ..Default::default()
        };
        self.change(&request, change).await?;
        Ok(Response::new(AuthUserChangePasswordResponse {
            header: self.header(),
        }))
    }

    async fn user_grant_role(
        &self,
        request: Request<AuthUserGrantRoleRequest>,
    ) -> Result<Response<AuthUserGrantRoleResponse>, Status> {
        let change = RaftRequest {
            auth_user_grant_role: Some(request.get_ref().clone()),
            ..Default::default()
        };
        self.change(&request, change).await?;
        Ok(Response::new(AuthUserGrantRoleResponse {
            header: self.header(),
        }))
    }

    async fn user_revoke_role(
        &self,
        request: Request<AuthUserRevokeRoleRequest>,
    ) -> Result<Response<AuthUserRevokeRoleResponse>, Status> {
        let change = RaftRequest {
            auth_user_revoke_role: Some(request.get_ref().clone()),
            ..Default::default()
        };
        self.change(&request, change).await?;
        Ok(Response::new(AuthUserRevokeRoleResponse {
            header: self.header(),
        }))
    }

    async fn role_add(
        &self,
        request: Request<AuthRoleAddRequest>,
    ) -> Result<Response<AuthRoleAddResponse>, Status> {
        let change = RaftRequest {
            auth_role_add: Some(request.get_ref().clone()),
            ..Default::default()
        };
        self.change(&request, change).await?;
        Ok(Response::new(AuthRoleAddResponse {
            header: self.header(),
        }))
    }

    async fn role_get(
        &self,
        request: Request<AuthRoleGetRequest>,
    ) -> Result<Response<AuthRoleGetResponse>, Status> {
        let caller = self.admin_read(&request).await?;
        let role = &request.get_ref().role;
        // A user may read the roles it holds (etcd's RoleGet).
        if let Err(error) = self.member.auth().check_admin(&caller)
            && !self.member.auth().has_role(&caller.username, role)
        {
            return Err(auth_status(error));
        }
        let perm = self.member.auth().role_get(role).map_err(auth_status)?;
        Ok(Response::new(AuthRoleGetResponse {
            header: self.header(),
            perm,
        }))
    }

    async fn role_list(
        &self,
        request: Request<AuthRoleListRequest>,
    ) -> Result<Response<AuthRoleListResponse>, Status> {
        let caller = self.admin_read(&request).await?;
        self.member
            .auth()
            .check_admin(&caller)
            .map_err(auth_status)?;
        Ok(Response::new(AuthRoleListResponse {
            header: self.header(),
            roles: self.member.auth().role_list(),
        }))
    }

    async fn role_delete(
        &self,
        request: Request<AuthRoleDeleteRequest>,
    ) -> Result<Response<AuthRoleDeleteResponse>, Status> {
        let change = RaftRequest {
            auth_role_delete: Some(request.get_ref().clone()),
            ..Default::default()
        };
        self.change(&request, change).await?;
        Ok(Response::new(AuthRoleDeleteResponse {
            header: self.header(),
        }))
    }

    async fn role_grant_permission(
        &self,
        request: Request<AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<AuthRoleGrantPermissionResponse>, Status> {
        let change = RaftRequest {
            auth_role_grant_permission: Some(request.get_ref().clone()),
            ..Default::default()
        };
        self.change(&request, change).await?;
        Ok(Response::new(AuthRoleGrantPermissionResponse {
            header: self.header(),
        }))
    }

    async fn role_revoke_permission(
        &self,
        request: Request<AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<AuthRoleRevokePermissionResponse>, Status> {
        let change = RaftRequest {
            auth_role_revoke_permission: Some(request.get_ref().clone()),
            ..Default::default()
        };
        self.change(&request, change).await?;
        Ok(Response::new(AuthRoleRevokePermissionResponse {
            header: self.header(),
        }))
    }
}
