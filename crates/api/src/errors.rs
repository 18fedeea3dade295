//! etcd's gRPC errors: the same status code and message text as etcd returns,
//! because client libraries match on both.

use store::StoreError;
use tonic::{Code, Status};

pub fn key_not_provided() -> Status {
    Status::invalid_argument("etcdserver: key is not provided")
}

pub fn value_provided() -> Status {
    Status::invalid_argument("etcdserver: value is provided")
}

pub fn lease_provided() -> Status {
    Status::invalid_argument("etcdserver: lease is provided")
}

pub fn too_many_ops() -> Status {
    Status::invalid_argument("etcdserver: too many operations in txn request")
}

pub fn duplicate_key() -> Status {
    Status::invalid_argument("etcdserver: duplicate key given in txn request")
}

pub fn invalid_sort_option() -> Status {
    Status::invalid_argument("etcdserver: invalid sort option")
}

/// Maps a store error to the status etcd sends for it.
pub fn from_store(error: StoreError) -> Status {
    let code = match &error {
        StoreError::NoLeader | StoreError::Timeout | StoreError::Stopped => Code::Unavailable,
        StoreError::Compacted | StoreError::FutureRevision => Code::OutOfRange,
        StoreError::KeyNotFound | StoreError::RequestTooLarge => Code::InvalidArgument,
        StoreError::LeaseNotFound => Code::NotFound,
        StoreError::LeaseExists => Code::FailedPrecondition,
        StoreError::NotLeader | StoreError::BadLeaderTransferee => Code::FailedPrecondition,
        StoreError::LeaderTransferTimeout => Code::Unavailable,
        StoreError::PeerUrlExists
        | StoreError::MemberNotLearner
        | StoreError::LearnerNotReady
        | StoreError::TooManyLearners => Code::FailedPrecondition,
        StoreError::MemberBadUrls => Code::InvalidArgument,
        StoreError::MemberNotFound => Code::NotFound,
        StoreError::NoSpace => Code::ResourceExhausted,
        StoreError::NotEnoughStartedMembers => Code::FailedPrecondition,
        StoreError::Unhealthy => Code::Unavailable,
        StoreError::LeaseTtlTooLarge => Code::OutOfRange,
        StoreError::Auth(auth) => auth_code(auth),
        StoreError::Internal(_) => Code::Internal,
    };
    Status::new(code, error.to_string())
}

/// The gRPC code etcd sends with each auth error (rpctypes).
fn auth_code(error: &store::auth::AuthError) -> Code {
    use store::auth::AuthError;
    match error {
        AuthError::UserEmpty
        | AuthError::RoleEmpty
        | AuthError::AuthFailed
        | AuthError::InvalidAuthMgmt
        | AuthError::AuthOldRevision => Code::InvalidArgument,
        AuthError::PermissionDenied => Code::PermissionDenied,
        AuthError::InvalidAuthToken => Code::Unauthenticated,
        AuthError::RootUserNotExist
        | AuthError::RootRoleNotExist
        | AuthError::UserAlreadyExist
        | AuthError::UserNotFound
        | AuthError::RoleAlreadyExist
        | AuthError::RoleNotFound
        | AuthError::RoleNotGranted
        | AuthError::PermissionNotGranted
        | AuthError::AuthNotEnabled => Code::FailedPrecondition,
    }
}
