//! Randomized fault runs against 3- and 5-member clusters of ferrocd and,
//! as the control, of etcd 3.4: every history must be linearizable and every watch
//! must keep etcd's guarantees (see `ferrocd_e2e::chaos`). CI runs a short
//! version; `scripts/chaos.sh --runs N` a long one.
//!
//! `CHAOS_RUNS` (runs per kind, default 10), `CHAOS_SECS` (seconds of
//! faults per run, default 3), `CHAOS_SEED` (the first run's seed,
//! default: from the clock; printed, so a failure can be replayed) and
//! `CHAOS_MEMBERSHIP=1` (members replaced too, as after a lost disk),
//! `CHAOS_DISK=0` (no slow, full or powered-off disks), `CHAOS_MAX_STEPS`
//! (the checker's search limit, default 20M), `CHAOS_SAVE=1` (every history
//! saved as JSON in the temp dir, not only those that fail or take a long
//! check; `check_a_saved_history` checks one again).

use std::time::Duration;

use ferrocd_e2e::chaos::{
    check_agreement, check_watch, load_history, plant_lost_write, plant_stale_read, run, Plan,
};
use ferrocd_e2e::diskfault::Disks;
use ferrocd_e2e::linearizability::{
    check, check_within, minimize, CheckError, Input, Operation, Output, State, MAX_STEPS,
};
use ferrocd_e2e::netfault::NetFaults;
use ferrocd_e2e::{in_ci, require_tool, Kind};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Whether partitions and one-way loss can be among the faults: in CI
/// they must (root, iptables and cgroup2 are there).
fn network_faults() -> bool {
    match NetFaults::available() {
        Ok(()) => true,
        Err(e) if in_ci() => panic!("network faults are required in CI: {e}"),
        Err(e) => {
            eprintln!("runs without network faults: {e}");
            false
        }
    }
}

/// Whether slow and full disks can be among the faults: in CI they must
/// (root, losetup, mkfs.ext4 and blkio are there).
fn disk_faults() -> bool {
    match Disks::available() {
        Ok(()) => true,
        Err(e) if in_ci() => panic!("disk faults are required in CI: {e}"),
        Err(e) => {
            eprintln!("runs without disk faults: {e}");
            false
        }
    }
}

