//! The peer protocol, server side: raft messages from other members, and
//! what followers ask of the leader for their clients (writes, read
//! indexes, membership changes, lease renewals), and hashes of the store
//! for the corruption checks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrocd_proto::etcdserverpb::{
    LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use ferrocd_proto::ferrocdpb::peer_server::Peer;
use ferrocd_proto::ferrocdpb::*;
use openraft::error::{ClientWriteError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, VoteRequest,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status, Streaming};
use tracing::warn;

use super::{cluster, corrupt_check, lease, Context, EtcdError};
use crate::lease::Lessor;
use crate::metrics;
use crate::raft::network::{PeerError, CLUSTER_ID_METADATA, REMOVED};
use crate::raft::peer_failure::{PeerFailure, Refusal};
use crate::raft::TypeConfig;

/// The answers on an AppendEntries stream.
pub type AppendStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<RaftMessage, Status>> + Send>>;

/// The peer service.
#[derive(Clone)]
pub struct PeerService {
    ctx: Context,
    lessor: Arc<Lessor>,
}

impl PeerService {
    pub fn new(ctx: Context, lessor: Arc<Lessor>) -> Self {
        PeerService { ctx, lessor }
    }

    /// Refuses messages without this member's cluster id: from members of
    /// another cluster, or from anything that is not a member.
    fn check(&self, cluster_id: u64) -> Result<(), Status> {
        let mine = self.ctx.config().cluster_id;
        if cluster_id == 0 {
            return Err(Status::failed_precondition(
                "ferrocd: peer request without a cluster id",
            ));
        }
        if cluster_id != mine {
            return Err(Status::failed_precondition(format!(
                "ferrocd: request from cluster {cluster_id:x}, this member belongs to cluster {mine:x}"
            )));
        }
        Ok(())
    }

    /// [`PeerService::check`] for calls that carry the cluster id in
    /// their metadata.
    fn check_metadata<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let id = request
            .metadata()
            .get(CLUSTER_ID_METADATA)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| u64::from_str_radix(v, 16).ok())
            .unwrap_or(0);
        self.check(id)
    }

    /// One AppendEntries request, from a call or a stream.
    async fn append(&self, msg: RaftMessage) -> Result<Response<RaftMessage>, Status> {
        self.check(msg.cluster_id)?;
        let rpc: AppendEntriesRequest<TypeConfig> = decode(&msg)?;
        let from = rpc.vote.leader_id().node_id;
        let answer = self.ctx.raft().append_entries(rpc).await;
        if answer
            .as_ref()
            .is_ok_and(|a| !matches!(a, AppendEntriesResponse::HigherVote(_)))
        {
            // Accepted as this member's leader: what pre-vote asks about.
            self.ctx
                .peers()
                .liveness()
                .record_leader(from, Instant::now());
        }
        counted(from, &msg, encode(&answer))
    }

    fn must_lead(&self) -> Result<(), Status> {
        if self.ctx.is_leader() {
            Ok(())
        } else {
            Err(refusal(Refusal::NotLeader))
        }
    }
}

