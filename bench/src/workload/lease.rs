//! `lease`: each operation grants a lease and renews it once over the
//! client's keep-alive stream (grant + one keep-alive round trip). The
//! leases are revoked after the run, outside the measurement.

use std::sync::{Arc, Mutex};

use clap::Args;
use ferrocd_proto::etcdserverpb::lease_client::LeaseClient;
use ferrocd_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseRevokeRequest,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Status, Streaming};

use crate::conn::Pool;
use crate::report::Summary;
use crate::runner::{self, ClientOp, RunOpts, Until};

#[derive(Args, Clone, Debug)]
pub struct LeaseArgs {
    /// TTL of each lease in seconds; long enough not to expire during the run.
    #[arg(long, default_value_t = 600)]
    pub ttl: i64,
    /// Leave the leases to expire instead of revoking them after the run.
    #[arg(long)]
    pub keep_leases: bool,
}

pub async fn run(
    name: &str,
    opts: &RunOpts,
    pool: &Pool,
    args: &LeaseArgs,
) -> anyhow::Result<Summary> {
    let granted = Arc::new(Mutex::new(Vec::new()));
    let clients = (0..opts.clients)
        .map(|i| Leaser {
            lease: pool.lease(i),
            ttl: args.ttl,
            stream: None,
            granted: granted.clone(),
        })
        .collect();
    let summary = runner::run(name, opts, clients).await.summary(name);
    if !args.keep_leases {
        revoke_all(pool, opts, granted).await;
    }
    Ok(summary)
}

type KeepAlive = (
    mpsc::Sender<LeaseKeepAliveRequest>,
    Streaming<LeaseKeepAliveResponse>,
);

struct Leaser {
    lease: LeaseClient<Channel>,
    ttl: i64,
    stream: Option<KeepAlive>,
    granted: Arc<Mutex<Vec<i64>>>,
}

impl Leaser {
    async fn keep_alive(&mut self, id: i64) -> Result<(), Status> {
        let req = LeaseKeepAliveRequest { id };
        match &self.stream {
            Some((tx, _)) => tx
                .send(req)
                .await
                .map_err(|_| Status::unavailable("keep-alive stream closed"))?,
            None => {
                // The first request goes in before the call: a server may
                // hold back its response headers until it has one.
                let (tx, rx) = mpsc::channel(16);
                tx.send(req).await.expect("receiver is alive");
                let responses = self
                    .lease
                    .lease_keep_alive(ReceiverStream::new(rx))
                    .await?
                    .into_inner();
                self.stream = Some((tx, responses));
            }
        }
        let responses = &mut self.stream.as_mut().expect("opened above").1;
        let outcome = loop {
            match responses.message().await {
                // A late answer to a call that timed out belongs to another lease.
                Ok(Some(r)) if r.id != id => continue,
                Ok(Some(r)) if r.ttl > 0 => return Ok(()),
                Ok(Some(_)) => return Err(Status::not_found("keep-alive: lease not found")),
                Ok(None) => break Status::unavailable("keep-alive stream ended"),
                Err(status) => break status,
            }
        };
        self.stream = None;
        Err(outcome)
    }
}

impl ClientOp for Leaser {
    async fn call(&mut self, _seq: u64) -> Result<(), Status> {
        let grant = LeaseGrantRequest {
            ttl: self.ttl,
            id: 0,
        };
        let id = self.lease.lease_grant(grant).await?.into_inner().id;
        self.granted.lock().expect("lease list").push(id);
        self.keep_alive(id).await
    }
}

async fn revoke_all(pool: &Pool, opts: &RunOpts, granted: Arc<Mutex<Vec<i64>>>) {
    let count = granted.lock().expect("lease list").len() as u64;
    let cleanup = RunOpts {
        clients: opts.clients.clamp(1, 64),
        until: Until::Total(count),
        rate: None,
        ..opts.clone()
    };
    let revokers = (0..cleanup.clients)
        .map(|i| Revoker {
            lease: pool.lease(i),
            granted: granted.clone(),
        })
        .collect();
    let run = runner::run("revoke", &cleanup, revokers).await;
    if run.recorder.errors() > 0 {
        eprintln!(
            "revoking leases after the run:\n{}",
            run.summary("revoke").to_text()
        );
    }
}

struct Revoker {
    lease: LeaseClient<Channel>,
    granted: Arc<Mutex<Vec<i64>>>,
}

impl ClientOp for Revoker {
    async fn call(&mut self, _seq: u64) -> Result<(), Status> {
        let id = self.granted.lock().expect("lease list").pop();
        match id {
            Some(id) => self
                .lease
                .lease_revoke(LeaseRevokeRequest { id })
                .await
                .map(drop),
            None => Ok(()),
        }
    }
}
