//! The etcd v3 gRPC services. This layer validates requests, turns store
//! errors into etcd's exact statuses (once, here), fills response headers,
//! and sends writes through raft.

mod auth;
mod caller;
mod cluster;
pub mod compactor;
pub mod corrupt_check;
pub mod errors;
pub mod failover;
mod kv;
mod lease;
pub mod liveness;
mod maintenance;
mod peer;
mod propose;
mod quota_check;
mod read_index;
mod snapshot;
mod unsupported;
mod watch;
mod watch_server;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrocd_proto::etcdserverpb::ResponseHeader;
use ferrocd_proto::ferrocdpb::{internal_request, InternalRequest};
use prost::Message;
use tonic::Status;

pub use auth::{sweep_tokens, AuthService};
pub use cluster::{run as change_members, ClusterService};
pub use errors::EtcdError;
pub use kv::KvService;
pub use lease::{expire_leases, LeaseService};
pub use maintenance::MaintenanceService;
pub use peer::PeerService;
pub use quota_check::watch_space;
pub use watch::WatchService;
pub use watch_server::WatchServer;

use crate::alarm::Alarms;
use crate::auth::{AuthError, AuthInfo, AuthStore};
use crate::config::Config;
use crate::kv::validate::Invalid;
use crate::kv::KvError;
use crate::mvcc::{Mvcc, MvccError};
use crate::raft::{Member, PeerClients, Raft, Response};

/// What every service shares: the raft handle, the store and the config.
#[derive(Clone)]
pub struct Context {
    inner: Arc<Shared>,
}

struct Shared {
    raft: Raft,
    mvcc: Arc<Mvcc>,
    auth: Arc<AuthStore>,
    alarms: Arc<Alarms>,
    config: Config,
    /// The state machine's storage.
    backend: Arc<crate::raft::Backend>,
    /// The database's size for quota checks, read again only now and then.
    db_size: quota_check::SizeProbe,
    peers: Arc<PeerClients>,
    proposer: propose::Proposer,
    reads: read_index::ReadIndex,
    next_id: AtomicU64,
    next_lease_id: AtomicI64,
    /// Shut while this member hands leadership over: membership changes
    /// are refused, writes and read indexes wait.
    transfer_gate: TransferGate,
    /// Holds this member's early campaigns (see [`failover`]).
    campaign_hold: failover::CampaignHold,
    /// The raft log (its newest entry, for pre-votes).
    log: crate::raft::LogStore,
}

