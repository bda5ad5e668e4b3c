use std::collections::BTreeSet;

use super::*;
use crate::crd::EtcdCluster;
use crate::membership::fake::FakeEtcd;
use crate::membership::{execute, observe_members, EtcdApi};

fn cluster() -> ClusterRef {
    let mut resource = EtcdCluster::new("demo", EtcdClusterSpec::default());
    resource.metadata.namespace = Some("prod".into());
    resource.metadata.uid = Some("5a0f7a44-0c0e-4a9b-8d0c-2d6c8c1e9b10".into());
    ClusterRef::new(&resource).unwrap()
}

fn spec(replicas: i32) -> EtcdClusterSpec {
    EtcdClusterSpec {
        replicas,
        ..Default::default()
    }
}

fn id(ordinal: i32) -> u64 {
    100 + ordinal as u64
}

fn voter(ordinal: i32) -> ObservedMember {
    ObservedMember {
        id: id(ordinal),
        peer_url: cluster().peer_url(ordinal),
        is_learner: false,
        healthy: true,
        caught_up: true,
    }
}

fn unhealthy(member: ObservedMember) -> ObservedMember {
    ObservedMember {
        healthy: false,
        ..member
    }
}

fn learner(ordinal: i32, healthy: bool, caught_up: bool) -> ObservedMember {
    ObservedMember {
        is_learner: true,
        healthy,
        caught_up,
        ..voter(ordinal)
    }
}

fn voters(ordinals: std::ops::Range<i32>) -> Vec<ObservedMember> {
    ordinals.map(voter).collect()
}

/// A StatefulSet of `sts` replicas, each with its PVC, and these members.
fn running(sts: i32, members: Vec<ObservedMember>) -> Observed {
    Observed {
        stateful_set_replicas: Some(sts),
        pvcs: (0..sts).collect(),
        replaced_pvcs: BTreeSet::new(),
        members: Some(members),
    }
}

fn with_pvcs(observed: Observed, pvcs: &[i32]) -> Observed {
    Observed {
        pvcs: pvcs.iter().copied().collect(),
        ..observed
    }
}

fn existing(members: i32) -> Option<Bootstrap> {
    Some(Bootstrap {
        members,
        state: InitialClusterState::Existing,
    })
}

struct Case {
    name: &'static str,
    spec: EtcdClusterSpec,
    observed: Observed,
    replicas: Option<i32>,
    step: Option<MemberStep>,
    delete_pvcs: Vec<i32>,
    progress: Progress,
}

fn add(ordinal: i32) -> Option<MemberStep> {
    Some(MemberStep::AddLearner {
        ordinal,
        peer_url: cluster().peer_url(ordinal),
    })
}

fn promote(ordinal: i32) -> Option<MemberStep> {
    Some(MemberStep::Promote {
        id: id(ordinal),
        ordinal,
    })
}

