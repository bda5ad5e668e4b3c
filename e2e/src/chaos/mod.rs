//! Randomized fault runs: clients drive puts, gets, deletes and
//! conditional puts through every member of a cluster while members are
//! killed (-9) and restarted, frozen (SIGSTOP) and thawed, partitioned
//! from the rest or cut off one way from another ([`crate::netfault`]),
//! their disks made slow or full ([`crate::diskfault`]), and leadership
//! is moved ([`faults`]); members that exit by themselves are restarted
//! and must come back. Every operation is recorded with
//! its call and return time ([`workload`]) and the history is checked for
//! linearizability ([`crate::linearizability`]). Watches of every key, one
//! from revision 2 and others from revisions chosen during the run, with
//! progress notifications, are checked for etcd's guarantees ([`watch`]).
//! The same run, seed for seed, works on etcd 3.4 and on ferrocd.

mod faults;
mod planted;
mod watch;
mod workload;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use planted::{plant_lost_write, plant_stale_read};
pub use watch::{check_agreement, check_watch, Event, WatchLog};

use crate::diskfault::Disks;
use crate::linearizability::{check_within, minimize, CheckError, Operation, State, MAX_STEPS};
use crate::netfault::NetFaults;
use crate::{Cluster, Kind};

/// How often members send progress notifications to watches that ask for
/// them (`--experimental-watch-progress-notify-interval`, on both kinds).
const PROGRESS_INTERVAL: &str = "--experimental-watch-progress-notify-interval=300ms";

/// A history whose check takes more steps than this is saved, though it
/// passed.
const SAVE_ABOVE_STEPS: u64 = 200_000;

/// How many watches start during a run from chosen revisions.
const REVISION_WATCHES: usize = 3;

/// How a run is shaped.
#[derive(Debug, Clone)]
pub struct Plan {
    pub kind: Kind,
    pub seed: u64,
    pub members: usize,
    pub clients: usize,
    pub keys: usize,
    pub duration: Duration,
    /// Whether partitions and one-way loss are among the faults (needs
    /// root, iptables and cgroup2: [`NetFaults::available`]).
    pub network: bool,
    /// Whether slow and full disks are among the faults (needs root,
    /// losetup, mkfs.ext4 and blkio: [`Disks::available`]).
    pub disk: bool,
    /// Whether membership changes are among the faults: members replaced
    /// as after a lost disk (removed, data lost, added back empty at the
    /// same address), learners added and promoted, members removed for
    /// good.
    pub membership: bool,
}

/// A fault applied during a run, with when (ms after the start).
#[derive(Debug, Clone)]
pub struct Fault {
    pub at_ms: u128,
    /// `kill`, `stop`, `move-leader`, `partition`, `one-way`,
    /// `slow-disk`, `disk-full`, `crash-restart` (a member that had
    /// exited by itself restarted), the
    /// membership changes `replace`, `learner` (added, then promoted) and
    /// `remove` (for good), each with a `-refused` form when the cluster
    /// would not make the change, or `none`.
    pub kind: &'static str,
    pub what: String,
}

/// What a run found.
#[derive(Debug)]
pub struct Outcome {
    pub plan: Plan,
    pub faults: Vec<Fault>,
    pub history: Vec<Operation>,
    /// Acknowledged operations (with an answer).
    pub acknowledged: usize,
    pub linearizability: Result<(), CheckError>,
    /// Where the history was saved (JSON) when its check did not pass,
    /// to check it again without the cluster ([`load_history`]).
    pub history_file: Option<PathBuf>,
    /// Watch guarantees broken, in words.
    pub watch_violations: Vec<String>,
    /// Members that did not come back after the faults (exited again or
    /// did not answer), or that panicked, in words.
    pub member_failures: Vec<String>,
    /// Watch events checked, over every watch.
    pub watch_events: usize,
    /// Progress notifications checked, over every watch.
    pub progress_notifications: usize,
    /// The watch of every key from revision 2.
    pub watch: WatchLog,
    /// The watches started during the run from chosen revisions.
    pub revision_watches: Vec<WatchLog>,
}

impl Outcome {
    /// Whether nothing was violated.
    pub fn ok(&self) -> bool {
        self.linearizability.is_ok()
            && self.watch_violations.is_empty()
            && self.member_failures.is_empty()
    }

