//! gRPC plumbing for the workload and the fault injector: channels to members
//! with bounded connect and request times, and the rule that turns an error
//! into an outcome (`fail` only when the request certainly was not sent or
//! certainly had no effect).

use std::time::Duration;

use proto::etcdserverpb::StatusRequest;
use proto::etcdserverpb::maintenance_client::MaintenanceClient;
use tonic::transport::{Channel, Endpoint};

use crate::history::Outcome;

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Requests that take longer are abandoned with an unknown outcome.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// A channel to `url` that connects on first use, so that a dead member costs a
/// failed request, not a stuck client.
pub fn channel(url: &str) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(url.to_string())?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .connect_lazy())
}

/// The outcome of a failed request that may have changed state.
pub fn write_outcome(status: &tonic::Status) -> Outcome {
    if was_not_sent(status) || is_definite_refusal(status) {
        Outcome::Fail
    } else {
        Outcome::Unknown
    }
}

/// Connection refused or no route: the request never reached a server.
fn was_not_sent(status: &tonic::Status) -> bool {
    if status.code() != tonic::Code::Unavailable {
        return false;
    }
    let mut text = status.message().to_lowercase();
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    // Bounded: error chains are a few links long.
    for _ in 0..16 {
        let Some(error) = source else { break };
        text.push_str(&error.to_string().to_lowercase());
        source = error.source();
    }
    text.contains("connection refused")
        || text.contains("no route to host")
        || text.contains("tcp connect error")
}

/// Errors etcd returns before doing anything (bad request, missing lease).
fn is_definite_refusal(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition | tonic::Code::NotFound
    ) || status.message().contains("requested lease not found")
}

/// Bounded wait for one request.
pub async fn bounded<T>(
    timeout: Duration,
    request: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, tonic::Status> {
    match tokio::time::timeout(timeout, request).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(status),
        Err(_) => Err(tonic::Status::deadline_exceeded("client timeout")),
    }
}

/// Member id and leader id as member `url` reports them.
pub async fn status(url: &str) -> Option<(u64, u64)> {
    let mut client = MaintenanceClient::new(channel(url).ok()?);
    let response = bounded(Duration::from_secs(1), client.status(StatusRequest {}))
        .await
        .ok()?;
    Some((
        response.header.map(|header| header.member_id)?,
        response.leader,
    ))
}
