//! KV Range over gRPC with its response encoded straight from the stored
//! records (`mvcc::EncodedRange`) instead of through a `RangeResponse` of
//! `KeyValue`s that prost then encodes.
//!
//! A range over a whole store (etcdctl get "" --prefix) answered the usual way
//! holds a copy of every value, a `KeyValue` per key and an encoding buffer
//! grown by doubling, all at once: measured with a heap profile, most of a
//! member's peak memory (BENCHMARKS.md). Here the key-values are encoded once,
//! in chunks, and the chunks go to HTTP/2 as they are: no contiguous copy of
//! the message is made (tonic's encoder would copy it into its own buffer),
//! and each chunk is freed once it has been written.
//!
//! [`KvRoutes`] sits where the generated `KvServer` would: it answers
//! `/etcdserverpb.KV/Range` itself and passes every other call through. The
//! request is decoded by tonic's `Streaming`, errors are answered with
//! tonic's `Status::into_http`, as tonic's unary path does; only the response
//! body is ours. The wire format is the same (the tests check byte for byte
//! against prost).

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::StreamBody;
use hyper::body::Frame;
use proto::etcdserverpb::kv_server::KvServer;
use proto::etcdserverpb::{RangeRequest, ResponseHeader};
use store::Member;
use tonic::Status;
use tonic::codec::{DecodeBuf, Decoder, Streaming};
use tonic::codegen::{Body, Service, StdError};
use tonic::metadata::MetadataValue;
use tonic::server::NamedService;

use crate::{KvService, errors, grpc, validate};

const RANGE_PATH: &str = "/etcdserverpb.KV/Range";

/// Decodes `RangeRequest`s as prost does.
struct RangeDecoder;

impl Decoder for RangeDecoder {
    type Item = RangeRequest;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Self::Error> {
        prost::Message::decode(buf)
            .map(Some)
            .map_err(|error| Status::internal(error.to_string()))
    }
}

/// Refuses a compressed request as tonic does when no compression is enabled.
pub(crate) fn check_request_encoding(headers: &http::HeaderMap) -> Result<(), Status> {
    match headers.get("grpc-encoding") {
        None => Ok(()),
        Some(encoding) if encoding.as_bytes() == b"identity" => Ok(()),
        Some(encoding) => {
            let mut status = Status::unimplemented(format!(
                "Content is compressed with `{}` which isn't supported",
                String::from_utf8_lossy(encoding.as_bytes())
            ));
            status.metadata_mut().insert(
                "grpc-accept-encoding",
                MetadataValue::from_static("identity"),
            );
            Err(status)
        }
    }
}

/// Answers one unary Range call: the response body is the message prefix,
/// then the pieces of `mvcc::EncodedRange`, then the trailers.
async fn answer_range<B>(
    member: Arc<Member>,
    max_decoding_message_size: usize,
    request: http::Request<B>,
) -> Result<http::Response<tonic::body::Body>, Status>
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    check_request_encoding(request.headers())?;
    let credentials = crate::auth::Credentials::from_parts(
        request.headers(),
        request.extensions().get::<Arc<crate::conn::ConnInfo>>(),
    );
    let mut incoming = Streaming::new_request(
        RangeDecoder,
        request.into_body(),
        None,
        Some(max_decoding_message_size),
    );
    let request = incoming
        .message()
        .await?
        .ok_or_else(|| Status::internal("Missing request message."))?;
    incoming.trailers().await?;
    drop(incoming);

    validate::range(&request)?;
    let caller = credentials.caller(&member).await?;
    crate::auth::check(
        &member,
        &caller,
        &request.key,
        &request.range_end,
        store::auth::Access::Read,
    )?;
    let (range, header) = member
        .range_encoded(request)
        .await
        .map_err(errors::from_store)?;
    respond(range, &header)
}

/// The HTTP response for a range: the gRPC message prefix, the pieces of the
/// message as they are, then the trailers of a successful call.
fn respond(
    range: mvcc::EncodedRange,
    header: &ResponseHeader,
) -> Result<http::Response<tonic::body::Body>, Status> {
    let prefix = grpc::message_prefix(range.encoded_len(header))?.to_vec();
    let trailers = grpc::ok_trailers();
    let frames = std::iter::once(prefix)
        .chain(range.into_pieces(header))
        .map(|piece| Ok::<_, Status>(Frame::data(Bytes::from(piece))))
        .chain(std::iter::once(Ok(Frame::trailers(trailers))));
    let body = tonic::body::Body::new(StreamBody::new(futures::stream::iter(frames)));
    let mut response = http::Response::new(body);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    Ok(response)
}

/// The KV service: Range here, everything else through the generated server.
#[derive(Clone)]
pub struct KvRoutes {
    kv: KvServer<KvService>,
    member: Arc<Member>,
    max_decoding_message_size: usize,
}