fn decode<T: DeserializeOwned>(msg: &RaftMessage) -> Result<T, Status> {
    bincode::deserialize(&msg.payload)
        .map_err(|e| Status::invalid_argument(format!("ferrocd: undecodable raft message: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Result<Response<RaftMessage>, Status> {
    let payload = bincode::serialize(value).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(RaftMessage {
        cluster_id: 0,
        payload,
        incarnation: crate::raft::liveness::incarnation(),
    }))
}

/// Counts a raft message from member `from` and the answer sent back.
fn counted(
    from: u64,
    msg: &RaftMessage,
    answer: Result<Response<RaftMessage>, Status>,
) -> Result<Response<RaftMessage>, Status> {
    let m = metrics::get();
    let peer = metrics::peer_label(from);
    m.peer_received_bytes
        .with_label_values(&[&peer])
        .inc_by(msg.payload.len() as u64);
    if let Ok(resp) = &answer {
        m.peer_sent_bytes
            .with_label_values(&[&peer])
            .inc_by(resp.get_ref().payload.len() as u64);
    }
    answer
}

/// A peer that could not be asked, as a status (marked: nothing was sent).
pub fn status(e: PeerError) -> Status {
    match e {
        PeerError::Status { status, .. } => status,
        other => Refusal::NotSent.mark(Status::unavailable(other.to_string())),
    }
}

/// What a client is told when a request it sent through this member
/// failed on its way to the leader with `e`: the leader's own answer, or
/// a refusal, as it is; a call lost on the way (the leader died, the
/// connection broke) as etcd's "request timed out", since the request
/// may have taken effect, as after etcd's own timeout. Never the
/// transport's text, which no etcd client knows.
pub fn forward_failure(e: Status) -> Status {
    match PeerFailure::of(&e) {
        PeerFailure::Ambiguous => EtcdError::Timeout.into(),
        _ => e,
    }
}

/// A refusal as etcd's error, marked for the member that asked (see
/// [`PeerFailure`](crate::raft::peer_failure::PeerFailure)).
pub fn refusal(r: Refusal) -> Status {
    let status = match r {
        Refusal::NotLeader => EtcdError::NotLeader.into(),
        Refusal::NoLeader => EtcdError::NoLeader.into(),
        Refusal::Removed => Status::failed_precondition(REMOVED),
        Refusal::NotSent => Status::unavailable("ferrocd: request not sent"),
    };
    r.mark(status)
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn append_entries(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        self.append(request.into_inner()).await
    }

    type AppendEntriesStreamStream = AppendStream;

    async fn append_entries_stream(
        &self,
        request: Request<Streaming<RaftMessage>>,
    ) -> Result<Response<AppendStream>, Status> {
        // Each request is handled when the answer stream is polled, in
        // order, on the stream's own task: no task per message.
        let service = self.clone();
        let answers =
            futures::stream::unfold(Some((service, request.into_inner())), |state| async move {
                let (service, mut inbound) = state?;
                match inbound.message().await {
                    Ok(Some(msg)) => match service.append(msg).await {
                        Ok(answer) => Some((Ok(answer.into_inner()), Some((service, inbound)))),
                        // The same status a call would get; it ends the
                        // stream, and the sender opens another.
                        Err(status) => Some((Err(status), None)),
                    },
                    Ok(None) | Err(_) => None,
                }
            });
        Ok(Response::new(Box::pin(answers)))
    }

    async fn vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let msg = request.into_inner();
        self.check(msg.cluster_id)?;
        let rpc: VoteRequest<u64> = decode(&msg)?;
        // A member removed from the cluster never hears of it (nobody
        // replicates to it any more) and campaigns: the leader tells it.
        let candidate = rpc.vote.leader_id().node_id;
        if self.ctx.is_leader() && !self.ctx.is_member(candidate) {
            return Err(refusal(Refusal::Removed));
        }
        counted(candidate, &msg, encode(&self.ctx.raft().vote(rpc).await))
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let msg = request.into_inner();
        self.check(msg.cluster_id)?;
        let rpc: InstallSnapshotRequest<TypeConfig> = decode(&msg)?;
        let from = rpc.vote.leader_id().node_id;
        counted(
            from,
            &msg,
            encode(&self.ctx.raft().install_snapshot(rpc).await),
        )
    }

    async fn propose(
        &self,
        request: Request<ProposeRequest>,
    ) -> Result<Response<ProposeResponse>, Status> {
        let r = request.into_inner();
        self.check(r.cluster_id)?;
        self.must_lead()?;
        let batch = r.batch.unwrap_or_default();
        self.ctx.transfer_gate().pass().await;
        match self
            .ctx
            .raft()
            .client_write(crate::raft::Request(batch))
            .await
        {
            Ok(resp) => Ok(Response::new(ProposeResponse {
                index: resp.log_id.index,
                responses: bincode::serialize(&resp.data)
                    .map_err(|e| Status::internal(e.to_string()))?,
            })),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                Err(refusal(Refusal::NotLeader))
            }
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                Err(Status::failed_precondition(e.to_string()))
            }
            Err(RaftError::Fatal(_)) => Err(EtcdError::Stopped.into()),
        }
    }

    async fn read_index(
        &self,
        request: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexResponse>, Status> {
        self.check(request.get_ref().cluster_id)?;
        self.must_lead()?;
        self.ctx.transfer_gate().pass().await;
        match self.ctx.raft().get_read_log_id().await {
            Ok((read, _)) => Ok(Response::new(ReadIndexResponse {
                index: read.map(|l| l.index).unwrap_or(0),
            })),
            Err(RaftError::Fatal(_)) => Err(EtcdError::Stopped.into()),
            Err(RaftError::APIError(_)) => Err(refusal(Refusal::NotLeader)),
        }
    }

    async fn change_members(
        &self,
        request: Request<MemberChange>,
    ) -> Result<Response<MemberChangeResponse>, Status> {
        let r = request.into_inner();
        self.check(r.cluster_id)?;
        self.must_lead()?;
        let change = r
            .change
            .ok_or_else(|| Status::invalid_argument("ferrocd: empty membership change"))?;
        Ok(Response::new(
            cluster::apply_on_leader(&self.ctx, change, r.retry).await?,
        ))
    }

    async fn lease_renew(
        &self,
        request: Request<LeaseKeepAliveRequest>,
    ) -> Result<Response<LeaseKeepAliveResponse>, Status> {
        self.check_metadata(&request)?;
        self.must_lead()?;
        let id = request.into_inner().id;
        let ttl = lease::renew_here(&self.ctx, &self.lessor, id).await;
        Ok(Response::new(LeaseKeepAliveResponse {
            header: Some(self.ctx.header(0)),
            id,
            ttl,
        }))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        self.check_metadata(&request)?;
        self.must_lead()?;
        Ok(Response::new(lease::time_to_live_here(
            &self.ctx,
            &self.lessor,
            &request.into_inner(),
        )))
    }

    async fn timeout_now(
        &self,
        request: Request<TimeoutNowRequest>,
    ) -> Result<Response<TimeoutNowResponse>, Status> {
        let r = request.into_inner();
        self.check(r.cluster_id)?;
        self.ctx.reject_learner()?;
        // Only the leader hands leadership over; anyone else asking would
        // stop or start elections at will.
        match self.ctx.leader() {
            Some((leader, _)) if leader == r.from => {}
            leader => {
                return Err(Status::failed_precondition(format!(
                    "ferrocd: leader transfer asked by {:x}, not by the leader ({})",
                    r.from,
                    leader.map_or("none known".to_string(), |(id, _)| format!("{id:x}"))
                )))
            }
        }
        let deadline = Instant::now() + Duration::from_millis(r.deadline_ms);
        if r.hold {
            hold_elections(&self.ctx, deadline);
        } else {
            campaign(&self.ctx, deadline).await?;
        }
        Ok(Response::new(TimeoutNowResponse {}))
    }

    async fn removed(
        &self,
        request: Request<RemovedRequest>,
    ) -> Result<Response<RemovedResponse>, Status> {
        let r = request.into_inner();
        self.check(r.cluster_id)?;
        if r.member_id != self.ctx.config().member_id {
            return Err(Status::invalid_argument(format!(
                "ferrocd: this is member {:x}, not {:x}",
                self.ctx.config().member_id,
                r.member_id
            )));
        }
        // The sender must be a member, and is asked back at the address
        // this member knows for it (not one the request names): a
        // stranger cannot talk a member into shutting down.
        let Some(sender) = self.ctx.member(r.from) else {
            return Err(Status::failed_precondition(format!(
                "ferrocd: {:x} is not a member of this cluster",
                r.from
            )));
        };
        let ctx = self.ctx.clone();
        tokio::spawn(async move {
            match still_a_member(&ctx, &sender).await {
                Ok(false) => ctx.peers().mark_removed(),
                Ok(true) => warn!(
                    from = %format!("{:x}", r.from),
                    "told this member was removed, but the cluster still lists it; ignored"
                ),
                Err(e) => warn!("could not confirm this member's removal: {e}"),
            }
        });
        Ok(Response::new(RemovedResponse {}))
    }

    async fn cluster_info(
        &self,
        _: Request<ClusterInfoRequest>,
    ) -> Result<Response<ClusterInfoResponse>, Status> {
        // A joining member takes its id from this list: a member behind the
        // leader could still list a member that was removed and replaced
        // at the same peer URL, and hand out the old id.
        self.ctx.linearizable().await?;
        Ok(Response::new(ClusterInfoResponse {
            cluster_id: self.ctx.config().cluster_id,
            members: cluster::members(&self.ctx),
        }))
    }

    async fn ping(&self, request: Request<PingRequest>) -> Result<Response<PingResponse>, Status> {
        let r = request.into_inner();
        self.check(r.cluster_id)?;
        // Asking shows the asker runs, too.
        if self.ctx.is_member(r.from) {
            self.ctx
                .peers()
                .liveness()
                .record_ok_as(r.from, r.incarnation, Instant::now());
        }
        let last = self.ctx.last_log_id();
        Ok(Response::new(PingResponse {
            leader: Some(super::liveness::live_leader(&self.ctx)),
            last_log_term: Some(last.map_or(0, |l| l.leader_id.term)),
            last_log_leader: Some(last.map_or(0, |l| l.leader_id.node_id)),
            last_log_index: Some(last.map_or(0, |l| l.index)),
        }))
    }

    async fn hash_kv(
        &self,
        request: Request<PeerHashKvRequest>,
    ) -> Result<Response<PeerHashKvResponse>, Status> {
        let r = request.into_inner();
        self.check(r.cluster_id)?;
        Ok(Response::new(
            corrupt_check::answer(&self.ctx, r.revision).await?,
        ))
    }
}

