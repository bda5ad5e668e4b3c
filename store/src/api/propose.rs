//! Group commit: client writes that arrive while earlier ones are being
//! committed are gathered into one raft entry, so they share one log
//! append, one fsync and one apply.

use std::sync::Arc;

use ferrocd_proto::ferrocdpb::{InternalBatch, InternalRequest};
use openraft::error::ClientWriteError;
use prost::Message;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tonic::Status;

use super::EtcdError;
use crate::raft::{Raft, Request, Response};

/// Most requests in one entry.
const MAX_BATCH: usize = 1024;
/// Most bytes of requests in one entry.
const MAX_BATCH_BYTES: usize = 4 << 20;
/// Entries submitted but not yet applied. While all are in flight, new
/// writes queue up and form the next, larger batch.
const MAX_IN_FLIGHT: usize = 4;
/// Writes waiting for a batch before callers feel backpressure.
const QUEUE: usize = 16 * 1024;

type Reply = oneshot::Sender<Result<Response, Status>>;

/// Submits client writes to raft in batches.
#[derive(Clone)]
pub struct Proposer {
    tx: mpsc::Sender<(InternalRequest, Reply)>,
}

impl Proposer {
    /// Starts the batching task for `raft`.
    pub fn start(raft: Raft) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(raft, rx));
        Proposer { tx }
    }

    /// Proposes `req` and waits until it is applied.
    pub async fn propose(&self, req: InternalRequest) -> Result<Response, Status> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((req, reply))
            .await
            .map_err(|_| Status::from(EtcdError::Stopped))?;
        answer.await.map_err(|_| Status::from(EtcdError::Stopped))?
    }
}

async fn run(raft: Raft, mut rx: mpsc::Receiver<(InternalRequest, Reply)>) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
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
        // Submitting here, in order, keeps entries in arrival order; the
        // wait for the outcome runs beside the next batch.
        let submitted = raft
            .client_write_ff(Request(InternalBatch { requests }))
            .await;
        tokio::spawn(async move {
            let outcome = match submitted {
                Ok(receiver) => match receiver.await {
                    Ok(Ok(resp)) => Ok(resp.data),
                    Ok(Err(ClientWriteError::ForwardToLeader(_))) => {
                        Err(EtcdError::NoLeader.into())
                    }
                    Ok(Err(ClientWriteError::ChangeMembershipError(e))) => {
                        Err(Status::failed_precondition(e.to_string()))
                    }
                    Err(_) => Err(EtcdError::Stopped.into()),
                },
                Err(_) => Err(EtcdError::Stopped.into()),
            };
            answer(replies, outcome);
            drop(permit);
        });
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
