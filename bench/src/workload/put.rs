//! `put`: one Put per operation, like `benchmark put`.

use clap::Args;
use ferrocd_proto::etcdserverpb::kv_client::KvClient;
use ferrocd_proto::etcdserverpb::PutRequest;
use tonic::transport::Channel;

use crate::conn::Pool;
use crate::keys::{self, Rng};
use crate::report::Summary;
use crate::runner::{self, ClientOp, RunOpts};

#[derive(Args, Clone, Debug)]
pub struct PutArgs {
    /// Key size in bytes (the prefix included).
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 8)]
    pub val_size: usize,
    /// Keys 0, 1, 2, ... (modulo the key space) instead of random ones.
    #[arg(long)]
    pub sequential_keys: bool,
    /// How many distinct keys to write.
    #[arg(long, default_value_t = 10_000)]
    pub key_space_size: u64,
    /// Prefix of every key.
    #[arg(long, default_value = "")]
    pub prefix: String,
}

pub async fn run(
    name: &str,
    opts: &RunOpts,
    pool: &Pool,
    args: &PutArgs,
) -> anyhow::Result<Summary> {
    let clients = putters(pool, opts.clients, args);
    Ok(runner::run(name, opts, clients).await.summary(name))
}

/// `n` put clients over `pool`, for a runner of one's own.
pub fn putters(pool: &Pool, n: usize, args: &PutArgs) -> Vec<Putter> {
    (0..n)
        .map(|i| Putter {
            kv: pool.kv(i),
            args: args.clone(),
            rng: Rng::new(i as u64 + 1),
            value: keys::value(args.val_size),
        })
        .collect()
}

/// One client's request loop: a Put per operation.
pub struct Putter {
    kv: KvClient<Channel>,
    args: PutArgs,
    rng: Rng,
    value: Vec<u8>,
}

impl ClientOp for Putter {
    async fn call(&mut self, seq: u64) -> Result<(), tonic::Status> {
        let space = self.args.key_space_size.max(1);
        let n = if self.args.sequential_keys {
            seq % space
        } else {
            self.rng.below(space)
        };
        let req = PutRequest {
            key: keys::key(&self.args.prefix, n, self.args.key_size),
            value: self.value.clone(),
            ..Default::default()
        };
        self.kv.put(req).await.map(drop)
    }
}
