//! Group commit: client writes that arrive while earlier ones are being
//! committed are gathered into one raft entry, so they share one log
//! append, one fsync and one apply. On a follower the batch is forwarded
//! to the leader, and answered once this member has applied it too.
//!
//! A write that finds nothing queued and nothing in flight goes to raft
//! (or, on a follower, to the leader) straight from its own task: a lone
//! writer then waits for no batching task and no hand-off back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrocd_proto::ferrocdpb::{InternalBatch, InternalRequest, ProposeRequest};
use openraft::error::{ClientWriteError, RaftError};
use prost::Message;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tonic::Status;

use super::{peer, EtcdError, RETRY_PAUSE};
use crate::raft::peer_failure::PeerFailure;
use crate::raft::{Member, PeerClients, Raft, Request, Response};

/// Most requests in one entry.
const MAX_BATCH: usize = 1024;
/// Most bytes of requests in one entry.
const MAX_BATCH_BYTES: usize = 4 << 20;
/// Entries submitted but not yet applied. While all are in flight, new
/// writes queue up and form the next, larger batch. One: every entry
/// costs the raft core, the log and apply a turn each whatever its size,
/// and with applies staged in memory an entry is applied soon after its
/// fsync, so writes that wait for the one in flight and go together in
/// the next make more puts per second than entries of one or two writes
/// each (8 writers on 1 member: 7100-7400 puts/s against 4200-4300 with
/// four in flight; bench/RESULTS.md, "One entry in flight").
const MAX_IN_FLIGHT: usize = 1;
/// Writes waiting for a batch before callers feel backpressure.
const QUEUE: usize = 16 * 1024;

type Reply = oneshot::Sender<Result<Response, Status>>;
type WriteResponse = openraft::raft::ClientWriteResponse<crate::raft::TypeConfig>;

/// Submits client writes to raft in batches.
#[derive(Clone)]
pub struct Proposer {
    tx: mpsc::Sender<(InternalRequest, Reply)>,
    /// One permit per entry submitted and not yet applied.
    in_flight: Arc<Semaphore>,
    route: Route,
}

/// Where batches go: this member's raft when it leads, the leader's
/// otherwise.
#[derive(Clone)]
pub struct Route {
    pub raft: Raft,
    pub me: u64,
    pub peers: Arc<PeerClients>,
    /// How long a batch may look for a leader and wait to be applied.
    pub timeout: Duration,
    /// Shut while this member hands leadership over.
    pub gate: super::TransferGate,
}

impl Route {
    /// The leader, with its membership record, if known.
    pub fn leader(&self) -> Option<(u64, Member)> {
        super::leader_of(&self.raft)
    }
}

impl Proposer {
    /// Starts the batching task.
    pub fn start(route: Route) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        let proposer = Proposer {
            tx,
            in_flight: in_flight.clone(),
            route: route.clone(),
        };
        tokio::spawn(run(route, rx, in_flight));
        proposer
    }

    /// Proposes `req` and waits until it is applied.
    pub async fn propose(&self, req: InternalRequest) -> Result<Response, Status> {
        let pending = Pending::new();
        let outcome = self.submit(req).await;
        drop(pending);
        if outcome.is_err() {
            crate::metrics::get().proposals_failed.inc();
        }
        outcome
    }

    async fn submit(&self, req: InternalRequest) -> Result<Response, Status> {
        if let Some(permit) = self.idle() {
            let route = &self.route;
            route.gate.pass().await;
            let outcome = if route.raft.metrics().borrow().current_leader == Some(route.me) {
                outcome(route.raft.client_write_ff(Request::single(req)).await).await
            } else {
                let requests = vec![req];
                forward(route, InternalBatch { requests }).await
            };
            drop(permit);
            return outcome.and_then(|mut responses| match responses.pop() {
                Some(resp) if responses.is_empty() => Ok(resp),
                _ => Err(Status::internal(format!(
                    "etcdserver: {} responses for a batch of 1",
                    responses.len() + 1
                ))),
            });
        }
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((req, reply))
            .await
            .map_err(|_| Status::from(EtcdError::Stopped))?;
        answer.await.map_err(|_| Status::from(EtcdError::Stopped))?
    }

    /// A permit to submit directly, when no write is queued or in flight
    /// (so there is nothing to batch with).
    fn idle(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        if self.tx.capacity() < QUEUE || self.in_flight.available_permits() < MAX_IN_FLIGHT {
            return None;
        }
        self.in_flight.clone().try_acquire_owned().ok()
    }
}

/// Waits for the outcome of a batch submitted to this member's raft.
async fn outcome<R, E, F>(submitted: Result<R, F>) -> Result<Vec<Response>, Status>
where
    R: std::future::Future<
        Output = Result<Result<WriteResponse, ClientWriteError<u64, Member>>, E>,
    >,
{
    match submitted {
        Ok(receiver) => match receiver.await {
            Ok(Ok(resp)) => Ok(resp.data),
            // Leadership moved before the batch was appended.
            Ok(Err(ClientWriteError::ForwardToLeader(_))) => Err(EtcdError::LeaderChanged.into()),
            Ok(Err(ClientWriteError::ChangeMembershipError(e))) => {
                Err(Status::failed_precondition(e.to_string()))
            }
            Err(_) => Err(EtcdError::Stopped.into()),
        },
        Err(_) => Err(EtcdError::Stopped.into()),
    }
}

