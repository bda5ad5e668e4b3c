//! The faults of a run: members killed (-9) and restarted, frozen and
//! thawed, partitioned or cut off one way, their disks slowed, filled or
//! losing power,
//! leadership moved, and (in long runs) members replaced as after a lost
//! disk. A member that exits by itself (on a full disk, say) is restarted
//! like a killed one.

use std::time::{Duration, Instant};

use ferrocd_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use ferrocd_proto::etcdserverpb::MoveLeaderRequest;

use super::{Fault, Plan, Rng};
use crate::diskfault::Disks;
use crate::netfault::NetFaults;
use crate::{Cluster, Kind};

/// What can be done to a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Kill,
    Stop,
    MoveLeader,
    Partition,
    OneWay,
    SlowDisk,
    FullDisk,
    PowerCut,
    Membership,
    Nothing,
}

/// The actions a run draws from: network and disk faults when the run
/// has them, membership changes in long runs. Power cuts only on ferrocd:
/// etcd 3.4.23, the control, does not come back from them every time (a
/// member panicked in raft at every restart after one, see
/// RELIABILITY.md), and the control must show the harness, not etcd.
fn menu(kind: Kind, network: bool, disk: bool, membership: bool) -> Vec<Action> {
    let mut menu = vec![Action::Kill, Action::Stop, Action::MoveLeader];
    if network {
        menu.extend([Action::Partition, Action::OneWay]);
    }
    if disk {
        menu.extend([Action::SlowDisk, Action::FullDisk]);
        if kind == Kind::Ferrocd {
            menu.push(Action::PowerCut);
        }
    }
    menu.push(Action::Nothing);
    if membership {
        menu.push(Action::Membership);
    }
    menu
}

