//! The etcd v3 gRPC API (KV, Maintenance, Cluster, ...), its JSON gateway and
//! the v2 keys API, served over a store [`Member`]. Only this crate speaks the
//! client protocols; it validates requests as etcd does and maps store errors
//! to etcd's statuses.

pub(crate) mod auth;
pub mod authority;
pub mod conn;
mod election;
mod encoded_range;
mod errors;
mod gateway;
mod grpc;
mod grpc_watch;
mod lease;
mod lock;
pub mod metrics;
pub mod tls;
mod v2;
mod validate;
mod watch;

use std::sync::Arc;

use proto::etcdserverpb::cluster_server::{Cluster, ClusterServer};
use proto::etcdserverpb::kv_server::{Kv, KvServer};
use proto::etcdserverpb::maintenance_server::{Maintenance, MaintenanceServer};
use proto::etcdserverpb::{
    AlarmRequest, AlarmResponse, CompactionRequest, CompactionResponse, DefragmentRequest,
    DefragmentResponse, DeleteRangeRequest, DeleteRangeResponse, HashKvRequest, HashKvResponse,
    HashRequest, HashResponse, MemberAddRequest, MemberAddResponse, MemberListRequest,
    MemberListResponse, MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest,
    MemberRemoveResponse, MemberUpdateRequest, MemberUpdateResponse, MoveLeaderRequest,
    MoveLeaderResponse, PutRequest, PutResponse, RangeRequest, RangeResponse, ResponseHeader,
    SnapshotRequest, SnapshotResponse, StatusRequest, StatusResponse, TxnRequest, TxnResponse,
};
use store::Member;
use tonic::{Request, Response, Status};

/// gRPC framing and headers on top of the largest request body etcd accepts
/// (etcd allows the same slack over `--max-request-bytes`).
pub(crate) const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// Serves the client API on `listener` until `shutdown` resolves: over TLS
/// with `tls` (an `https://` client URL), in plain text without.
pub async fn serve(
    member: Arc<Member>,
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let max_message = usize::try_from(member.max_request_bytes())
        .unwrap_or(usize::MAX)
        .saturating_add(GRPC_OVERHEAD_BYTES);
    let kv_member = member.clone();
    let kv = KvServer::new(KvService {
        member: member.clone(),
    })
    .max_decoding_message_size(max_message)
    .max_encoding_message_size(usize::MAX);
    let maintenance = MaintenanceServer::new(MaintenanceService {
        member: member.clone(),
    })
    .max_decoding_message_size(max_message)
    .max_encoding_message_size(usize::MAX);
    let lease = proto::etcdserverpb::lease_server::LeaseServer::new(lease::LeaseService {
        member: member.clone(),
    })
    .max_decoding_message_size(max_message)
    .max_encoding_message_size(usize::MAX);
    let lock = proto::v3lockpb::lock_server::LockServer::new(lock::LockService {
        member: member.clone(),
    })
    .max_decoding_message_size(max_message)
    .max_encoding_message_size(usize::MAX);
    let election =
        proto::v3electionpb::election_server::ElectionServer::new(election::ElectionService {
            member: member.clone(),
        })
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(usize::MAX);
    let kv = encoded_range::KvRoutes::new(kv, member.clone(), max_message);
    let grpc_metrics = Arc::new(metrics::GrpcMetrics::default());
    let endpoint = ::metrics::Endpoint::with_process_metrics();
    endpoint.add(Arc::new(member.metrics_registry()));
    let mut grpc_registry = ::metrics::Registry::default();
    grpc_registry.register_collector(Box::new(grpc_metrics.clone()));
    endpoint.add(Arc::new(grpc_registry));
    let http = Arc::new(gateway::HttpApi::new(member.clone(), endpoint));
    let auth = proto::etcdserverpb::auth_server::AuthServer::new(auth::AuthService {
        member: member.clone(),
    })
    .max_decoding_message_size(max_message)
    .max_encoding_message_size(usize::MAX);
    let cluster = ClusterServer::new(ClusterService { member })
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(usize::MAX);
    let routes = tonic::service::Routes::new(kv)
        .add_service(maintenance)
        .add_service(cluster)
        .add_service(lease)
        .add_service(lock)
        .add_service(election)
        .add_service(auth)
        .prepare();
    let services = Arc::new(grpc::Services {
        kv: Arc::new(KvService { member: kv_member }),
        routes,
        max_message,
        metrics: grpc_metrics,
    });
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let (stop_sender, stop) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    let _ = socket.set_nodelay(true);
                    let http = Arc::clone(&http);
                    let services = Arc::clone(&services);
                    let stop = stop.clone();
                    match &acceptor {
                        None => {
                            let info = conn::ConnInfo::plain();
                            let connection = authority::relay(socket, http, Arc::clone(&info));
                            connections.spawn(grpc::serve_connection(connection, services, info, stop));
                        }
                        Some(acceptor) => {
                            // The handshake runs on the connection's task, so a
                            // slow client holds up no one else.
                            let acceptor = acceptor.clone();
                            connections.spawn(async move {
                                let Some((stream, info)) = tls::accept(&acceptor, socket, peer).await else {
                                    return;
                                };
                                let connection = authority::relay(stream, http, Arc::clone(&info));
                                grpc::serve_connection(connection, services, info, stop).await;
                            });
                        }
                    }
                }
                Err(error) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(%error, "cannot accept a client connection");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    let _ = stop_sender.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

