//! The pings that keep each member's [`Liveness`](crate::raft::liveness::Liveness)
//! current: every member asks every other one each second, so that any
//! member (a new leader, say) knows how long each other one has been up,
//! as etcd's members, which keep streams open to every peer, do. Raft's
//! own messages count too; the pings cover members that exchange none.

use std::time::{Duration, Instant};

use ferrocd_proto::ferrocdpb::PingRequest;
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
