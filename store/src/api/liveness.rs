//! The pings that keep each member's [`Liveness`](crate::raft::liveness::Liveness)
//! current: every member asks every other one each second, so that any
//! member (a new leader, say) knows how long each other one has been up,
//! as etcd's members, which keep streams open to every peer, do. Raft's
//! own messages count too; the pings cover members that exchange none.
//!
//! The answer to a ping says whether the member has a live leader
//! ([`live_leader`]); a restarted member asks the voters that before it
//! campaigns ([`prevote`]), as etcd's pre-vote does: one that the leader
//! has not reached yet (a pod whose new address is not yet known, say)
//! would otherwise raise the term and depose a healthy leader.

use std::time::{Duration, Instant};

use ferrocd_proto::ferrocdpb::{PingRequest, PingResponse};
use futures::StreamExt;
use openraft::ServerState;
use tokio::sync::watch;
use tonic::{Code, Request};

use super::Context;
use crate::raft::{LogId, Member};

/// How often each other member is pinged.
pub const PING_EVERY: Duration = Duration::from_secs(1);
/// How long a ping may take.
const PING_TIMEOUT: Duration = Duration::from_millis(500);

/// Pings every other member each [`PING_EVERY`] until `stop`.
pub async fn ping_members(ctx: Context, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(PING_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let me = ctx.config().member_id;
        let others: Vec<(u64, Member)> = {
            let m = ctx.raft().metrics();
            let m = m.borrow();
            m.membership_config
                .membership()
                .nodes()
                .filter(|(id, _)| **id != me)
                .map(|(id, node)| (*id, node.clone()))
                .collect()
        };
        futures::future::join_all(others.into_iter().map(|(id, node)| ping(&ctx, id, node))).await;
    }
}

/// The leader this member has heard from within its election timeout:
/// itself when it leads and a quorum of the voters answered it within one,
/// the leader whose entries it last accepted otherwise; 0 when none.
pub fn live_leader(ctx: &Context) -> u64 {
    let me = ctx.config().member_id;
    let within = Duration::from_millis(ctx.config().election_timeout_ms);
    let now = Instant::now();
    let liveness = ctx.peers().liveness();
    let metrics = ctx.raft().metrics();
    let m = metrics.borrow();
    if m.state == ServerState::Leader {
        let voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
        let heard = voters
            .iter()
            .filter(|&&id| id == me || liveness.heard_within(id, now, within))
            .count();
        return if heard > voters.len() / 2 { me } else { 0 };
    }
    liveness.leader_heard_within(now, within).unwrap_or(0)
}

/// Whether a quorum of the voters, this member included, has no live
/// leader and a log no newer than this member's, so that a campaign of
/// this member would neither depose a leader nor be lost for its log
/// (etcd's pre-vote). A voter that does not answer does not count; one of
/// an earlier version, which answers without an opinion, counts.
pub async fn prevote(ctx: &Context) -> bool {
    let me = ctx.config().member_id;
    let voters: Vec<(u64, Member)> = {
        let m = ctx.raft().metrics();
        let m = m.borrow();
        let membership = m.membership_config.membership();
        membership
            .voter_ids()
            .filter_map(|id| membership.get_node(&id).map(|node| (id, node.clone())))
            .collect()
    };
    if !voters.iter().any(|(id, _)| *id == me) {
        return false;
    }
    let mine = ctx.last_log_id();
    // Decided as soon as a quorum agrees (a voter that is gone may take
    // the whole ping timeout to fail).
    let mut answers: futures::stream::FuturesUnordered<_> = voters
        .iter()
        .filter(|(id, _)| *id != me)
        .map(|(id, node)| answer_of(ctx, *id, node.clone()))
        .collect();
    let mut granted = 1;
    while granted <= voters.len() / 2 {
        match answers.next().await {
            Some(Some(answer)) if answer.grants(mine) => granted += 1,
            Some(_) => {}
            None => return false,
        }
    }
    true
}

/// A voter's answer to a pre-vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// The live leader it knows of, 0 for none (or no opinion).
    pub leader: u64,
    /// Its newest log entry; None when it did not say (an earlier
    /// version), `Some(None)` for an empty log.
    pub last_log: Option<Option<LogId>>,
}

