//! The Lease service, and the leader's loop that revokes expired leases.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrocd_proto::etcdserverpb::lease_server::Lease;
use ferrocd_proto::etcdserverpb::*;
use ferrocd_proto::ferrocdpb::internal_request::Request as Internal;
use futures::Stream;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::{peer, Context, EtcdError, Sender, RETRY_PAUSE};
use crate::kv::Leases as _;
use crate::lease::{Lessor, MAX_TTL};
use crate::raft::network::with_cluster_id;
use crate::raft::peer_failure::PeerFailure;
use crate::raft::Response as Applied;
use ferrocd_proto::ferrocdpb::peer_client::PeerClient;
use tonic::transport::Channel;

/// How often the leader looks for expired leases.
const EXPIRY_CHECK: Duration = Duration::from_millis(500);

/// Most expired leases revoked per check (etcd revokes at most 1000 a
/// second): a burst of expiries is spread over checks instead of making
/// one huge raft entry.
const MAX_REVOKES_PER_CHECK: usize = 500;

/// How often a keep-alive of an expired lease looks whether it is revoked.
const REVOKE_POLL: Duration = Duration::from_millis(20);

/// etcd's Lease service.
pub struct LeaseService {
    ctx: Context,
    lessor: Arc<Lessor>,
}

impl LeaseService {
    pub fn new(ctx: Context, lessor: Arc<Lessor>) -> Self {
        LeaseService { ctx, lessor }
    }
}