/// Replaces member `i` as after a lost disk: removes it through another
/// member, kills it, deletes its data, adds it back at the same peer URL
/// and starts it empty, to catch up from the others. Says what happened,
/// (`replace`, or `replace-refused` when the cluster would not remove or
/// add the member), and whether the member is back (false: removed, not
/// added back).
async fn replace(cluster: &mut Cluster, i: usize) -> (&'static str, String, bool) {
    const REFUSED: &str = "replace-refused";
    let name = cluster.members[i].name.clone();
    let peer = cluster.members[i].peer_url.clone();
    let Some(via) = (0..cluster.members.len()).find(|&j| j != i && cluster.members[j].is_running())
    else {
        return (
            REFUSED,
            format!("{name} not replaced: no other member runs"),
            true,
        );
    };
    let id = match cluster.members[i].status().await {
        Ok(s) => s.header.map_or(0, |h| h.member_id),
        Err(e) => return (REFUSED, format!("{name} not replaced: {e}"), true),
    };
    let remove = cluster.members[via].etcdctl(&["member", "remove", &format!("{id:x}")]);
    if !remove.status.success() {
        let why = String::from_utf8_lossy(&remove.stderr).trim().to_string();
        return (REFUSED, format!("{name} not removed: {why}"), true);
    }
    cluster.members[i].kill9();
    let _ = std::fs::remove_dir_all(cluster.members[i].data_dir());
    // etcd adds members only once every member has been connected for a
    // while: retried for a few seconds.
    let deadline = Instant::now() + Duration::from_secs(8);
    let added = loop {
        let add = cluster.members[via].etcdctl(&["member", "add", &name, "--peer-urls", &peer]);
        if add.status.success() {
            break Some(crate::initial_cluster_of(&add));
        }
        if Instant::now() > deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let Some(initial) = added else {
        return (REFUSED, format!("{name} removed, not added back"), false);
    };
    let m = &mut cluster.members[i];
    m.set_flag("--initial-cluster", &initial);
    m.set_flag("--initial-cluster-state", "existing");
    m.launch();
    (
        "replace",
        format!("{name} replaced (removed, data deleted, added back empty)"),
        true,
    )
}

/// Grows the cluster by one member as operators do: added as a learner,
/// started empty, promoted once it has caught up (until then etcd refuses
/// the promotion). Says what happened: `learner` (added and promoted) or
/// `learner-refused`.
async fn add_learner(
    cluster: &mut Cluster,
    net: Option<&mut NetFaults>,
    disks: Option<&mut Disks>,
    gone: &mut Vec<bool>,
) -> (&'static str, String) {
    const REFUSED: &str = "learner-refused";
    let Some(via) =
        (0..cluster.members.len()).find(|&j| !gone[j] && cluster.members[j].is_running())
    else {
        return (REFUSED, "no member runs to add a learner through".into());
    };
    let new = cluster.plan_member();
    let name = new.name.clone();
    let peer = new.peer_url().to_string();
    // etcd adds members only once every member has been connected for a
    // while: retried for a few seconds.
    let deadline = Instant::now() + Duration::from_secs(8);
    let add = loop {
        let args = ["member", "add", &name, "--peer-urls", &peer, "--learner"];
        let add = cluster.members[via].etcdctl(&args);
        if add.status.success() || Instant::now() > deadline {
            break add;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    if !add.status.success() {
        let why = String::from_utf8_lossy(&add.stderr).trim().to_string();
        return (REFUSED, format!("learner {name} not added: {why}"));
    }
    // "Member <id> added to cluster <id>"
    let id = String::from_utf8_lossy(&add.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let mut member = cluster.prepare_added(new, &crate::initial_cluster_of(&add), &[]);
    if let Some(net) = net {
        let procs = net
            .procs_file(&name)
            .unwrap_or_else(|e| panic!("cgroup for {name}: {e}"));
        member.set_cgroup(procs);
    }
    if let Some(disks) = disks {
        let dir = disks
            .data_dir(&name)
            .unwrap_or_else(|e| panic!("disk for {name}: {e}"));
        member.set_data_dir(dir);
    }
    member.launch();
    cluster.members.push(member);
    gone.push(false);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(10);
    loop {
        let promote = cluster.members[via].etcdctl(&["member", "promote", &id]);
        if promote.status.success() {
            return (
                "learner",
                format!(
                    "{name} added as a learner, promoted after {:?}",
                    started.elapsed()
                ),
            );
        }
        if Instant::now() > deadline {
            let why = String::from_utf8_lossy(&promote.stderr).trim().to_string();
            return (
                REFUSED,
                format!("learner {name} added, not promoted: {why}"),
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Removes member `i` for good (through another member) and stops it.
/// Says what happened: `remove` or `remove-refused`.
async fn remove_for_good(
    cluster: &mut Cluster,
    i: usize,
    gone: &mut [bool],
) -> (&'static str, String) {
    const REFUSED: &str = "remove-refused";
    let name = cluster.members[i].name.clone();
    let Some(via) =
        (0..cluster.members.len()).find(|&j| j != i && !gone[j] && cluster.members[j].is_running())
    else {
        return (REFUSED, format!("{name} not removed: no other member runs"));
    };
    let id = match cluster.members[i].status().await {
        Ok(s) => s.header.map_or(0, |h| h.member_id),
        Err(e) => return (REFUSED, format!("{name} not removed: {e}")),
    };
    let remove = cluster.members[via].etcdctl(&["member", "remove", &format!("{id:x}")]);
    if !remove.status.success() {
        let why = String::from_utf8_lossy(&remove.stderr).trim().to_string();
        return (REFUSED, format!("{name} not removed: {why}"));
    }
    cluster.members[i].kill9();
    gone[i] = true;
    ("remove", format!("{name} removed for good"))
}

/// Asks the leader, if the members agree on one, to hand leadership to
/// member `to` (Maintenance.MoveLeader); says what happened.
async fn move_leader(cluster: &Cluster, to: usize) -> String {
    let name = &cluster.members[to].name;
    let mut leader = None;
    for m in &cluster.members {
        if let Ok(status) = m.status().await {
            let me = status.header.as_ref().map_or(0, |h| h.member_id);
            if status.leader != 0 && status.leader == me {
                leader = Some(m);
            }
        }
    }
    let Some(leader) = leader else {
        return format!("no leader to move to {name}");
    };
    let target = match cluster.members[to].status().await {
        Ok(s) => s.header.map_or(0, |h| h.member_id),
        Err(e) => return format!("{name} did not answer: {e}"),
    };
    let Ok(channel) = leader.channel().await else {
        return format!("{} (leader) did not answer", leader.name);
    };
    let mut client = MaintenanceClient::new(channel);
    let mut request = tonic::Request::new(MoveLeaderRequest { target_id: target });
    request.set_timeout(Duration::from_secs(3));
    match client.move_leader(request).await {
        Ok(_) => format!("leader {} moved to {name}", leader.name),
        Err(e) => format!(
            "leader {} not moved to {name}: {}",
            leader.name,
            e.message()
        ),
    }
}

/// Restarts every member (not removed) that exited by itself, as a
/// supervisor would; each restart is recorded as a `crash-restart`.
fn restart_crashed(cluster: &mut Cluster, gone: &[bool], t0: Instant, faults: &mut Vec<Fault>) {
    for (i, m) in cluster.members.iter_mut().enumerate() {
        if gone[i] {
            continue;
        }
        let Some(status) = m.exit_status() else {
            continue;
        };
        let log = m.log();
        let last = log.lines().last().unwrap_or_default().to_string();
        m.kill9();
        m.launch();
        faults.push(Fault {
            at_ms: t0.elapsed().as_millis(),
            kind: "crash-restart",
            what: format!(
                "{} had exited ({status}), restarted; its last log line: {last}",
                m.name
            ),
        });
    }
}

/// Applies a fault every 400-1000 ms until the run's time is up, then
/// heals everything and restarts the members that exited.
pub(super) async fn inject(
    cluster: &mut Cluster,
    plan: &Plan,
    t0: Instant,
    mut net: Option<&mut NetFaults>,
    mut disks: Option<&mut Disks>,
) -> Vec<Fault> {
    let mut rng = Rng(plan.seed ^ 0xfa17);
    let mut faults = Vec::new();
    let menu = menu(plan.kind, net.is_some(), disks.is_some(), plan.membership);
    // Members removed and not added back: no more faults aimed at them.
    // Members added during the run are pushed on.
    let mut gone = vec![false; plan.members];
    while t0.elapsed() < plan.duration {
        tokio::time::sleep(Duration::from_millis(400 + rng.below(600))).await;
        restart_crashed(cluster, &gone, t0, &mut faults);
        let i = rng.below(cluster.members.len() as u64) as usize;
        let name = cluster.members[i].name.clone();
        if gone[i] {
            continue;
        }
        let pause = Duration::from_millis(200 + rng.below(800));
        let action = menu[rng.below(menu.len() as u64) as usize];
        let (kind, what) = match (action, net.as_deref_mut(), disks.as_deref_mut()) {
            (Action::Membership, _, _) => {
                let live = gone.iter().filter(|g| !**g).count();
                match rng.below(3) {
                    0 => {
                        let (kind, what, back) = replace(cluster, i).await;
                        gone[i] = !back;
                        (kind, what)
                    }
                    _ if live > plan.members => remove_for_good(cluster, i, &mut gone).await,
                    _ => {
                        let (net, disks) = (net.as_deref_mut(), disks.as_deref_mut());
                        add_learner(cluster, net, disks, &mut gone).await
                    }
                }
            }
            (Action::Kill, _, _) => {
                cluster.members[i].kill9();
                tokio::time::sleep(pause).await;
                cluster.members[i].launch();
                ("kill", format!("kill -9 {name}, restarted after {pause:?}"))
            }
            (Action::Stop, _, _) => {
                cluster.members[i].sigstop();
                tokio::time::sleep(pause).await;
                cluster.members[i].sigcont();
                ("stop", format!("SIGSTOP {name} for {pause:?}"))
            }
            (Action::MoveLeader, _, _) => ("move-leader", move_leader(cluster, i).await),
            (Action::Partition, Some(net), _) => {
                // Long enough, at times, for the rest to elect a leader.
                let cut_for = pause * 2;
                for (j, other) in cluster.members.iter().enumerate() {
                    if j != i {
                        net.cut(&name, &other.ports()).expect("cut");
                        net.cut(&other.name, &cluster.members[i].ports())
                            .expect("cut");
                    }
                }
                tokio::time::sleep(cut_for).await;
                net.heal().expect("heal");
                (
                    "partition",
                    format!("{name} partitioned from the rest for {cut_for:?}"),
                )
            }
            (Action::OneWay, Some(net), _) => {
                let n = cluster.members.len();
                let j = (i + 1 + rng.below(n as u64 - 1) as usize) % n;
                let to = cluster.members[j].name.clone();
                let cut_for = pause * 2;
                net.cut(&name, &cluster.members[j].ports()).expect("cut");
                tokio::time::sleep(cut_for).await;
                net.heal().expect("heal");
                (
                    "one-way",
                    format!("{name} -> {to} lost (one way) for {cut_for:?}"),
                )
            }
            (Action::SlowDisk, _, Some(disks)) => {
                // 1-3 writes a second: an fsync (data, then the
                // journal's commit) waits about until the end.
                let (slow_for, iops) = (pause * 2, 1 + rng.below(3) as u32);
                disks.slow(&name, iops).expect("slow disk");
                tokio::time::sleep(slow_for).await;
                disks.heal().expect("heal disk");
                (
                    "slow-disk",
                    format!("{name}'s disk slowed to {iops} writes/s for {slow_for:?}"),
                )
            }
            (Action::PowerCut, _, Some(disks)) => {
                // The member runs on the dead disk for a moment (what it
                // acknowledges then must already be on the device), then
                // dies with it; the disk comes back with its journal
                // replayed, the member after it.
                let dead_for = pause / 4;
                disks.power_cut(&name).expect("power cut");
                tokio::time::sleep(dead_for).await;
                cluster.members[i].kill9();
                disks.power_on(&name).expect("power on");
                tokio::time::sleep(pause).await;
                cluster.members[i].launch();
                (
                    "power-cut",
                    format!(
                        "{name}'s disk lost power, {name} killed {dead_for:?} later and restarted after {pause:?}"
                    ),
                )
            }
            (Action::FullDisk, _, Some(disks)) => {
                let full_for = pause * 2;
                let taken = disks.fill(&name).expect("fill disk");
                tokio::time::sleep(full_for).await;
                disks.heal().expect("heal disk");
                (
                    "disk-full",
                    format!(
                        "{name}'s disk full ({} MiB filled) for {full_for:?}",
                        taken >> 20
                    ),
                )
            }
            _ => ("none", "none".to_string()),
        };
        faults.push(Fault {
            at_ms: t0.elapsed().as_millis(),
            kind,
            what,
        });
    }
    for m in &mut cluster.members {
        if !m.is_running() && m.pid().is_some() {
            m.sigcont();
        }
    }
    if let Some(net) = net {
        net.heal().expect("heal");
    }
    if let Some(disks) = disks {
        disks.heal().expect("heal disks");
        // A member that met a full disk may die of it a moment after the
        // heal (seen: etcd, 0.4-0.9 s later, failing a commit it had
        // started on the full disk); it gets the restart every crash gets.
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    restart_crashed(cluster, &gone, t0, &mut faults);
    faults
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_and_network_faults_are_drawn_only_when_the_run_has_them() {
        let bare = menu(Kind::Ferrocd, false, false, false);
        assert!(!bare.contains(&Action::SlowDisk) && !bare.contains(&Action::Partition));
        assert!(!menu(Kind::Etcd, true, true, true).contains(&Action::PowerCut));
        let all = menu(Kind::Ferrocd, true, true, true);
        for a in [
            Action::Partition,
            Action::OneWay,
            Action::SlowDisk,
            Action::FullDisk,
            Action::PowerCut,
            Action::Membership,
            Action::Nothing,
        ] {
            assert!(all.contains(&a), "{a:?}");
        }
    }
}