    /// A report to replay and debug a failure: the seed, the faults, and
    /// the operations around the point where the search got stuck.
    pub fn report(&self) -> String {
        let mut s = format!(
            "{:?} seed {} ({} members, {} clients, {} keys, {:?}): {} operations, {} acknowledged, {} with unknown outcome, {} watch events, {} progress notifications\nfaults: {}\n",
            self.plan.kind,
            self.plan.seed,
            self.plan.members,
            self.plan.clients,
            self.plan.keys,
            self.plan.duration,
            self.history.len(),
            self.acknowledged,
            self.history.len() - self.acknowledged,
            self.watch_events,
            self.progress_notifications,
            describe_faults(&self.faults)
        );
        if let Some(path) = &self.history_file {
            s.push_str(&format!("history saved to {}\n", path.display()));
        }
        if let Err(CheckError::Inconclusive { steps, memo }) = &self.linearizability {
            s.push_str(&format!(
                "LINEARIZABILITY CHECK INCONCLUSIVE after {steps} steps ({memo} states remembered): neither an order that explains every answer nor a proof that none does ({} operations, {} with unknown outcome)\n",
                self.history.len(),
                self.history.len() - self.acknowledged,
            ));
        }
        if let Err(CheckError::NotLinearizable(v)) = &self.linearizability {
            s.push_str(&format!(
                "NOT LINEARIZABLE: {} operations linearized; none of these could come next:\n",
                v.longest_prefix.len()
            ));
            for &i in &v.stuck {
                s.push_str(&format!("  {:?}\n", self.history[i]));
            }
            s.push_str("last operations linearized:\n");
            for &i in v.longest_prefix.iter().rev().take(10).rev() {
                s.push_str(&format!("  {:?}\n", self.history[i]));
            }
            if let Some(m) = minimize(&self.history, &State::new(1, BTreeMap::new())) {
                s.push_str(&format!(
                    "MINIMISED: {} of the {} operations fail too ({}; {} checks); ms from the start:\n",
                    m.kept.len(),
                    self.history.len(),
                    if m.with_gaps {
                        "checked allowing revisions taken by the operations left out"
                    } else {
                        "checked as they are"
                    },
                    m.checks
                ));
                s.push_str(&format!("  from the store {:?}\n", m.start));
                for &i in &m.kept {
                    s.push_str(&format!("  {}\n", describe(&self.history[i])));
                }
            }
        }
        for w in &self.watch_violations {
            s.push_str(&format!("WATCH: {w}\n"));
        }
        for m in &self.member_failures {
            s.push_str(&format!("MEMBER: {m}\n"));
        }
        s
    }
}

/// The faults of a run on one line: when (ms), what.
fn describe_faults(faults: &[Fault]) -> String {
    let each: Vec<String> = faults
        .iter()
        .map(|f| format!("{} {} ({})", f.at_ms, f.kind, f.what))
        .collect();
    each.join("; ")
}

/// Saves `history` as JSON where [`load_history`] reads it.
fn save_history(plan: &Plan, history: &[Operation]) -> std::io::Result<PathBuf> {
    let path = std::env::temp_dir().join(format!(
        "chaos-{}-{}.json",
        format!("{:?}", plan.kind).to_lowercase(),
        plan.seed
    ));
    let json = serde_json::to_vec(history).map_err(std::io::Error::other)?;
    std::fs::write(&path, json)?;
    Ok(path)
}

/// A history [`run`] saved.
pub fn load_history(path: &std::path::Path) -> std::io::Result<Vec<Operation>> {
    let json = std::fs::read(path)?;
    serde_json::from_slice(&json).map_err(std::io::Error::other)
}

/// One operation on a line: call and return (ms), client, what it
/// asked and what it got.
fn describe(op: &Operation) -> String {
    let ms = |ns: u64| ns as f64 / 1e6;
    match &op.ret {
        Some((ret, out)) => format!(
            "[{:.1}..{:.1}] client {}: {:?} -> {:?}",
            ms(op.call),
            ms(*ret),
            op.client,
            op.input,
            out
        ),
        None => format!(
            "[{:.1}..] client {}: {:?} -> unknown",
            ms(op.call),
            op.client,
            op.input
        ),
    }
}

/// A small deterministic generator (SplitMix64): runs replay from their seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// How long one request may take before its outcome counts as unknown.
const REQUEST_TIMEOUT: Duration = Duration::from_millis(1500);