async fn runs(kind: Kind) {
    let network = network_faults();
    let disk = env("CHAOS_DISK", 1) == 1 && disk_faults();
    // Replacing members takes seconds per fault (etcd adds a member only
    // once every member has been connected a while): long runs only.
    let membership = env("CHAOS_MEMBERSHIP", 0) == 1;
    let runs = env("CHAOS_RUNS", 10);
    let secs = env("CHAOS_SECS", 3);
    let first = env(
        "CHAOS_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs()),
    );
    let (mut operations, mut acknowledged, mut events, mut faults) = (0, 0, 0, 0);
    let mut progress = 0;
    // Acknowledged lease operations by kind: granted, leased puts,
    // revoked, and answered "lease not found".
    let mut lease_ops = std::collections::BTreeMap::<&str, usize>::new();
    let mut kinds = std::collections::BTreeMap::<&str, usize>::new();
    let mut failures = Vec::new();
    for i in 0..runs {
        let plan = Plan {
            kind,
            seed: first + i,
            // Every other run on 5 members.
            members: if i % 2 == 1 { 5 } else { 3 },
            clients: 4,
            keys: 3,
            duration: Duration::from_secs(secs),
            network,
            disk,
            membership,
        };
        let outcome = run(plan).await;
        operations += outcome.history.len();
        for op in &outcome.history {
            let Some((_, out)) = &op.ret else { continue };
            let kind = match (&op.input, out) {
                (_, Output::LeaseNotFound) => "lease not found",
                (Input::Grant { .. }, _) => "granted",
                (Input::PutLeased { .. }, _) => "leased puts",
                (Input::Revoke { .. }, _) => "revoked",
                _ => continue,
            };
            *lease_ops.entry(kind).or_default() += 1;
        }
        acknowledged += outcome.acknowledged;
        events += outcome.watch_events;
        progress += outcome.progress_notifications;
        // A restart after a crash is the harness's answer, not a fault.
        faults += outcome
            .faults
            .iter()
            .filter(|f| f.kind != "none" && f.kind != "crash-restart")
            .count();
        for f in &outcome.faults {
            *kinds.entry(f.kind).or_default() += 1;
            if f.kind.ends_with("-refused") {
                println!("seed {}: {}", outcome.plan.seed, f.what);
            }
        }
        if !outcome.ok() {
            failures.push(outcome.report());
        }
    }
    println!(
        "CHAOS {kind:?}: {runs} runs from seed {first}, {faults} faults {kinds:?}, {operations} operations \
         ({acknowledged} acknowledged; leases {lease_ops:?}), {events} watch events and {progress} progress notifications checked, \
         {} runs with violations",
        failures.len()
    );
    assert!(
        acknowledged > 0,
        "no operation was acknowledged: the runs proved nothing"
    );
    assert!(
        lease_ops.contains_key("revoked") && lease_ops.contains_key("leased puts"),
        "no lease was revoked or attached: {lease_ops:?}"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferrocd_histories_under_faults_are_linearizable() {
    runs(Kind::Ferrocd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_histories_under_faults_are_linearizable_as_the_control() {
    if !require_tool("etcd") {
        return;
    }
    runs(Kind::Etcd).await;
}

/// Whether the checker proves `history` is not linearizable from `start`.
fn violated(history: &[Operation], start: &State) -> bool {
    match check(history, start) {
        Ok(()) => false,
        Err(CheckError::NotLinearizable(_)) => true,
        Err(e) => panic!("{e}"),
    }
}

/// Checks the history a failing run saved (`CHAOS_HISTORY=<file>`, the
/// path its report gives), without a cluster: to time the check or debug
/// the checker. `CHAOS_MAX_STEPS` raises the search's limit, to settle a
/// run the fault runs' limit left inconclusive.
#[test]
#[ignore = "needs CHAOS_HISTORY=<a saved history>"]
fn check_a_saved_history() {
    let path = std::env::var("CHAOS_HISTORY").expect("CHAOS_HISTORY=<a saved history>");
    let history = load_history(std::path::Path::new(&path)).expect("a saved history");
    let unknown = history.iter().filter(|o| o.ret.is_none()).count();
    let t = std::time::Instant::now();
    let max_steps = env("CHAOS_MAX_STEPS", MAX_STEPS);
    let checked = check_within(&history, &State::new(1, Default::default()), max_steps);
    println!(
        "{} operations ({unknown} with unknown outcome) checked in {:?}: {checked:?}",
        history.len(),
        t.elapsed()
    );
    if let Err(CheckError::NotLinearizable(_)) = checked {
        let m = minimize(&history, &State::new(1, Default::default()));
        println!("minimised: {m:?}");
    }
}

/// A planted bug's history shrinks to a part of at most 10 operations
/// (and a fifth of the whole) that still fails; returns the part's size.
fn assert_shrinks(planted: &[Operation], start: &State) -> usize {
    let m = minimize(planted, start).expect("the planted history fails");
    let part: Vec<Operation> = m.kept.iter().map(|&i| planted[i].clone()).collect();
    assert!(violated(&part, &m.start), "the minimised history passes");
    assert!(
        part.len() <= 10 && part.len() * 5 <= planted.len(),
        "{} of {} operations left, from the store {:?} after {} checks: {part:#?}",
        part.len(),
        planted.len(),
        m.start,
        m.checks
    );
    println!(
        "minimised {} operations to {} from the store {:?}: {part:?}",
        planted.len(),
        part.len(),
        m.start
    );
    part.len()
}

/// The checker finds bugs planted in a history recorded from a real run:
/// a lost acknowledged write, a stale read, a reordered watch event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_finds_bugs_planted_in_a_recorded_history() {
    let outcome = run(Plan {
        kind: Kind::Ferrocd,
        seed: env("CHAOS_SEED", 42),
        members: 3,
        clients: 3,
        keys: 2,
        duration: Duration::from_secs(2),
        network: false,
        disk: false,
        membership: false,
    })
    .await;
    assert!(outcome.ok(), "{}", outcome.report());
    let start = State::new(1, Default::default());
    let lost = plant_lost_write(&outcome.history).expect("a plantable read that saw a value");
    assert!(violated(&lost, &start), "a lost write went unnoticed");
    assert_shrinks(&lost, &start);
    let stale = plant_stale_read(&outcome.history).expect("a plantable read after an overwrite");
    assert!(violated(&stale, &start), "a stale read went unnoticed");
    assert_shrinks(&stale, &start);
    // The recorded watch, with two events of different revisions swapped.
    let mut watch = outcome.watch.clone();
    assert!(check_watch(&outcome.history, &watch).is_empty());
    let i = watch
        .events
        .windows(2)
        .position(|w| w[0].0 != w[1].0)
        .expect("two revisions watched");
    watch.events.swap(i, i + 1);
    assert!(
        !check_watch(&outcome.history, &watch).is_empty(),
        "a reordered event went unnoticed"
    );
    // A progress notification moved ahead of the event before it.
    let mut watch = outcome.watch.clone();
    let (before, revision) = *watch
        .progress
        .iter()
        .find(|(before, _)| *before > 0)
        .expect("a progress notification after an event");
    let last = watch.events[before - 1].0;
    assert!(last <= revision);
    watch.progress.push((before - 1, revision));
    assert!(
        !check_watch(&outcome.history, &watch).is_empty(),
        "a progress notification ahead of its event went unnoticed"
    );
    // A watch from a chosen revision that saw another value.
    let mut other = outcome
        .revision_watches
        .iter()
        .find(|w| !w.events.is_empty())
        .expect("a watch from a chosen revision saw events")
        .clone();
    other.events[0].2.push_str("-changed");
    assert!(
        !check_agreement(&outcome.watch, &[other]).is_empty(),
        "watches that disagree went unnoticed"
    );
}
