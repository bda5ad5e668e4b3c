//! `range`: one Range over `--key-count` preloaded keys per operation,
//! linearizable or serializable, like `benchmark range`.

use clap::Args;
use ferrocd_proto::etcdserverpb::kv_client::KvClient;
use ferrocd_proto::etcdserverpb::RangeRequest;
use tonic::transport::Channel;

use super::{preload, Consistency};
use crate::conn::Pool;
use crate::keys;
use crate::report::Summary;
use crate::runner::{self, ClientOp, RunOpts};

#[derive(Args, Clone, Debug)]
pub struct RangeArgs {
    /// `l` (linearizable) or `s` (serializable).
    #[arg(long, value_enum, default_value = "l")]
    pub consistency: Consistency,
    /// Keys written under the prefix before the run; each Range covers them all.
    #[arg(long, default_value_t = 1)]
    pub key_count: u64,
    /// At most this many keys per response (0 = no limit).
    #[arg(long, default_value_t = 0)]
    pub limit: i64,
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    #[arg(long, default_value_t = 8)]
    pub val_size: usize,
    #[arg(long, default_value = "range/")]
    pub prefix: String,
}

pub async fn run(
    name: &str,
    opts: &RunOpts,
    pool: &Pool,
    args: &RangeArgs,
) -> anyhow::Result<Summary> {
    preload(
        pool,
        opts,
        &args.prefix,
        args.key_count,
        args.key_size,
        args.val_size,
    )
    .await?;
    let req = RangeRequest {
        key: args.prefix.as_bytes().to_vec(),
        range_end: keys::prefix_end(args.prefix.as_bytes()),
        limit: args.limit,
        serializable: args.consistency.serializable(),
        ..Default::default()
    };
    let clients = (0..opts.clients)
        .map(|i| Ranger {
            kv: pool.kv(i),
            req: req.clone(),
        })
        .collect();
    Ok(runner::run(name, opts, clients).await.summary(name))
}

struct Ranger {
    kv: KvClient<Channel>,
    req: RangeRequest,
}

impl ClientOp for Ranger {
    async fn call(&mut self, _seq: u64) -> Result<(), tonic::Status> {
        self.kv.range(self.req.clone()).await.map(drop)
    }
}
