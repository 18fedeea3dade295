//! The store interface over etcd's v3 gRPC API, for a process that holds no
//! store member: a machine that runs only an agent, or any etcd 3.4+ cluster.

use futures::StreamExt as _;
use futures::future::BoxFuture;
use proto::etcdserverpb::cluster_client::ClusterClient;
use proto::etcdserverpb::kv_client::KvClient;
use proto::etcdserverpb::maintenance_client::MaintenanceClient;
use proto::etcdserverpb::watch_client::WatchClient;
use proto::etcdserverpb::watch_request::RequestUnion;
use proto::etcdserverpb::{
    DeleteRangeRequest, DeleteRangeResponse, MemberListRequest, MemberListResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, StatusRequest, StatusResponse, TxnRequest,
    TxnResponse, WatchCreateRequest,
};
use tonic::transport::{Channel, Endpoint};

use crate::{ClientError, Kv, WatchRequest, WatchStream, WatchUpdate};

/// A store reached over the network, as a [`Kv`]. Calls are spread over the
/// endpoints given; a connection is made on first use and remade when lost.
#[derive(Clone)]
pub struct Remote {
    channels: std::sync::Arc<Vec<Channel>>,
    /// The channel of the next call, round-robin over `channels`.
    next: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    user: Option<std::sync::Arc<User>>,
}

/// A user to call as (etcd's `--user name:password`): the client
/// authenticates on first use and sends the token with every call, and
/// authenticates again when the store no longer takes the token.
struct User {
    name: String,
    password: String,
    token: tokio::sync::Mutex<Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>>,
}

/// Runs one call with the user's token, once more with a new token if the
/// store refused the old one (expired, or issued before an auth change).
macro_rules! with_token {
    ($remote:expr, $request:expr, |$call:ident| $body:expr) => {{
        let mut attempt = 0;
        loop {
            let $call = $remote.authorized($request.clone()).await?;
            match $body {
                Ok(response) => break Ok(response.into_inner()),
                Err(status) if attempt == 0 && stale_token(&status) && $remote.user.is_some() => {
                    attempt += 1;
                    $remote.forget_token().await;
                }
                Err(status) => break Err(error(status)),
            }
        }
    }};
}

/// The errors after which etcd's clients authenticate again.
fn stale_token(status: &tonic::Status) -> bool {
    let message = status.message();
    message == "etcdserver: invalid auth token"
        || message == "etcdserver: revision of auth store is old"
}

impl Remote {
    /// A client of the stores at `endpoints` (`http://host:port`). Connects
    /// lazily: an unreachable store shows as `Unavailable` on the first call.
    pub fn new(endpoints: &[String]) -> Result<Remote, ClientError> {
        let mut parsed = Vec::new();
        for endpoint in endpoints {
            let endpoint = Endpoint::from_shared(endpoint.clone()).map_err(|error| {
                ClientError::Refused(format!("invalid store endpoint {endpoint:?}: {error}"))
            })?;
            parsed.push(endpoint.tcp_nodelay(true));
        }
        if parsed.is_empty() {
            return Err(ClientError::Refused("no store endpoint given".to_string()));
        }
        let channel = if parsed.len() == 1 {
            parsed.remove(0).connect_lazy()
        } else {
            Channel::balance_list(parsed.into_iter())
        };
        Ok(Remote::over(vec![channel]))
    }

    /// A client of the stores at `endpoints` (`https://host:port`) over TLS:
    /// the servers checked against `files.ca_file`, the client certificate
    /// offered to servers under `--client-cert-auth`. Calls go round-robin
    /// over one lazily made connection per endpoint. Call it inside a
    /// tokio runtime, as [`Remote::new`].
    pub fn with_tls(
        endpoints: &[String],
        files: &crate::tls::ClientTlsFiles,
    ) -> Result<Remote, ClientError> {
        const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
        let config = crate::tls::client_config(files)?;
        let mut channels = Vec::new();
        for endpoint in endpoints {
            if !endpoint.starts_with("https://") {
                return Err(ClientError::Refused(format!(
                    "store endpoint {endpoint:?}: TLS needs an https:// URL"
                )));
            }
            let parsed = Endpoint::from_shared(endpoint.clone()).map_err(|error| {
                ClientError::Refused(format!("invalid store endpoint {endpoint:?}: {error}"))
            })?;
            let connector = crate::tls::TlsConnector::new(config.clone(), CONNECT_TIMEOUT);
            channels.push(parsed.connect_with_connector_lazy(connector));
        }
        if channels.is_empty() {
            return Err(ClientError::Refused("no store endpoint given".to_string()));
        }
        Ok(Remote::over(channels))
    }

    fn over(channels: Vec<Channel>) -> Remote {
        Remote {
            channels: std::sync::Arc::new(channels),
            next: std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            user: None,
        }
    }

    fn channel(&self) -> Channel {
        let channel_idx =
            self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.channels.len();
        self.channels[channel_idx].clone()
    }

    /// The same stores, called as `name` with `password`.
    pub fn with_user(mut self, name: &str, password: &str) -> Remote {
        self.user = Some(std::sync::Arc::new(User {
            name: name.to_string(),
            password: password.to_string(),
            token: tokio::sync::Mutex::new(None),
        }));
        self
    }

