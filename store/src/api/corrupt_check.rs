//! etcd's data corruption checks, the asking side: hashing this member's
//! store, asking the other members for theirs over the peer protocol, and
//! acting on what [`crate::corrupt`] concludes: refusing to start
//! (`--experimental-initial-corrupt-check`), or raising the CORRUPT alarm
//! through raft from the leader (`--experimental-corrupt-check-time`), so
//! that every member refuses writes until the alarm is disarmed.

use std::time::Duration;

use ferrocd_proto::etcdserverpb::alarm_request::AlarmAction;
use ferrocd_proto::etcdserverpb::{AlarmRequest, AlarmType, HashKvResponse};
use ferrocd_proto::ferrocdpb::internal_request::Request as Internal;
use ferrocd_proto::ferrocdpb::peer_hash_kv_response::Outcome;
use ferrocd_proto::ferrocdpb::{PeerHashKvRequest, PeerHashKvResponse};
use tokio::sync::watch;
use tonic::Status;
use tracing::{info, warn};

use super::{kv_status, Context, Sender};
use crate::corrupt::{
    initial_finding, periodic_verdict, InitialFinding, LocalHash, PeerAnswer, PeerHash, Verdict,
};
use crate::kv::KvError;
use crate::mvcc::MvccError;
use crate::raft::Member;

/// How long a restarted member waits for raft to report the membership it
/// recorded before the check at start (it reports it at once).
const MEMBERSHIP_WAIT: Duration = Duration::from_secs(5);

/// Why a corruption check could not finish, or what it found at start.
#[derive(Debug, thiserror::Error)]
pub enum CorruptCheckError {
    /// etcd's words for a member whose store cannot be hashed.
    #[error("{member:x} failed to fetch hash ({source})")]
    Hash { member: u64, source: MvccError },
    /// etcd's words for a member that refuses to start.
    #[error("{0:x} found data inconsistency with peers")]
    Inconsistent(u64),
    /// The leader could not catch up with what was committed meanwhile.
    #[error("{}", .0.message())]
    NotCaughtUp(Status),
}

/// Answers a peer's request for this member's hash at `revision`.
pub(super) async fn answer(ctx: &Context, revision: i64) -> Result<PeerHashKvResponse, Status> {
    let outcome = match hash(ctx, revision).await {
        Ok((hash, compact_revision, hash_revision)) => Outcome::Hash(HashKvResponse {
            // The current revision, read after hashing: never behind the
            // revision hashed.
            header: Some(ctx.header(0)),
            hash,
            compact_revision,
            hash_revision,
        }),
        Err(MvccError::FutureRevision) => Outcome::FutureRevision(true),
        Err(MvccError::Compacted) => Outcome::Compacted(true),
        Err(e) => return Err(kv_status(KvError::Mvcc(e))),
    };
    Ok(PeerHashKvResponse {
        outcome: Some(outcome),
    })
}

/// The check at start: compares this member's hash at its current
/// revision with every other member's there, and fails when one differs
/// at the same compacted revision. Members that cannot answer are skipped.
pub async fn initial(ctx: &Context) -> Result<(), CorruptCheckError> {
    let me = ctx.config().member_id;
    info!(
        local_member_id = %format!("{me:x}"),
        timeout = ?ctx.request_timeout(),
        "starting initial corruption check"
    );
    let wait = ctx.raft().wait(Some(MEMBERSHIP_WAIT));
    let known = wait
        .metrics(
            |m| m.membership_config.membership().get_node(&me).is_some(),
            "reading the membership",
        )
        .await;
    if let Err(e) = known {
        warn!("not in the membership this member recorded ({e}); the others are not asked");
    }
    let local = local_hash(ctx).await?;
    let mut mismatches = 0;
    for (id, urls, answer) in ask_peers(ctx, local.revision).await {
        let peer = format!("{id:x}");
        let finding = initial_finding(&local, &answer);
        let theirs = match &answer {
            PeerAnswer::Hash(p) => Some(*p),
            _ => None,
        };
        match finding {
            InitialFinding::Consistent => {}
            InitialFinding::HashMismatch => {
                mismatches += 1;
                warn!(?local, remote_peer_id = %peer, ?urls, remote = ?theirs,
                      "found different hash values from remote peer");
            }
            InitialFinding::CompactRevisionDiffers => {
                warn!(?local, remote_peer_id = %peer, ?urls, remote = ?theirs,
                      "found different compact revision values from remote peer");
            }
            InitialFinding::PeerBehind => {
                warn!(?local, remote_peer_id = %peer, ?urls,
                      "cannot fetch hash from slow remote peer");
            }
            InitialFinding::LocalBehind => {
                warn!(?local, remote_peer_id = %peer, ?urls,
                      "cannot fetch hash from remote peer; local member is behind");
            }
            InitialFinding::NoAnswer => {}
        }
    }
    if mismatches > 0 {
        return Err(CorruptCheckError::Inconsistent(me));
    }
    info!(local_member_id = %format!("{me:x}"), "initial corruption checking passed; no corruption");
    Ok(())
}

