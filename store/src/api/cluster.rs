//! The Cluster service: membership as etcd exposes it, kept in the raft
//! membership. Changes run on the leader; a follower forwards them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use ferrocd_proto::etcdserverpb::cluster_server::Cluster;
use ferrocd_proto::etcdserverpb::*;
use ferrocd_proto::ferrocdpb::member_change::Change;
use ferrocd_proto::ferrocdpb::{MemberChange, MemberChangeResponse};
use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::ChangeMembers;
use tonic::{Request, Response, Status};

use super::{peer, Context, EtcdError};
use crate::raft::peer_failure::{PeerFailure, Refusal};
use crate::raft::{self, Membership};

/// A learner may be promoted once it has this share of the leader's log
/// (etcd's readiness rule).
const LEARNER_READY: f64 = 0.9;

/// Pause before retrying while another membership change completes.
const IN_PROGRESS_PAUSE: Duration = Duration::from_millis(50);

/// etcd's Cluster service.
pub struct ClusterService {
    ctx: Context,
}

impl ClusterService {
    pub fn new(ctx: Context) -> Self {
        ClusterService { ctx }
    }

    /// With auth on, only the root role may change the membership (as
    /// etcd); listing stays open.
    async fn admin<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let who = self.ctx.caller(request).await?;
        self.ctx.check_admin(who.as_ref())
    }

    async fn change(&self, change: Change) -> Result<MemberChangeResponse, Status> {
        // etcd's learners answer only Status and serializable reads.
        self.ctx.reject_learner()?;
        run(&self.ctx, change).await
    }

    fn header(&self) -> Option<ResponseHeader> {
        // etcd's Cluster service leaves the revision out of its headers.
        Some(self.ctx.header_exact(0))
    }
}

/// etcd's view of a raft member.
fn etcd_member(id: u64, m: &raft::Member, is_learner: bool) -> Member {
    Member {
        id,
        name: m.name.clone(),
        peer_ur_ls: m.peer_urls.clone(),
        client_ur_ls: m.client_urls.clone(),
        is_learner,
    }
}

fn list(membership: &Membership) -> Vec<Member> {
    let learners: BTreeSet<u64> = membership.learner_ids().collect();
    membership
        .nodes()
        .map(|(id, m)| etcd_member(*id, m, learners.contains(id)))
        .collect()
}

/// The members this member knows of.
pub fn members(ctx: &Context) -> Vec<Member> {
    let metrics = ctx.raft().metrics();
    let metrics = metrics.borrow();
    list(metrics.membership_config.membership())
}

/// Runs a membership change on the leader: here, or forwarded to it.
pub async fn run(ctx: &Context, change: Change) -> Result<MemberChangeResponse, Status> {
    let deadline = Instant::now() + ctx.request_timeout();
    let mut retry = false;
    loop {
        let (leader, node) = ctx.wait_leader(deadline).await?;
        let result = if leader == ctx.config().member_id {
            apply_on_leader(ctx, change.clone(), retry).await
        } else {
            let mut client = ctx.peers().member(&node).map_err(peer::status)?;
            let mut req = Request::new(MemberChange {
                cluster_id: ctx.config().cluster_id,
                change: Some(change.clone()),
                retry,
            });
            req.set_timeout(deadline.saturating_duration_since(Instant::now()));
            client.change_members(req).await.map(Response::into_inner)
        };
        match result {
            // As etcd, answer once this member has applied the change too,
            // so what it lists next includes it.
            Ok(done) => {
                ctx.wait_applied(done.index, deadline).await?;
                return Ok(done);
            }
            // Refused, or never sent: nothing was changed by this attempt.
            Err(e) if PeerFailure::of(&e).nothing_happened() && Instant::now() < deadline => {
                // The change may have been made before leadership moved.
                retry = true;
                tokio::time::sleep(IN_PROGRESS_PAUSE).await;
            }
            Err(e) => return Err(peer::forward_failure(e)),
        }
    }
}