type KeepAliveStream =
    Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Lease for LeaseService {
    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_grant(
        &self,
        request: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        // The quota comes first, before credentials and the TTL, as in etcd.
        self.ctx
            .check_quota(crate::quota::lease_grant_cost())
            .await?;
        let who = self.ctx.caller(&request).await?;
        let mut r = request.into_inner();
        if r.ttl > MAX_TTL {
            return Err(EtcdError::LeaseTtlTooLarge.into());
        }
        if r.id == 0 {
            r.id = self.ctx.new_lease_id();
        }
        self.ctx
            .write(who.as_ref(), Internal::LeaseGrant(r), |a| match a {
                Applied::LeaseGrant(resp) => Ok(resp),
                other => Err(other),
            })
            .await
    }

    async fn lease_revoke(
        &self,
        request: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        // Revoking needs WRITE on every key of the lease: checked at apply.
        let who = self.ctx.caller(&request).await?;
        self.ctx
            .write(
                who.as_ref(),
                Internal::LeaseRevoke(request.into_inner()),
                |a| match a {
                    Applied::LeaseRevoke(resp) => Ok(resp),
                    other => Err(other),
                },
            )
            .await
    }

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        self.ctx.reject_learner()?;
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let (ctx, lessor) = (self.ctx.clone(), self.lessor.clone());
        tokio::spawn(async move {
            while let Ok(Some(req)) = inbound.message().await {
                let resp = match renew(&ctx, &lessor, req.id).await {
                    Ok(ttl) => Ok(LeaseKeepAliveResponse {
                        header: Some(ctx.header(0)),
                        id: req.id,
                        ttl,
                    }),
                    Err(e) => Err(e),
                };
                let failed = resp.is_err();
                if tx.send(resp).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        self.ctx.reject_learner()?;
        let r = request.into_inner();
        let deadline = Instant::now() + self.ctx.request_timeout();
        loop {
            // Deadlines live on the leader.
            let mut client = match leader(&self.ctx, deadline).await? {
                Leader::Here => {
                    return Ok(Response::new(time_to_live_here(
                        &self.ctx,
                        &self.lessor,
                        &r,
                    )))
                }
                Leader::There(client) => client,
            };
            let mut req = with_cluster_id(Request::new(r), self.ctx.config().cluster_id);
            req.set_timeout(deadline.saturating_duration_since(Instant::now()));
            match client.lease_time_to_live(req).await {
                Ok(resp) => {
                    let mut resp = resp.into_inner();
                    resp.header = Some(self.ctx.header(0));
                    return Ok(Response::new(resp));
                }
                Err(e) => retry_or_fail(e, deadline).await?,
            }
        }
    }

    async fn lease_leases(
        &self,
        _: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        self.ctx.reject_learner()?;
        Ok(Response::new(LeaseLeasesResponse {
            header: Some(self.ctx.header(0)),
            leases: self
                .lessor
                .ids()
                .into_iter()
                .map(|id| LeaseStatus { id })
                .collect(),
        }))
    }
}

/// Renews lease `id` with the leader (this member or, through the peer
/// protocol, another); answers the TTL, 0 for an unknown or expired lease.
async fn renew(ctx: &Context, lessor: &Lessor, id: i64) -> Result<i64, Status> {
    let deadline = Instant::now() + ctx.request_timeout();
    loop {
        let mut client = match leader(ctx, deadline).await? {
            Leader::Here => return Ok(renew_here(ctx, lessor, id).await),
            Leader::There(client) => client,
        };
        let mut req = with_cluster_id(
            Request::new(LeaseKeepAliveRequest { id }),
            ctx.config().cluster_id,
        );
        req.set_timeout(deadline.saturating_duration_since(Instant::now()));
        match client.lease_renew(req).await {
            Ok(resp) => return Ok(resp.into_inner().ttl),
            Err(e) => retry_or_fail(e, deadline).await?,
        }
    }
}

/// Where lease requests go.
enum Leader {
    Here,
    There(PeerClient<Channel>),
}

/// The leader, once there is one (until `deadline`).
async fn leader(ctx: &Context, deadline: Instant) -> Result<Leader, Status> {
    let (id, node) = ctx.wait_leader(deadline).await?;
    if id == ctx.config().member_id {
        return Ok(Leader::Here);
    }
    Ok(Leader::There(
        ctx.peers().member(&node).map_err(peer::status)?,
    ))
}

/// After a failed forward: pauses and returns Ok to ask again while the
/// leader is changing (renewals and TTL reads are safe to repeat, and etcd
/// retries them until its request timeout); the error otherwise.
async fn retry_or_fail(e: Status, deadline: Instant) -> Result<(), Status> {
    let moving = PeerFailure::of(&e) != PeerFailure::Answered
        || matches!(e.code(), tonic::Code::Unavailable | tonic::Code::Cancelled);
    if !moving || Instant::now() + RETRY_PAUSE >= deadline {
        return Err(e);
    }
    tokio::time::sleep(RETRY_PAUSE).await;
    Ok(())
}

/// Renews lease `id` on this member, the leader.
pub(super) async fn renew_here(ctx: &Context, lessor: &Lessor, id: i64) -> i64 {
    // An unknown or expired lease answers TTL 0, as etcd does; an expired
    // one only once its revoke has been applied, so a client told "gone"
    // does not still find its keys.
    match lessor.renew(id) {
        Some(ttl) => ttl,
        None => {
            wait_revoked(lessor, id, ctx.request_timeout()).await;
            0
        }
    }
}

/// A lease's remaining and granted TTL, as this member (the leader) knows.
pub(super) fn time_to_live_here(
    ctx: &Context,
    lessor: &Lessor,
    r: &LeaseTimeToLiveRequest,
) -> LeaseTimeToLiveResponse {
    match lessor.time_to_live(r.id) {
        Some((remaining, granted)) => LeaseTimeToLiveResponse {
            header: Some(ctx.header(0)),
            id: r.id,
            ttl: remaining,
            granted_ttl: granted,
            keys: if r.keys {
                ctx.mvcc().lease_keys(r.id)
            } else {
                Vec::new()
            },
        },
        // etcd answers a missing lease with TTL -1, not an error.
        None => LeaseTimeToLiveResponse {
            header: Some(ctx.header(0)),
            id: r.id,
            ttl: -1,
            granted_ttl: 0,
            keys: Vec::new(),
        },
    }
}

/// Waits (at most `limit`) until lease `id` no longer exists: the expiry
/// loop is revoking it.
async fn wait_revoked(lessor: &Lessor, id: i64, limit: Duration) {
    let deadline = Instant::now() + limit;
    while lessor.exists(id) && Instant::now() < deadline {
        tokio::time::sleep(REVOKE_POLL).await;
    }
}

/// On the leader, revokes leases whose TTL ran out, through raft so every
/// member deletes the same keys at the same revision. A member that becomes
/// leader first gives every lease a full TTL.
pub async fn expire_leases(ctx: Context, lessor: Arc<Lessor>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(EXPIRY_CHECK);
    let mut was_leader = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let leader = ctx.raft().metrics().borrow().current_leader == Some(ctx.config().member_id);
        if leader && !was_leader {
            lessor.promote();
        } else if !leader && was_leader {
            lessor.demote();
        }
        was_leader = leader;
        if !leader {
            continue;
        }
        // Proposed together, the revokes share raft entries (the proposer
        // batches what arrives at once) instead of one round each.
        let expired = lessor.expired(Instant::now());
        let revokes = expired.iter().take(MAX_REVOKES_PER_CHECK).map(|&id| {
            let ctx = ctx.clone();
            async move {
                let revoke = Internal::LeaseRevoke(LeaseRevokeRequest { id });
                (id, ctx.propose(Sender::Member, revoke).await)
            }
        });
        for (id, outcome) in futures::future::join_all(revokes).await {
            match outcome {
                // Revoked by its owner meanwhile.
                Err(e) if e.code() == tonic::Code::NotFound => {}
                Err(e) => {
                    tracing::warn!(lease = %format!("{id:x}"), "revoking an expired lease failed: {}", e.message())
                }
                Ok(_) => {}
            }
        }
    }
}