    /// `message` as a call carrying the user's token (authenticating first
    /// if there is none yet).
    async fn authorized<T>(&self, message: T) -> Result<tonic::Request<T>, ClientError> {
        let mut request = tonic::Request::new(message);
        let Some(user) = &self.user else {
            return Ok(request);
        };
        let mut token = user.token.lock().await;
        if token.is_none() {
            let mut auth = proto::etcdserverpb::auth_client::AuthClient::new(self.channel());
            let response = auth
                .authenticate(proto::etcdserverpb::AuthenticateRequest {
                    name: user.name.clone(),
                    password: user.password.clone(),
                })
                .await
                .map_err(error)?
                .into_inner();
            let value = response.token.parse().map_err(|_| {
                ClientError::Refused("the store sent a token that is not ASCII".to_string())
            })?;
            *token = Some(value);
        }
        if let Some(value) = token.as_ref() {
            request.metadata_mut().insert("token", value.clone());
        }
        Ok(request)
    }

    async fn forget_token(&self) {
        if let Some(user) = &self.user {
            *user.token.lock().await = None;
        }
    }
}

/// etcd's status texts for the errors the platform parts tell apart.
fn error(status: tonic::Status) -> ClientError {
    let message = status.message();
    if message.contains("required revision has been compacted") {
        // etcd does not say where it compacted in a Range error.
        return ClientError::Compacted {
            compact_revision: 0,
        };
    }
    if message.contains("required revision is a future revision") {
        return ClientError::FutureRevision;
    }
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
            ClientError::Unavailable(message.to_string())
        }
        _ => ClientError::Refused(message.to_string()),
    }
}

impl Kv for Remote {
    fn range(&self, request: RangeRequest) -> BoxFuture<'_, Result<RangeResponse, ClientError>> {
        Box::pin(async move {
            let mut client = KvClient::new(self.channel());
            with_token!(self, request, |call| client.range(call).await)
        })
    }

    fn put(&self, request: PutRequest) -> BoxFuture<'_, Result<PutResponse, ClientError>> {
        Box::pin(async move {
            let mut client = KvClient::new(self.channel());
            with_token!(self, request, |call| client.put(call).await)
        })
    }

    fn delete_range(
        &self,
        request: DeleteRangeRequest,
    ) -> BoxFuture<'_, Result<DeleteRangeResponse, ClientError>> {
        Box::pin(async move {
            let mut client = KvClient::new(self.channel());
            with_token!(self, request, |call| client.delete_range(call).await)
        })
    }

    fn txn(&self, request: TxnRequest) -> BoxFuture<'_, Result<TxnResponse, ClientError>> {
        Box::pin(async move {
            let mut client = KvClient::new(self.channel());
            with_token!(self, request, |call| client.txn(call).await)
        })
    }

    fn watch(&self, request: WatchRequest) -> BoxFuture<'_, Result<WatchStream, ClientError>> {
        Box::pin(async move {
            let mut client = WatchClient::new(self.channel());
            let create = proto::etcdserverpb::WatchRequest {
                request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                    key: request.key.into(),
                    range_end: request.range_end.into(),
                    start_revision: request.start_revision,
                    prev_kv: request.prev_kv,
                    ..Default::default()
                })),
            };
            // The request stream stays open for the watcher's life: etcd
            // cancels a stream's watchers when the client half-closes it.
            let (sender, receiver) = tokio::sync::mpsc::channel(1);
            sender
                .send(create)
                .await
                .map_err(|_| ClientError::Unavailable("watch request not sent".to_string()))?;
            let requests = self.authorized(tokio_stream_from(receiver)).await?;
            let mut responses = client.watch(requests).await.map_err(error)?.into_inner();
            // The first answer confirms the watcher is registered.
            match responses.message().await.map_err(error)? {
                Some(created) if created.created && !created.canceled => {}
                Some(refused) => {
                    return Err(ClientError::Refused(refused.cancel_reason));
                }
                None => {
                    return Err(ClientError::Unavailable(
                        "the store closed the watch".to_string(),
                    ));
                }
            }
            let updates = futures::stream::unfold(
                (responses, Some(sender), false),
                |(mut responses, sender, ended)| async move {
                    if ended {
                        return None;
                    }
                    let item = match responses.message().await {
                        Ok(Some(response)) if response.compact_revision > 0 => {
                            Err(ClientError::Compacted {
                                compact_revision: response.compact_revision,
                            })
                        }
                        Ok(Some(response)) if response.canceled => {
                            Err(ClientError::Refused(response.cancel_reason))
                        }
                        Ok(Some(response)) => {
                            let revision = response.header.map_or(0, |header| header.revision);
                            Ok(if response.events.is_empty() {
                                WatchUpdate::Progress { revision }
                            } else {
                                WatchUpdate::Events {
                                    revision,
                                    events: response.events,
                                }
                            })
                        }
                        Ok(None) => Err(ClientError::Unavailable(
                            "the store closed the watch".to_string(),
                        )),
                        Err(status) => Err(error(status)),
                    };
                    let ended = item.is_err();
                    Some((item, (responses, sender, ended)))
                },
            );
            let stream: WatchStream = Box::pin(updates.fuse());
            Ok(stream)
        })
    }

    fn member_list(&self) -> BoxFuture<'_, Result<MemberListResponse, ClientError>> {
        Box::pin(async move {
            let mut client = ClusterClient::new(self.channel());
            Ok(client
                .member_list(MemberListRequest::default())
                .await
                .map_err(error)?
                .into_inner())
        })
    }

    fn status(&self) -> BoxFuture<'_, Result<StatusResponse, ClientError>> {
        Box::pin(async move {
            let mut client = MaintenanceClient::new(self.channel());
            Ok(client
                .status(StatusRequest {})
                .await
                .map_err(error)?
                .into_inner())
        })
    }
}

/// A request stream fed by `receiver`.
fn tokio_stream_from<T: Send + 'static>(
    receiver: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    })
}
