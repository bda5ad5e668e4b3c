//! `txn-put`: the transactions kube-apiserver sends to write objects.
//!
//! * `create`: `If(mod_revision(key) == 0) Then(Put(key))`, one new key per
//!   operation, as `storage.Interface.Create`.
//! * `update`: `If(mod_revision(key) == R) Then(Put(key)) Else(Get(key))`
//!   over a preloaded key space, as `GuaranteedUpdate`: each client keeps the
//!   revision it last saw; a failed compare refreshes it from the Else branch
//!   and counts as a conflict.

use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Args, ValueEnum};
use ferrocd_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use ferrocd_proto::etcdserverpb::kv_client::KvClient;
use ferrocd_proto::etcdserverpb::request_op::Request;
use ferrocd_proto::etcdserverpb::response_op::Response;
use ferrocd_proto::etcdserverpb::{Compare, PutRequest, RangeRequest, RequestOp, TxnRequest};
use tonic::transport::Channel;

use super::preload;
use crate::conn::Pool;
use crate::keys;
use crate::report::Summary;
use crate::runner::{self, ClientOp, RunOpts};

/// Which kube-apiserver write to imitate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Shape {
    Create,
    Update,
}

#[derive(Args, Clone, Debug)]
pub struct TxnPutArgs {
    #[arg(long, value_enum, default_value = "create")]
    pub shape: Shape,
    /// Key size in bytes (the prefix included).
    #[arg(long, default_value_t = 64)]
    pub key_size: usize,
    /// Value size in bytes (a small serialized object).
    #[arg(long, default_value_t = 1024)]
    pub val_size: usize,
    /// Objects updated by the `update` shape.
    #[arg(long, default_value_t = 1000)]
    pub key_space_size: u64,
    /// Prefix of every key; a per-run suffix keeps runs apart.
    #[arg(long, default_value = "/registry/bench/")]
    pub prefix: String,
}

pub async fn run(
    name: &str,
    opts: &RunOpts,
    pool: &Pool,
    args: &TxnPutArgs,
) -> anyhow::Result<Summary> {
    let nonce = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    let prefix = format!("{}{nonce:x}/", args.prefix);
    let mut owned: Vec<Vec<(Vec<u8>, i64)>> = vec![Vec::new(); opts.clients.max(1)];
    if args.shape == Shape::Update {
        let space = args.key_space_size.max(1);
        preload(pool, opts, &prefix, space, args.key_size, args.val_size).await?;
        let objects = current_revisions(pool, &prefix).await?;
        anyhow::ensure!(
            !objects.is_empty(),
            "no objects under {prefix} after preloading"
        );
        let n = owned.len();
        let shared = objects.len() < n;
        for (j, object) in objects.iter().enumerate() {
            owned[j % n].push(object.clone());
        }
        if shared {
            // More clients than objects: the extra ones contend for objects.
            for (i, keys) in owned.iter_mut().enumerate() {
                if keys.is_empty() {
                    keys.push(objects[i % objects.len()].clone());
                }
            }
        }
    }
    let clients = owned
        .into_iter()
        .enumerate()
        .map(|(i, objects)| Txner {
            kv: pool.kv(i),
            shape: args.shape,
            prefix: prefix.clone(),
            key_size: args.key_size,
            value: keys::value(args.val_size),
            objects,
            cursor: 0,
            conflicts: 0,
        })
        .collect();
    Ok(runner::run(name, opts, clients).await.summary(name))
}

async fn current_revisions(pool: &Pool, prefix: &str) -> anyhow::Result<Vec<(Vec<u8>, i64)>> {
    let resp = pool
        .kv(0)
        .range(RangeRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: keys::prefix_end(prefix.as_bytes()),
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(resp
        .kvs
        .into_iter()
        .map(|kv| (kv.key, kv.mod_revision))
        .collect())
}

struct Txner {
    kv: KvClient<Channel>,
    shape: Shape,
    prefix: String,
    key_size: usize,
    value: Vec<u8>,
    /// `update`: this client's objects and the mod revision last seen.
    objects: Vec<(Vec<u8>, i64)>,
    cursor: usize,
    conflicts: u64,
}

impl Txner {
    async fn create(&mut self, seq: u64) -> Result<(), tonic::Status> {
        let key = keys::key(&self.prefix, seq, self.key_size);
        let txn = TxnRequest {
            compare: vec![mod_revision_is(&key, 0)],
            success: vec![put(key, self.value.clone())],
            failure: vec![],
        };
        if !self.kv.txn(txn).await?.into_inner().succeeded {
            self.conflicts += 1;
        }
        Ok(())
    }

    async fn update(&mut self) -> Result<(), tonic::Status> {
        let i = self.cursor % self.objects.len();
        self.cursor += 1;
        let (key, rev) = self.objects[i].clone();
        let txn = TxnRequest {
            compare: vec![mod_revision_is(&key, rev)],
            success: vec![put(key.clone(), self.value.clone())],
            failure: vec![get(key)],
        };
        let resp = self.kv.txn(txn).await?.into_inner();
        if resp.succeeded {
            self.objects[i].1 = resp.header.map_or(rev, |h| h.revision);
        } else {
            self.conflicts += 1;
            let seen = resp.responses.into_iter().find_map(|r| match r.response {
                Some(Response::ResponseRange(range)) => range.kvs.first().map(|kv| kv.mod_revision),
                _ => None,
            });
            self.objects[i].1 = seen.unwrap_or(0);
        }
        Ok(())
    }
}

impl ClientOp for Txner {
    async fn call(&mut self, seq: u64) -> Result<(), tonic::Status> {
        match self.shape {
            Shape::Create => self.create(seq).await,
            Shape::Update => self.update().await,
        }
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        vec![("conflicts", self.conflicts)]
    }
}

fn mod_revision_is(key: &[u8], rev: i64) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Mod as i32,
        key: key.to_vec(),
        range_end: vec![],
        target_union: Some(TargetUnion::ModRevision(rev)),
    }
}

fn put(key: Vec<u8>, value: Vec<u8>) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestPut(PutRequest {
            key,
            value,
            ..Default::default()
        })),
    }
}

fn get(key: Vec<u8>) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestRange(RangeRequest {
            key,
            ..Default::default()
        })),
    }
}