/// Whether `asked` still lists this member in the cluster.
async fn still_a_member(ctx: &Context, asked: &crate::raft::Member) -> Result<bool, Status> {
    let mut client = ctx.peers().member(asked).map_err(status)?;
    let mut req = Request::new(ClusterInfoRequest {});
    req.set_timeout(Duration::from_secs(2));
    let info = client.cluster_info(req).await?.into_inner();
    if info.cluster_id != ctx.config().cluster_id {
        return Err(Status::failed_precondition(
            "ferrocd: answer from another cluster",
        ));
    }
    let me = ctx.config().member_id;
    Ok(info.members.iter().any(|m| m.id == me))
}

/// Campaigns until this member leads or `deadline` passes. The old leader
/// has stopped its heartbeats; votes are granted once its lease runs out.
pub async fn campaign(ctx: &Context, deadline: Instant) -> Result<(), Status> {
    let me = ctx.config().member_id;
    let mut metrics = ctx.raft().metrics();
    let election = Duration::from_millis(ctx.config().election_timeout_ms);
    let heartbeat = Duration::from_millis(ctx.config().heartbeat_interval_ms);
    // The other members refuse votes until their lease on the old leader
    // (the election timeout, openraft's longest) has run out since its last
    // heartbeat; a campaign before that would only cost a term.
    let lease = election + heartbeat;
    // This campaign is the only one here meanwhile.
    ctx.campaign_hold().hold_until(deadline);
    let first = tokio::time::Instant::now() + lease;
    let _ =
        tokio::time::timeout_at(first, metrics.wait_for(|m| m.current_leader == Some(me))).await;
    while Instant::now() < deadline {
        if metrics.borrow().current_leader == Some(me) {
            break;
        }
        if ctx.raft().trigger().elect().await.is_err() {
            ctx.campaign_hold().release();
            return Err(EtcdError::Stopped.into());
        }
        // One campaign at a time: each call starts a new term.
        let wait = lease.min(deadline.saturating_duration_since(Instant::now()));
        let _ =
            tokio::time::timeout(wait, metrics.wait_for(|m| m.current_leader == Some(me))).await;
    }
    ctx.campaign_hold().release();
    if metrics.borrow().current_leader == Some(me) {
        Ok(())
    } else {
        Err(Status::deadline_exceeded(
            "etcdserver: request timed out, leader transfer took too long",
        ))
    }
}

