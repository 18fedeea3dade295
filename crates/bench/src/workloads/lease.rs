//! The lease-keepalive workload: grant the leases, then send `--total`
//! keep-alives. Each client keeps one LeaseKeepAlive stream open and cycles
//! through its share of the leases, one keep-alive in flight at a time.
//!
//! etcd's tool grants one lease per client and calls `KeepAliveOnce`, which
//! opens a new stream for every keep-alive; a long-lived stream is what real
//! clients (and etcd's own `KeepAlive`) use, so that is what is measured here.

use std::sync::{Arc, Mutex};

use clap::Args;
use futures::channel::mpsc;
use proto::etcdserverpb::lease_client::LeaseClient;
use proto::etcdserverpb::{LeaseGrantRequest, LeaseKeepAliveRequest, LeaseKeepAliveResponse};
use tonic::Status;
use tonic::codec::Streaming;
use tonic::transport::Channel;

use crate::connect::{Connections, call_error};
use crate::report::{Section, Summary};
use crate::runner::{self, Plan};

/// The TTL of every granted lease, in seconds, as etcd's tool grants them:
/// long enough that none expires during a run.
const LEASE_TTL_SECONDS: i64 = 100;

#[derive(Args, Debug, Clone)]
pub struct LeaseKeepaliveArgs {
    /// Total number of keep-alive requests.
    #[arg(long, default_value_t = 10_000)]
    pub total: u64,
    /// Number of leases to grant and keep alive (0: one per client, as etcd's tool).
    #[arg(long, default_value_t = 0)]
    pub leases: u64,
}

pub async fn lease_keepalive(
    connections: &Connections,
    args: &LeaseKeepaliveArgs,
) -> anyhow::Result<Summary> {
    let n_clients = connections.n_clients;
    let n_leases = args.leases.max(n_clients as u64);

    // A first grant fails fast and clearly when the server has no leases.
    let mut probe = connections.lease_client(0);
    probe
        .lease_grant(LeaseGrantRequest {
            ttl: LEASE_TTL_SECONDS,
            id: 0,
        })
        .await
        .map_err(|status| call_error("lease grant", status))?;

    let lease_ids = Arc::new(Mutex::new(Vec::with_capacity(n_leases as usize)));
    let granted = Arc::clone(&lease_ids);
    let clients: Vec<LeaseClient<Channel>> = (0..n_clients)
        .map(|client_idx| connections.lease_client(client_idx))
        .collect();
    let plan = Plan {
        label: "lease grant".into(),
        total: n_leases,
        rate: 0,
        n_classes: 1,
    };
    let (grant_recorders, grant_duration) = runner::run(plan, clients, move |lease, _| {
        let granted = Arc::clone(&granted);
        Box::pin(async move {
            let response = lease
                .lease_grant(LeaseGrantRequest {
                    ttl: LEASE_TTL_SECONDS,
                    id: 0,
                })
                .await?
                .into_inner();
            if !response.error.is_empty() {
                return Err(Status::internal(response.error));
            }
            granted.lock().expect("not poisoned").push(response.id);
            Ok(0)
        })
    })
    .await;
    let [grants] = <[_; 1]>::try_from(grant_recorders).expect("one class");
    let lease_ids = std::mem::take(&mut *lease_ids.lock().expect("not poisoned"));
    anyhow::ensure!(
        lease_ids.len() >= n_clients,
        "only {} of {n_leases} leases were granted",
        lease_ids.len()
    );

    // Client i keeps leases i, i + n_clients, i + 2 n_clients… alive.
    let mut streams = Vec::with_capacity(n_clients);
    for client_idx in 0..n_clients {
        let leases: Vec<i64> = lease_ids
            .iter()
            .skip(client_idx)
            .step_by(n_clients)
            .copied()
            .collect();
        let stream = KeepAliveStream::open(connections.lease_client(client_idx), leases)
            .await
            .map_err(|status| call_error("lease keep-alive", status))?;
        streams.push(stream);
    }
    let plan = Plan {
        label: "lease keepalive".into(),
        total: args.total,
        rate: 0,
        n_classes: 1,
    };
    let (recorders, duration) = runner::run(plan, streams, |stream, _| {
        Box::pin(stream.keep_alive_next())
    })
    .await;
    let [keepalives] = <[_; 1]>::try_from(recorders).expect("one class");
    Ok(Summary::new("lease-keepalive")
        .section(Section::new("lease keepalive", keepalives, duration))
        .section(Section::new("lease grant", grants, grant_duration))
        .detail("leases", lease_ids.len() as u64))
}

/// One client's keep-alive stream and the leases it keeps alive.
struct KeepAliveStream {
    // Kept so the request side stays open: closing it ends the stream.
    requests: mpsc::UnboundedSender<LeaseKeepAliveRequest>,
    responses: Streaming<LeaseKeepAliveResponse>,
    leases: Vec<i64>,
    next_lease_idx: usize,
}

impl KeepAliveStream {
    /// Opens the stream with a first keep-alive (the server answers, and so
    /// sends its response headers, only once it has a request).
    async fn open(mut client: LeaseClient<Channel>, leases: Vec<i64>) -> Result<Self, Status> {
        let (requests, receiver) = mpsc::unbounded();
        let first = LeaseKeepAliveRequest { id: leases[0] };
        requests
            .unbounded_send(first)
            .map_err(|_| Status::internal("keep-alive request channel closed"))?;
        let responses = client.lease_keep_alive(receiver).await?.into_inner();
        let mut stream = Self {
            requests,
            responses,
            leases,
            next_lease_idx: 0,
        };
        stream.receive(stream.leases[0]).await?;
        Ok(stream)
    }

    async fn keep_alive_next(&mut self) -> Result<usize, Status> {
        let id = self.leases[self.next_lease_idx % self.leases.len()];
        self.next_lease_idx += 1;
        self.requests
            .unbounded_send(LeaseKeepAliveRequest { id })
            .map_err(|_| Status::internal("keep-alive request channel closed"))?;
        self.receive(id).await?;
        Ok(0)
    }

    async fn receive(&mut self, id: i64) -> Result<(), Status> {
        let Some(response) = self.responses.message().await? else {
            return Err(Status::unavailable("keep-alive stream closed"));
        };
        if response.id != id {
            return Err(Status::internal(format!(
                "keep-alive answered lease {:x}, not {id:x}",
                response.id
            )));
        }
        if response.ttl <= 0 {
            return Err(Status::not_found(format!("lease {id:x} not found")));
        }
        Ok(())
    }
}
