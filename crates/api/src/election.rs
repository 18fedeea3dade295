//! etcd's v3election service (Campaign, Proclaim, Leader, Observe, Resign):
//! etcd's `concurrency` election recipe run inside the server over the store
//! [`Member`]. Candidates of election `name` hold keys `name/<lease id in hex>`
//! whose value is their proclamation; the leader is the key with the smallest
//! create revision, and a [`LeaderKey`] (key, create revision, lease) proves a
//! leadership to Proclaim and Resign.

use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;
use proto::etcdserverpb::{ResponseHeader, TxnRequest};
use proto::mvccpb::KeyValue;
use proto::mvccpb::event::EventType;
use proto::v3electionpb::election_server::Election;
use proto::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderKey, LeaderRequest, LeaderResponse, ProclaimRequest,
    ProclaimResponse, ResignRequest, ResignResponse,
};
use store::Member;
use store::auth::AuthInfo;
use store::watch::{WatchMessage, WatchSpec};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::lock::{
    CleanupOnDrop, Watch, as_recipe_error, candidate_key, confirm_still_held, create_revision_is,
    delete_operation, first_created, prefix_of, prefix_range_end, put_operation, range_operation,
    range_result, recipe_caller, session_lease, wait_deletes,
};
use crate::{errors, validate};

/// Observe responses buffered before a slow client pushes back on the observer.
const OBSERVE_QUEUE_LEN: usize = 16;

pub struct ElectionService {
    pub member: Arc<Member>,
}

type ObserveStream = Pin<Box<dyn Stream<Item = Result<LeaderResponse, Status>> + Send>>;

/// etcd's `ErrElectionNotLeader`. etcd returns its recipe errors as plain Go
/// errors, which gRPC sends with code Unknown; clients match on the text.
fn not_leader() -> Status {
    Status::unknown("election: not leader")
}

/// etcd's `ErrElectionNoLeader`.
fn no_leader() -> Status {
    Status::unknown("election: no leader")
}

/// etcd's `ErrMissingLeaderKey`, for a Proclaim or Resign without a leader key.
fn missing_leader_key() -> Status {
    Status::unknown("\"leader\" field must be provided")
}

#[tonic::async_trait]
impl Election for ElectionService {
    async fn campaign(
        &self,
        request: Request<CampaignRequest>,
    ) -> Result<Response<CampaignResponse>, Status> {
        let caller = recipe_caller(&self.member, &request, &request.get_ref().name).await?;
        campaign(&self.member, &caller, request.into_inner())
            .await
            .map(Response::new)
            .map_err(as_recipe_error)
    }

    async fn proclaim(
        &self,
        request: Request<ProclaimRequest>,
    ) -> Result<Response<ProclaimResponse>, Status> {
        let name = request
            .get_ref()
            .leader
            .as_ref()
            .map(|leader| leader.name.clone())
            .unwrap_or_default();
        let caller = recipe_caller(&self.member, &request, &name).await?;
        proclaim(&self.member, &caller, request.into_inner())
            .await
            .map(Response::new)
            .map_err(as_recipe_error)
    }

