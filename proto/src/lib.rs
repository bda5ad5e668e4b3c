//! Generated protobuf / gRPC code for ferrocd.
//!
//! * [`mvccpb`], [`authpb`], [`etcdserverpb`]: the etcd v3 client API, wire
//!   compatible with etcd v3.6 (same packages, services, messages and field
//!   numbers), so unmodified etcd clients can talk to ferrocd.
//! * [`ferrocdpb`]: ferrocd's own messages (raft log commands) and the peer
//!   protocol between members.
//!
//! Sources live in `proto/etcd/*.proto` and `proto/ferrocd/*.proto` and are
//! compiled at build time with `protox` + `tonic-prost-build` (no system
//! `protoc` required). The modules must stay siblings at the crate root:
//! generated code refers across packages via `super::<package>::Type`.

/// etcd MVCC data model: `KeyValue`, `Event`.
#[allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

/// etcd auth data model: `User`, `Role`, `Permission`.
#[allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
pub mod authpb {
    tonic::include_proto!("authpb");
}

/// etcd v3 RPC messages and the KV, Watch, Lease, Cluster, Maintenance and
/// Auth services (clients in `*_client`, servers in `*_server`).
#[allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

/// ferrocd internal messages: `InternalRequest`, the raft log entry payload,
/// and the peer protocol (`peer_client`, `peer_server`).
#[allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
pub mod ferrocdpb {
    tonic::include_proto!("ferrocdpb");
}
