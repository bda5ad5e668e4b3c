//! Talking to the store about membership: the [`EtcdApi`] trait the
//! reconciler uses, the [`MemberStep`]s the planner asks for, and
//! [`execute`], which carries one step out.

use std::future::Future;
use std::time::Duration;

/// How long one member's status may take before it counts as unhealthy,
/// whatever the client's own timeouts.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(4);

/// One entry of the store's member list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Member ID.
    pub id: u64,
    /// Member name; empty until the member has started (as in etcd).
    pub name: String,
    /// Peer URLs the member was added or bootstrapped with.
    pub peer_urls: Vec<String>,
    /// Client URLs the member advertises; empty until it has started.
    pub client_urls: Vec<String>,
    /// Whether the member is a non-voting learner.
    pub is_learner: bool,
}

/// The store's member list and the ID of the cluster that answered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberList {
    /// Cluster ID from the response header (0 when the server sent none).
    pub cluster_id: u64,
    /// The members, learners included.
    pub members: Vec<Member>,
}

/// What one member says about itself (etcd's `Maintenance.Status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointStatus {
    /// ID of the member that answered.
    pub member_id: u64,
    /// ID of the leader as that member sees it (0: none).
    pub leader: u64,
    /// Index of the member's last raft log entry.
    pub raft_index: u64,
    /// Index of the last entry the member applied.
    pub raft_applied_index: u64,
    /// etcd API version the member reports.
    pub version: String,
    /// Whether the member is a learner.
    pub is_learner: bool,
}

/// One member of the store as observed: the member list joined with each
/// member's own status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedMember {
    /// Member ID.
    pub id: u64,
    /// Peer URL the member was added or bootstrapped with.
    pub peer_url: String,
    /// Whether the member is a learner.
    pub is_learner: bool,
    /// Whether the member answered a status request.
    pub healthy: bool,
    /// Whether the member's log is close enough to the leader's to vote.
    pub caught_up: bool,
}

/// Failures of membership calls, in etcd's terms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EtcdError {
    /// The endpoint did not answer.
    #[error("endpoint unavailable: {0}")]
    Unavailable(String),
    /// No member with that ID.
    #[error("member not found")]
    MemberNotFound,
    /// A member already uses one of the peer URLs.
    #[error("Peer URLs already exists")]
    PeerUrlExists,
    /// The cluster already has as many learners as it allows.
    #[error("too many learner members in cluster")]
    TooManyLearners,
    /// Promote of a member that is not a learner.
    #[error("can only promote a learner member")]
    NotALearner,
    /// Promote of a learner that has not caught up with the leader.
    #[error("can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    /// The change would leave fewer started voters than a quorum.
    #[error("re-configuration failed due to not enough started members")]
    NotEnoughStartedMembers,
    /// A leader-only call reached a member that is not the leader.
    #[error("not leader")]
    NotLeader,
    /// MoveLeader to a member that is not a started voter.
    #[error("bad leader transferee")]
    BadLeaderTransferee,
    /// The server does not implement the call (single-member ferrocd today).
    #[error("unimplemented: {0}")]
    Unimplemented(String),
    /// Anything else the server answered.
    #[error("{0}")]
    Other(String),
}

