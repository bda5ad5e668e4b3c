//! An in-memory store cluster enforcing etcd's membership rules, so the
//! planner and [`execute`](super::execute) can be tested without processes.

use std::sync::Mutex;

use super::{quorum, EndpointStatus, EtcdApi, EtcdError, Member, MemberList};

/// How many learners etcd allows by default (`--max-learners`).
pub const MAX_LEARNERS: usize = 1;
/// The cluster ID every fake reports in its member list's header.
pub const CLUSTER_ID: u64 = 0xcdf8_1819_4e3a_8c32;

#[derive(Debug, Clone)]
struct FakeMember {
    member: Member,
    started: bool,
    caught_up: bool,
}

/// An in-memory cluster. Members join as "not started"; tests start them
/// (the pod came up), stop them (the pod died) and let learners catch up.
#[derive(Debug, Default)]
pub struct FakeEtcd {
    members: Mutex<Vec<FakeMember>>,
    next_id: Mutex<u64>,
    /// The leader MoveLeader chose, while it is a started voter.
    moved_leader: Mutex<Option<u64>>,
}

impl FakeEtcd {
    /// A started cluster whose voters have the given `(name, peer URL, client URL)`.
    pub fn bootstrapped(members: &[(String, String, String)]) -> Self {
        let fake = Self::default();
        for (name, peer, client) in members {
            let id = fake.allocate_id();
            fake.members.lock().unwrap().push(FakeMember {
                member: Member {
                    id,
                    name: name.clone(),
                    peer_urls: vec![peer.clone()],
                    client_urls: vec![client.clone()],
                    is_learner: false,
                },
                started: true,
                caught_up: true,
            });
        }
        fake
    }

    /// The member with `peer_url` started as `name`, advertising `client_url`.
    pub fn start(&self, peer_url: &str, name: &str, client_url: &str) {
        self.update(peer_url, |m| {
            m.started = true;
            m.member.name = name.to_string();
            m.member.client_urls = vec![client_url.to_string()];
        });
    }

    /// The member with `peer_url` stopped answering.
    pub fn stop(&self, peer_url: &str) {
        self.update(peer_url, |m| m.started = false);
    }

    /// The learner with `peer_url` has received the leader's log.
    pub fn catch_up(&self, peer_url: &str) {
        self.update(peer_url, |m| m.caught_up = m.started);
    }

    /// Whether the started voters still form a quorum.
    pub fn has_quorum(&self) -> bool {
        let members = self.members.lock().unwrap();
        let voters: Vec<_> = members.iter().filter(|m| !m.member.is_learner).collect();
        voters.iter().filter(|m| m.started).count() >= quorum(voters.len())
    }

    /// ID of the leader: the voter leadership was moved to while it runs,
    /// else the first started voter.
    pub fn leader(&self) -> Option<u64> {
        let members = self.members.lock().unwrap();
        leader_of(&members, *self.moved_leader.lock().unwrap())
    }

    fn update(&self, peer_url: &str, f: impl FnOnce(&mut FakeMember)) {
        let mut members = self.members.lock().unwrap();
        let member = members
            .iter_mut()
            .find(|m| m.member.peer_urls.iter().any(|u| u == peer_url))
            .unwrap_or_else(|| panic!("no member with peer URL {peer_url}"));
        f(member);
    }

    fn allocate_id(&self) -> u64 {
        let mut next = self.next_id.lock().unwrap();
        *next += 1;
        0x1000 + *next
    }
}

fn leader_of(members: &[FakeMember], moved: Option<u64>) -> Option<u64> {
    let running = |m: &&FakeMember| m.started && !m.member.is_learner;
    members
        .iter()
        .filter(running)
        .find(|m| Some(m.member.id) == moved)
        .or_else(|| members.iter().find(running))
        .map(|m| m.member.id)
}

fn started_voters(members: &[FakeMember]) -> usize {
    members
        .iter()
        .filter(|m| !m.member.is_learner && m.started)
        .count()
}

fn voters(members: &[FakeMember]) -> usize {
    members.iter().filter(|m| !m.member.is_learner).count()
}

impl EtcdApi for FakeEtcd {
    async fn member_list(&self) -> Result<MemberList, EtcdError> {
        if !self.has_quorum() {
            return Err(EtcdError::Unavailable("no leader".into()));
        }
        let members = self.members.lock().unwrap();
        Ok(MemberList {
            cluster_id: CLUSTER_ID,
            members: members.iter().map(|m| m.member.clone()).collect(),
        })
    }

