//! ferrocd: an etcd-compatible key-value store.
//!
//! Layers, each knowing only the one below: [`api`] (gRPC services, etcd's
//! errors and headers) -> [`raft`] (consensus, log, state machine) ->
//! [`kv`] (etcd's KV semantics) -> [`mvcc`] (revisions on sled).

pub mod alarm;
pub mod allocator;
pub mod api;
pub mod auth;
pub mod authority;
pub mod bbolt;
pub mod coalesce;
pub mod config;
pub mod corrupt;
pub mod etcd_snapshot;
pub mod http;
pub mod ids;
pub mod kv;
pub mod lease;
pub mod metrics;
pub mod mvcc;
pub mod quota;
pub mod raft;
pub mod server;
pub mod snapshot;
pub mod tls;
pub mod watch;