/// The store's cluster and maintenance API, as far as the operator needs it.
///
/// The gRPC implementation talks to a real cluster; [`fake::FakeEtcd`]
/// models etcd's membership rules for tests.
pub trait EtcdApi: Send + Sync {
    /// The current member list, learners included, with the cluster ID.
    fn member_list(&self) -> impl Future<Output = Result<MemberList, EtcdError>> + Send;
    /// Adds a member with `peer_urls`, as a learner when `is_learner`.
    fn member_add(
        &self,
        peer_urls: Vec<String>,
        is_learner: bool,
    ) -> impl Future<Output = Result<Member, EtcdError>> + Send;
    /// Removes member `id`.
    fn member_remove(&self, id: u64) -> impl Future<Output = Result<(), EtcdError>> + Send;
    /// Turns learner `id` into a voter.
    fn member_promote(&self, id: u64) -> impl Future<Output = Result<(), EtcdError>> + Send;
    /// Replaces member `id`'s peer URLs (etcd's `MemberUpdate`).
    fn member_update(
        &self,
        id: u64,
        peer_urls: Vec<String>,
    ) -> impl Future<Output = Result<(), EtcdError>> + Send;
    /// Status of the member serving `endpoint` (a client URL).
    fn status(
        &self,
        endpoint: &str,
    ) -> impl Future<Output = Result<EndpointStatus, EtcdError>> + Send;
    /// Asks the leader, serving `leader_endpoint` (a client URL), to hand
    /// leadership to voter `target` (etcd's `Maintenance.MoveLeader`).
    fn move_leader(
        &self,
        leader_endpoint: &str,
        target: u64,
    ) -> impl Future<Output = Result<(), EtcdError>> + Send;
}

/// One membership change; the planner asks for at most one per reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberStep {
    /// Add the member of StatefulSet ordinal `ordinal` as a learner.
    AddLearner {
        /// StatefulSet ordinal the new member's pod will have.
        ordinal: i32,
        /// Peer URL of that pod.
        peer_url: String,
    },
    /// Promote a learner that has caught up.
    Promote {
        /// ID of the learner.
        id: u64,
        /// StatefulSet ordinal of its pod.
        ordinal: i32,
    },
    /// Remove a member: the highest on scale-down, or one that lost its data.
    Remove {
        /// ID of the member.
        id: u64,
        /// StatefulSet ordinal of its pod.
        ordinal: i32,
    },
}

/// Carries out one step against the store.
pub async fn execute(api: &impl EtcdApi, step: &MemberStep) -> Result<(), EtcdError> {
    match step {
        MemberStep::AddLearner { peer_url, .. } => {
            api.member_add(vec![peer_url.clone()], true).await.map(drop)
        }
        MemberStep::Promote { id, .. } => api.member_promote(*id).await,
        MemberStep::Remove { id, .. } => api.member_remove(*id).await,
    }
}

/// The member list joined with each member's own status, as the store
/// reported them; what the status of the `EtcdCluster` is written from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreView {
    /// ID of the cluster, from the member list's response header (0: not sent).
    pub cluster_id: u64,
    /// Each member with its status; `None` when it did not answer.
    pub members: Vec<(Member, Option<EndpointStatus>)>,
}

impl StoreView {
    /// The members with health, as the planner takes them. A member counts
    /// as caught up when it has applied 90% of the leader's log, the
    /// threshold etcd itself uses to allow a promote.
    pub fn observed(&self) -> Vec<ObservedMember> {
        let statuses = || self.members.iter().filter_map(|(_, s)| s.as_ref());
        let leader_index = statuses()
            .find(|s| s.leader == s.member_id)
            .or_else(|| statuses().max_by_key(|s| s.raft_index))
            .map_or(0, |s| s.raft_index);
        self.members
            .iter()
            .map(|(member, status)| ObservedMember {
                id: member.id,
                peer_url: member.peer_urls.first().cloned().unwrap_or_default(),
                is_learner: member.is_learner,
                healthy: status.is_some(),
                caught_up: status
                    .as_ref()
                    .is_some_and(|s| s.raft_applied_index * 10 >= leader_index * 9),
            })
            .collect()
    }

    /// ID of the leader as the members that answered see it.
    pub fn leader(&self) -> Option<u64> {
        self.members
            .iter()
            .filter_map(|(_, s)| s.as_ref())
            .map(|s| s.leader)
            .find(|&leader| leader != 0)
    }
}

/// The member list with each member's status, or `None` when the store
/// does not answer the member list.
pub async fn observe_store(api: &impl EtcdApi) -> Option<StoreView> {
    observe_store_within(api, STATUS_TIMEOUT).await
}

/// [`observe_store`] with `timeout` for each member's status.
pub async fn observe_store_within(api: &impl EtcdApi, timeout: Duration) -> Option<StoreView> {
    observe_store_at(api, timeout, |member| member.client_urls.first().cloned()).await
}

