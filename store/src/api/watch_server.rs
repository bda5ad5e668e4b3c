//! The Watch service's gRPC endpoint. tonic's generated server fixes the
//! response type to `WatchResponse`, which owns its events, so each
//! watcher's stream would clone and encode every event again. This one
//! sends [`Outgoing`] responses, whose events the hub encoded once for all
//! watchers, with a codec that writes those bytes as they are. Requests
//! decode as the generated server decodes them.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use ferrocd_proto::etcdserverpb::{watch_server, WatchRequest};
use tonic::body::Body;
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic::codegen::{BoxFuture, StdError};
use tonic::server::NamedService;
use tonic::Status;
use tonic_prost::ProstDecoder;

use super::watch::WatchService;
use crate::watch::Outgoing;

/// The one method of the service.
const WATCH_PATH: &str = "/etcdserverpb.Watch/Watch";

/// The Watch service, ready to be added to a router.
#[derive(Clone)]
pub struct WatchServer {
    service: Arc<WatchService>,
    max_decoding_message_size: Option<usize>,
}

impl WatchServer {
    pub fn new(service: WatchService) -> Self {
        WatchServer {
            service: Arc::new(service),
            max_decoding_message_size: None,
        }
    }

    /// Refuses requests larger than `limit` bytes (tonic's default is 4 MiB).
    pub fn max_decoding_message_size(mut self, limit: usize) -> Self {
        self.max_decoding_message_size = Some(limit);
        self
    }
}

impl NamedService for WatchServer {
    const NAME: &'static str = watch_server::SERVICE_NAME;
}

impl<B> tower::Service<http::Request<B>> for WatchServer
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != WATCH_PATH {
            return Box::pin(async { Ok(Status::unimplemented("").into_http()) });
        }
        let service = self.service.clone();
        let max_decoding = self.max_decoding_message_size;
        Box::pin(async move {
            let method = tower::service_fn(move |request| {
                let service = service.clone();
                async move { service.watch(request).await }
            });
            let mut grpc = tonic::server::Grpc::new(WatchCodec)
                .apply_max_message_size_config(max_decoding, None);
            Ok(grpc.streaming(method, req).await)
        })
    }
}

/// Decodes `WatchRequest`s with prost, encodes [`Outgoing`] responses.
#[derive(Clone, Copy)]
struct WatchCodec;

impl Codec for WatchCodec {
    type Encode = Outgoing;
    type Decode = WatchRequest;
    type Encoder = OutgoingEncoder;
    type Decoder = ProstDecoder<WatchRequest>;

    fn encoder(&mut self) -> OutgoingEncoder {
        OutgoingEncoder
    }

    fn decoder(&mut self) -> ProstDecoder<WatchRequest> {
        ProstDecoder::default()
    }
}

struct OutgoingEncoder;

impl Encoder for OutgoingEncoder {
    type Item = Outgoing;
    type Error = Status;

    fn encode(&mut self, item: Outgoing, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.reserve(item.encoded_len());
        item.encode(dst)
            .map_err(|e| Status::internal(format!("encoding a watch response: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_is_the_generated_services_watch_method() {
        assert_eq!(WATCH_PATH, format!("/{}/Watch", watch_server::SERVICE_NAME));
    }
}