/// Every `every`, while this member leads, compares its hash with the
/// followers' and raises CORRUPT for the member blamed, until `stop`.
pub async fn monitor(ctx: Context, every: Duration, mut stop: watch::Receiver<bool>) {
    info!(
        local_member_id = %format!("{:x}", ctx.config().member_id),
        interval = ?every,
        "enabled corruption checking"
    );
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        if !ctx.is_leader() {
            continue;
        }
        match check_once(&ctx).await {
            Ok(verdict) => {
                if let Some(id) = verdict.alarm() {
                    raise_corrupt(&ctx, id).await;
                }
            }
            Err(e) => warn!(error = %e, "failed to check hash KV"),
        }
    }
}

/// One periodic check on the leader (see [`periodic_verdict`]).
async fn check_once(ctx: &Context) -> Result<Verdict, CorruptCheckError> {
    let before = local_hash(ctx).await?;
    let answers = ask_peers(ctx, before.revision).await;
    ctx.linearizable()
        .await
        .map_err(CorruptCheckError::NotCaughtUp)?;
    let after = local_hash(ctx).await?;
    let followers: Vec<(u64, PeerAnswer)> = answers
        .into_iter()
        .map(|(id, _, answer)| (id, answer))
        .collect();
    let verdict = periodic_verdict(ctx.config().member_id, &before, &after, &followers);
    for (id, blame) in &verdict.blamed {
        warn!(member = %format!("{id:x}"), ?before, ?after, "{blame}");
    }
    info!(
        peers_checked = verdict.checked,
        "finished peer corruption check"
    );
    Ok(verdict)
}

/// Raises CORRUPT for `member` through raft, unless it is raised already.
async fn raise_corrupt(ctx: &Context, member: u64) {
    let raised = ctx
        .alarms()
        .get(AlarmType::Corrupt as i32)
        .iter()
        .any(|a| a.member_id == member);
    if raised {
        return;
    }
    warn!(member = %format!("{member:x}"), "raising the CORRUPT alarm");
    let raise = AlarmRequest {
        action: AlarmAction::Activate as i32,
        member_id: member,
        alarm: AlarmType::Corrupt as i32,
    };
    if let Err(e) = ctx.propose(Sender::Member, Internal::Alarm(raise)).await {
        warn!(error = %e.message(), "raising the CORRUPT alarm failed");
    }
}

/// This member's hash at its current revision.
async fn local_hash(ctx: &Context) -> Result<LocalHash, CorruptCheckError> {
    let member = ctx.config().member_id;
    let (hash, compact_revision, revision) = hash(ctx, 0)
        .await
        .map_err(|source| CorruptCheckError::Hash { member, source })?;
    Ok(LocalHash {
        hash,
        revision,
        compact_revision,
    })
}

/// `Mvcc::hash_kv`, a whole-store scan, off the async runtime.
async fn hash(ctx: &Context, revision: i64) -> Result<(u32, i64, i64), MvccError> {
    let ctx = ctx.clone();
    tokio::task::spawn_blocking(move || ctx.mvcc().hash_kv(revision))
        .await
        .map_err(|e| MvccError::Storage(format!("hashing the store: {e}")))?
}

/// Every other member's answer to a hash at `revision`, asked all at once:
/// (member id, peer URLs, answer).
async fn ask_peers(ctx: &Context, revision: i64) -> Vec<(u64, Vec<String>, PeerAnswer)> {
    let me = ctx.config().member_id;
    let others: Vec<(u64, Member)> = {
        let m = ctx.raft().metrics();
        let m = m.borrow();
        let others = m
            .membership_config
            .membership()
            .nodes()
            .filter(|(id, _)| **id != me)
            .map(|(id, node)| (*id, node.clone()))
            .collect();
        others
    };
    let asks = others.into_iter().map(|(id, node)| async move {
        let (answered_by, answer) = ask(ctx, &node, revision).await;
        // As etcd, the member that answered names itself.
        (answered_by.unwrap_or(id), node.peer_urls, answer)
    });
    futures::future::join_all(asks).await
}

/// One member's answer, trying its peer URLs in turn; with the member id
/// its answer carried.
async fn ask(ctx: &Context, node: &Member, revision: i64) -> (Option<u64>, PeerAnswer) {
    let mut why = "the member has no peer URL".to_string();
    for url in &node.peer_urls {
        let mut client = match ctx.peers().client(url) {
            Ok(client) => client,
            Err(e) => {
                why = e.to_string();
                continue;
            }
        };
        let mut request = tonic::Request::new(PeerHashKvRequest {
            cluster_id: ctx.config().cluster_id,
            revision,
        });
        request.set_timeout(ctx.request_timeout());
        let outcome = match client.hash_kv(request).await {
            Ok(resp) => resp.into_inner().outcome,
            Err(status) => {
                warn!(requested_revision = revision, remote_peer_endpoint = %url,
                      error = %status.message(), "failed hash kv request");
                why = format!("{url}: {}", status.message());
                continue;
            }
        };
        match outcome {
            Some(Outcome::Hash(h)) => {
                let header = h.header.unwrap_or_default();
                let hash = PeerHash {
                    hash: h.hash,
                    revision: header.revision,
                    compact_revision: h.compact_revision,
                };
                let id = (header.member_id != 0).then_some(header.member_id);
                return (id, PeerAnswer::Hash(hash));
            }
            Some(Outcome::FutureRevision(_)) => return (None, PeerAnswer::FutureRevision),
            Some(Outcome::Compacted(_)) => return (None, PeerAnswer::Compacted),
            None => why = format!("{url}: an empty answer"),
        }
    }
    (None, PeerAnswer::Failed(why))
}