    async fn leader(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<LeaderResponse>, Status> {
        recipe_caller(&self.member, &request, &request.get_ref().name).await?;
        leader(&self.member, request.into_inner())
            .await
            .map(Response::new)
            .map_err(as_recipe_error)
    }

    type ObserveStream = ObserveStream;

    async fn observe(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        recipe_caller(&self.member, &request, &request.get_ref().name).await?;
        let prefix = prefix_of(&request.into_inner().name);
        let (responses, receiver) = mpsc::channel(OBSERVE_QUEUE_LEN);
        let member = self.member.clone();
        tokio::spawn(async move {
            let outcome = tokio::select! {
                outcome = observe_leaders(&member, &prefix, &responses) => outcome,
                // The client went away: stop watching.
                () = responses.closed() => Ok(()),
            };
            if let Err(status) = outcome {
                let _ = responses.send(Err(as_recipe_error(status))).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn resign(
        &self,
        request: Request<ResignRequest>,
    ) -> Result<Response<ResignResponse>, Status> {
        let name = request
            .get_ref()
            .leader
            .as_ref()
            .map(|leader| leader.name.clone())
            .unwrap_or_default();
        let caller = recipe_caller(&self.member, &request, &name).await?;
        resign(&self.member, &caller, request.into_inner())
            .await
            .map(Response::new)
            .map_err(as_recipe_error)
    }
}

async fn campaign(
    member: &Arc<Member>,
    caller: &AuthInfo,
    request: CampaignRequest,
) -> Result<CampaignResponse, Status> {
    let lease = session_lease(member, request.lease).await?;
    let prefix = prefix_of(&request.name);
    let key = candidate_key(&prefix, lease);

    // Become a candidate, or find our candidacy again (same lease).
    let txn = TxnRequest {
        compare: vec![create_revision_is(&key, 0)],
        success: vec![put_operation(&key, request.value.clone(), lease)],
        failure: vec![range_operation(proto::etcdserverpb::RangeRequest {
            key: key.clone(),
            ..Default::default()
        })],
    };
    let response = member
        .txn_as(Some(caller), txn)
        .await
        .map_err(errors::from_store)?;
    let header = response.header.unwrap_or_default();
    let mut leader_revision = header.revision;
    if !response.succeeded {
        let existing = range_result(&response, 0)
            .and_then(|range| range.kvs.first())
            .ok_or_else(not_leader)?;
        leader_revision = existing.create_revision;
        if existing.value != request.value
            && let Err(status) = put_if_leader(
                member,
                caller,
                &key,
                leader_revision,
                lease,
                request.value.clone(),
            )
            .await
        {
            let _ = member.txn(resign_txn(&key, leader_revision)).await;
            return Err(status);
        }
    }

    // A client that gives up while waiting withdraws its candidacy, as
    // etcd's election does; other failures leave it in place.
    let mut resign_on_cancel =
        CleanupOnDrop::new(member.clone(), resign_txn(&key, leader_revision));
    let waited = wait_deletes(member, &prefix, leader_revision - 1).await;
    resign_on_cancel.disarm();
    waited?;
    // Our lease may have ended while we waited, taking our key: do not
    // report a leadership nobody holds (the election twin of etcd #11456).
    confirm_still_held(member, &key, lease, not_leader).await?;

    Ok(CampaignResponse {
        header: Some(header),
        leader: Some(LeaderKey {
            name: request.name,
            key,
            rev: leader_revision,
            lease,
        }),
    })
}

async fn proclaim(
    member: &Member,
    caller: &AuthInfo,
    request: ProclaimRequest,
) -> Result<ProclaimResponse, Status> {
    let leader = request.leader.ok_or_else(missing_leader_key)?;
    // etcd runs Proclaim in a session of the leader key's lease, so lease 0
    // means a new lease there too.
    let lease = session_lease(member, leader.lease).await?;
    let header = put_if_leader(
        member,
        caller,
        &leader.key,
        leader.rev,
        lease,
        request.value,
    )
    .await?;
    Ok(ProclaimResponse {
        header: Some(header),
    })
}

async fn leader(member: &Member, request: LeaderRequest) -> Result<LeaderResponse, Status> {
    let prefix = prefix_of(&request.name);
    let response = member
        .range(first_created(&prefix))
        .await
        .map_err(errors::from_store)?;
    let kv = response.kvs.into_iter().next().ok_or_else(no_leader)?;
    Ok(LeaderResponse {
        header: response.header,
        kv: Some(kv),
    })
}

async fn resign(
    member: &Member,
    caller: &AuthInfo,
    request: ResignRequest,
) -> Result<ResignResponse, Status> {
    let leader = request.leader.ok_or_else(missing_leader_key)?;
    // Resigning a leadership that already ended is not an error, as in etcd:
    // the txn's compare fails and nothing is deleted.
    let txn = resign_txn(&leader.key, leader.rev);
    validate::txn(&txn)?;
    let response = member
        .txn_as(Some(caller), txn)
        .await
        .map_err(errors::from_store)?;
    Ok(ResignResponse {
        header: response.header,
    })
}

/// Deletes the leader key if it is still the same leadership.
fn resign_txn(key: &Bytes, leader_revision: i64) -> TxnRequest {
    TxnRequest {
        compare: vec![create_revision_is(key, leader_revision)],
        success: vec![delete_operation(key)],
        failure: Vec::new(),
    }
}

/// Replaces the leader's value if `key` is still the leadership created at
/// `leader_revision`.
async fn put_if_leader(
    member: &Member,
    caller: &AuthInfo,
    key: &Bytes,
    leader_revision: i64,
    lease: i64,
    value: Bytes,
) -> Result<ResponseHeader, Status> {
    let txn = TxnRequest {
        compare: vec![create_revision_is(key, leader_revision)],
        success: vec![put_operation(key, value, lease)],
        failure: Vec::new(),
    };
    validate::txn(&txn)?;
    let response = member
        .txn_as(Some(caller), txn)
        .await
        .map_err(errors::from_store)?;
    if !response.succeeded {
        return Err(not_leader());
    }
    Ok(response.header.unwrap_or_default())
}

/// etcd's `observe`: sends the current leader, then every new value of its
/// key; when the key is deleted, the next leader. With no leader, waits for the
/// first key put under the prefix. Returns when the client is gone.
async fn observe_leaders(
    member: &Member,
    prefix: &Bytes,
    responses: &mpsc::Sender<Result<LeaderResponse, Status>>,
) -> Result<(), Status> {
    loop {
        let current = member
            .range(first_created(prefix))
            .await
            .map_err(errors::from_store)?;
        let header = current.header.unwrap_or_default();
        let (header, leader) = match current.kvs.into_iter().next() {
            Some(kv) => (header, kv),
            None => match first_put(member, prefix, header.revision).await? {
                Some(first) => first,
                // Missed history: look for the leader again.
                None => continue,
            },
        };
        let revision = header.revision;
        let key = leader.key.clone();
        if !send(responses, header, leader).await {
            return Ok(());
        }

        let mut watch = Watch::start(
            member,
            WatchSpec {
                key,
                range_end: Bytes::new(),
                start_revision: revision + 1,
                prev_kv: false,
                no_put: false,
                no_delete: false,
            },
        );
        'leadership: loop {
            match watch.next().await? {
                WatchMessage::Events { revision, events } => {
                    for event in events {
                        if event.r#type == EventType::Delete as i32 {
                            break 'leadership;
                        }
                        let Some(kv) = event.kv else { continue };
                        if !send(responses, member.header(revision), kv).await {
                            return Ok(());
                        }
                    }
                }
                // Missed history: find the leader again from the current state.
                WatchMessage::Compacted { .. } => break 'leadership,
                // These internal watchers never ask for progress notifications.
                WatchMessage::Progress { .. } => {}
            }
        }
    }
}

/// With no leader at `revision`: waits for the first put under the prefix.
/// The header carries that put's revision, as etcd's does. `None` if the
/// history since `revision` was compacted away.
async fn first_put(
    member: &Member,
    prefix: &Bytes,
    revision: i64,
) -> Result<Option<(ResponseHeader, KeyValue)>, Status> {
    let mut watch = Watch::start(
        member,
        WatchSpec {
            key: prefix.clone(),
            range_end: prefix_range_end(prefix),
            start_revision: revision + 1,
            prev_kv: false,
            no_put: false,
            no_delete: true,
        },
    );
    loop {
        match watch.next().await? {
            WatchMessage::Events { events, .. } => {
                if let Some(kv) = events.into_iter().find_map(|event| event.kv) {
                    return Ok(Some((member.header(kv.mod_revision), kv)));
                }
            }
            WatchMessage::Compacted { .. } => return Ok(None),
            WatchMessage::Progress { .. } => {}
        }
    }
}

async fn send(
    responses: &mpsc::Sender<Result<LeaderResponse, Status>>,
    header: ResponseHeader,
    kv: KeyValue,
) -> bool {
    let response = LeaderResponse {
        header: Some(header),
        kv: Some(kv),
    };
    responses.send(Ok(response)).await.is_ok()
}