/// [`observe_store_within`], asking each member's status at
/// `endpoint(member)` (`None`: do not ask): the operator chooses the URL
/// while TLS is being turned on, when members advertise several.
pub async fn observe_store_at(
    api: &impl EtcdApi,
    timeout: Duration,
    endpoint: impl Fn(&Member) -> Option<String>,
) -> Option<StoreView> {
    let list = api.member_list().await.ok()?;
    // All members at once, each bounded: one that never answers must not
    // hold up the others, nor the reconcile.
    let statuses = futures::future::join_all(list.members.iter().map(|member| async {
        let endpoint = endpoint(member)?;
        tokio::time::timeout(timeout, api.status(&endpoint))
            .await
            .ok()?
            .ok()
    }))
    .await;
    Some(StoreView {
        cluster_id: list.cluster_id,
        members: list.members.into_iter().zip(statuses).collect(),
    })
}

/// The member list with each member's health, or `None` when the store
/// does not answer; see [`StoreView::observed`].
pub async fn observe_members(api: &impl EtcdApi) -> Option<Vec<ObservedMember>> {
    observe_store(api).await.map(|view| view.observed())
}

/// Shares one store connection (or fake) between owners.
impl<T: EtcdApi> EtcdApi for std::sync::Arc<T> {
    fn member_list(&self) -> impl Future<Output = Result<MemberList, EtcdError>> + Send {
        (**self).member_list()
    }

    fn member_add(
        &self,
        peer_urls: Vec<String>,
        is_learner: bool,
    ) -> impl Future<Output = Result<Member, EtcdError>> + Send {
        (**self).member_add(peer_urls, is_learner)
    }

    fn member_remove(&self, id: u64) -> impl Future<Output = Result<(), EtcdError>> + Send {
        (**self).member_remove(id)
    }

    fn member_promote(&self, id: u64) -> impl Future<Output = Result<(), EtcdError>> + Send {
        (**self).member_promote(id)
    }

    fn member_update(
        &self,
        id: u64,
        peer_urls: Vec<String>,
    ) -> impl Future<Output = Result<(), EtcdError>> + Send {
        (**self).member_update(id, peer_urls)
    }

    fn status(
        &self,
        endpoint: &str,
    ) -> impl Future<Output = Result<EndpointStatus, EtcdError>> + Send {
        (**self).status(endpoint)
    }

    fn move_leader(
        &self,
        leader_endpoint: &str,
        target: u64,
    ) -> impl Future<Output = Result<(), EtcdError>> + Send {
        (**self).move_leader(leader_endpoint, target)
    }
}

/// Votes needed for a decision among `voters`.
pub fn quorum(voters: usize) -> usize {
    voters / 2 + 1
}

pub mod fake;

#[cfg(test)]
mod tests {
    use super::fake::FakeEtcd;
    use super::*;

    fn member(i: u32) -> (String, String, String) {
        (
            format!("m-{i}"),
            format!("http://m-{i}:2380"),
            format!("http://m-{i}:2379"),
        )
    }

    fn cluster(size: u32) -> FakeEtcd {
        FakeEtcd::bootstrapped(&(0..size).map(member).collect::<Vec<_>>())
    }

    async fn id_of(fake: &FakeEtcd, peer_url: &str) -> u64 {
        let members = fake.member_list().await.unwrap().members;
        members
            .iter()
            .find(|m| m.peer_urls[0] == peer_url)
            .unwrap()
            .id
    }

    fn add_learner(ordinal: i32) -> MemberStep {
        MemberStep::AddLearner {
            ordinal,
            peer_url: format!("http://m-{ordinal}:2380"),
        }
    }

    #[tokio::test]
    async fn add_learner_step_adds_a_non_voting_member() {
        let fake = cluster(3);
        execute(&fake, &add_learner(3)).await.unwrap();
        let members = fake.member_list().await.unwrap().members;
        assert_eq!(members.len(), 4);
        assert!(members[3].is_learner);
        assert!(members[3].name.is_empty(), "not started yet");
    }

