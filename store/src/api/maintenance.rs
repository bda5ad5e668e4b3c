//! The Maintenance service: Status (what `etcdctl endpoint status` and
//! kube-apiserver's version check read), alarms and defragmentation.

use ferrocd_proto::etcdserverpb::maintenance_server::Maintenance;
use ferrocd_proto::etcdserverpb::*;
use tonic::{Request, Response, Status};

use std::time::{Duration, Instant};

use ferrocd_proto::ferrocdpb::TimeoutNowRequest;

use super::unsupported::not_yet_rpcs;
use super::{kv_status, peer, Context, EtcdError};
use crate::alarm::describe;
use crate::config::ETCD_VERSION;
use crate::kv::KvError;
use crate::mvcc::MvccError;
use crate::raft::backend::defrag::DefragError;
use crate::raft::Response as Applied;
use ferrocd_proto::ferrocdpb::internal_request::Request as Internal;

/// Defragmentations started over before giving up.
const DEFRAG_ATTEMPTS: usize = 3;

type BoxStream<T> =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send + 'static>>;

/// etcd's Maintenance service.
pub struct MaintenanceService {
    ctx: Context,
}

impl MaintenanceService {
    pub fn new(ctx: Context) -> Self {
        MaintenanceService { ctx }
    }

    /// With auth on, only the root role may defragment, hash or take a
    /// snapshot (as etcd); Status, alarms and MoveLeader stay open.
    async fn admin<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let who = self.ctx.caller(request).await?;
        self.ctx.check_admin(who.as_ref())
    }
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    type SnapshotStream = BoxStream<SnapshotResponse>;

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let m = self.ctx.raft().metrics().borrow().clone();
        let db_size = self.ctx.db_size();
        // As etcd: "no leader" first when there is none, then each alarm.
        let mut errors = Vec::new();
        if m.current_leader.is_none() {
            errors.push(EtcdError::NoLeader.message().to_string());
        }
        errors.extend(
            self.ctx
                .alarms()
                .get(AlarmType::None as i32)
                .iter()
                .map(describe),
        );
        Ok(Response::new(StatusResponse {
            header: Some(self.ctx.header(0)),
            version: ETCD_VERSION.to_string(),
            db_size,
            leader: m.current_leader.unwrap_or(0),
            raft_index: m.last_log_index.unwrap_or(0),
            raft_term: self.ctx.raft_term(),
            raft_applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
            errors,
            db_size_in_use: db_size,
            is_learner: self.ctx.is_learner(),
            storage_version: ETCD_VERSION
                .rsplit_once('.')
                .map(|(v, _)| format!("{v}.0"))
                .unwrap_or_default(),
            db_size_quota: self.ctx.config().quota.limit(),
            downgrade_info: None,
        }))
    }

    async fn alarm(
        &self,
        request: Request<AlarmRequest>,
    ) -> Result<Response<AlarmResponse>, Status> {
        // etcd's learners answer only Status and serializable reads.
        self.ctx.reject_learner()?;
        // Anyone may list, raise and clear alarms, as in etcd; listing too
        // goes through raft, so it sees every alarm raised before it.
        let who = self.ctx.caller(&request).await?;
        let r = request.into_inner();
        if alarm_request::AlarmAction::try_from(r.action).is_err() {
            return Err(Status::invalid_argument(format!(
                "etcdserver: unknown alarm action {}",
                r.action
            )));
        }
        // etcd 3.4 answers without a header; 3.5 and later (whose version
        // ferrocd reports) fill it.
        self.ctx
            .write(who.as_ref(), Internal::Alarm(r), |a| match a {
                Applied::Alarm(resp) => Ok(resp),
                other => Err(other),
            })
            .await
    }

    async fn defragment(
        &self,
        request: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        self.admin(&request).await?;
        // etcd's learners answer only Status and serializable reads.
        self.ctx.reject_learner()?;
        // The database is rewritten while the member serves; a compaction
        // or an installed snapshot midway makes it start over.
        for _ in 0..DEFRAG_ATTEMPTS {
            let ctx = self.ctx.clone();
            let done = tokio::task::spawn_blocking(move || ctx.backend().defragment(ctx.mvcc()))
                .await
                .map_err(|e| Status::internal(format!("defragment: {e}")))?;
            match done {
                Ok(d) => {
                    tracing::info!(
                        before = d.before,
                        after = d.after,
                        took_ms = d.took.as_millis() as u64,
                        writers_held_ms = d.held.as_millis() as u64,
                        old_discarded_ms = d.removed.as_millis() as u64,
                        "defragmented the state database"
                    );
                    return Ok(Response::new(DefragmentResponse {
                        header: Some(self.ctx.header(0)),
                    }));
                }
                Err(DefragError::Store(MvccError::Changed)) => continue,
                Err(e) => return Err(Status::internal(format!("defragment: {e}"))),
            }
        }
        Err(Status::unavailable(
            "defragment: the store kept changing (compactions or snapshot installs); try again",
        ))
    }

    async fn hash_kv(
        &self,
        request: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        self.admin(&request).await?;
        // etcd's learners answer only Status and serializable reads.
        self.ctx.reject_learner()?;
        // A whole-store scan: off the async runtime.
        let (ctx, revision) = (self.ctx.clone(), request.get_ref().revision);
        let (hash, compact_revision, hash_revision) =
            tokio::task::spawn_blocking(move || ctx.mvcc().hash_kv(revision))
                .await
                .map_err(|e| Status::internal(format!("hashing the store: {e}")))?
                .map_err(|e| kv_status(KvError::Mvcc(e)))?;
        Ok(Response::new(HashKvResponse {
            header: Some(self.ctx.header(0)),
            hash,
            compact_revision,
            hash_revision,
        }))
    }

    async fn move_leader(
        &self,
        request: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        // etcd's learners answer only Status and serializable reads.
        self.ctx.reject_learner()?;
        transfer_leadership(&self.ctx, request.get_ref().target_id).await?;
        Ok(Response::new(MoveLeaderResponse {
            header: Some(self.ctx.header(0)),
        }))
    }

    not_yet_rpcs! { "this Maintenance RPC";
        hash(HashRequest) -> HashResponse;
        downgrade(DowngradeRequest) -> DowngradeResponse;
    }

    async fn snapshot(
        &self,
        _: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        // etcd's learners answer only Status and serializable reads.
        self.ctx.reject_learner()?;
        let rx = super::snapshot::start(&self.ctx)?;
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// Hands leadership to voter `target`, as etcd's MoveLeader: only the
/// leader can; it waits for the target to hold its whole log, stops its
/// heartbeats so the followers' leader lease runs out, and has the target
/// campaign. Heartbeats resume whatever the outcome.
async fn transfer_leadership(ctx: &Context, target: u64) -> Result<(), Status> {
    let me = ctx.config().member_id;
    if !ctx.is_leader() {
        return Err(EtcdError::NotLeader.into());
    }
    let (node, voters) = {
        let m = ctx.raft().metrics();
        let m = m.borrow();
        let membership = m.membership_config.membership();
        if !membership.voter_ids().any(|id| id == target) {
            return Err(EtcdError::BadLeaderTransferee.into());
        }
        let voters: Vec<(u64, crate::raft::Member)> = membership
            .voter_ids()
            .filter_map(|id| Some((id, membership.get_node(&id)?.clone())))
            .collect();
        (membership.get_node(&target).cloned(), voters)
    };
    if target == me {
        return Ok(());
    }
    let node = node.ok_or(EtcdError::BadLeaderTransferee)?;
    let election = Duration::from_millis(ctx.config().election_timeout_ms);
    let deadline = Instant::now() + ctx.request_timeout();
    // No membership change may start meanwhile (it could not commit while
    // heartbeats are off); the one in progress, if any, finishes first, and
    // the target must hold the whole log.
    ctx.set_transferring(true);
    let ready = ctx
        .raft()
        .wait(Some(ctx.request_timeout()))
        .metrics(
            |m| {
                let last = m.last_log_index;
                let membership_committed = m.membership_config.log_id().map(|l| l.index)
                    <= m.last_applied.map(|l| l.index);
                let target_matched = m
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(&target).cloned().flatten())
                    .map(|l| Some(l.index) >= last)
                    .unwrap_or(false);
                membership_committed && target_matched
            },
            "transferee catching up",
        )
        .await;
    if ready.is_err() {
        ctx.set_transferring(false);
        return Err(transfer_timeout());
    }
    let runtime = ctx.raft().runtime_config();
    runtime.heartbeat(false);
    runtime.elect(false);
    let result = async {
        let mut client = ctx.peers().member(&node).map_err(peer::status)?;
        // The target campaigns until the followers' lease on this leader
        // (two election timeouts since they last heard from it; writes
        // still being replicated renew it) has run out and it wins, for as
        // long as the request may take.
        let campaign = deadline
            .saturating_duration_since(Instant::now())
            .saturating_sub(election)
            .max(4 * election);
        // The other voters hold their elections meanwhile (best effort: one
        // that misses this only competes, as it would anyway).
        let others: Vec<_> = voters
            .iter()
            .filter(|(id, _)| *id != target && *id != me)
            .map(|(_, node)| node.clone())
            .collect();
        for other in others {
            if let Ok(mut c) = ctx.peers().member(&other) {
                let mut req = tonic::Request::new(TimeoutNowRequest {
                    cluster_id: ctx.config().cluster_id,
                    deadline_ms: campaign.as_millis() as u64,
                    hold: true,
                    from: me,
                });
                req.set_timeout(election);
                let _ = c.timeout_now(req).await;
            }
        }
        let mut req = tonic::Request::new(TimeoutNowRequest {
            cluster_id: ctx.config().cluster_id,
            deadline_ms: campaign.as_millis() as u64,
            hold: false,
            from: me,
        });
        req.set_timeout(campaign + election);
        client.timeout_now(req).await?;
        // This member learns of the new term from the new leader.
        let left = deadline.saturating_duration_since(Instant::now());
        ctx.raft()
            .wait(Some(left))
            .metrics(|m| m.current_leader == Some(target), "new leader")
            .await
            .map_err(|_| transfer_timeout())?;
        Ok::<(), Status>(())
    }
    .await;
    runtime.heartbeat(true);
    ctx.timer_elections(true);
    ctx.set_transferring(false);
    result
}

fn transfer_timeout() -> Status {
    Status::deadline_exceeded("etcdserver: request timed out, leader transfer took too long")
}
