use super::*;
use crate::tls::pki::{self, Ca};
use crate::tls::tests::{cluster, now};
use crate::tls::{reissue, served_names, CertKind, Due, Reissue};

const HOUR: Duration = Duration::from_secs(3600);

fn stable(ca: &Ca) -> CaSecret {
    CaSecret::new(ca.cert_pem().to_string(), ca.key_pem().to_string())
}

fn leaf(ca: &Ca, bundle: &str) -> CertSecret {
    let names = served_names(&cluster(), None);
    let issued = ca
        .issue(
            &CertKind::Server.request(&cluster(), &names, 10 * HOUR),
            now(),
        )
        .unwrap();
    CertSecret {
        ca_pem: bundle.to_string(),
        cert_pem: issued.cert_pem,
        key_pem: issued.key_pem,
    }
}

fn check(existing: &CertSecret, ca: &CaSecret) -> Option<Reissue> {
    let due = Due {
        now: now(),
        rotate_before: HOUR,
        requested: false,
    };
    let names = served_names(&cluster(), None);
    reissue(CertKind::Server, Some(existing), &ca.bundle, &names, &due)
}

#[test]
fn a_rotation_goes_stable_trust_reissue_stable_only_when_members_caught_up() {
    use CaPhase::*;
    assert_eq!(step(Stable, false, true, true), CaStep::Keep);
    assert_eq!(step(Stable, true, false, false), CaStep::Begin);
    assert_eq!(step(Trust, false, false, true), CaStep::Keep);
    assert_eq!(step(Trust, false, true, false), CaStep::Keep);
    assert_eq!(step(Trust, true, true, true), CaStep::HandOver);
    assert_eq!(step(Reissue, false, false, true), CaStep::Keep);
    assert_eq!(step(Reissue, false, true, false), CaStep::Keep);
    assert_eq!(step(Reissue, false, true, true), CaStep::Finish);
}

#[test]
fn the_phase_is_read_back_from_the_secret_at_every_step() {
    let old = Ca::generate("ca", now()).unwrap();
    let new = Ca::generate("ca", now()).unwrap();
    let cluster = cluster();
    let round_trip =
        |ca: &CaSecret| CaSecret::read(&ca.secret(&cluster, "demo-ca".into())).unwrap();

    let first = stable(&old);
    assert_eq!(round_trip(&first).phase(), CaPhase::Stable);
    let trust = first.begin(
        new.cert_pem().to_string(),
        new.key_pem().to_string(),
        Some("r1".into()),
    );
    let trust = round_trip(&trust);
    assert_eq!(trust.phase(), CaPhase::Trust);
    assert_eq!(trust.request.as_deref(), Some("r1"));
    assert_eq!(trust.cert_pem, old.cert_pem(), "the old CA still issues");
    let reissue_phase = round_trip(&trust.hand_over());
    assert_eq!(reissue_phase.phase(), CaPhase::Reissue);
    assert_eq!(reissue_phase.cert_pem, new.cert_pem(), "the new CA issues");
    assert_eq!(reissue_phase.key_pem, new.key_pem());
    let done = round_trip(&reissue_phase.finish());
    assert_eq!(done.phase(), CaPhase::Stable);
    assert_eq!(done.bundle, new.cert_pem());
    assert_eq!(
        done.request.as_deref(),
        Some("r1"),
        "the request stays honoured"
    );
}

#[test]
fn both_cas_are_trusted_during_the_transition_with_the_issuer_first() {
    let old = Ca::generate("ca", now()).unwrap();
    let new = Ca::generate("ca", now()).unwrap();
    let trust = stable(&old).begin(new.cert_pem().to_string(), new.key_pem().to_string(), None);
    let issuers = |bundle: &str| -> Vec<pki::CertInfo> {
        certificates(bundle)
            .map(|part| pki::inspect(part).unwrap())
            .collect()
    };
    let old_info = pki::inspect(old.cert_pem()).unwrap();
    let new_info = pki::inspect(new.cert_pem()).unwrap();
    assert_eq!(
        issuers(&trust.bundle),
        vec![old_info.clone(), new_info.clone()]
    );
    assert_eq!(issuers(&trust.hand_over().bundle), vec![new_info, old_info]);
}

