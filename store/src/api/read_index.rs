//! Read index, shared: linearizable reads that arrive together ask the
//! leader for one read index between them. A round starts only after every
//! read it answers has arrived, so each still sees every write acknowledged
//! before it began.

use std::time::Instant;

use ferrocd_proto::ferrocdpb::ReadIndexRequest;
use openraft::error::RaftError;
use tokio::sync::{mpsc, oneshot};
use tonic::{Code, Status};

use super::propose::Route;
use super::{peer, EtcdError, RETRY_PAUSE};
use crate::raft::peer_failure::{PeerFailure, Refusal};

type Answer = Result<u64, (Code, String)>;

/// Readers queued for the next round at most; more wait to queue (so a
/// flood of reads holds its callers back instead of growing memory).
const QUEUE: usize = 4096;

/// Hands out read indexes, one leader round trip per batch of readers.
#[derive(Clone)]
pub struct ReadIndex {
    tx: mpsc::Sender<oneshot::Sender<Answer>>,
}

impl ReadIndex {
    pub fn start(route: Route) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(route, rx));
        ReadIndex { tx }
    }

    /// The leader's commit index, confirmed by a quorum after this call
    /// began: a read served once it is applied here is linearizable.
    pub async fn get(&self) -> Result<u64, Status> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(tx)
            .await
            .map_err(|_| Status::from(EtcdError::Stopped))?;
        match rx.await {
            Ok(Ok(index)) => Ok(index),
            Ok(Err((code, msg))) => Err(Status::new(code, msg)),
            Err(_) => Err(EtcdError::Stopped.into()),
        }
    }
}

async fn run(route: Route, mut rx: mpsc::Receiver<oneshot::Sender<Answer>>) {
    while let Some(first) = rx.recv().await {
        let mut waiters = vec![first];
        while let Ok(next) = rx.try_recv() {
            waiters.push(next);
        }
        let answer = round(&route)
            .await
            .map_err(|s| (s.code(), s.message().to_string()));
        for w in waiters {
            let _ = w.send(answer.clone());
        }
    }
}

/// One read index from the leader: this member's raft when it leads, the
/// leader's over the peer protocol otherwise; retried while leadership
/// moves, until the request timeout.
async fn round(route: &Route) -> Result<u64, Status> {
    let deadline = Instant::now() + route.timeout;
    loop {
        let leader = route.leader();
        let outcome = match &leader {
            None => Err(peer::refusal(Refusal::NoLeader)),
            Some((id, _)) if *id == route.me => {
                let confirmed = async {
                    route.gate.pass().await;
                    route.raft.get_read_log_id().await
                };
                match tokio::time::timeout_at(deadline.into(), confirmed).await {
                    Ok(Ok((read, _))) => return Ok(read.map(|l| l.index).unwrap_or(0)),
                    Ok(Err(RaftError::Fatal(_))) => return Err(EtcdError::Stopped.into()),
                    Ok(Err(RaftError::APIError(_))) => Err(peer::refusal(Refusal::NotLeader)),
                    Err(_) => return Err(EtcdError::Timeout.into()),
                }
            }
            Some((_, node)) => {
                let mut client = route.peers.member(node).map_err(peer::status)?;
                let mut req = tonic::Request::new(ReadIndexRequest {
                    cluster_id: route.peers.cluster_id(),
                });
                req.set_timeout(deadline.saturating_duration_since(Instant::now()));
                client.read_index(req).await.map(|r| r.into_inner().index)
            }
        };
        match outcome {
            Ok(index) => return Ok(index),
            // Leadership moved, the leader is gone, or the call was lost:
            // a read index is safe to ask for again.
            Err(e) if PeerFailure::of(&e) != PeerFailure::Answered => {}
            Err(e) => return Err(e),
        }
        if Instant::now() + RETRY_PAUSE >= deadline {
            return Err(if route.leader().is_none() {
                EtcdError::NoLeader.into()
            } else {
                EtcdError::Timeout.into()
            });
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}
