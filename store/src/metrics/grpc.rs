//! Per-method gRPC metrics, as go-grpc-prometheus records them for etcd:
//! `grpc_server_started_total`, `grpc_server_handled_total` (with the final
//! status code), `grpc_server_msg_received_total`, `grpc_server_msg_sent_total`
//! and, with `--metrics extensive`, `grpc_server_handling_seconds`; plus
//! etcd's client byte counters.
//!
//! A tower layer around the client router counts them. A call is started
//! when its request arrives and handled when its response body ends (the
//! status comes in the trailers, or in the headers of a trailers-only
//! answer); a call whose client went away first (a watch closed by its
//! client, a cancelled request) is handled as `Canceled`. Messages and
//! their bytes are counted from the gRPC framing (a 5-byte prefix with the
//! length) of the bodies as they stream, so a watch counts each response.
//!
//! Every known method's counters are created up front, as
//! go-grpc-prometheus does, and looked up by path with no lock on the way.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, Response};
use http_body::{Frame, SizeHint};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
};

use super::get;

/// How a method streams, as go-grpc-prometheus labels it.
#[derive(Clone, Copy)]
enum Kind {
    Unary,
    ServerStream,
    BidiStream,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Unary => "unary",
            Kind::ServerStream => "server_stream",
            Kind::BidiStream => "bidi_stream",
        }
    }
}

/// The etcd v3 methods ferrocd serves: (service, method, kind).
const METHODS: &[(&str, &str, Kind)] = &[
    ("etcdserverpb.KV", "Range", Kind::Unary),
    ("etcdserverpb.KV", "Put", Kind::Unary),
    ("etcdserverpb.KV", "DeleteRange", Kind::Unary),
    ("etcdserverpb.KV", "Txn", Kind::Unary),
    ("etcdserverpb.KV", "Compact", Kind::Unary),
    ("etcdserverpb.Watch", "Watch", Kind::BidiStream),
    ("etcdserverpb.Lease", "LeaseGrant", Kind::Unary),
    ("etcdserverpb.Lease", "LeaseRevoke", Kind::Unary),
    ("etcdserverpb.Lease", "LeaseKeepAlive", Kind::BidiStream),
    ("etcdserverpb.Lease", "LeaseTimeToLive", Kind::Unary),
    ("etcdserverpb.Lease", "LeaseLeases", Kind::Unary),
    ("etcdserverpb.Cluster", "MemberAdd", Kind::Unary),
    ("etcdserverpb.Cluster", "MemberRemove", Kind::Unary),
    ("etcdserverpb.Cluster", "MemberUpdate", Kind::Unary),
    ("etcdserverpb.Cluster", "MemberList", Kind::Unary),
    ("etcdserverpb.Cluster", "MemberPromote", Kind::Unary),
    ("etcdserverpb.Maintenance", "Alarm", Kind::Unary),
    ("etcdserverpb.Maintenance", "Status", Kind::Unary),
    ("etcdserverpb.Maintenance", "Defragment", Kind::Unary),
    ("etcdserverpb.Maintenance", "Hash", Kind::Unary),
    ("etcdserverpb.Maintenance", "HashKV", Kind::Unary),
    ("etcdserverpb.Maintenance", "Snapshot", Kind::ServerStream),
    ("etcdserverpb.Maintenance", "MoveLeader", Kind::Unary),
    ("etcdserverpb.Auth", "AuthEnable", Kind::Unary),
    ("etcdserverpb.Auth", "AuthDisable", Kind::Unary),
    ("etcdserverpb.Auth", "Authenticate", Kind::Unary),
    ("etcdserverpb.Auth", "UserAdd", Kind::Unary),
    ("etcdserverpb.Auth", "UserGet", Kind::Unary),
    ("etcdserverpb.Auth", "UserList", Kind::Unary),
    ("etcdserverpb.Auth", "UserDelete", Kind::Unary),
    ("etcdserverpb.Auth", "UserChangePassword", Kind::Unary),
    ("etcdserverpb.Auth", "UserGrantRole", Kind::Unary),
    ("etcdserverpb.Auth", "UserRevokeRole", Kind::Unary),
    ("etcdserverpb.Auth", "RoleAdd", Kind::Unary),
    ("etcdserverpb.Auth", "RoleGet", Kind::Unary),
    ("etcdserverpb.Auth", "RoleList", Kind::Unary),
    ("etcdserverpb.Auth", "RoleDelete", Kind::Unary),
    ("etcdserverpb.Auth", "RoleGrantPermission", Kind::Unary),
    ("etcdserverpb.Auth", "RoleRevokePermission", Kind::Unary),
];