/// Keeps this member from campaigning until `deadline`, or until a leader
/// other than the current one is known.
fn hold_elections(ctx: &Context, deadline: Instant) {
    let runtime = ctx.raft().runtime_config();
    runtime.elect(false);
    ctx.campaign_hold().hold_until(deadline);
    let (ctx, old) = (ctx.clone(), ctx.leader().map(|(id, _)| id));
    tokio::spawn(async move {
        let mut metrics = ctx.raft().metrics();
        let moved = metrics.wait_for(|m| m.current_leader.is_some() && m.current_leader != old);
        let _ = tokio::time::timeout_at(deadline.into(), moved).await;
        ctx.timer_elections(true);
        ctx.campaign_hold().release();
    });
}

#[cfg(test)]
mod forward_failure_tests {
    use super::*;

    /// A peer that takes the connection and the request, then hangs up:
    /// the call is lost on the way, and the client hears etcd's timeout.
    #[tokio::test]
    async fn a_call_lost_on_the_way_is_a_timeout_for_the_client() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let _ = socket.read(&mut buf).await;
            drop(socket);
        });
        let peers = crate::raft::PeerClients::new(1, None);
        let mut client = peers.client(&format!("http://127.0.0.1:{port}")).unwrap();
        let err = client
            .read_index(ReadIndexRequest { cluster_id: 1 })
            .await
            .unwrap_err();
        assert_eq!(PeerFailure::of(&err), PeerFailure::Ambiguous, "{err:?}");
        let told = forward_failure(err);
        assert_eq!(told.code(), tonic::Code::Unavailable);
        assert_eq!(told.message(), "etcdserver: request timed out");
    }

    #[test]
    fn answers_and_refusals_pass_through() {
        let answer = Status::resource_exhausted("etcdserver: mvcc: database space exceeded");
        assert_eq!(
            forward_failure(answer).message(),
            "etcdserver: mvcc: database space exceeded"
        );
        let refused = refusal(Refusal::NotLeader);
        assert_eq!(forward_failure(refused).message(), "etcdserver: not leader");
    }
}

