//! KV Range over gRPC with its response encoded straight from the stored
//! records (`mvcc::EncodedRange`) instead of through a `RangeResponse` of
//! `KeyValue`s that prost then encodes.
//!
//! A range over a whole store (etcdctl get "" --prefix) answered the usual way
//! holds a copy of every value, a `KeyValue` per key and an encoding buffer
//! grown by doubling, all at once: measured with a heap profile, most of a
//! member's peak memory (BENCHMARKS.md). Here the encoded key-values are
//! gathered once and copied once into a buffer of the exact size.
//!
//! [`KvRoutes`] sits where the generated `KvServer` would: it answers
//! `/etcdserverpb.KV/Range` itself and passes every other call through. The
//! wire format is the same (the tests check byte for byte against prost).

use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use proto::etcdserverpb::kv_server::KvServer;
use proto::etcdserverpb::{RangeRequest, ResponseHeader};
use store::Member;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{Body, Service, StdError};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};

use crate::{KvService, errors, validate};

const RANGE_PATH: &str = "/etcdserverpb.KV/Range";

/// A range response ready to send.
pub struct EncodedResponse {
    range: mvcc::EncodedRange,
    header: ResponseHeader,
}

/// Decodes `RangeRequest`s as prost does; encodes [`EncodedResponse`]s into
/// a buffer reserved at their exact size.
struct RangeCodec;

struct RangeEncoder;

impl Encoder for RangeEncoder {
    type Item = EncodedResponse;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, buf: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        buf.reserve(item.range.encoded_len(&item.header));
        item.range.encode(&item.header, buf);
        Ok(())
    }
}

impl Codec for RangeCodec {
    type Encode = EncodedResponse;
    type Decode = RangeRequest;
    type Encoder = RangeEncoder;
    type Decoder = RangeDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        RangeEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        RangeDecoder(PhantomData)
    }
}

struct RangeDecoder(PhantomData<RangeRequest>);

impl Decoder for RangeDecoder {
    type Item = RangeRequest;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Self::Error> {
        prost::Message::decode(buf)
            .map(Some)
            .map_err(|error| Status::internal(error.to_string()))
    }
}

#[derive(Clone)]
struct RangeHandler {
    member: Arc<Member>,
}

impl UnaryService<RangeRequest> for RangeHandler {
    type Response = EncodedResponse;
    type Future = BoxFuture<'static, Result<Response<EncodedResponse>, Status>>;

    fn call(&mut self, request: Request<RangeRequest>) -> Self::Future {
        let member = self.member.clone();
        Box::pin(async move {
            let request = request.into_inner();
            validate::range(&request)?;
            let (range, header) = member
                .range_encoded(request)
                .await
                .map_err(errors::from_store)?;
            Ok(Response::new(EncodedResponse { range, header }))
        })
    }
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
        let handler = RangeHandler {
            member: self.member.clone(),
        };
        let max_decoding = self.max_decoding_message_size;
        Box::pin(async move {
            let mut grpc = Grpc::new(RangeCodec)
                .apply_max_message_size_config(Some(max_decoding), Some(usize::MAX));
            Ok(grpc.unary(handler, request).await)
        })
    }
}
