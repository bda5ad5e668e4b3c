//! Consensus: openraft over a sled log store and the MVCC state machine.
//!
//! Every write is a [`Request`] in the raft log; applying it yields a
//! [`Response`]. The log store fsyncs before acknowledging an append, and
//! the state machine records the last applied log id atomically with the
//! data, so a crash at any point loses no acknowledged write and applies
//! nothing twice.

// openraft's traits fix the error type (`StorageError`), large as it is.
#![allow(clippy::result_large_err)]

pub mod backend;
mod background;
pub mod elections;
pub mod force;
pub mod liveness;
mod log_store;
pub mod network;
pub mod peer_failure;
mod state_machine;
mod wal;

use ferrocd_proto::etcdserverpb::{
    AlarmResponse, CompactionResponse, DeleteRangeResponse, LeaseGrantResponse,
    LeaseRevokeResponse, PutResponse, TxnResponse,
};
use ferrocd_proto::ferrocdpb::{InternalBatch, InternalRequest};
use serde::{Deserialize, Serialize};

pub use backend::Backend;
pub use log_store::LogStore;
pub use network::{Network, PeerClients};
pub use state_machine::{applied_in, applied_record, StateMachine, APPLIED};

use crate::auth::AuthError;
use crate::kv::KvError;

openraft::declare_raft_types!(
    /// ferrocd's raft types: etcd requests in, etcd responses out.
    pub TypeConfig:
        D = Request,
        R = Vec<Response>,
        NodeId = u64,
        Node = Member,
        SnapshotData = tokio::fs::File,
);

/// What the cluster records about a member, in its raft membership: the
/// peer URLs it was added with, and the name and client URLs it publishes
/// once it starts (empty until then, as etcd lists a member not yet started).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
}

/// The raft handle.
pub type Raft = openraft::Raft<TypeConfig>;
/// A log id of this cluster.
pub type LogId = openraft::LogId<u64>;
/// A raft membership of this cluster.
pub type Membership = openraft::Membership<u64, Member>;
/// A storage error of this cluster.
pub type StorageError = openraft::StorageError<u64>;

/// One raft log entry: a batch of client requests, applied in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Request(#[serde(with = "proto_bytes")] pub InternalBatch);

impl Request {
    /// An entry holding just `req`.
    pub fn single(req: InternalRequest) -> Self {
        Request(InternalBatch {
            requests: vec![req],
        })
    }
}

/// The result of applying one request of a [`Request`] batch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Response {
    Put(#[serde(with = "proto_bytes")] PutResponse),
    DeleteRange(#[serde(with = "proto_bytes")] DeleteRangeResponse),
    Txn(#[serde(with = "proto_bytes")] TxnResponse),
    Compaction(#[serde(with = "proto_bytes")] CompactionResponse),
    LeaseGrant(#[serde(with = "proto_bytes")] LeaseGrantResponse),
    LeaseRevoke(#[serde(with = "proto_bytes")] LeaseRevokeResponse),
    /// The request was refused at apply time (deterministically).
    Failed(KvError),
    /// Entries with no client answer (blank, membership).
    None,
    // Later variants go last: responses cross between members (bincode
    // numbers variants in order).
    /// The sender lacks permission, or an auth change broke its rules
    /// (decided at apply, deterministically).
    Refused(AuthError),
    /// An auth change was applied.
    AuthDone,
    /// A user logged in: its token.
    Token(String),
    /// An Alarm request was applied.
    Alarm(#[serde(with = "proto_bytes")] AlarmResponse),
}

/// Serde for protobuf messages: their protobuf encoding as bytes.
mod proto_bytes {
    use prost::Message;
    use serde::{Deserializer, Serializer};

    pub fn serialize<M: Message, S: Serializer>(m: &M, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&m.encode_to_vec())
    }

    pub fn deserialize<'de, M: Message + Default, D: Deserializer<'de>>(
        d: D,
    ) -> Result<M, D::Error> {
        let bytes: Vec<u8> = serde_bytes::deserialize(d)?;
        M::decode(bytes.as_slice()).map_err(serde::de::Error::custom)
    }
}

fn io_error(e: impl std::error::Error + 'static) -> StorageError {
    openraft::StorageIOError::write(&e).into()
}

fn read_error(e: impl std::error::Error + 'static) -> StorageError {
    openraft::StorageIOError::read(&e).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrocd_proto::etcdserverpb::PutRequest;
    use ferrocd_proto::ferrocdpb::internal_request;

    #[test]
    fn requests_round_trip_through_bincode() {
        let req = Request::single(InternalRequest {
            id: 7,
            request: Some(internal_request::Request::Put(PutRequest {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                ..Default::default()
            })),
            ..Default::default()
        });
        let bytes = bincode::serialize(&req).unwrap();
        assert_eq!(bincode::deserialize::<Request>(&bytes).unwrap(), req);
        for resp in [
            Response::Failed(KvError::KeyNotFound),
            Response::Refused(AuthError::PermissionDenied),
            Response::Token("abcdefghijklmnop.7".into()),
            Response::Failed(KvError::NoSpace),
            Response::Alarm(AlarmResponse::default()),
        ] {
            let bytes = bincode::serialize(&resp).unwrap();
            assert_eq!(bincode::deserialize::<Response>(&bytes).unwrap(), resp);
        }
    }
}