#[cfg(test)]
mod bad_input_tests {
    //! Peer messages come off the network: any payload decodes to a
    //! message or to an error, never a panic or an allocation its length
    //! prefixes ask for.

    use super::*;
    use proptest::prelude::*;

    fn decode_all(payload: Vec<u8>) {
        let msg = RaftMessage {
            cluster_id: 1,
            payload,
            incarnation: 0,
        };
        let _ = decode::<AppendEntriesRequest<TypeConfig>>(&msg);
        let _ = decode::<VoteRequest<u64>>(&msg);
        let _ = decode::<InstallSnapshotRequest<TypeConfig>>(&msg);
    }

    /// A real append with `n` entries, as bytes.
    fn an_append(n: u64) -> Vec<u8> {
        let vote = openraft::Vote::new_committed(3, 1);
        let entries = (1..=n)
            .map(|i| openraft::Entry::<TypeConfig> {
                log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(3, 1), i),
                payload: openraft::EntryPayload::Blank,
            })
            .collect();
        let rpc = AppendEntriesRequest::<TypeConfig> {
            vote,
            prev_log_id: None,
            entries,
            leader_commit: None,
        };
        bincode::serialize(&rpc).unwrap()
    }

    #[test]
    fn a_huge_length_prefix_is_an_error() {
        // No entries: the entry count is the eight bytes before the last
        // one (`leader_commit`, none). Claim u64::MAX entries instead.
        let mut raw = an_append(0);
        let at = raw.len() - 9;
        raw[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        let msg = RaftMessage {
            cluster_id: 1,
            payload: raw,
            incarnation: 0,
        };
        assert!(decode::<AppendEntriesRequest<TypeConfig>>(&msg).is_err());
        let whole = RaftMessage {
            cluster_id: 1,
            payload: an_append(3),
            incarnation: 0,
        };
        let rpc: AppendEntriesRequest<TypeConfig> = decode(&whole).unwrap();
        assert_eq!(rpc.entries.len(), 3);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        #[test]
        fn any_payload_never_panics(payload in prop::collection::vec(any::<u8>(), 0..300)) {
            decode_all(payload);
        }

        #[test]
        fn a_damaged_append_never_panics(
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut raw = an_append(3);
            for (at, x) in flips {
                let i = at.index(raw.len());
                raw[i] = x;
            }
            raw.truncate(cut.index(raw.len() + 1));
            decode_all(raw);
        }
    }
}