/// gRPC's status codes by number, named as Go's `codes.Code.String()`.
const CODES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

const CANCELED: usize = 1;
const UNKNOWN: usize = 2;

/// One method's counters, resolved once.
struct Method {
    started: IntCounter,
    received: IntCounter,
    sent: IntCounter,
    handled: Vec<IntCounter>,
    handling: Histogram,
}

/// The gRPC families and every known method's counters.
pub struct GrpcMetrics {
    handling: HistogramVec,
    handling_on: AtomicBool,
    methods: HashMap<String, Method>,
}

impl GrpcMetrics {
    pub(super) fn new(registry: &Registry) -> Self {
        let labels = ["grpc_type", "grpc_service", "grpc_method"];
        let vec = |name: &str, help: &str, labels: &[&str]| {
            super::registered(
                registry,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let started = vec(
            "grpc_server_started_total",
            "Total number of RPCs started on the server.",
            &labels,
        );
        let handled = vec(
            "grpc_server_handled_total",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            &["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
        );
        let received = vec(
            "grpc_server_msg_received_total",
            "Total number of RPC stream messages received on the server.",
            &labels,
        );
        let sent = vec(
            "grpc_server_msg_sent_total",
            "Total number of gRPC stream messages sent by the server.",
            &labels,
        );
        // Registered only with `--metrics extensive`.
        let handling = HistogramVec::new(
            HistogramOpts::new(
                "grpc_server_handling_seconds",
                "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
            ),
            &labels,
        )
        .expect("valid metric");
        let methods = METHODS
            .iter()
            .map(|&(service, method, kind)| {
                let l = [kind.label(), service, method];
                let m = Method {
                    started: started.with_label_values(&l),
                    received: received.with_label_values(&l),
                    sent: sent.with_label_values(&l),
                    handled: CODES
                        .iter()
                        .map(|code| handled.with_label_values(&[l[0], l[1], l[2], code]))
                        .collect(),
                    handling: handling.with_label_values(&l),
                };
                (format!("/{service}/{method}"), m)
            })
            .collect();
        GrpcMetrics {
            handling,
            handling_on: AtomicBool::new(false),
            methods,
        }
    }

    pub(super) fn enable_handling_histogram(&self, registry: &Registry) {
        registry
            .register(Box::new(self.handling.clone()))
            .expect("grpc_server_handling_seconds registered once");
        self.handling_on.store(true, Ordering::Relaxed);
    }
}

/// The layer counting gRPC calls; put it around the client router.
#[derive(Clone, Copy, Default)]
pub struct GrpcMetricsLayer;

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = Counted<S>;

    fn layer(&self, inner: S) -> Counted<S> {
        Counted { inner }
    }
}

/// A service whose gRPC calls are counted.
#[derive(Clone)]
pub struct Counted<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S> tower::Service<Request<Body>> for Counted<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let Some(method) = get().grpc.methods.get(req.uri().path()) else {
            return Box::pin(self.inner.call(req));
        };
        method.started.inc();
        let mut call = Call {
            method,
            start: Instant::now(),
            code: None,
        };
        let req = req.map(|body| {
            Body::new(Counting {
                inner: body,
                framing: Framing::default(),
                direction: Direction::In(method),
            })
        });
        let answer = self.inner.call(req);
        Box::pin(async move {
            // Dropped before answering (the client went away): `call`
            // records the call as cancelled.
            let resp = answer.await?;
            call.code = status_in(resp.headers());
            Ok(resp.map(|body| {
                Body::new(Counting {
                    inner: body,
                    framing: Framing::default(),
                    direction: Direction::Out(call),
                })
            }))
        })
    }
}

/// A call in progress; recorded as handled when dropped, with the status
/// seen (none seen: the client cancelled it).
struct Call {
    method: &'static Method,
    start: Instant,
    code: Option<usize>,
}