fn remove(ordinal: i32) -> Option<MemberStep> {
    Some(MemberStep::Remove {
        id: id(ordinal),
        ordinal,
    })
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "store unreachable: statefulset kept, membership untouched",
            spec: spec(5),
            observed: Observed {
                members: None,
                ..running(3, vec![])
            },
            replicas: Some(3),
            step: None,
            delete_pvcs: vec![],
            progress: Progress::StoreUnreachable,
        },
        Case {
            name: "steady cluster: nothing to do",
            spec: spec(3),
            observed: running(3, voters(0..3)),
            replicas: Some(3),
            step: None,
            delete_pvcs: vec![],
            progress: Progress::Stable,
        },
        Case {
            name: "scale 3->5: first the learner, statefulset not grown yet",
            spec: spec(5),
            observed: running(3, voters(0..3)),
            replicas: Some(3),
            step: add(3),
            delete_pvcs: vec![],
            progress: Progress::AddingMember(3),
        },
        Case {
            name: "scale 3->5: added learner grows the statefulset by one and is awaited",
            spec: spec(5),
            observed: running(3, [voters(0..3), vec![learner(3, false, false)]].concat()),
            replicas: Some(4),
            step: None,
            delete_pvcs: vec![],
            progress: Progress::WaitingForLearner(3),
        },
        Case {
            name: "scale 3->5: started learner still catching up is awaited",
            spec: spec(5),
            observed: running(4, [voters(0..3), vec![learner(3, true, false)]].concat()),
            replicas: Some(4),
            step: None,
            delete_pvcs: vec![],
            progress: Progress::WaitingForLearner(3),
        },
        Case {
            name: "scale 3->5: caught-up learner is promoted",
            spec: spec(5),
            observed: running(4, [voters(0..3), vec![learner(3, true, true)]].concat()),
            replicas: Some(4),
            step: promote(3),
            delete_pvcs: vec![],
            progress: Progress::PromotingMember(3),
        },
        Case {
            name: "scale 3->5: after the promote the next learner is added",
            spec: spec(5),
            observed: running(4, voters(0..4)),
            replicas: Some(4),
            step: add(4),
            delete_pvcs: vec![],
            progress: Progress::AddingMember(4),
        },
        Case {
            name: "scale 5->3: the highest member is removed before anything shrinks",
            spec: spec(3),
            observed: running(5, voters(0..5)),
            replicas: Some(5),
            step: remove(4),
            delete_pvcs: vec![],
            progress: Progress::RemovingMember(4),
        },
        Case {
            name: "scale 5->3: removed member's pod goes, its PVC stays while the pod may run",
            spec: spec(3),
            observed: running(5, voters(0..4)),
            replicas: Some(4),
            step: remove(3),
            delete_pvcs: vec![],
            progress: Progress::RemovingMember(3),
        },
        Case {
            name: "scale 5->3: PVCs of members whose pods are gone are deleted",
            spec: spec(3),
            observed: with_pvcs(running(3, voters(0..3)), &[0, 1, 2, 3, 4]),
            replicas: Some(3),
            step: None,
            delete_pvcs: vec![3, 4],
            progress: Progress::Stable,
        },
        Case {
            name: "stale PVC under the next member's name is deleted before the add",
            spec: spec(4),
            observed: with_pvcs(running(3, voters(0..3)), &[0, 1, 2, 3]),
            replicas: Some(3),
            step: None,
            delete_pvcs: vec![3],
            progress: Progress::AddingMember(3),
        },
        Case {
            name: "member whose PVC was lost is removed",
            spec: spec(3),
            observed: with_pvcs(
                running(3, vec![voter(0), unhealthy(voter(1)), voter(2)]),
                &[0, 2],
            ),
            replicas: Some(3),
            step: remove(1),
            delete_pvcs: vec![],
            progress: Progress::ReplacingMember(1),
        },
        Case {
            name: "member whose PVC was re-created empty is removed",
            spec: spec(3),
            observed: Observed {
                replaced_pvcs: BTreeSet::from([1]),
                ..running(3, vec![voter(0), unhealthy(voter(1)), voter(2)])
            },
            replicas: Some(3),
            step: remove(1),
            delete_pvcs: vec![],
            progress: Progress::ReplacingMember(1),
        },
        Case {
            name: "replaced member is re-added as a learner under its old name",
            spec: spec(3),
            observed: running(3, vec![voter(0), voter(2)]),
            replicas: Some(3),
            step: add(1),
            delete_pvcs: vec![],
            progress: Progress::AddingMember(1),
        },
        Case {
            name: "member with lost PVC is kept when removing it would lose quorum",
            spec: spec(3),
            observed: with_pvcs(
                running(3, vec![voter(0), voter(1), unhealthy(voter(2))]),
                &[1, 2],
            ),
            replicas: Some(3),
            step: None,
            delete_pvcs: vec![],
            progress: Progress::QuorumAtRisk,
        },
        Case {
            name: "emptyDir cluster has no PVCs and that is not data loss",
            spec: EtcdClusterSpec {
                storage: serde_yaml::from_str("emptyDir: {}").unwrap(),
                ..spec(3)
            },
            observed: with_pvcs(running(3, voters(0..3)), &[]),
            replicas: Some(3),
            step: None,
            delete_pvcs: vec![],
            progress: Progress::Stable,
        },
        Case {
            name: "scale-down refused when the survivors would lack quorum",
            spec: spec(1),
            observed: running(3, vec![unhealthy(voter(0)), voter(1), voter(2)]),
            replicas: Some(3),
            step: None,
            delete_pvcs: vec![],
            progress: Progress::QuorumAtRisk,
        },
        Case {
            name: "scale-up waits while a voter is unhealthy",
            spec: spec(5),
            observed: running(3, vec![voter(0), unhealthy(voter(1)), voter(2)]),
            replicas: Some(3),
            step: None,
            delete_pvcs: vec![],
            progress: Progress::Degraded,
        },
        Case {
            name: "spec shrunk while a learner joined: the surplus learner is removed",
            spec: spec(3),
            observed: running(4, [voters(0..3), vec![learner(3, true, false)]].concat()),
            replicas: Some(4),
            step: remove(3),
            delete_pvcs: vec![],
            progress: Progress::RemovingMember(3),
        },
        Case {
            name: "members the operator did not name are left alone",
            spec: spec(3),
            observed: running(
                3,
                [
                    voters(0..3),
                    vec![ObservedMember {
                        peer_url: "http://elsewhere:2380".into(),
                        ..voter(7)
                    }],
                ]
                .concat(),
            ),
            replicas: Some(3),
            step: None,
            delete_pvcs: vec![],
            progress: Progress::Stable,
        },
    ]
}