    async fn member_add(
        &self,
        peer_urls: Vec<String>,
        is_learner: bool,
    ) -> Result<Member, EtcdError> {
        let id = self.allocate_id();
        let mut members = self.members.lock().unwrap();
        if members
            .iter()
            .any(|m| m.member.peer_urls.iter().any(|u| peer_urls.contains(u)))
        {
            return Err(EtcdError::PeerUrlExists);
        }
        if is_learner {
            if members.iter().filter(|m| m.member.is_learner).count() >= MAX_LEARNERS {
                return Err(EtcdError::TooManyLearners);
            }
        } else if started_voters(&members) < quorum(voters(&members) + 1) {
            return Err(EtcdError::NotEnoughStartedMembers);
        }
        let member = Member {
            id,
            name: String::new(),
            peer_urls,
            client_urls: Vec::new(),
            is_learner,
        };
        members.push(FakeMember {
            member: member.clone(),
            started: false,
            caught_up: false,
        });
        Ok(member)
    }

    async fn member_update(&self, id: u64, peer_urls: Vec<String>) -> Result<(), EtcdError> {
        if !self.has_quorum() {
            return Err(EtcdError::Unavailable("no leader".into()));
        }
        let mut members = self.members.lock().unwrap();
        if members
            .iter()
            .any(|m| m.member.id != id && m.member.peer_urls.iter().any(|u| peer_urls.contains(u)))
        {
            return Err(EtcdError::PeerUrlExists);
        }
        let member = members
            .iter_mut()
            .find(|m| m.member.id == id)
            .ok_or(EtcdError::MemberNotFound)?;
        member.member.peer_urls = peer_urls;
        Ok(())
    }

    async fn member_remove(&self, id: u64) -> Result<(), EtcdError> {
        let mut members = self.members.lock().unwrap();
        let index = members
            .iter()
            .position(|m| m.member.id == id)
            .ok_or(EtcdError::MemberNotFound)?;
        let removed = &members[index];
        if !removed.member.is_learner {
            let started_after = started_voters(&members) - usize::from(removed.started);
            if started_after < quorum(voters(&members) - 1) {
                return Err(EtcdError::NotEnoughStartedMembers);
            }
        }
        members.remove(index);
        Ok(())
    }

    async fn member_promote(&self, id: u64) -> Result<(), EtcdError> {
        let mut members = self.members.lock().unwrap();
        let member = members
            .iter_mut()
            .find(|m| m.member.id == id)
            .ok_or(EtcdError::MemberNotFound)?;
        if !member.member.is_learner {
            return Err(EtcdError::NotALearner);
        }
        if !member.caught_up {
            return Err(EtcdError::LearnerNotReady);
        }
        member.member.is_learner = false;
        Ok(())
    }

    async fn status(&self, endpoint: &str) -> Result<EndpointStatus, EtcdError> {
        let members = self.members.lock().unwrap();
        let member = members
            .iter()
            .find(|m| m.started && m.member.client_urls.iter().any(|u| u == endpoint))
            .ok_or_else(|| EtcdError::Unavailable(endpoint.to_string()))?;
        // Without a quorum no member knows a leader, as in etcd.
        let leader = if started_voters(&members) >= super::quorum(voters(&members)) {
            leader_of(&members, *self.moved_leader.lock().unwrap()).unwrap_or(0)
        } else {
            0
        };
        // A learner that has not caught up trails the leader's log.
        let applied = if member.caught_up { 100 } else { 10 };
        Ok(EndpointStatus {
            member_id: member.member.id,
            leader,
            raft_index: 100,
            raft_applied_index: applied,
            version: "3.6.0".to_string(),
            is_learner: member.member.is_learner,
        })
    }

    async fn move_leader(&self, leader_endpoint: &str, target: u64) -> Result<(), EtcdError> {
        let leader = self.leader();
        let members = self.members.lock().unwrap();
        let asked = members
            .iter()
            .find(|m| m.started && m.member.client_urls.iter().any(|u| u == leader_endpoint))
            .ok_or_else(|| EtcdError::Unavailable(leader_endpoint.to_string()))?;
        if Some(asked.member.id) != leader {
            return Err(EtcdError::NotLeader);
        }
        if !members
            .iter()
            .any(|m| m.member.id == target && m.started && !m.member.is_learner)
        {
            return Err(EtcdError::BadLeaderTransferee);
        }
        drop(members);
        *self.moved_leader.lock().unwrap() = Some(target);
        Ok(())
    }
}