/// A proposal waiting for its outcome, counted in
/// `etcd_server_proposals_pending` until dropped (answered or abandoned).
struct Pending;

impl Pending {
    fn new() -> Self {
        crate::metrics::get().proposals_pending.inc();
        Pending
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        crate::metrics::get().proposals_pending.dec();
    }
}

async fn run(
    route: Route,
    mut rx: mpsc::Receiver<(InternalRequest, Reply)>,
    in_flight: Arc<Semaphore>,
) {
    let raft = route.raft.clone();
    while let Some(first) = rx.recv().await {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut bytes = first.0.encoded_len();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(next) => {
                    bytes += next.0.encoded_len();
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        let (requests, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        if raft.metrics().borrow().current_leader != Some(route.me) {
            let route = route.clone();
            tokio::spawn(async move {
                let outcome = forward(&route, InternalBatch { requests }).await;
                answer(replies, outcome);
                drop(permit);
            });
            continue;
        }
        // Submitting here, in order, keeps entries in arrival order; the
        // wait for the outcome runs beside the next batch.
        route.gate.pass().await;
        let submitted = raft
            .client_write_ff(Request(InternalBatch { requests }))
            .await;
        tokio::spawn(async move {
            answer(replies, outcome(submitted).await);
            drop(permit);
        });
    }
}

/// Commits `batch` through the leader: this member's raft if it has become
/// the leader meanwhile, the leader's over the peer protocol otherwise,
/// then waits until this member has applied it. Retries only where the
/// batch certainly was not appended (no leader, "not leader", refused
/// connection), so nothing is applied twice.
async fn forward(route: &Route, batch: InternalBatch) -> Result<Vec<Response>, Status> {
    let deadline = Instant::now() + route.timeout;
    loop {
        let leader = route.leader();
        let had_leader = leader.is_some();
        match leader {
            None => {}
            Some((id, _)) if id == route.me => {
                route.gate.pass().await;
                return match route.raft.client_write(Request(batch)).await {
                    Ok(resp) => Ok(resp.data),
                    Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                        Err(EtcdError::LeaderChanged.into())
                    }
                    Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                        Err(Status::failed_precondition(e.to_string()))
                    }
                    Err(RaftError::Fatal(_)) => Err(EtcdError::Stopped.into()),
                };
            }
            Some((_, node)) => {
                let mut client = route.peers.member(&node).map_err(peer::status)?;
                let mut req = tonic::Request::new(ProposeRequest {
                    cluster_id: route.peers.cluster_id(),
                    batch: Some(batch.clone()),
                });
                req.set_timeout(deadline.saturating_duration_since(Instant::now()));
                match client.propose(req).await {
                    Ok(resp) => {
                        let resp = resp.into_inner();
                        let responses: Vec<Response> = bincode::deserialize(&resp.responses)
                            .map_err(|e| Status::internal(format!("etcdserver: {e}")))?;
                        // Answer once this member's store shows the write,
                        // so a read here right after sees it.
                        let left = deadline.saturating_duration_since(Instant::now());
                        route
                            .raft
                            .wait(Some(left))
                            .applied_index_at_least(Some(resp.index), "applying a forwarded write")
                            .await
                            .map_err(|_| Status::from(EtcdError::Timeout))?;
                        return Ok(responses);
                    }
                    // Refused or never sent: the write was certainly not
                    // appended, so it may go to the next leader.
                    Err(e) if PeerFailure::of(&e).nothing_happened() => {}
                    Err(e) if e.code() == tonic::Code::DeadlineExceeded => {
                        return Err(EtcdError::Timeout.into())
                    }
                    Err(e) => return Err(peer::forward_failure(e)),
                }
            }
        }
        if Instant::now() + RETRY_PAUSE >= deadline {
            return Err(if !had_leader {
                EtcdError::NoLeader.into()
            } else {
                EtcdError::Timeout.into()
            });
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

fn answer(replies: Vec<Reply>, outcome: Result<Vec<Response>, Status>) {
    match outcome {
        Ok(responses) if responses.len() == replies.len() => {
            for (reply, resp) in replies.into_iter().zip(responses) {
                let _ = reply.send(Ok(resp));
            }
        }
        Ok(responses) => {
            let msg = format!(
                "etcdserver: {} responses for a batch of {}",
                responses.len(),
                replies.len()
            );
            for reply in replies {
                let _ = reply.send(Err(Status::internal(msg.clone())));
            }
        }
        Err(status) => {
            for reply in replies {
                let _ = reply.send(Err(Status::new(status.code(), status.message())));
            }
        }
    }
}