#[test]
fn planner_scenarios() {
    let cluster = cluster();
    for case in cases() {
        let plan = plan(&cluster, &case.spec, &case.observed);
        assert_eq!(
            plan.objects.as_ref().map(|o| o.replicas),
            case.replicas,
            "{}: replicas",
            case.name
        );
        assert_eq!(plan.step, case.step, "{}: step", case.name);
        assert_eq!(plan.delete_pvcs, case.delete_pvcs, "{}: PVCs", case.name);
        assert_eq!(plan.progress, case.progress, "{}: progress", case.name);
    }
}

#[test]
fn new_cluster_starts_all_members_together() {
    let plan = plan(&cluster(), &spec(3), &Observed::default());
    assert_eq!(
        plan.objects,
        Some(DesiredObjects {
            replicas: 3,
            bootstrap: Some(Bootstrap {
                members: 3,
                state: InitialClusterState::New,
            }),
            pdb_voters: Some(3),
        })
    );
    assert_eq!(plan.step, None);
    assert_eq!(plan.progress, Progress::Bootstrapping);
}

#[test]
fn formed_cluster_tells_joining_pods_to_join_existing_members() {
    let observed = running(3, [voters(0..3), vec![learner(3, false, false)]].concat());
    let objects = plan(&cluster(), &spec(5), &observed).objects.unwrap();
    assert_eq!(objects.bootstrap, existing(4));
    assert_eq!(
        objects.pdb_voters,
        Some(3),
        "a learner does not count for the PDB"
    );
}

#[test]
fn lone_empty_dir_member_keeps_bootstrap_new_so_a_new_pod_can_start_over() {
    let spec = EtcdClusterSpec {
        storage: serde_yaml::from_str("emptyDir: {}").unwrap(),
        ..spec(1)
    };
    let objects = plan(&cluster(), &spec, &running(1, voters(0..1)))
        .objects
        .unwrap();
    assert_eq!(
        objects.bootstrap,
        Some(Bootstrap {
            members: 1,
            state: InitialClusterState::New
        })
    );
}

#[test]
fn empty_dir_member_joining_a_lone_one_joins_existing() {
    let spec = EtcdClusterSpec {
        storage: serde_yaml::from_str("emptyDir: {}").unwrap(),
        ..spec(3)
    };
    let observed = running(1, [voters(0..1), vec![learner(1, false, false)]].concat());
    let objects = plan(&cluster(), &spec, &observed).objects.unwrap();
    assert_eq!(objects.bootstrap, existing(2));
}

#[test]
fn lone_pvc_member_keeps_bootstrap_existing() {
    let objects = plan(&cluster(), &spec(1), &running(1, voters(0..1)))
        .objects
        .unwrap();
    assert_eq!(objects.bootstrap, existing(1));
}

#[test]
fn unreachable_store_leaves_bootstrap_config_and_pdb_alone() {
    let observed = Observed {
        members: None,
        ..running(3, vec![])
    };
    let objects = plan(&cluster(), &spec(3), &observed).objects.unwrap();
    assert_eq!((objects.bootstrap, objects.pdb_voters), (None, None));
}

#[test]
fn paused_cluster_is_left_alone_even_when_scaling_is_due() {
    let plan = plan(
        &cluster(),
        &EtcdClusterSpec {
            paused: true,
            ..spec(5)
        },
        &running(3, voters(0..3)),
    );
    assert_eq!(plan, Plan::idle(Progress::Paused));
}

#[test]
fn invalid_spec_is_reported_and_nothing_is_done() {
    let plan = plan(&cluster(), &spec(10), &running(3, voters(0..3)));
    assert_eq!(
        plan,
        Plan::idle(Progress::InvalidSpec(SpecError::ReplicasOutOfRange(10)))
    );
}