/// Runs a membership change on this member, the leader, with etcd's checks.
pub async fn apply_on_leader(
    ctx: &Context,
    change: Change,
    retry: bool,
) -> Result<MemberChangeResponse, Status> {
    let deadline = Instant::now() + ctx.request_timeout();
    loop {
        match try_apply(ctx, &change, retry).await {
            Err(Retry::InProgress) if Instant::now() < deadline => {
                tokio::time::sleep(IN_PROGRESS_PAUSE).await;
            }
            Err(Retry::InProgress) => return Err(EtcdError::Timeout.into()),
            Err(Retry::Fail(status)) => return Err(status),
            Ok(resp) => {
                if matches!(change, Change::Promote(_)) {
                    crate::metrics::get().learner_promote_successes.inc();
                }
                return Ok(resp);
            }
        }
    }
}

enum Retry {
    /// Another membership change is still being committed.
    InProgress,
    Fail(Status),
}

impl From<EtcdError> for Retry {
    fn from(e: EtcdError) -> Self {
        Retry::Fail(e.into())
    }
}

async fn try_apply(
    ctx: &Context,
    change: &Change,
    retry: bool,
) -> Result<MemberChangeResponse, Retry> {
    if ctx.transferring() {
        return Err(Retry::InProgress);
    }
    let (membership, replication, last_index, applied) = {
        let m = ctx.raft().metrics();
        let m = m.borrow();
        (
            m.membership_config.membership().clone(),
            m.replication.clone().unwrap_or_default(),
            m.last_log_index.unwrap_or(0),
            m.membership_config.log_id().map(|l| l.index).unwrap_or(0),
        )
    };
    let learners: BTreeSet<u64> = membership.learner_ids().collect();
    let find = |id: u64| -> Result<raft::Member, Retry> {
        membership
            .get_node(&id)
            .cloned()
            .ok_or(Retry::from(EtcdError::MemberNotFound))
    };
    let url_taken = |urls: &[String], except: Option<u64>| {
        membership
            .nodes()
            .any(|(id, m)| Some(*id) != except && m.peer_urls.iter().any(|u| urls.contains(u)))
    };
    let strict = ctx.config().strict_reconfig_check;
    let (member_id, changes, is_learner) = match change {
        Change::Add(r) => {
            let urls = valid_urls(&r.peer_ur_ls)?;
            let same = membership.nodes().find(|(_, m)| {
                let mut have = m.peer_urls.clone();
                let mut want = urls.clone();
                have.sort();
                want.sort();
                have == want && m.name.is_empty()
            });
            if let (true, Some((id, node))) = (retry, same) {
                // The first attempt added it before its answer was lost.
                return Ok(MemberChangeResponse {
                    member: Some(etcd_member(*id, node, learners.contains(id))),
                    members: list(&membership),
                    index: applied,
                });
            }
            if url_taken(&urls, None) {
                return Err(EtcdError::PeerUrlExist.into());
            }
            if r.is_learner && learners.len() >= ctx.config().max_learners {
                return Err(EtcdError::TooManyLearners.into());
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            // etcd's rule: the URLs and the time of the request.
            if strict && !r.is_learner {
                may_add_voter(ctx, &membership)?;
            }
            let id = crate::ids::member_id(&urls, &now.to_string());
            if membership.get_node(&id).is_some() {
                return Err(EtcdError::MemberExist.into());
            }
            let node = raft::Member {
                peer_urls: urls,
                ..Default::default()
            };
            let nodes = BTreeMap::from([(id, node)]);
            let change = if r.is_learner {
                ChangeMembers::AddNodes(nodes)
            } else {
                ChangeMembers::AddVoters(nodes)
            };
            (id, change, r.is_learner)
        }
        Change::Remove(r) => {
            find(r.id)?;
            let ids = BTreeSet::from([r.id]);
            if strict && !learners.contains(&r.id) {
                may_remove_voter(ctx, &membership, r.id)?;
            }
            if learners.contains(&r.id) {
                (r.id, ChangeMembers::RemoveNodes(ids), true)
            } else {
                (r.id, ChangeMembers::RemoveVoters(ids), false)
            }
        }
        Change::Update(r) => {
            let mut node = find(r.id)?;
            let urls = valid_urls(&r.peer_ur_ls)?;
            if url_taken(&urls, Some(r.id)) {
                return Err(EtcdError::PeerUrlExist.into());
            }
            node.peer_urls = urls;
            (
                r.id,
                ChangeMembers::SetNodes(BTreeMap::from([(r.id, node)])),
                learners.contains(&r.id),
            )
        }
        Change::Promote(r) => {
            find(r.id)?;
            if !learners.contains(&r.id) {
                return Err(EtcdError::MemberNotLearner.into());
            }
            let matched = replication
                .get(&r.id)
                .cloned()
                .flatten()
                .map(|l| l.index)
                .unwrap_or(0);
            if (matched as f64) < LEARNER_READY * last_index as f64 {
                return Err(EtcdError::LearnerNotReady.into());
            }
            if strict {
                may_add_voter(ctx, &membership)?;
            }
            (
                r.id,
                ChangeMembers::AddVoterIds(BTreeSet::from([r.id])),
                false,
            )
        }
        Change::Publish(m) => {
            let mut node = find(m.id)?;
            if node.name == m.name && node.client_urls == m.client_ur_ls {
                return Ok(MemberChangeResponse {
                    member: Some(etcd_member(m.id, &node, learners.contains(&m.id))),
                    members: list(&membership),
                    index: applied,
                });
            }
            node.name = m.name.clone();
            node.client_urls = m.client_ur_ls.clone();
            (
                m.id,
                ChangeMembers::SetNodes(BTreeMap::from([(m.id, node)])),
                learners.contains(&m.id),
            )
        }
    };
    let (after, index) = match ctx.raft().change_membership(changes, false).await {
        Ok(resp) => (
            resp.membership.unwrap_or_else(|| membership.clone()),
            resp.log_id.index,
        ),
        Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
            ChangeMembershipError::InProgress(_),
        ))) => return Err(Retry::InProgress),
        Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
            return Err(Retry::Fail(Status::failed_precondition(format!(
                "etcdserver: {e}"
            ))))
        }
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
            return Err(Retry::Fail(peer::refusal(Refusal::NotLeader)))
        }
        Err(RaftError::Fatal(_)) => return Err(EtcdError::Stopped.into()),
    };
    if let Change::Remove(_) = change {
        tell_removed(ctx, &membership, member_id);
    }
    let member = after
        .get_node(&member_id)
        .map(|m| etcd_member(member_id, m, is_learner));
    Ok(MemberChangeResponse {
        member,
        members: list(&after),
        index,
    })
}

