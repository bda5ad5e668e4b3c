//! The workloads, one file each, modelled on etcd's `benchmark` tool. Each
//! has its flags (`*Args`) and a `run` that measures it against a [`Pool`].

pub mod lease;
pub mod mixed;
pub mod put;
pub mod range;
pub mod txn_put;
pub mod watch;

use anyhow::bail;
use clap::ValueEnum;
use ferrocd_proto::etcdserverpb::kv_client::KvClient;
use ferrocd_proto::etcdserverpb::PutRequest;
use tonic::transport::Channel;

use crate::conn::Pool;
use crate::keys;
use crate::runner::{self, ClientOp, RunOpts, Until};

/// Read consistency, as etcd's benchmark spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Consistency {
    /// Linearizable: confirmed with the leader (raft read index).
    L,
    /// Serializable: served from the member's local state.
    S,
}

impl Consistency {
    pub fn serializable(self) -> bool {
        self == Consistency::S
    }
}

/// Writes keys `0..count` under `prefix` before a measured run; not measured.
pub async fn preload(
    pool: &Pool,
    opts: &RunOpts,
    prefix: &str,
    count: u64,
    key_size: usize,
    val_size: usize,
) -> anyhow::Result<()> {
    if count == 0 {
        return Ok(());
    }
    let clients = opts.clients.clamp(1, 64);
    let fill = RunOpts {
        clients,
        until: Until::Total(count),
        rate: None,
        ..opts.clone()
    };
    let writers = (0..clients)
        .map(|i| Preload {
            kv: pool.kv(i),
            prefix: prefix.to_string(),
            key_size,
            value: keys::value(val_size),
        })
        .collect();
    let run = runner::run("preload", &fill, writers).await;
    if run.recorder.errors() > 0 {
        bail!("preload failed:\n{}", run.summary("preload").to_text());
    }
    Ok(())
}

struct Preload {
    kv: KvClient<Channel>,
    prefix: String,
    key_size: usize,
    value: Vec<u8>,
}

impl ClientOp for Preload {
    async fn call(&mut self, seq: u64) -> Result<(), tonic::Status> {
        let req = PutRequest {
            key: keys::key(&self.prefix, seq, self.key_size),
            value: self.value.clone(),
            ..Default::default()
        };
        self.kv.put(req).await.map(drop)
    }
}

/// One workload with its flags.
#[derive(Clone, Debug)]
pub enum Workload {
    Put(put::PutArgs),
    Range(range::RangeArgs),
    TxnPut(txn_put::TxnPutArgs),
    Watch(watch::WatchArgs),
    Lease(lease::LeaseArgs),
    Mixed(mixed::MixedArgs),
}

impl Workload {
    /// Runs the workload against `pool` and names its summary `name`.
    pub async fn run(
        &self,
        name: &str,
        opts: &RunOpts,
        pool: &Pool,
    ) -> anyhow::Result<crate::report::Summary> {
        match self {
            Workload::Put(a) => put::run(name, opts, pool, a).await,
            Workload::Range(a) => range::run(name, opts, pool, a).await,
            Workload::TxnPut(a) => txn_put::run(name, opts, pool, a).await,
            Workload::Watch(a) => watch::run(name, opts, pool, a).await,
            Workload::Lease(a) => lease::run(name, opts, pool, a).await,
            Workload::Mixed(a) => mixed::run(name, opts, pool, a).await,
        }
    }
}
