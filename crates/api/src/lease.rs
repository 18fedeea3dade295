//! etcd's Lease service: grant, revoke, keep-alive (a stream), time-to-live and
//! listing, with etcd's answers for leases that do not exist.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use proto::etcdserverpb::lease_server::Lease;
use proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use store::{Member, StoreError};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::errors;

pub struct LeaseService {
    pub member: Arc<Member>,
}

type KeepAliveStream = Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        // etcd 3.4 grants leases to anyone, but a token must still be valid.
        crate::auth::Credentials::of(&request)
            .caller(&self.member)
            .await?;
        let response = self
            .member
            .lease_grant(request.into_inner())
            .await
            .map_err(errors::from_store)?;
        Ok(Response::new(response))
    }

    async fn lease_revoke(
        &self,
        request: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        // Revoking needs write permission on every attached key, checked as
        // the revocation applies (etcd's checkLeasePuts).
        let caller = crate::auth::Credentials::of(&request)
            .caller(&self.member)
            .await?;
        let response = self
            .member
            .lease_revoke_as(Some(&caller), request.into_inner())
            .await
            .map_err(errors::from_store)?;
        Ok(Response::new(response))
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let mut requests = request.into_inner();
        let (responses, receiver) = mpsc::channel(64);
        let member = self.member.clone();
        tokio::spawn(async move {
            while let Ok(Some(request)) = requests.message().await {
                let response = match member.lease_renew(request.id).await {
                    Ok(ttl) => Ok(LeaseKeepAliveResponse {
                        header: Some(member.current_header()),
                        id: request.id,
                        ttl,
                    }),
                    // etcd answers a keep-alive for an unknown lease with TTL 0.
                    Err(StoreError::LeaseNotFound) => Ok(LeaseKeepAliveResponse {
                        header: Some(member.current_header()),
                        id: request.id,
                        ttl: 0,
                    }),
                    Err(error) => Err(errors::from_store(error)),
                };
                let failed = response.is_err();
                if responses.send(response).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let request = request.into_inner();
        let found = self
            .member
            .lease_time_to_live(request.id, request.keys)
            .await
            .map_err(errors::from_store)?;
        let header = Some(self.member.current_header());
        let response = match found {
            Some(found) => LeaseTimeToLiveResponse {
                header,
                id: request.id,
                ttl: found.remaining_seconds,
                granted_ttl: found.granted_seconds,
                keys: found.keys,
            },
            // etcd reports a missing (or expired) lease as TTL -1.
            None => LeaseTimeToLiveResponse {
                header,
                id: request.id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            },
        };
        Ok(Response::new(response))
    }

    async fn lease_leases(
        &self,
        _request: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        Ok(Response::new(LeaseLeasesResponse {
            header: Some(self.member.current_header()),
            leases: self
                .member
                .lease_ids()
                .into_iter()
                .map(|id| LeaseStatus { id })
                .collect(),
        }))
    }
}
