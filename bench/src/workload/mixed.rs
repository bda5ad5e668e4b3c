//! `mixed`: random single-key reads and writes over a preloaded key space,
//! `--read-ratio` of them reads.

use clap::Args;
use ferrocd_proto::etcdserverpb::kv_client::KvClient;
use ferrocd_proto::etcdserverpb::{PutRequest, RangeRequest};
use tonic::transport::Channel;

use super::{preload, Consistency};
use crate::conn::Pool;
use crate::keys::{self, Rng};
use crate::report::Summary;
use crate::runner::{self, ClientOp, RunOpts};

#[derive(Args, Clone, Debug)]
pub struct MixedArgs {
    /// Fraction of operations that are reads (0.0 to 1.0).
    #[arg(long, default_value_t = 0.9)]
    pub read_ratio: f64,
    /// `l` (linearizable) or `s` (serializable) reads.
    #[arg(long, value_enum, default_value = "l")]
    pub consistency: Consistency,
    /// Keys preloaded and then read and overwritten at random.
    #[arg(long, default_value_t = 1000)]
    pub key_space_size: u64,
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    #[arg(long, default_value_t = 8)]
    pub val_size: usize,
    #[arg(long, default_value = "mixed/")]
    pub prefix: String,
}

pub async fn run(
    name: &str,
    opts: &RunOpts,
    pool: &Pool,
    args: &MixedArgs,
) -> anyhow::Result<Summary> {
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.read_ratio),
        "--read-ratio must be between 0 and 1"
    );
    let space = args.key_space_size.max(1);
    preload(
        pool,
        opts,
        &args.prefix,
        space,
        args.key_size,
        args.val_size,
    )
    .await?;
    let clients = (0..opts.clients)
        .map(|i| Mixer {
            kv: pool.kv(i),
            args: args.clone(),
            rng: Rng::new(i as u64 + 1),
            value: keys::value(args.val_size),
            reads: 0,
            writes: 0,
        })
        .collect();
    Ok(runner::run(name, opts, clients).await.summary(name))
}

struct Mixer {
    kv: KvClient<Channel>,
    args: MixedArgs,
    rng: Rng,
    value: Vec<u8>,
    reads: u64,
    writes: u64,
}

impl ClientOp for Mixer {
    async fn call(&mut self, _seq: u64) -> Result<(), tonic::Status> {
        let key = keys::key(
            &self.args.prefix,
            self.rng.below(self.args.key_space_size.max(1)),
            self.args.key_size,
        );
        if self.rng.unit() < self.args.read_ratio {
            self.reads += 1;
            let req = RangeRequest {
                key,
                serializable: self.args.consistency.serializable(),
                ..Default::default()
            };
            self.kv.range(req).await.map(drop)
        } else {
            self.writes += 1;
            let req = PutRequest {
                key,
                value: self.value.clone(),
                ..Default::default()
            };
            self.kv.put(req).await.map(drop)
        }
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        vec![("reads", self.reads), ("writes", self.writes)]
    }
}