/// Tells a removed member so, best effort: it then shuts down, as etcd's
/// removed members do. (This member, if it removed itself, notices from
/// the membership.)
fn tell_removed(ctx: &Context, before: &Membership, id: u64) {
    let Some(node) = before.get_node(&id).cloned() else {
        return;
    };
    if id == ctx.config().member_id {
        return;
    }
    let Ok(mut client) = ctx.peers().member(&node) else {
        return;
    };
    let (cluster_id, me) = (ctx.config().cluster_id, ctx.config().member_id);
    tokio::spawn(async move {
        let mut req = Request::new(ferrocd_proto::ferrocdpb::RemovedRequest {
            cluster_id,
            member_id: id,
            from: me,
        });
        req.set_timeout(TELL_REMOVED_TIMEOUT);
        let _ = client.removed(req).await;
    });
}

/// How long a removed member may take to take note.
const TELL_REMOVED_TIMEOUT: Duration = Duration::from_millis(500);

/// etcd's `HealthInterval`: a voter counts as up for a reconfiguration
/// once this member has been connected to it without a break this long.
const HEALTH_INTERVAL: Duration = Duration::from_secs(5);

/// The voters connected to this member for [`HEALTH_INTERVAL`] (itself
/// included): etcd's `numConnectedSince`.
fn connected_voters(ctx: &Context, membership: &Membership) -> BTreeSet<u64> {
    let me = ctx.config().member_id;
    let now = Instant::now();
    let liveness = ctx.peers().liveness();
    membership
        .voter_ids()
        .filter(|&id| {
            id == me
                || liveness
                    .connected_since(id, now)
                    .is_some_and(|since| now.saturating_duration_since(since) >= HEALTH_INTERVAL)
        })
        .collect()
}

