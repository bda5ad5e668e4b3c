//! The clients of a run: each sends random gets, puts, deletes,
//! conditional puts, lease grants, puts attached to its leases and lease
//! revokes to one member, moving to the next when a request
//! fails, and records every operation with its call and return time.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ferrocd_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use ferrocd_proto::etcdserverpb::kv_client::KvClient;
use ferrocd_proto::etcdserverpb::lease_client::LeaseClient;
use ferrocd_proto::etcdserverpb::request_op::Request as Op;
use ferrocd_proto::etcdserverpb::{
    Compare, DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest, PutRequest, RangeRequest,
    RequestOp, TxnRequest,
};
use tonic::transport::{Channel, Endpoint};

use super::{Rng, REQUEST_TIMEOUT};
use crate::linearizability::{Input, Operation, Output};

pub(super) async fn connect(url: &str) -> Option<Channel> {
    Endpoint::from_shared(url.to_string())
        .ok()?
        .connect_timeout(Duration::from_millis(500))
        .timeout(REQUEST_TIMEOUT)
        .connect()
        .await
        .ok()
}

pub(super) async fn client_loop(
    client: usize,
    seed: u64,
    keys: usize,
    urls: &[String],
    t0: Instant,
    history: &Mutex<Vec<Operation>>,
    stop: &AtomicBool,
) {
    let mut rng = Rng(seed);
    let mut member = client % urls.len();
    let mut conn: Option<Channel> = None;
    let mut last_rev: BTreeMap<String, i64> = BTreeMap::new();
    // The leases this client granted (or tried to), revoked ones too.
    let mut leases: Vec<i64> = Vec::new();
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        if conn.is_none() {
            conn = connect(&urls[member]).await;
            if conn.is_none() {
                member = (member + 1) % urls.len();
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        }
        let Some(channel) = conn.clone() else {
            continue;
        };
        n += 1;
        let key = format!("k{}", rng.below(keys as u64));
        let value = format!("c{client}-{n}");
        let lease = (!leases.is_empty()).then(|| leases[rng.below(leases.len() as u64) as usize]);
        let input = match (rng.below(20), lease) {
            (0..=7, _) => Input::Get { key },
            (8..=11, _) => Input::Put { key, value },
            (12..=13, _) => Input::Delete { key },
            (14..=16, _) => Input::PutIf {
                expect: last_rev.get(&key).copied().unwrap_or(0),
                key,
                value,
            },
            (17, Some(lease)) => Input::PutLeased { key, value, lease },
            (18, Some(lease)) => Input::Revoke { lease },
            _ => {
                // IDs unique to this client and grant.
                let lease = ((client as i64 + 1) << 32) | n as i64;
                leases.push(lease);
                Input::Grant { lease }
            }
        };
        let call = t0.elapsed().as_nanos() as u64;
        let answer = send(channel, &input).await;
        let ret = t0.elapsed().as_nanos() as u64;
        match answer {
            Ok(output) => {
                if let Output::Get {
                    value: Some((_, rev)),
                    ..
                } = &output
                {
                    if let Input::Get { key } = &input {
                        last_rev.insert(key.clone(), *rev);
                    }
                }
                history.lock().unwrap().push(Operation {
                    client,
                    input,
                    call,
                    ret: Some((ret, output)),
                });
            }
            Err(()) => {
                // A read that failed changed nothing: left out. A write
                // may or may not have been applied.
                if !matches!(input, Input::Get { .. }) {
                    history.lock().unwrap().push(Operation {
                        client,
                        input,
                        call,
                        ret: None,
                    });
                }
                conn = None;
                member = (member + 1) % urls.len();
            }
        }
    }
}

/// A long TTL: leases in a run end only when revoked.
const LEASE_TTL: i64 = 600;

/// Sends `input` and reads the answer; `Err` when its outcome is unknown.
async fn send(channel: Channel, input: &Input) -> Result<Output, ()> {
    let revision =
        |h: Option<ferrocd_proto::etcdserverpb::ResponseHeader>| h.map_or(0, |h| h.revision);
    // etcd's "requested lease not found" is a definite answer: nothing
    // changed. Any other failure leaves the outcome unknown.
    let lease_answer = |e: tonic::Status| match e.code() {
        tonic::Code::NotFound => Ok(Output::LeaseNotFound),
        _ => Err(()),
    };
    let mut kv = KvClient::new(channel.clone());
    match input {
        Input::Get { key } => {
            let r = kv
                .range(RangeRequest {
                    key: key.clone().into_bytes(),
                    ..Default::default()
                })
                .await
                .map_err(|_| ())?
                .into_inner();
            let value = r.kvs.first().map(|kv| {
                (
                    String::from_utf8_lossy(&kv.value).to_string(),
                    kv.mod_revision,
                )
            });
            Ok(Output::Get {
                value,
                revision: revision(r.header),
            })
        }
        Input::Put { key, value } => {
            let r = kv
                .put(PutRequest {
                    key: key.clone().into_bytes(),
                    value: value.clone().into_bytes(),
                    ..Default::default()
                })
                .await
                .map_err(|_| ())?
                .into_inner();
            Ok(Output::Put {
                revision: revision(r.header),
            })
        }
        Input::Delete { key } => {
            let r = kv
                .delete_range(DeleteRangeRequest {
                    key: key.clone().into_bytes(),
                    ..Default::default()
                })
                .await
                .map_err(|_| ())?
                .into_inner();
            Ok(Output::Delete {
                deleted: r.deleted,
                revision: revision(r.header),
            })
        }
        Input::PutIf { key, expect, value } => {
            let r = kv
                .txn(TxnRequest {
                    compare: vec![Compare {
                        result: CompareResult::Equal as i32,
                        target: CompareTarget::Mod as i32,
                        key: key.clone().into_bytes(),
                        target_union: Some(TargetUnion::ModRevision(*expect)),
                        ..Default::default()
                    }],
                    success: vec![RequestOp {
                        request: Some(Op::RequestPut(PutRequest {
                            key: key.clone().into_bytes(),
                            value: value.clone().into_bytes(),
                            ..Default::default()
                        })),
                    }],
                    failure: vec![],
                })
                .await
                .map_err(|_| ())?
                .into_inner();
            Ok(Output::PutIf {
                succeeded: r.succeeded,
                revision: revision(r.header),
            })
        }
        Input::Grant { lease } => {
            let r = LeaseClient::new(channel)
                .lease_grant(LeaseGrantRequest {
                    ttl: LEASE_TTL,
                    id: *lease,
                })
                .await
                .map_err(|_| ())?
                .into_inner();
            if !r.error.is_empty() {
                return Err(());
            }
            Ok(Output::Granted {
                revision: revision(r.header),
            })
        }
        Input::PutLeased { key, value, lease } => {
            let r = kv
                .put(PutRequest {
                    key: key.clone().into_bytes(),
                    value: value.clone().into_bytes(),
                    lease: *lease,
                    ..Default::default()
                })
                .await;
            match r {
                Ok(r) => Ok(Output::Put {
                    revision: revision(r.into_inner().header),
                }),
                Err(e) => lease_answer(e),
            }
        }
        Input::Revoke { lease } => {
            let r = LeaseClient::new(channel)
                .lease_revoke(LeaseRevokeRequest { id: *lease })
                .await;
            match r {
                Ok(r) => Ok(Output::Revoked {
                    revision: revision(r.into_inner().header),
                }),
                Err(e) => lease_answer(e),
            }
        }
    }
}