#[test]
fn leaves_get_the_bundle_first_and_a_new_issuer_only_after_the_hand_over() {
    let old = Ca::generate("ca", now()).unwrap();
    let new = Ca::generate("ca", now()).unwrap();
    let first = stable(&old);
    let current = leaf(&old, &first.bundle);
    assert_eq!(check(&current, &first), None);

    let trust = first.begin(new.cert_pem().to_string(), new.key_pem().to_string(), None);
    assert_eq!(
        check(&current, &trust),
        Some(Reissue::TrustChanged),
        "in Trust only ca.crt changes"
    );
    let with_bundle = CertSecret {
        ca_pem: trust.bundle.clone(),
        ..current.clone()
    };
    assert_eq!(check(&with_bundle, &trust), None);

    let handed = trust.hand_over();
    assert_eq!(
        check(&with_bundle, &handed),
        Some(Reissue::OtherCa),
        "after the hand-over every leaf of the old CA is reissued"
    );
    let reissued = leaf(&new, &handed.bundle);
    assert_eq!(check(&reissued, &handed), None);
    assert_eq!(
        check(&reissued, &handed.finish()),
        Some(Reissue::TrustChanged),
        "the old CA leaves ca.crt without a new certificate"
    );
}

#[test]
fn a_new_annotation_or_a_ca_near_expiry_wants_a_rotation() {
    let ca = Ca::generate("ca", now()).unwrap();
    let info = pki::inspect(ca.cert_pem()).unwrap();
    assert!(!wanted(&info, now(), None, None));
    assert!(wanted(&info, now(), Some("a"), None));
    assert!(!wanted(&info, now(), Some("a"), Some("a")));
    assert!(wanted(&info, now(), Some("b"), Some("a")));
    let late = info.not_after.as_second() - CA_ROTATE_BEFORE.as_secs() as i64 + 1;
    assert!(wanted(
        &info,
        Timestamp::from_second(late).unwrap(),
        None,
        None
    ));
}

#[test]
fn lagging_members_are_refreshed_in_a_new_round_every_interval() {
    let began = now();
    let at = |secs: i64| Timestamp::from_second(began.as_second() + secs).unwrap();
    // The pod update at issue time covers the first interval.
    assert_eq!(refresh_round(Some(began), at(0)), None);
    assert_eq!(refresh_round(Some(began), at(14)), None);
    assert_eq!(refresh_round(Some(began), at(15)), Some(1));
    assert_eq!(refresh_round(Some(began), at(29)), Some(1));
    assert_eq!(refresh_round(Some(began), at(30)), Some(2));
    assert_eq!(refresh_round(None, at(60)), None, "unknown start");
}

#[test]
fn a_phase_that_outlives_the_deadline_is_stalled() {
    let began = now();
    let at = |minutes: i64| Timestamp::from_second(began.as_second() + minutes * 60).unwrap();
    assert_eq!(stalled(Some(began), at(9), ROTATION_DEADLINE), None);
    assert_eq!(
        stalled(Some(began), at(11), ROTATION_DEADLINE),
        Some(Duration::from_secs(11 * 60))
    );
    assert_eq!(
        stalled(None, at(60), ROTATION_DEADLINE),
        None,
        "unknown start"
    );
}

#[test]
fn a_phase_lasts_its_least_time_before_the_next_one() {
    let began = now();
    let at = |seconds: i64| Timestamp::from_second(began.as_second() + seconds).unwrap();
    assert!(!lasted(Some(began), at(9), MIN_PHASE));
    assert!(lasted(Some(began), at(10), MIN_PHASE));
    assert!(!lasted(None, at(600), MIN_PHASE), "unknown start");
}

#[test]
fn the_start_of_a_phase_is_kept_in_the_secret_until_the_rotation_ends() {
    let old = Ca::generate("ca", now()).unwrap();
    let new = Ca::generate("ca", now()).unwrap();
    let cluster = cluster();
    let round_trip =
        |ca: &CaSecret| CaSecret::read(&ca.secret(&cluster, "demo-ca".into())).unwrap();
    let trust = stable(&old)
        .begin(new.cert_pem().to_string(), new.key_pem().to_string(), None)
        .entered(now());
    assert_eq!(round_trip(&trust).since, Some(now()));
    let later = Timestamp::from_second(now().as_second() + 60).unwrap();
    let reissue_phase = round_trip(&trust.hand_over().entered(later));
    assert_eq!(reissue_phase.since, Some(later));
    assert_eq!(round_trip(&reissue_phase.finish()).since, None);
}