impl Answer {
    fn of(r: &PingResponse) -> Answer {
        let last_log = match (r.last_log_term, r.last_log_leader, r.last_log_index) {
            (Some(0), _, Some(0)) => Some(None),
            (Some(term), Some(node), Some(index)) => Some(Some(LogId::new(
                openraft::CommittedLeaderId::new(term, node),
                index,
            ))),
            _ => None,
        };
        Answer {
            leader: r.leader.unwrap_or(0),
            last_log,
        }
    }

    /// Whether this answer lets a member whose newest entry is `mine`
    /// campaign: no live leader, and no newer log than `mine`.
    pub fn grants(&self, mine: Option<LogId>) -> bool {
        self.leader == 0 && self.last_log.is_none_or(|theirs| mine >= theirs)
    }
}

/// What member `id` answers to a pre-vote: None when it does not answer.
async fn answer_of(ctx: &Context, id: u64, node: Member) -> Option<Answer> {
    let mut client = ctx.peers().member(&node).ok()?;
    let mut req = Request::new(PingRequest {
        cluster_id: ctx.config().cluster_id,
        from: ctx.config().member_id,
        incarnation: crate::raft::liveness::incarnation(),
    });
    req.set_timeout(PING_TIMEOUT);
    match client.ping(req).await {
        Ok(answer) => {
            ctx.peers().liveness().record_ok(id, Instant::now());
            Some(Answer::of(answer.get_ref()))
        }
        Err(status) if status.code() == Code::Unimplemented => Some(Answer {
            leader: 0,
            last_log: None,
        }),
        Err(_) => None,
    }
}

async fn ping(ctx: &Context, id: u64, node: Member) {
    let liveness = ctx.peers().liveness();
    let Ok(mut client) = ctx.peers().member(&node) else {
        liveness.record_failure(id);
        return;
    };
    let mut req = Request::new(PingRequest {
        cluster_id: ctx.config().cluster_id,
        from: ctx.config().member_id,
        incarnation: crate::raft::liveness::incarnation(),
    });
    req.set_timeout(PING_TIMEOUT);
    match client.ping(req).await {
        Ok(_) => liveness.record_ok(id, Instant::now()),
        // A member of an older version, which runs all the same.
        Err(status) if status.code() == Code::Unimplemented => {
            liveness.record_ok(id, Instant::now())
        }
        // Late, not gone: silence breaks the connection once it lasts.
        Err(status) if crate::raft::network::timed_out(&status) => {}
        Err(_) => liveness.record_failure(id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(term: u64, node: u64, index: u64) -> LogId {
        LogId::new(openraft::CommittedLeaderId::new(term, node), index)
    }

    fn response(leader: u64, last: Option<(u64, u64, u64)>) -> PingResponse {
        PingResponse {
            leader: Some(leader),
            last_log_term: last.map(|l| l.0),
            last_log_leader: last.map(|l| l.1),
            last_log_index: last.map(|l| l.2),
        }
    }

    #[test]
    fn a_pre_vote_is_granted_without_a_live_leader_to_a_log_as_new_as_the_voters() {
        let mine = Some(log(3, 7, 100));
        // No leader, an older or equal log: granted.
        assert!(Answer::of(&response(0, Some((3, 7, 99)))).grants(mine));
        assert!(Answer::of(&response(0, Some((3, 7, 100)))).grants(mine));
        assert!(Answer::of(&response(0, Some((2, 9, 500)))).grants(mine));
        // A live leader, or a newer log (a later term, or more entries of
        // the same): refused.
        assert!(!Answer::of(&response(5, Some((1, 1, 1)))).grants(mine));
        assert!(!Answer::of(&response(0, Some((3, 7, 101)))).grants(mine));
        assert!(!Answer::of(&response(0, Some((4, 2, 10)))).grants(mine));
        // An empty log is older than any; a member of an earlier version
        // says nothing about its log.
        assert!(Answer::of(&response(0, Some((0, 0, 0)))).grants(None));
        assert!(!Answer::of(&response(0, Some((1, 1, 1)))).grants(None));
        let old = PingResponse {
            leader: None,
            ..Default::default()
        };
        assert!(Answer::of(&old).grants(None));
    }
}