impl KvRoutes {
    pub fn new(kv: KvServer<KvService>, member: Arc<Member>, max_message: usize) -> KvRoutes {
        KvRoutes {
            kv,
            member,
            max_decoding_message_size: max_message,
        }
    }
}

impl NamedService for KvRoutes {
    const NAME: &'static str = <KvServer<KvService> as NamedService>::NAME;
}

impl<B> Service<http::Request<B>> for KvRoutes
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _context: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != RANGE_PATH {
            return self.kv.call(request);
        }
        let member = self.member.clone();
        let max_decoding = self.max_decoding_message_size;
        Box::pin(async move {
            Ok(answer_range(member, max_decoding, request)
                .await
                .unwrap_or_else(Status::into_http))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use http_body_util::BodyExt;
    use proto::etcdserverpb::{PutRequest, RangeRequest, RangeResponse, ResponseHeader};

    use super::{check_request_encoding, respond};

    /// A store of its own in the temporary directory, removed on drop.
    struct Store {
        directory: std::path::PathBuf,
        mvcc: mvcc::Mvcc,
    }

    impl Store {
        fn new(name: &str) -> Store {
            let directory =
                std::env::temp_dir().join(format!("shoal-api-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&directory);
            std::fs::create_dir_all(&directory).unwrap();
            let db = Arc::new(mvcc::Db::open(&directory.join("db"), 4 << 20).unwrap());
            let mvcc = mvcc::Mvcc::open(db).unwrap();
            Store { directory, mvcc }
        }

        fn put(&self, key: String, value: Vec<u8>, lease: i64) {
            let wtx = self.mvcc.database().begin_write().unwrap();
            {
                let mut writer = self.mvcc.writer(&wtx);
                writer
                    .put(&PutRequest {
                        key: key.into(),
                        value: value.into(),
                        lease,
                        ..Default::default()
                    })
                    .unwrap();
            }
            wtx.commit().unwrap();
            self.mvcc.publish();
        }
    }

    impl Drop for Store {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.directory);
        }
    }

    /// The body sent for a range is one gRPC message whose bytes are prost's
    /// encoding of the same `RangeResponse`, then the trailers of a
    /// successful call.
    #[tokio::test]
    async fn a_range_is_sent_as_prost_encodes_it() {
        let store = Store::new("encoded-range");
        for n in 0..2500_u32 {
            let value = vec![b'a' + (n % 26) as u8; (n as usize * 41) % 2000];
            store.put(format!("key{n:05}"), value, if n % 5 == 0 { 7 } else { 0 });
        }
        let header = ResponseHeader {
            cluster_id: 11,
            member_id: 12,
            revision: 0,
            raft_term: 3,
        };
        for request in [
            RangeRequest {
                key: Bytes::from_static(b"\0"),
                range_end: Bytes::from_static(b"\0"),
                ..Default::default()
            },
            RangeRequest {
                key: Bytes::from_static(b"key00100"),
                range_end: Bytes::from_static(b"key00200"),
                limit: 10,
                ..Default::default()
            },
            RangeRequest {
                key: Bytes::from_static(b"nothing"),
                ..Default::default()
            },
        ] {
            let mut expected: RangeResponse = store.mvcc.range(&request).unwrap();
            let header = ResponseHeader {
                revision: expected.header.as_ref().unwrap().revision,
                ..header
            };
            expected.header = Some(header);
            let expected = prost::Message::encode_to_vec(&expected);

            let encoded = store.mvcc.range_encoded(&request).unwrap();
            let response = respond(encoded, &header).unwrap();
            assert_eq!(response.headers()["content-type"], "application/grpc");
            let collected = response.into_body().collect().await.unwrap();
            let trailers = collected.trailers().cloned().unwrap();
            assert_eq!(trailers["grpc-status"], "0");
            assert!(trailers.get("grpc-message").is_none());
            let body = collected.to_bytes();
            assert_eq!(body[0], 0, "not compressed");
            let len = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
            assert_eq!(len, body.len() - 5);
            assert_eq!(&body[5..], &expected[..], "range {request:?}");
        }
    }

    #[test]
    fn compressed_requests_are_refused_as_tonic_refuses_them() {
        let mut headers = http::HeaderMap::new();
        assert!(check_request_encoding(&headers).is_ok());
        headers.insert("grpc-encoding", http::HeaderValue::from_static("identity"));
        assert!(check_request_encoding(&headers).is_ok());
        headers.insert("grpc-encoding", http::HeaderValue::from_static("gzip"));
        let status = check_request_encoding(&headers).unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unimplemented);
        assert_eq!(
            status.message(),
            "Content is compressed with `gzip` which isn't supported"
        );
        assert_eq!(
            status.metadata().get("grpc-accept-encoding").unwrap(),
            "identity"
        );
    }
}