impl Context {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        raft: Raft,
        mvcc: Arc<Mvcc>,
        auth: Arc<AuthStore>,
        alarms: Arc<Alarms>,
        config: Config,
        backend: Arc<crate::raft::Backend>,
        peers: Arc<PeerClients>,
        log: crate::raft::LogStore,
    ) -> Self {
        let lease_base = lease_id_base(config.member_id);
        let transfer_gate = TransferGate::default();
        let route = propose::Route {
            raft: raft.clone(),
            me: config.member_id,
            peers: peers.clone(),
            timeout: request_timeout(&config),
            gate: transfer_gate.clone(),
        };
        let proposer = propose::Proposer::start(route.clone());
        let reads = read_index::ReadIndex::start(route);
        Context {
            inner: Arc::new(Shared {
                proposer,
                reads,
                raft,
                mvcc,
                auth,
                alarms,
                config,
                db_size: quota_check::SizeProbe::default(),
                backend,
                peers,
                next_id: AtomicU64::new(1),
                next_lease_id: AtomicI64::new(lease_base),
                transfer_gate,
                campaign_hold: failover::CampaignHold::default(),
                log,
            }),
        }
    }

    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    pub fn mvcc(&self) -> &Mvcc {
        &self.inner.mvcc
    }

    /// The state machine's storage (for defragmenting).
    pub fn backend(&self) -> &crate::raft::Backend {
        &self.inner.backend
    }

    /// Users, roles and tokens.
    pub fn auth(&self) -> &AuthStore {
        &self.inner.auth
    }

    /// The alarms this member has applied.
    pub fn alarms(&self) -> &Alarms {
        &self.inner.alarms
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// How long a request may wait for raft, as etcd computes it:
    /// 5 s plus two election timeouts.
    fn request_timeout(&self) -> Duration {
        request_timeout(&self.inner.config)
    }

    /// Connections to the other members.
    pub fn peers(&self) -> &PeerClients {
        &self.inner.peers
    }

    /// The leader this member knows of, with its membership record.
    pub fn leader(&self) -> Option<(u64, Member)> {
        leader_of(&self.inner.raft)
    }

    /// Whether this member leads the cluster now.
    pub fn is_leader(&self) -> bool {
        self.inner.raft.metrics().borrow().current_leader == Some(self.inner.config.member_id)
    }

    /// Marks a leadership transfer as running (or over).
    fn set_transferring(&self, on: bool) {
        self.inner.transfer_gate.set(on);
    }

    /// Shut while a leadership transfer runs (see [`TransferGate`]).
    fn transfer_gate(&self) -> &TransferGate {
        &self.inner.transfer_gate
    }

    /// The id of the newest entry of this member's raft log.
    pub fn last_log_id(&self) -> Option<crate::raft::LogId> {
        self.inner.log.last_log_id()
    }

    /// When this member's early campaigns are held (see [`failover`]).
    pub fn campaign_hold(&self) -> &failover::CampaignHold {
        &self.inner.campaign_hold
    }

    /// Lets openraft's own election timer run, or stops it. With
    /// `--pre-vote` it never runs: campaigns come from [`failover`] alone,
    /// each after the voters agree.
    pub fn timer_elections(&self, on: bool) {
        let on = on && !self.inner.config.pre_vote;
        self.inner.raft.runtime_config().elect(on);
    }

    /// Whether a leadership transfer is running on this member.
    fn transferring(&self) -> bool {
        self.inner.transfer_gate.is_shut()
    }

    /// Whether `id` is in the membership this member knows.
    pub fn is_member(&self, id: u64) -> bool {
        self.member(id).is_some()
    }

    /// Member `id`'s record in the membership this member knows.
    pub fn member(&self, id: u64) -> Option<Member> {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        let member = m.membership_config.membership().get_node(&id).cloned();
        member
    }

    /// Whether this member is a learner (replicates, but does not vote).
    pub fn is_learner(&self) -> bool {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        let me = self.inner.config.member_id;
        let learner = m
            .membership_config
            .membership()
            .learner_ids()
            .any(|id| id == me);
        learner
    }

    /// etcd's answer to a client request a learner does not serve.
    pub fn reject_learner(&self) -> Result<(), Status> {
        if self.is_learner() {
            return Err(EtcdError::NotSupportedForLearner.into());
        }
        Ok(())
    }

    /// Waits for a leader until `deadline`; "no leader" after it.
    pub async fn wait_leader(&self, deadline: Instant) -> Result<(u64, Member), Status> {
        let mut metrics = self.inner.raft.metrics();
        loop {
            if let Some(leader) = self.leader() {
                return Ok(leader);
            }
            let changed = tokio::time::timeout_at(deadline.into(), metrics.changed()).await;
            match changed {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(EtcdError::Stopped.into()),
                Err(_) => return Err(EtcdError::NoLeader.into()),
            }
        }
    }

    /// Waits until this member has applied log entry `index`.
    pub async fn wait_applied(&self, index: u64, deadline: Instant) -> Result<(), Status> {
        let left = deadline.saturating_duration_since(Instant::now());
        self.inner
            .raft
            .wait(Some(left))
            .applied_index_at_least(Some(index), "catching up with the leader")
            .await
            .map(|_| ())
            .map_err(|e| match e {
                openraft::metrics::WaitError::Timeout(..) => EtcdError::Timeout.into(),
                openraft::metrics::WaitError::ShuttingDown => EtcdError::Stopped.into(),
            })
    }

    /// The raft term as clients see it. etcd spends term 1 on bootstrapping
    /// and first elects a leader in term 2; openraft elects in term 1. The
    /// offset makes ferrocd's terms read as etcd's (2 on a fresh member, one
    /// more per election), identically on every member.
    pub fn raft_term(&self) -> u64 {
        self.inner.raft.metrics().borrow().current_term + 1
    }

    /// A top-level response header: cluster, member, term, and `revision`
    /// (or the current revision when the response carried none).
    fn header(&self, revision: i64) -> ResponseHeader {
        let revision = if revision == 0 {
            self.inner.mvcc.current_revision()
        } else {
            revision
        };
        ResponseHeader {
            cluster_id: self.inner.config.cluster_id,
            member_id: self.inner.config.member_id,
            revision,
            raft_term: self.raft_term(),
        }
    }

    /// A header with exactly `revision` (watch responses may carry 0).
    pub fn header_exact(&self, revision: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.inner.config.cluster_id,
            member_id: self.inner.config.member_id,
            revision,
            raft_term: self.raft_term(),
        }
    }

    fn fill(&self, header: &mut Option<ResponseHeader>) {
        let revision = header.map(|h| h.revision).unwrap_or(0);
        *header = Some(self.header(revision));
    }

    /// A lease id for a grant that did not choose one.
    fn new_lease_id(&self) -> i64 {
        self.inner.next_lease_id.fetch_add(1, Ordering::Relaxed) & i64::MAX
    }

    /// Waits until this member may serve a linearizable read: the leader
    /// has confirmed its leadership with a quorum (read index), and this
    /// member has applied everything the leader had committed by then.
    pub async fn linearizable(&self) -> Result<(), Status> {
        self.reject_learner()?;
        let deadline = Instant::now() + self.request_timeout();
        let index = self.inner.reads.get().await?;
        self.wait_applied(index, deadline).await
    }

    /// The error of a request that ran out of time: "no leader" when there
    /// is none, etcd's timeout otherwise.
    fn timeout_error(&self) -> Status {
        if self.leader().is_none() {
            EtcdError::NoLeader.into()
        } else {
            EtcdError::Timeout.into()
        }
    }

    /// Proposes a write through raft (batched with concurrent ones) on
    /// behalf of `who`, and waits until it is applied.
    async fn propose(
        &self,
        who: Sender<'_>,
        request: internal_request::Request,
    ) -> Result<Response, Status> {
        let (username, auth_revision) = match who {
            Sender::Client(Some(info)) => (info.username.clone(), info.revision),
            Sender::Client(None) | Sender::Member => (String::new(), 0),
        };
        let req = InternalRequest {
            id: self.inner.next_id.fetch_add(1, Ordering::Relaxed),
            request: Some(request),
            username,
            auth_revision,
            by_member: matches!(who, Sender::Member),
        };
        if req.encoded_len() > self.inner.config.max_request_bytes {
            return Err(EtcdError::RequestTooLarge.into());
        }
        self.reject_learner()?;
        let applied = self.inner.proposer.propose(req);
        match tokio::time::timeout(self.request_timeout(), applied).await {
            Ok(Ok(Response::Failed(e))) => Err(kv_status(e)),
            Ok(Ok(Response::Refused(e))) => Err(auth_status(e)),
            Ok(result) => result,
            Err(_) => Err(self.timeout_error()),
        }
    }

    /// Proposes a client's write and answers with its applied response,
    /// header filled. `pick` takes the response of the expected kind.
    async fn write<T: WithHeader>(
        &self,
        who: Option<&AuthInfo>,
        request: internal_request::Request,
        pick: fn(Response) -> Result<T, Response>,
    ) -> Result<tonic::Response<T>, Status> {
        let applied = self.propose(Sender::Client(who), request).await?;
        let mut resp = pick(applied).map_err(|other| {
            Status::internal(format!("etcdserver: unexpected apply result {other:?}"))
        })?;
        self.fill(resp.header_mut());
        Ok(tonic::Response::new(resp))
    }

    /// Bytes the database occupies on disk.
    pub fn db_size(&self) -> i64 {
        self.inner
            .backend
            .db()
            .size_on_disk()
            .map(|s| s as i64)
            .unwrap_or(0)
    }
}