#[test]
fn member_ordinal_comes_from_peer_url_not_name() {
    let c = cluster();
    assert_eq!(
        ordinal_of(&c, "http://demo-12.demo-peer.prod.svc:2380"),
        Some(12)
    );
    assert_eq!(
        ordinal_of(&c, "http://demo-1.other-peer.prod.svc:2380"),
        None
    );
    assert_eq!(
        ordinal_of(&c, "http://demox-1.demo-peer.prod.svc:2380"),
        None
    );
}

#[test]
fn tls_member_ordinal_comes_from_its_https_peer_url_only() {
    let mut resource = EtcdCluster::new(
        "demo",
        serde_yaml::from_str("tls: {auto: {}}").expect("fixture parses"),
    );
    resource.metadata.namespace = Some("prod".into());
    resource.metadata.uid = Some("5a0f7a44-0c0e-4a9b-8d0c-2d6c8c1e9b10".into());
    let c = ClusterRef::new(&resource).unwrap();
    assert_eq!(ordinal_of(&c, &c.peer_url(4)), Some(4));
    assert_eq!(
        ordinal_of(&c, "https://demo-4.demo-peer.prod.svc:2380"),
        Some(4)
    );
    // A plain-HTTP member is not one the operator made for this cluster.
    assert_eq!(
        ordinal_of(&c, "http://demo-4.demo-peer.prod.svc:2380"),
        None
    );
}

/// A Kubernetes stand-in around the fake store: pods run for ordinals below
/// the StatefulSet's replicas, create their PVC, and start their member.
struct World {
    cluster: ClusterRef,
    fake: FakeEtcd,
    sts: Option<i32>,
    pvcs: BTreeSet<i32>,
    steps: Vec<MemberStep>,
}

impl World {
    fn bootstrapped(size: i32) -> Self {
        let cluster = cluster();
        let members: Vec<_> = (0..size)
            .map(|o| {
                (
                    cluster.member_name(o),
                    cluster.peer_url(o),
                    cluster.client_url(o),
                )
            })
            .collect();
        Self {
            fake: FakeEtcd::bootstrapped(&members),
            cluster,
            sts: Some(size),
            pvcs: (0..size).collect(),
            steps: Vec::new(),
        }
    }

    async fn reconcile(&mut self, spec: &EtcdClusterSpec) -> Plan {
        let observed = Observed {
            stateful_set_replicas: self.sts,
            pvcs: self.pvcs.clone(),
            replaced_pvcs: BTreeSet::new(),
            members: observe_members(&self.fake).await,
        };
        let plan = plan(&self.cluster, spec, &observed);
        if let Some(objects) = &plan.objects {
            self.sts = Some(objects.replicas);
        }
        for ordinal in &plan.delete_pvcs {
            assert!(
                ordinal >= &self.sts.unwrap(),
                "PVC {ordinal} deleted under a running pod"
            );
            self.pvcs.remove(ordinal);
        }
        if let Some(step) = &plan.step {
            execute(&self.fake, step)
                .await
                .expect("the store accepts every planned step");
            self.steps.push(step.clone());
        }
        self.kubelet().await;
        assert!(self.fake.has_quorum(), "quorum lost after {:?}", plan.step);
        plan
    }

    async fn kubelet(&mut self) {
        let members = self.fake.member_list().await.unwrap().members;
        let sts = self.sts.unwrap_or(0);
        for member in &members {
            let url = &member.peer_urls[0];
            let Some(ordinal) = ordinal_of(&self.cluster, url) else {
                continue;
            };
            if ordinal >= sts {
                self.fake.stop(url);
            } else if member.name.is_empty() {
                self.fake.start(
                    url,
                    &self.cluster.member_name(ordinal),
                    &self.cluster.client_url(ordinal),
                );
            } else if member.is_learner {
                // Started in an earlier round: the snapshot has arrived.
                self.fake.catch_up(url);
            }
        }
        self.pvcs.extend(0..sts);
    }

    async fn converge(&mut self, spec: &EtcdClusterSpec) {
        for _ in 0..40 {
            let plan = self.reconcile(spec).await;
            if plan.progress == Progress::Stable
                && plan.step.is_none()
                && plan.delete_pvcs.is_empty()
            {
                return;
            }
        }
        panic!("no convergence; steps so far: {:?}", self.steps);
    }

    fn step_kinds(&self) -> Vec<(&'static str, i32)> {
        self.steps
            .iter()
            .map(|s| match s {
                MemberStep::AddLearner { ordinal, .. } => ("add", *ordinal),
                MemberStep::Promote { ordinal, .. } => ("promote", *ordinal),
                MemberStep::Remove { ordinal, .. } => ("remove", *ordinal),
            })
            .collect()
    }