/// etcd's strict reconfiguration check for a new voter: the started
/// voters must make a quorum of the larger cluster, and this member must
/// have been connected to every voter for [`HEALTH_INTERVAL`].
fn may_add_voter(ctx: &Context, membership: &Membership) -> Result<(), Retry> {
    let voters: Vec<u64> = membership.voter_ids().collect();
    let started = voters
        .iter()
        .filter(|id| membership.get_node(id).is_some_and(|m| !m.name.is_empty()))
        .count();
    let size_after = voters.len() + 1;
    let quorum = size_after / 2 + 1;
    if started < quorum && !(started == 1 && voters.len() == 1) {
        return Err(EtcdError::MemberNotEnoughStarted.into());
    }
    if connected_voters(ctx, membership).len() < voters.len() {
        return Err(EtcdError::Unhealthy.into());
    }
    Ok(())
}

/// etcd's strict reconfiguration check for removing voter `id`: a member
/// this one is not connected to is down and can always go; otherwise the
/// voters left that have been connected for [`HEALTH_INTERVAL`] must
/// still make a quorum.
fn may_remove_voter(ctx: &Context, membership: &Membership, id: u64) -> Result<(), Retry> {
    let me = ctx.config().member_id;
    let down = id != me
        && ctx
            .peers()
            .liveness()
            .connected_since(id, Instant::now())
            .is_none();
    if down {
        return Ok(());
    }
    let active = connected_voters(ctx, membership).len();
    let voters = membership.voter_ids().count();
    let quorum_after = (voters - 1) / 2 + 1;
    if active.saturating_sub(1) < quorum_after {
        return Err(EtcdError::Unhealthy.into());
    }
    Ok(())
}

/// Peer URLs as etcd accepts them in membership requests.
fn valid_urls(urls: &[String]) -> Result<Vec<String>, Retry> {
    let bad = || {
        Retry::Fail(Status::invalid_argument(
            "etcdserver: given member URLs are invalid",
        ))
    };
    if urls.is_empty() {
        return Err(bad());
    }
    urls.iter()
        .map(|u| {
            let parsed = url::Url::parse(u).map_err(|_| bad())?;
            if parsed.port().is_none() || parsed.host_str().is_none() {
                return Err(bad());
            }
            Ok(u.trim_end_matches('/').to_string())
        })
        .collect()
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_list(
        &self,
        request: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        self.ctx.reject_learner()?;
        if request.get_ref().linearizable {
            self.ctx.linearizable().await?;
        }
        Ok(Response::new(MemberListResponse {
            header: self.header(),
            members: members(&self.ctx),
        }))
    }

    async fn member_add(
        &self,
        request: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        self.admin(&request).await?;
        let done = self.change(Change::Add(request.into_inner())).await?;
        Ok(Response::new(MemberAddResponse {
            header: self.header(),
            member: done.member,
            members: done.members,
        }))
    }

    async fn member_remove(
        &self,
        request: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        self.admin(&request).await?;
        let done = self.change(Change::Remove(request.into_inner())).await?;
        Ok(Response::new(MemberRemoveResponse {
            header: self.header(),
            members: done.members,
        }))
    }

    async fn member_update(
        &self,
        request: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        self.admin(&request).await?;
        let done = self.change(Change::Update(request.into_inner())).await?;
        Ok(Response::new(MemberUpdateResponse {
            header: self.header(),
            members: done.members,
        }))
    }

    async fn member_promote(
        &self,
        request: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        self.admin(&request).await?;
        let done = self.change(Change::Promote(request.into_inner())).await?;
        Ok(Response::new(MemberPromoteResponse {
            header: self.header(),
            members: done.members,
        }))
    }
}