/// Runs `plan` and checks what it recorded.
pub async fn run(plan: Plan) -> Outcome {
    // Declared before the cluster, so dropped after its processes.
    let mut net = plan
        .network
        .then(|| NetFaults::new().unwrap_or_else(|e| panic!("network faults: {e}")));
    let mut disks = plan
        .disk
        .then(|| Disks::new().unwrap_or_else(|e| panic!("disk faults: {e}")));
    let mut cluster = Cluster::prepare(plan.kind, plan.members, &[PROGRESS_INTERVAL]);
    if let Some(disks) = &mut disks {
        for m in &mut cluster.members {
            let dir = disks
                .data_dir(&m.name)
                .unwrap_or_else(|e| panic!("disk for {}: {e}", m.name));
            m.set_data_dir(dir);
        }
    }
    if let Some(net) = &mut net {
        for m in &mut cluster.members {
            let procs = net
                .procs_file(&m.name)
                .unwrap_or_else(|e| panic!("cgroup for {}: {e}", m.name));
            m.set_cgroup(procs);
        }
    }
    cluster.launch_all().await;
    let t0 = Instant::now();
    let urls = cluster.client_urls();
    let history: Arc<Mutex<Vec<Operation>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..plan.clients {
        let (history, stop, urls) = (history.clone(), stop.clone(), urls.clone());
        let seed = plan.seed.wrapping_mul(31).wrapping_add(c as u64 + 1);
        let keys = plan.keys;
        clients.push(tokio::spawn(async move {
            workload::client_loop(c, seed, keys, &urls, t0, &history, &stop).await
        }));
    }
    let watch = tokio::spawn(watch::watch_from(urls.clone(), 2, 0, stop.clone()));
    let revision_watches = tokio::spawn(watch::watch_from_chosen_revisions(
        urls.clone(),
        plan.seed,
        REVISION_WATCHES,
        history.clone(),
        stop.clone(),
    ));

    let faults = faults::inject(&mut cluster, &plan, t0, net.as_mut(), disks.as_mut()).await;
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        let _ = c.await;
    }
    let member_failures = came_back(&mut cluster).await;
    let watch = watch.await.unwrap_or_default();
    let revision_watches = revision_watches.await.unwrap_or_default();
    let history = std::mem::take(&mut *history.lock().unwrap());
    let acknowledged = history.iter().filter(|o| o.ret.is_some()).count();
    // Said before the check, on stderr as it is (not captured by the test
    // harness), so a check that takes long can be replayed.
    let _ = writeln!(
        std::io::stderr(),
        "{:?} seed {} ({} members): checking {} operations ({} with unknown outcome); faults: {}",
        plan.kind,
        plan.seed,
        plan.members,
        history.len(),
        history.len() - acknowledged,
        describe_faults(&faults)
    );
    let t = Instant::now();
    // Long campaigns on release builds record bigger histories: they may
    // raise the search's limit (`CHAOS_MAX_STEPS`).
    let max_steps = std::env::var("CHAOS_MAX_STEPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(MAX_STEPS);
    let checked = check_within(&history, &State::new(1, BTreeMap::new()), max_steps);
    // Histories that do not pass, and those that took a long search (to
    // time the checker on), are saved; all with CHAOS_SAVE set.
    let history_file = match &checked {
        Ok(steps) if *steps < SAVE_ABOVE_STEPS && std::env::var_os("CHAOS_SAVE").is_none() => None,
        _ => save_history(&plan, &history)
            .inspect_err(|e| eprintln!("history not saved: {e}"))
            .ok(),
    };
    if let Ok(steps) = &checked {
        let _ = writeln!(
            std::io::stderr(),
            "{:?} seed {}: linearizable, checked in {steps} steps, {:.1} s{}",
            plan.kind,
            plan.seed,
            t.elapsed().as_secs_f64(),
            history_file
                .as_ref()
                .map(|p| format!(" (saved to {})", p.display()))
                .unwrap_or_default()
        );
    }
    let linearizability = checked.map(|_| ());
    let mut watch_violations = check_watch(&history, &watch);
    for log in &revision_watches {
        watch_violations.extend(check_watch(&history, log));
    }
    watch_violations.extend(check_agreement(&watch, &revision_watches));
    let every_watch = || std::iter::once(&watch).chain(&revision_watches);
    Outcome {
        plan,
        faults,
        acknowledged,
        linearizability,
        history_file,
        watch_violations,
        member_failures,
        watch_events: every_watch().map(|w| w.events.len()).sum(),
        progress_notifications: every_watch().map(|w| w.progress.len()).sum(),
        watch,
        revision_watches,
        history,
    }
}

/// Every member still in the cluster must run and know a leader within
/// 15 s of the faults' end (restarted members too: one that cannot
/// start again after a full disk, say, fails the run), and no ferrocd
/// member may have panicked.
async fn came_back(cluster: &mut Cluster) -> Vec<String> {
    let mut failures = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    for m in &mut cluster.members {
        if m.pid().is_none() {
            continue; // removed
        }
        let tail = |m: &crate::Server| {
            let log = m.log();
            let lines: Vec<&str> = log.lines().collect();
            lines[lines.len().saturating_sub(5)..].join("\n    ")
        };
        if m.kind == Kind::Ferrocd && m.log().contains("panicked at") {
            failures.push(format!("{} panicked:\n    {}", m.name, tail(m)));
        }
        loop {
            if let Some(status) = m.exit_status() {
                failures.push(format!("{} exited ({status}):\n    {}", m.name, tail(m)));
                break;
            }
            if m.status().await.is_ok_and(|s| s.leader != 0) {
                break;
            }
            if Instant::now() > deadline {
                failures.push(format!(
                    "{} knows no leader 15 s after the faults:\n    {}",
                    m.name,
                    tail(m)
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    failures
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_replays_from_its_seed() {
        let (mut a, mut b) = (Rng(7), Rng(7));
        let xs: Vec<u64> = (0..5).map(|_| a.next()).collect();
        let ys: Vec<u64> = (0..5).map(|_| b.next()).collect();
        assert_eq!(xs, ys);
        assert_ne!(Rng(8).next(), xs[0]);
    }
}