impl Drop for Call {
    fn drop(&mut self) {
        let code = self.code.unwrap_or(CANCELED);
        self.method.handled[code].inc();
        if get().grpc.handling_on.load(Ordering::Relaxed) {
            self.method
                .handling
                .observe(self.start.elapsed().as_secs_f64());
        }
    }
}

/// The status code in `grpc-status`, if there is one.
fn status_in(headers: &HeaderMap) -> Option<usize> {
    let value = headers.get("grpc-status")?;
    let code = tonic::Code::from_bytes(value.as_bytes()) as usize;
    Some(if code < CODES.len() { code } else { UNKNOWN })
}

/// Which way a body flows, and what its messages count toward.
enum Direction {
    In(&'static Method),
    Out(Call),
}

/// A body whose gRPC messages are counted as they pass.
struct Counting {
    inner: Body,
    framing: Framing,
    direction: Direction,
}

impl http_body::Body for Counting {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                let (messages, bytes) = this.framing.feed(data);
                let m = get();
                match &this.direction {
                    Direction::In(method) => {
                        method.received.inc_by(messages);
                        m.client_received_bytes.inc_by(bytes);
                    }
                    Direction::Out(call) => {
                        call.method.sent.inc_by(messages);
                        m.client_sent_bytes.inc_by(bytes);
                    }
                }
            } else if let (Some(trailers), Direction::Out(call)) =
                (frame.trailers_ref(), &mut this.direction)
            {
                if let Some(code) = status_in(trailers) {
                    call.code = Some(code);
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Where a body is in gRPC's length-prefixed framing.
#[derive(Default)]
struct Framing {
    /// Bytes of the current 5-byte prefix seen so far.
    prefix: [u8; 5],
    prefix_len: usize,
    /// Bytes of the current message still to come.
    left: u64,
}

impl Framing {
    /// Reads `data`; returns the messages that began in it and their
    /// payload bytes.
    fn feed(&mut self, mut data: &[u8]) -> (u64, u64) {
        let (mut messages, mut bytes) = (0, 0);
        while !data.is_empty() {
            if self.left > 0 {
                let take = data.len().min(self.left as usize);
                self.left -= take as u64;
                data = &data[take..];
                continue;
            }
            let take = data.len().min(5 - self.prefix_len);
            self.prefix[self.prefix_len..self.prefix_len + take].copy_from_slice(&data[..take]);
            self.prefix_len += take;
            data = &data[take..];
            if self.prefix_len == 5 {
                let len = u32::from_be_bytes([
                    self.prefix[1],
                    self.prefix[2],
                    self.prefix[3],
                    self.prefix[4],
                ]);
                messages += 1;
                bytes += u64::from(len);
                self.left = u64::from(len);
                self.prefix_len = 0;
            }
        }
        (messages, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(len: u32) -> Vec<u8> {
        let mut m = vec![0];
        m.extend_from_slice(&len.to_be_bytes());
        m.extend(std::iter::repeat_n(7u8, len as usize));
        m
    }

    #[test]
    fn framing_counts_messages_split_across_chunks() {
        let mut all = message(3);
        all.extend(message(0));
        all.extend(message(300));
        let mut f = Framing::default();
        let mut total = (0, 0);
        // Chunks that cut prefixes and payloads anywhere.
        for chunk in all.chunks(2) {
            let (m, b) = f.feed(chunk);
            total = (total.0 + m, total.1 + b);
        }
        assert_eq!(total, (3, 303));
        assert_eq!(f.feed(&message(10)), (1, 10));
    }

    #[test]
    fn every_method_has_a_handled_counter_per_code() {
        let g = &get().grpc;
        assert_eq!(g.methods.len(), METHODS.len());
        assert!(g.methods.values().all(|m| m.handled.len() == CODES.len()));
        assert!(g.methods.contains_key("/etcdserverpb.KV/Put"));
    }

    #[test]
    fn status_header_names_the_code() {
        let mut h = HeaderMap::new();
        assert_eq!(status_in(&h), None);
        h.insert("grpc-status", "5".parse().unwrap());
        assert_eq!(CODES[status_in(&h).unwrap()], "NotFound");
    }
}