/// On whose behalf a request is proposed.
#[derive(Clone, Copy)]
enum Sender<'a> {
    /// A client, with its credentials if it gave any.
    Client(Option<&'a AuthInfo>),
    /// This member itself (lease expiry): no permission applies.
    Member,
}

/// How long to wait before asking again after leadership moved.
const RETRY_PAUSE: Duration = Duration::from_millis(20);

/// The leader `raft` knows of, with its membership record.
/// Shut while this member, the leader, hands leadership over (MoveLeader),
/// as etcd's leader stops taking proposals during a transfer. Each write
/// appended and each read index confirmed would renew the followers'
/// lease on this leader (openraft's voters refuse votes for an election
/// timeout after a leader's last message), so under steady writes the
/// transferee could never be elected. Writes and read indexes wait at the
/// gate; once it opens they find the new leader (or, if the transfer
/// failed, this one).
#[derive(Clone, Default)]
pub struct TransferGate {
    shut: Arc<tokio::sync::watch::Sender<bool>>,
}

impl TransferGate {
    fn set(&self, shut: bool) {
        self.shut.send_replace(shut);
    }

    fn is_shut(&self) -> bool {
        *self.shut.borrow()
    }

    /// Waits while the gate is shut.
    pub async fn pass(&self) {
        if self.is_shut() {
            let mut rx = self.shut.subscribe();
            let _ = rx.wait_for(|shut| !*shut).await;
        }
    }
}

fn leader_of(raft: &Raft) -> Option<(u64, Member)> {
    let m = raft.metrics();
    let m = m.borrow();
    let id = m.current_leader?;
    let node = m.membership_config.membership().get_node(&id)?.clone();
    Some((id, node))
}

/// How long a request may wait for raft, as etcd computes it: 5 s plus two
/// election timeouts.
fn request_timeout(config: &Config) -> Duration {
    Duration::from_millis(5000 + 2 * config.election_timeout_ms)
}

