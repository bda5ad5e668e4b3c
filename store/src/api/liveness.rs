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

use ferrocd_proto::ferrocdpb::PingRequest;
use futures::StreamExt;
use openraft::ServerState;
use tokio::sync::watch;
use tonic::{Code, Request};

use super::Context;
use crate::raft::Member;

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
/// leader, so that a campaign of this member would not depose one (etcd's
/// pre-vote). A voter that does not answer does not count; one of an
/// earlier version, which answers without an opinion, counts.
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
    // Decided as soon as a quorum agrees (a voter that is gone may take
    // the whole ping timeout to fail).
    let mut answers: futures::stream::FuturesUnordered<_> = voters
        .iter()
        .filter(|(id, _)| *id != me)
        .map(|(id, node)| leader_of(ctx, *id, node.clone()))
        .collect();
    let mut granted = 1;
    while granted <= voters.len() / 2 {
        match answers.next().await {
            Some(Some(0)) => granted += 1,
            Some(_) => {}
            None => return false,
        }
    }
    true
}

/// The live leader member `id` reports: `Some(0)` for none or no opinion,
/// None when it does not answer.
async fn leader_of(ctx: &Context, id: u64, node: Member) -> Option<u64> {
    let mut client = ctx.peers().member(&node).ok()?;
    let mut req = Request::new(PingRequest {
        cluster_id: ctx.config().cluster_id,
        from: ctx.config().member_id,
    });
    req.set_timeout(PING_TIMEOUT);
    match client.ping(req).await {
        Ok(answer) => {
            ctx.peers().liveness().record_ok(id, Instant::now());
            Some(answer.into_inner().leader.unwrap_or(0))
        }
        Err(status) if status.code() == Code::Unimplemented => Some(0),
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