    #[tokio::test]
    async fn second_learner_is_refused() {
        let fake = cluster(3);
        execute(&fake, &add_learner(3)).await.unwrap();
        assert_eq!(
            execute(&fake, &add_learner(4)).await,
            Err(EtcdError::TooManyLearners)
        );
    }

    #[tokio::test]
    async fn peer_url_in_use_is_refused() {
        let fake = cluster(3);
        assert_eq!(
            execute(&fake, &add_learner(2)).await,
            Err(EtcdError::PeerUrlExists)
        );
    }

    #[tokio::test]
    async fn learner_is_promoted_only_after_catching_up() {
        let fake = cluster(3);
        execute(&fake, &add_learner(3)).await.unwrap();
        let id = id_of(&fake, "http://m-3:2380").await;
        let promote = MemberStep::Promote { id, ordinal: 3 };
        fake.start("http://m-3:2380", "m-3", "http://m-3:2379");
        assert_eq!(
            execute(&fake, &promote).await,
            Err(EtcdError::LearnerNotReady)
        );
        fake.catch_up("http://m-3:2380");
        execute(&fake, &promote).await.unwrap();
        let members = fake.member_list().await.unwrap().members;
        assert!(members.iter().all(|m| !m.is_learner));
    }

    #[tokio::test]
    async fn promoting_a_voter_is_refused() {
        let fake = cluster(3);
        let id = id_of(&fake, "http://m-0:2380").await;
        assert_eq!(
            execute(&fake, &MemberStep::Promote { id, ordinal: 0 }).await,
            Err(EtcdError::NotALearner)
        );
    }

    #[tokio::test]
    async fn removing_a_healthy_voter_from_a_degraded_cluster_is_refused() {
        let fake = cluster(3);
        fake.stop("http://m-1:2380");
        let id = id_of(&fake, "http://m-2:2380").await;
        assert_eq!(
            execute(&fake, &MemberStep::Remove { id, ordinal: 2 }).await,
            Err(EtcdError::NotEnoughStartedMembers)
        );
        assert_eq!(fake.member_list().await.unwrap().members.len(), 3);
    }

    #[tokio::test]
    async fn removing_the_dead_voter_of_a_degraded_cluster_is_allowed() {
        let fake = cluster(3);
        fake.stop("http://m-1:2380");
        let id = id_of(&fake, "http://m-1:2380").await;
        execute(&fake, &MemberStep::Remove { id, ordinal: 1 })
            .await
            .unwrap();
        assert!(fake.has_quorum());
        assert_eq!(fake.member_list().await.unwrap().members.len(), 2);
    }

    #[tokio::test]
    async fn removing_an_unknown_member_fails() {
        let fake = cluster(1);
        assert_eq!(
            execute(&fake, &MemberStep::Remove { id: 42, ordinal: 5 }).await,
            Err(EtcdError::MemberNotFound)
        );
    }

    #[tokio::test]
    async fn status_reports_a_lagging_learner_behind_the_leader() {
        let fake = cluster(3);
        execute(&fake, &add_learner(3)).await.unwrap();
        fake.start("http://m-3:2380", "m-3", "http://m-3:2379");
        let status = fake.status("http://m-3:2379").await.unwrap();
        assert!(status.is_learner);
        assert!(status.raft_applied_index < status.raft_index);
    }

    #[tokio::test]
    async fn stopped_member_does_not_answer_status() {
        let fake = cluster(3);
        fake.stop("http://m-0:2380");
        assert!(matches!(
            fake.status("http://m-0:2379").await,
            Err(EtcdError::Unavailable(_))
        ));
    }