/// Responses that carry a header for [`Context::write`] to fill.
trait WithHeader {
    fn header_mut(&mut self) -> &mut Option<ResponseHeader>;
}

macro_rules! with_header {
    ($($t:ty),*) => {
        $(impl WithHeader for $t {
            fn header_mut(&mut self) -> &mut Option<ResponseHeader> {
                &mut self.header
            }
        })*
    };
}

with_header!(
    ferrocd_proto::etcdserverpb::PutResponse,
    ferrocd_proto::etcdserverpb::DeleteRangeResponse,
    ferrocd_proto::etcdserverpb::TxnResponse,
    ferrocd_proto::etcdserverpb::CompactionResponse,
    ferrocd_proto::etcdserverpb::LeaseGrantResponse,
    ferrocd_proto::etcdserverpb::LeaseRevokeResponse,
    ferrocd_proto::etcdserverpb::AlarmResponse
);

/// Where this member's generated lease ids start: its member id's low 16
/// bits, then the start time in milliseconds, then a counter, as etcd does,
/// so ids from different members and restarts do not collide.
fn lease_id_base(member_id: u64) -> i64 {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let id = ((member_id & 0xffff) << 48) | ((millis & 0xff_ffff_ffff) << 8);
    (id & i64::MAX as u64).max(1) as i64
}

/// Maps a store error to etcd's status.
fn kv_status(e: KvError) -> Status {
    match e {
        KvError::Mvcc(MvccError::Compacted) => EtcdError::Compacted.into(),
        KvError::Mvcc(MvccError::FutureRevision) => EtcdError::FutureRev.into(),
        KvError::Mvcc(MvccError::Storage(msg)) => {
            Status::internal(format!("etcdserver: storage error: {msg}"))
        }
        // Only whole-store exports fail so, and they start over themselves.
        KvError::Mvcc(MvccError::Changed) => Status::unavailable(MvccError::Changed.to_string()),
        KvError::KeyNotFound => EtcdError::KeyNotFound.into(),
        KvError::LeaseNotFound => EtcdError::LeaseNotFound.into(),
        KvError::LeaseExist => EtcdError::LeaseExist.into(),
        KvError::ReadOnly => Status::internal("etcdserver: write in a read-only transaction"),
        KvError::NoSpace => EtcdError::NoSpace.into(),
        KvError::Corrupt => EtcdError::Corrupt.into(),
    }
}

/// Maps an auth failure to etcd's status.
fn auth_status(e: AuthError) -> Status {
    match e {
        AuthError::RootUserNotExist => EtcdError::RootUserNotExist,
        AuthError::RootRoleNotExist => EtcdError::RootRoleNotExist,
        AuthError::UserAlreadyExist => EtcdError::UserAlreadyExist,
        AuthError::UserEmpty => EtcdError::UserEmpty,
        AuthError::UserNotFound => EtcdError::UserNotFound,
        AuthError::RoleAlreadyExist => EtcdError::RoleAlreadyExist,
        AuthError::RoleNotFound => EtcdError::RoleNotFound,
        AuthError::RoleEmpty => EtcdError::RoleEmpty,
        AuthError::AuthFailed => EtcdError::AuthFailed,
        AuthError::PermissionNotGiven => EtcdError::PermissionNotGiven,
        AuthError::PermissionDenied => EtcdError::PermissionDenied,
        AuthError::RoleNotGranted => EtcdError::RoleNotGranted,
        AuthError::PermissionNotGranted => EtcdError::PermissionNotGranted,
        AuthError::AuthNotEnabled => EtcdError::AuthNotEnabled,
        AuthError::InvalidAuthToken => EtcdError::InvalidAuthToken,
        AuthError::InvalidAuthMgmt => EtcdError::InvalidAuthMgmt,
        AuthError::AuthOldRevision => EtcdError::AuthOldRevision,
    }
    .into()
}

/// Maps a validation failure to etcd's status.
fn invalid_status(e: Invalid) -> Status {
    match e {
        Invalid::EmptyKey => EtcdError::EmptyKey,
        Invalid::SortOption => EtcdError::InvalidSortOption,
        Invalid::ValueProvided => EtcdError::ValueProvided,
        Invalid::LeaseProvided => EtcdError::LeaseProvided,
        Invalid::TooManyOps => EtcdError::TooManyOps,
        Invalid::DuplicateKey => EtcdError::DuplicateKey,
        Invalid::EmptyOp => EtcdError::KeyNotFound,
    }
    .into()
}

/// Status for an RPC whose service is not built yet.
fn not_yet(what: &str) -> Status {
    Status::unimplemented(format!("ferrocd: {what} is not implemented yet"))
}
