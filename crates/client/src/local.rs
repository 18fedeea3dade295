//! The store interface served by a member in the same process: calls go
//! straight to the member, and watchers are registered with its watch hub.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;
use futures::future::BoxFuture;
use proto::etcdserverpb::{
    DeleteRangeRequest, DeleteRangeResponse, MemberListResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, StatusResponse, TxnRequest, TxnResponse,
};
use store::watch::{WatchHub, WatchMessage, WatchQueue, WatchReceiver, WatchSpec};
use store::{Member, StoreError};

use crate::{ClientError, Kv, WatchRequest, WatchStream, WatchUpdate};

/// A member of this process, as a [`Kv`].
#[derive(Clone)]
pub struct Local {
    member: Arc<Member>,
}

impl Local {
    pub fn new(member: Arc<Member>) -> Local {
        Local { member }
    }

    fn error(&self, error: StoreError) -> ClientError {
        match error {
            StoreError::Compacted => ClientError::Compacted {
                compact_revision: self.member.compact_revision(),
            },
            StoreError::FutureRevision => ClientError::FutureRevision,
            StoreError::NoLeader
            | StoreError::Timeout
            | StoreError::Stopped
            | StoreError::NotLeader
            | StoreError::Unhealthy => ClientError::Unavailable(error.to_string()),
            other => ClientError::Refused(other.to_string()),
        }
    }
}

impl Kv for Local {
    fn range(&self, request: RangeRequest) -> BoxFuture<'_, Result<RangeResponse, ClientError>> {
        Box::pin(async move {
            self.member
                .range(request)
                .await
                .map_err(|error| self.error(error))
        })
    }

    fn put(&self, request: PutRequest) -> BoxFuture<'_, Result<PutResponse, ClientError>> {
        Box::pin(async move {
            self.member
                .put(request)
                .await
                .map_err(|error| self.error(error))
        })
    }

    fn delete_range(
        &self,
        request: DeleteRangeRequest,
    ) -> BoxFuture<'_, Result<DeleteRangeResponse, ClientError>> {
        Box::pin(async move {
            self.member
                .delete_range(request)
                .await
                .map_err(|error| self.error(error))
        })
    }

    fn txn(&self, request: TxnRequest) -> BoxFuture<'_, Result<TxnResponse, ClientError>> {
        Box::pin(async move {
            self.member
                .txn(request)
                .await
                .map_err(|error| self.error(error))
        })
    }

    fn watch(&self, request: WatchRequest) -> BoxFuture<'_, Result<WatchStream, ClientError>> {
        Box::pin(async move {
            let hub = Arc::clone(self.member.watch_hub());
            let (queue, receiver) = WatchQueue::new();
            let spec = WatchSpec {
                key: request.key.into(),
                range_end: request.range_end.into(),
                start_revision: request.start_revision,
                prev_kv: request.prev_kv,
                no_put: false,
                no_delete: false,
            };
            let (id, _) = hub.watch(spec, &queue);
            let stream: WatchStream = Box::pin(LocalWatch {
                hub,
                id,
                receiver,
                ended: false,
            });
            Ok(stream)
        })
    }

    fn member_list(&self) -> BoxFuture<'_, Result<MemberListResponse, ClientError>> {
        Box::pin(async move {
            Ok(MemberListResponse {
                header: Some(self.member.current_header()),
                members: self.member.members(),
            })
        })
    }

    fn status(&self) -> BoxFuture<'_, Result<StatusResponse, ClientError>> {
        Box::pin(async move { Ok(self.member.status_response()) })
    }
}

/// One hub watcher's deliveries; dropping it cancels the watcher.
struct LocalWatch {
    hub: Arc<WatchHub>,
    id: u64,
    receiver: WatchReceiver,
    ended: bool,
}

impl Stream for LocalWatch {
    type Item = Result<WatchUpdate, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let Some(delivery) = std::task::ready!(self.receiver.poll_recv(cx)) else {
            self.ended = true;
            return Poll::Ready(Some(Err(ClientError::Unavailable(
                "the store stopped".to_string(),
            ))));
        };
        Poll::Ready(Some(match delivery.message {
            WatchMessage::Events { revision, events } => {
                Ok(WatchUpdate::Events { revision, events })
            }
            WatchMessage::Progress { revision } => Ok(WatchUpdate::Progress { revision }),
            WatchMessage::Compacted { compact_revision } => {
                self.ended = true;
                Err(ClientError::Compacted { compact_revision })
            }
        }))
    }
}

impl Drop for LocalWatch {
    fn drop(&mut self) {
        self.hub.cancel(self.id);
    }
}
