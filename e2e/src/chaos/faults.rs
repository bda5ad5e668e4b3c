//! The faults of a run: members killed (-9) and restarted, frozen and
//! thawed, partitioned or cut off one way, leadership moved, and (in long
//! runs) members replaced as after a lost disk.

use std::time::{Duration, Instant};

use ferrocd_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use ferrocd_proto::etcdserverpb::MoveLeaderRequest;

use super::{Fault, Plan, Rng};
use crate::netfault::NetFaults;
use crate::Cluster;

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

/// Applies a fault every 400-1000 ms until the run's time is up, then
/// heals everything.
pub(super) async fn inject(
    cluster: &mut Cluster,
    plan: &Plan,
    t0: Instant,
    mut net: Option<&mut NetFaults>,
) -> Vec<Fault> {
    let mut rng = Rng(plan.seed ^ 0xfa17);
    let mut faults = Vec::new();
    let kinds = if net.is_some() { 6 } else { 4 };
    let kinds = kinds + u64::from(plan.membership);
    // Members removed and not added back: no more faults aimed at them.
    // Members added during the run are pushed on.
    let mut gone = vec![false; plan.members];
    while t0.elapsed() < plan.duration {
        tokio::time::sleep(Duration::from_millis(400 + rng.below(600))).await;
        let i = rng.below(cluster.members.len() as u64) as usize;
        let name = cluster.members[i].name.clone();
        if gone[i] {
            continue;
        }
        let pause = Duration::from_millis(200 + rng.below(800));
        let fault = rng.below(kinds);
        let (kind, what) = match (fault, net.as_deref_mut()) {
            (k, _) if plan.membership && k == kinds - 1 => {
                let live = gone.iter().filter(|g| !**g).count();
                match rng.below(3) {
                    0 => {
                        let (kind, what, back) = replace(cluster, i).await;
                        gone[i] = !back;
                        (kind, what)
                    }
                    _ if live > plan.members => remove_for_good(cluster, i, &mut gone).await,
                    _ => add_learner(cluster, net.as_deref_mut(), &mut gone).await,
                }
            }
            (0, _) => {
                cluster.members[i].kill9();
                tokio::time::sleep(pause).await;
                cluster.members[i].launch();
                ("kill", format!("kill -9 {name}, restarted after {pause:?}"))
            }
            (1, _) => {
                cluster.members[i].sigstop();
                tokio::time::sleep(pause).await;
                cluster.members[i].sigcont();
                ("stop", format!("SIGSTOP {name} for {pause:?}"))
            }
            (2, _) => ("move-leader", move_leader(cluster, i).await),
            (3, Some(net)) => {
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
            (4, Some(net)) => {
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
    faults
}