    async fn voter_count(&self) -> usize {
        let members = self.fake.member_list().await.unwrap().members;
        members.iter().filter(|m| !m.is_learner).count()
    }
}

#[tokio::test]
async fn scale_up_adds_and_promotes_one_learner_at_a_time() {
    let mut world = World::bootstrapped(3);
    world.converge(&spec(5)).await;
    assert_eq!(
        world.step_kinds(),
        [("add", 3), ("promote", 3), ("add", 4), ("promote", 4)]
    );
    assert_eq!(world.voter_count().await, 5);
    assert_eq!(world.sts, Some(5));
}

#[tokio::test]
async fn scale_down_removes_highest_members_then_shrinks_and_frees_their_pvcs() {
    let mut world = World::bootstrapped(5);
    world.converge(&spec(3)).await;
    assert_eq!(world.step_kinds(), [("remove", 4), ("remove", 3)]);
    assert_eq!(world.voter_count().await, 3);
    assert_eq!(world.sts, Some(3));
    assert_eq!(world.pvcs, BTreeSet::from([0, 1, 2]));
}

#[tokio::test]
async fn member_that_lost_its_pvc_is_removed_and_re_added() {
    let mut world = World::bootstrapped(3);
    let lost = world.cluster.peer_url(1);
    let members = world.fake.member_list().await.unwrap().members;
    let old_id = members.iter().find(|m| m.peer_urls[0] == lost).unwrap().id;
    world.fake.stop(&lost);
    world.pvcs.remove(&1);
    world.converge(&spec(3)).await;
    assert_eq!(
        world.step_kinds(),
        [("remove", 1), ("add", 1), ("promote", 1)]
    );
    let members = world.fake.member_list().await.unwrap().members;
    let replaced = members.iter().find(|m| m.peer_urls[0] == lost).unwrap();
    assert_ne!(replaced.id, old_id, "re-added under a new member ID");
    assert!(!replaced.is_learner);
    assert_eq!(world.voter_count().await, 3);
}

#[tokio::test]
async fn single_member_grows_to_three_without_losing_quorum() {
    let mut world = World::bootstrapped(1);
    world.converge(&spec(3)).await;
    assert_eq!(world.voter_count().await, 3);
}

/// Every cluster of 1 to 9 voters, every pattern of unhealthy members, with
/// and without a caught-up learner, every target size: whatever the planner
/// asks for, the store accepts it and quorum holds afterwards.
#[test]
fn no_planned_step_ever_costs_quorum() {
    let c = cluster();
    let mut steps_checked = 0;
    for size in 1..=9i32 {
        for unhealthy_mask in 0u32..(1 << size) {
            for with_learner in [false, true] {
                let mut members: Vec<ObservedMember> = (0..size)
                    .map(|o| ObservedMember {
                        healthy: unhealthy_mask & (1 << o) == 0,
                        ..voter(o)
                    })
                    .collect();
                if with_learner {
                    members.push(learner(size, true, true));
                }
                let healthy = members
                    .iter()
                    .filter(|m| !m.is_learner && m.healthy)
                    .count();
                for target in 1..=9 {
                    let observed = running(size + i32::from(with_learner), members.clone());
                    let Some(step) = plan(&c, &spec(target), &observed).step else {
                        continue;
                    };
                    let (voters_after, healthy_after) = match step {
                        MemberStep::Remove { ordinal, .. } if ordinal < size => (
                            size as usize - 1,
                            healthy - usize::from(members[ordinal as usize].healthy),
                        ),
                        MemberStep::Promote { .. } => (size as usize + 1, healthy + 1),
                        // Adding or removing a learner leaves the voters as they are.
                        _ => continue,
                    };
                    assert!(
                        healthy_after >= quorum(voters_after),
                        "{size} voters, mask {unhealthy_mask:b}, learner {with_learner}, target {target}: {step:?}"
                    );
                    steps_checked += 1;
                }
            }
        }
    }
    assert!(
        steps_checked > 1000,
        "the sweep planned only {steps_checked} steps"
    );
}

#[tokio::test]
async fn fake_store_accepts_the_planned_removal_from_a_degraded_cluster() {
    let mut world = World::bootstrapped(5);
    world.fake.stop(&world.cluster.peer_url(1));
    let plan = world.reconcile(&spec(3)).await;
    assert_eq!(plan.step, Some(world.steps[0].clone()));
    assert!(matches!(
        plan.step,
        Some(MemberStep::Remove { ordinal: 4, .. })
    ));
}