    #[tokio::test]
    async fn observation_marks_stopped_members_unhealthy_and_new_learners_behind() {
        let fake = cluster(3);
        execute(&fake, &add_learner(3)).await.unwrap();
        fake.start("http://m-3:2380", "m-3", "http://m-3:2379");
        fake.stop("http://m-1:2380");
        let observed = observe_members(&fake).await.unwrap();
        let by_url = |u: &str| observed.iter().find(|m| m.peer_url == u).unwrap().clone();
        assert!(by_url("http://m-0:2380").healthy);
        assert!(!by_url("http://m-1:2380").healthy);
        let learner = by_url("http://m-3:2380");
        assert!(learner.is_learner && learner.healthy && !learner.caught_up);
        fake.catch_up("http://m-3:2380");
        let observed = observe_members(&fake).await.unwrap();
        assert!(observed.iter().find(|m| m.is_learner).unwrap().caught_up);
    }

    #[tokio::test]
    async fn store_view_carries_the_cluster_id_of_the_member_list() {
        let fake = cluster(3);
        let view = observe_store(&fake).await.unwrap();
        assert_eq!(view.cluster_id, fake::CLUSTER_ID);
        assert_eq!(view.members.len(), 3);
    }

    #[tokio::test]
    async fn observation_of_a_cluster_without_quorum_is_none() {
        let fake = cluster(3);
        fake.stop("http://m-1:2380");
        fake.stop("http://m-2:2380");
        assert_eq!(observe_members(&fake).await, None);
    }

    /// The fake, with one member's status call never returning.
    struct OneSilent {
        fake: FakeEtcd,
        silent: String,
    }

    impl EtcdApi for OneSilent {
        async fn member_list(&self) -> Result<MemberList, EtcdError> {
            self.fake.member_list().await
        }
        async fn member_add(&self, urls: Vec<String>, learner: bool) -> Result<Member, EtcdError> {
            self.fake.member_add(urls, learner).await
        }
        async fn member_remove(&self, id: u64) -> Result<(), EtcdError> {
            self.fake.member_remove(id).await
        }
        async fn member_promote(&self, id: u64) -> Result<(), EtcdError> {
            self.fake.member_promote(id).await
        }
        async fn member_update(&self, id: u64, urls: Vec<String>) -> Result<(), EtcdError> {
            self.fake.member_update(id, urls).await
        }
        async fn status(&self, endpoint: &str) -> Result<EndpointStatus, EtcdError> {
            if endpoint == self.silent {
                std::future::pending::<()>().await;
            }
            self.fake.status(endpoint).await
        }
        async fn move_leader(&self, endpoint: &str, target: u64) -> Result<(), EtcdError> {
            self.fake.move_leader(endpoint, target).await
        }
    }

    #[tokio::test]
    async fn silent_member_is_unhealthy_and_the_others_are_still_seen() {
        let api = OneSilent {
            fake: cluster(3),
            silent: "http://m-0:2379".into(),
        };
        let timeout = Duration::from_millis(300);
        let started = std::time::Instant::now();
        let view = observe_store_within(&api, timeout)
            .await
            .expect("the member list answers");
        let took = started.elapsed();
        assert!(took < 2 * timeout, "statuses run concurrently: {took:?}");
        let healthy: Vec<bool> = view.members.iter().map(|(_, s)| s.is_some()).collect();
        assert_eq!(healthy, [false, true, true]);
        assert!(view.leader().is_some());
    }

    #[tokio::test]
    async fn move_leader_is_for_the_leader_to_a_started_voter() {
        let fake = cluster(3);
        let m1 = id_of(&fake, "http://m-1:2380").await;
        assert_eq!(
            fake.move_leader("http://m-2:2379", m1).await,
            Err(EtcdError::NotLeader)
        );
        assert_eq!(
            fake.move_leader("http://m-0:2379", 42).await,
            Err(EtcdError::BadLeaderTransferee)
        );
        fake.move_leader("http://m-0:2379", m1).await.unwrap();
        assert_eq!(fake.leader(), Some(m1));
        let status = fake.status("http://m-2:2379").await.unwrap();
        assert_eq!(status.leader, m1);
    }

    #[test]
    fn quorum_is_a_strict_majority() {
        let quorums: Vec<usize> = (1..=9).map(quorum).collect();
        assert_eq!(quorums, [1, 2, 2, 3, 3, 4, 4, 5, 5]);
    }
}
