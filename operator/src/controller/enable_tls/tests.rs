use super::*;
use crate::crd::{AutoTls, EtcdClusterSpec, TlsSpec};

fn cluster(phase: EnablePhase) -> ClusterRef {
    let spec = EtcdClusterSpec {
        tls: Some(TlsSpec {
            auto: Some(AutoTls::default()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut resource = EtcdCluster::new("demo", spec);
    resource.metadata.namespace = Some("prod".into());
    resource.metadata.uid = Some("9d1e6a3c-65a3-4f59-a3f5-0d7b8e2b1c44".into());
    ClusterRef::new(&resource).unwrap().with_phase(phase)
}

fn members(urls: impl Fn(i32) -> String) -> Vec<(u64, Vec<String>)> {
    (0..3).map(|i| (100 + i as u64, vec![urls(i)])).collect()
}

#[test]
fn a_rolled_plain_cluster_moves_to_dual_and_waits_while_rolling() {
    let c = cluster(EnablePhase::Plain);
    let list = members(|i| c.peer_url(i));
    assert_eq!(next(&c, true, &list), Next::Advance(EnablePhase::Dual));
    let dual = cluster(EnablePhase::Dual);
    assert!(matches!(next(&dual, false, &list), Next::Wait(_)));
    assert_eq!(
        next(&dual, true, &list),
        Next::Advance(EnablePhase::PeerTls)
    );
}

#[test]
fn peer_urls_move_one_member_at_a_time_to_the_phase_url() {
    let before = cluster(EnablePhase::Dual);
    let c = cluster(EnablePhase::PeerTls);
    let mut list = members(|i| before.peer_url(i));
    for i in 0..3 {
        match next(&c, true, &list) {
            Next::UpdatePeerUrl { id, ordinal, url } => {
                assert_eq!((id, ordinal), (100 + i as u64, i));
                assert_eq!(url, format!("https://demo-{i}.demo-peer.prod.svc:2382"));
                list[i as usize].1 = vec![url];
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(next(&c, false, &list), Next::Advance(EnablePhase::Swap));
}

#[test]
fn a_member_the_operator_did_not_name_holds_the_change() {
    let c = cluster(EnablePhase::Home);
    let mut list = members(|i| c.peer_url(i));
    list.push((7, vec!["http://elsewhere:2380".into()]));
    assert!(matches!(next(&c, true, &list), Next::Wait(why) if why.contains("elsewhere")));
}

#[test]
fn the_last_phase_has_nothing_left_to_do() {
    let c = cluster(EnablePhase::Home);
    let list = members(|i| c.peer_url(i));
    assert_eq!(next(&c, false, &list), Next::Advance(EnablePhase::Tls));
    let done = cluster(EnablePhase::Tls);
    assert_eq!(next(&done, true, &list), Next::Done);
}

fn condition(status: &EtcdClusterStatus) -> Option<(String, String)> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == status::ENABLING_TLS)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

#[test]
fn the_condition_is_true_through_the_phases_and_false_once_enabled() {
    let mut resource = EtcdCluster::new("demo", Default::default());
    let mut status = EtcdClusterStatus::default();
    report(&resource, &mut status, None);
    assert_eq!(condition(&status), None, "a cluster created with TLS");

    let waiting = Transition::Waiting(EnablePhase::Swap, "pods".into());
    report(&resource, &mut status, Some(&waiting));
    assert_eq!(condition(&status), Some(("True".into(), "Swap".into())));

    resource.status = Some(status);
    let mut kept = EtcdClusterStatus::default();
    report(&resource, &mut kept, None);
    assert_eq!(condition(&kept), Some(("True".into(), "Swap".into())));

    let mut done = EtcdClusterStatus::default();
    report(&resource, &mut done, Some(&Transition::Enabled));
    assert_eq!(condition(&done), Some(("False".into(), "Enabled".into())));
}