struct KvService {
    member: Arc<Member>,
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        let credentials = auth::Credentials::of(&request);
        let request = request.into_inner();
        validate::range(&request)?;
        let caller = credentials.caller(&self.member).await?;
        auth::check(
            &self.member,
            &caller,
            &request.key,
            &request.range_end,
            store::auth::Access::Read,
        )?;
        let response = self
            .member
            .range(request)
            .await
            .map_err(errors::from_store)?;
        Ok(Response::new(response))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let credentials = auth::Credentials::of(&request);
        let request = request.into_inner();
        validate::put(&request)?;
        // Writes are checked as they apply (etcd's auth applier).
        let caller = credentials.caller(&self.member).await?;
        let response = self
            .member
            .put_as(Some(&caller), request)
            .await
            .map_err(errors::from_store)?;
        Ok(Response::new(response))
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let credentials = auth::Credentials::of(&request);
        let request = request.into_inner();
        validate::delete_range(&request)?;
        let caller = credentials.caller(&self.member).await?;
        let response = self
            .member
            .delete_range_as(Some(&caller), request)
            .await
            .map_err(errors::from_store)?;
        Ok(Response::new(response))
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let credentials = auth::Credentials::of(&request);
        let request = request.into_inner();
        validate::txn(&request)?;
        let caller = credentials.caller(&self.member).await?;
        let response = self
            .member
            .txn_as(Some(&caller), request)
            .await
            .map_err(errors::from_store)?;
        Ok(Response::new(response))
    }

    async fn compact(
        &self,
        request: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        let response = self
            .member
            .compact(request.into_inner())
            .await
            .map_err(errors::from_store)?;
        Ok(Response::new(response))
    }
}

struct MaintenanceService {
    member: Arc<Member>,
}

/// etcd's admin check (IsAdminPermitted) for membership changes.
async fn require_admin<T>(member: &Member, request: &Request<T>) -> Result<(), Status> {
    let caller = auth::Credentials::of(request).caller(member).await?;
    member
        .auth()
        .check_admin(&caller)
        .map_err(auth::auth_status)
}

/// The admin check of etcd's maintenance server (defragment, snapshot, hash),
/// whose refusals reach the wire unconverted: code Unknown and the auth
/// package's own text ("auth: permission denied").
async fn require_admin_for_maintenance<T>(
    member: &Member,
    request: &Request<T>,
) -> Result<(), Status> {
    let caller = auth::Credentials::of(request)
        .caller(member)
        .await
        .map_err(|status| match status.code() {
            tonic::Code::Unauthenticated => Status::unknown("auth: invalid auth token"),
            _ => status,
        })?;
    member
        .auth()
        .check_admin(&caller)
        .map_err(|error| Status::unknown(auth::go_auth_text(&error)))
}

type SnapshotStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<SnapshotResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(
        &self,
        request: Request<AlarmRequest>,
    ) -> Result<Response<AlarmResponse>, Status> {
        let alarms = self
            .member
            .alarm(request.into_inner())
            .await
            .map_err(errors::from_store)?;
        // etcd answers alarm requests without a header.
        Ok(Response::new(AlarmResponse {
            header: None,
            alarms,
        }))
    }

    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        Ok(Response::new(self.member.status_response()))
    }

    async fn defragment(
        &self,
        request: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        require_admin_for_maintenance(&self.member, &request).await?;
        self.member.defragment().await.map_err(errors::from_store)?;
        // etcd answers Defragment without a header.
        Ok(Response::new(DefragmentResponse { header: None }))
    }

    /// etcd hashes its whole backend file; shoal's files differ between members by
    /// construction (different page layouts), so Hash covers the logical content:
    /// the key-value history, as HashKV at the current revision does.
    async fn hash(&self, request: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        require_admin_for_maintenance(&self.member, &request).await?;
        let (hash, _) = self.member.hash_kv(0).map_err(errors::from_store)?;
        Ok(Response::new(HashResponse {
            header: Some(self.member.current_header()),
            hash,
        }))
    }

    async fn hash_kv(
        &self,
        request: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        require_admin_for_maintenance(&self.member, &request).await?;
        let revision = request.into_inner().revision;
        let (hash, compact_revision) = self.member.hash_kv(revision).map_err(errors::from_store)?;
        Ok(Response::new(HashKvResponse {
            header: Some(self.member.current_header()),
            hash,
            // etcd reports a store that was never compacted as -1.
            compact_revision: if compact_revision == 0 {
                -1
            } else {
                compact_revision
            },
        }))
    }

    type SnapshotStream = SnapshotStream;

    async fn snapshot(
        &self,
        request: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        require_admin_for_maintenance(&self.member, &request).await?;
        /// etcd streams its snapshot in chunks of this size too.
        const CHUNK_BYTES: usize = 32 * 1024;
        let member = self.member.clone();
        let data = tokio::task::spawn_blocking(move || member.snapshot_bytes())
            .await
            .map_err(|error| Status::internal(format!("snapshot task failed: {error}")))?
            .map_err(errors::from_store)?;
        let header = self.member.current_header();
        let total = data.len();
        let chunks: Vec<Result<SnapshotResponse, Status>> = data
            .chunks(CHUNK_BYTES)
            .enumerate()
            .map(|(position, chunk)| {
                let sent = (position * CHUNK_BYTES + chunk.len()) as u64;
                Ok(SnapshotResponse {
                    header: Some(header),
                    remaining_bytes: total as u64 - sent,
                    blob: bytes::Bytes::copy_from_slice(chunk),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }

    async fn move_leader(
        &self,
        request: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        self.member
            .move_leader(request.into_inner().target_id)
            .await
            .map_err(errors::from_store)?;
        // etcd answers MoveLeader without a header.
        Ok(Response::new(MoveLeaderResponse { header: None }))
    }
}

struct ClusterService {
    member: Arc<Member>,
}

impl ClusterService {
    /// etcd's cluster responses carry no revision.
    fn header(&self) -> ResponseHeader {
        ResponseHeader {
            revision: 0,
            ..self.member.current_header()
        }
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        request: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        require_admin(&self.member, &request).await?;
        let request = request.into_inner();
        let (member, members) = self
            .member
            .member_add(request.peer_ur_ls, request.is_learner)
            .await
            .map_err(errors::from_store)?;
        Ok(Response::new(MemberAddResponse {
            header: Some(self.header()),
            member: Some(member),
            members,
        }))
    }

    async fn member_remove(
        &self,
        request: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        require_admin(&self.member, &request).await?;
        let members = self
            .member
            .member_remove(request.into_inner().id)
            .await
            .map_err(errors::from_store)?;
        Ok(Response::new(MemberRemoveResponse {
            header: Some(self.header()),
            members,
        }))
    }

    async fn member_update(
        &self,
        request: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        require_admin(&self.member, &request).await?;
        let request = request.into_inner();
        let members = self
            .member
            .member_update(request.id, request.peer_ur_ls)
            .await
            .map_err(errors::from_store)?;
        Ok(Response::new(MemberUpdateResponse {
            header: Some(self.header()),
            members,
        }))
    }

    async fn member_list(
        &self,
        _request: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        Ok(Response::new(MemberListResponse {
            header: Some(self.header()),
            members: self.member.members(),
        }))
    }

    async fn member_promote(
        &self,
        request: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        require_admin(&self.member, &request).await?;
        let members = self
            .member
            .member_promote(request.into_inner().id)
            .await
            .map_err(errors::from_store)?;
        Ok(Response::new(MemberPromoteResponse {
            header: Some(self.header()),
            members,
        }))
    }
}
