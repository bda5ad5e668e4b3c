use super::*;

fn serves(listeners: &[Listener], wanted: Listener) -> bool {
    listeners.contains(&wanted)
}

fn previous(phase: EnablePhase) -> Option<EnablePhase> {
    phase.previous()
}

#[test]
fn while_a_template_rolls_old_and_new_pods_serve_what_members_dial() {
    for phase in EnablePhase::ALL {
        let Some(before) = previous(phase) else {
            continue;
        };
        let (old, new) = (before.template(), phase.template());
        if old == new {
            continue;
        }
        let peer = phase.advertised_peer();
        assert_eq!(
            peer,
            before.advertised_peer(),
            "{phase:?}: a roll never changes the URL"
        );
        for template in [&old, &new] {
            assert!(
                serves(&template.peer, peer),
                "{phase:?}: a pod of {template:?} does not serve {peer:?}"
            );
            assert!(
                !peer.tls || template.peer_certificates,
                "{phase:?}: a pod of {template:?} can not dial {peer:?}"
            );
            assert!(
                serves(&template.client, phase.operator_client()),
                "{phase:?}: the operator loses pods of {template:?}"
            );
        }
    }
}

#[test]
fn while_peer_urls_change_every_pod_serves_the_old_and_the_new_url() {
    for phase in EnablePhase::ALL {
        if phase.wait() != Wait::Advertised {
            continue;
        }
        let before = previous(phase).unwrap();
        assert_eq!(
            before.template(),
            phase.template(),
            "{phase:?} restarts no pod"
        );
        let template = phase.template();
        for url in [before.advertised_peer(), phase.advertised_peer()] {
            assert!(serves(&template.peer, url), "{phase:?}: {url:?} not served");
            assert!(!url.tls || template.peer_certificates);
        }
        assert!(serves(&template.client, before.operator_client()));
        assert!(serves(&template.client, phase.operator_client()));
    }
}

#[test]
fn the_cluster_ends_on_tls_alone_on_the_main_ports() {
    let end = EnablePhase::Tls.template();
    assert_eq!(end.peer, [tls(PEER_PORT)]);
    assert_eq!(end.client, [tls(CLIENT_PORT)]);
    assert_eq!(EnablePhase::Tls.advertised_peer(), tls(PEER_PORT));
    assert_eq!(EnablePhase::Tls.operator_client(), tls(CLIENT_PORT));
    let start = EnablePhase::Plain.template();
    assert_eq!(start.peer, [plain(PEER_PORT)]);
    assert!(!start.peer_certificates);
}

#[test]
fn each_phase_waits_for_its_own_signal_and_none_is_skipped() {
    use EnablePhase::*;
    assert_eq!(advance(Plain, false, true, true), Plain, "TLS not wanted");
    assert_eq!(advance(Plain, true, true, false), Dual);
    assert_eq!(advance(Dual, true, false, true), Dual, "still rolling");
    assert_eq!(advance(Dual, true, true, false), PeerTls);
    assert_eq!(
        advance(PeerTls, true, true, false),
        PeerTls,
        "URLs not updated"
    );
    assert_eq!(advance(PeerTls, true, false, true), Swap);
    assert_eq!(advance(Swap, true, false, true), Swap);
    assert_eq!(advance(Swap, true, true, false), Home);
    assert_eq!(advance(Home, true, false, true), Tls);
    assert_eq!(advance(Tls, true, true, true), Tls);
    let mut phase = Plain;
    let mut seen = vec![phase];
    while phase != Tls {
        phase = advance(phase, true, true, true);
        seen.push(phase);
    }
    assert_eq!(seen, EnablePhase::ALL);
}

#[test]
fn the_phase_comes_from_the_annotation_or_the_template() {
    use EnablePhase::*;
    assert_eq!(observed(false, Some((Some("Swap"), true))), Plain);
    assert_eq!(observed(true, None), Tls, "created with TLS");
    assert_eq!(
        observed(true, Some((None, true))),
        Tls,
        "an older TLS cluster"
    );
    assert_eq!(
        observed(true, Some((None, false))),
        Plain,
        "TLS just asked for"
    );
    assert_eq!(observed(true, Some((Some("PeerTls"), true))), PeerTls);
    for phase in EnablePhase::ALL {
        assert_eq!(EnablePhase::parse(phase.name()), Some(phase));
    }
}
