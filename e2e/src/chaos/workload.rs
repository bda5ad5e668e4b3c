//! The clients of a run: each sends random gets, puts, deletes and
//! conditional puts to one member, moving to the next when a request
//! fails, and records every operation with its call and return time.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ferrocd_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use ferrocd_proto::etcdserverpb::kv_client::KvClient;
use ferrocd_proto::etcdserverpb::request_op::Request as Op;
use ferrocd_proto::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
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
    let mut kv: Option<KvClient<Channel>> = None;
    let mut last_rev: BTreeMap<String, i64> = BTreeMap::new();
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        if kv.is_none() {
            kv = connect(&urls[member]).await.map(KvClient::new);
            if kv.is_none() {
                member = (member + 1) % urls.len();
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        }
        let Some(client_kv) = kv.as_mut() else {
            continue;
        };
        n += 1;
        let key = format!("k{}", rng.below(keys as u64));
        let value = format!("c{client}-{n}");
        let input = match rng.below(10) {
            0..=3 => Input::Get { key },
            4..=6 => Input::Put { key, value },
            7 => Input::Delete { key },
            _ => Input::PutIf {
                expect: last_rev.get(&key).copied().unwrap_or(0),
                key,
                value,
            },
        };
        let call = t0.elapsed().as_nanos() as u64;
        let answer = send(client_kv, &input).await;
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
                kv = None;
                member = (member + 1) % urls.len();
            }
        }
    }
}

async fn send(kv: &mut KvClient<Channel>, input: &Input) -> Result<Output, ()> {
    let revision =
        |h: Option<ferrocd_proto::etcdserverpb::ResponseHeader>| h.map_or(0, |h| h.revision);
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
    }
}
