//! Randomized fault runs: clients drive puts, gets, deletes and
//! conditional puts through every member of a cluster while members are
//! killed (-9) and restarted, frozen (SIGSTOP) and thawed, partitioned
//! from the rest or cut off one way from another ([`crate::netfault`]),
//! and leadership is moved;
//! every
//! operation is recorded with its call and return time, the history is
//! checked for linearizability ([`crate::linearizability`]), and a watch
//! stream is checked for etcd's guarantees. The same run, seed for seed,
//! works on etcd 3.4 and on ferrocd.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrocd_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use ferrocd_proto::etcdserverpb::kv_client::KvClient;
use ferrocd_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use ferrocd_proto::etcdserverpb::request_op::Request as Op;
use ferrocd_proto::etcdserverpb::watch_client::WatchClient;
use ferrocd_proto::etcdserverpb::watch_request::RequestUnion;
use ferrocd_proto::etcdserverpb::{
    Compare, DeleteRangeRequest, MoveLeaderRequest, PutRequest, RangeRequest, RequestOp,
    TxnRequest, WatchCreateRequest, WatchRequest,
};
use tonic::transport::{Channel, Endpoint};

use crate::linearizability::{check, Input, Operation, Output, State, Violation};
use crate::netfault::NetFaults;
use crate::{Cluster, Kind};

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
    /// Whether members are replaced among the faults (removed, data lost,
    /// added back empty at the same address): a lost disk.
    pub membership: bool,
}

/// A fault applied during a run, with when (ms after the start).
#[derive(Debug, Clone)]
pub struct Fault {
    pub at_ms: u128,
    /// `kill`, `stop`, `move-leader`, `partition`, `one-way`, `replace`
    /// (`replace-refused` when the cluster would not remove or add the
    /// member) or `none`.
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
    pub linearizability: Result<(), Violation>,
    /// Watch guarantees broken, in words.
    pub watch_violations: Vec<String>,
    /// Watch events checked.
    pub watch_events: usize,
    /// The events the watch delivered, in order.
    pub events: Vec<Event>,
}

impl Outcome {
    /// Whether nothing was violated.
    pub fn ok(&self) -> bool {
        self.linearizability.is_ok() && self.watch_violations.is_empty()
    }

    /// A report to replay and debug a failure: the seed, the faults, and
    /// the operations around the point where the search got stuck.
    pub fn report(&self) -> String {
        let mut s = format!(
            "{:?} seed {} ({} members, {} clients, {} keys, {:?}): {} operations, {} acknowledged, {} watch events\nfaults: {:?}\n",
            self.plan.kind,
            self.plan.seed,
            self.plan.members,
            self.plan.clients,
            self.plan.keys,
            self.plan.duration,
            self.history.len(),
            self.acknowledged,
            self.watch_events,
            self.faults
        );
        if let Err(v) = &self.linearizability {
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
        }
        for w in &self.watch_violations {
            s.push_str(&format!("WATCH: {w}\n"));
        }
        s
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
    let mut cluster = Cluster::prepare(plan.kind, plan.members, &[]);
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
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..plan.clients {
        let (history, stop, urls) = (history.clone(), stop.clone(), urls.clone());
        let seed = plan.seed.wrapping_mul(31).wrapping_add(c as u64 + 1);
        let keys = plan.keys;
        clients.push(tokio::spawn(async move {
            client_loop(c, seed, keys, &urls, t0, &history, &stop).await
        }));
    }
    let watch = tokio::spawn(watch_all(urls.clone(), stop.clone()));

    let faults = inject(&mut cluster, &plan, t0, net.as_mut()).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for c in clients {
        let _ = c.await;
    }
    let events = watch.await.unwrap_or_default();
    let history = std::mem::take(&mut *history.lock().unwrap());
    let acknowledged = history.iter().filter(|o| o.ret.is_some()).count();
    let linearizability = check(&history, &State::new(1, BTreeMap::new()));
    let watch_violations = check_watch(&history, &events);
    Outcome {
        plan,
        faults,
        acknowledged,
        linearizability,
        watch_violations,
        watch_events: events.len(),
        events,
        history,
    }
}

/// Replaces member `i` as after a lost disk: removes it through another
/// member, kills it, deletes its data, adds it back at the same peer URL
/// and starts it empty, to catch up from the others. Says what happened,
/// and whether the member is back (false: removed, not added back).
async fn replace(cluster: &mut Cluster, i: usize) -> (String, bool) {
    let name = cluster.members[i].name.clone();
    let peer = cluster.members[i].peer_url.clone();
    let Some(via) = (0..cluster.members.len()).find(|&j| j != i && cluster.members[j].is_running())
    else {
        return (format!("{name} not replaced: no other member runs"), true);
    };
    let id = match cluster.members[i].status().await {
        Ok(s) => s.header.map_or(0, |h| h.member_id),
        Err(e) => return (format!("{name} not replaced: {e}"), true),
    };
    let remove = cluster.members[via].etcdctl(&["member", "remove", &format!("{id:x}")]);
    if !remove.status.success() {
        let why = String::from_utf8_lossy(&remove.stderr).trim().to_string();
        return (format!("{name} not removed: {why}"), true);
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
        return (format!("{name} removed, not added back"), false);
    };
    let m = &mut cluster.members[i];
    m.set_flag("--initial-cluster", &initial);
    m.set_flag("--initial-cluster-state", "existing");
    m.launch();
    (
        format!("{name} replaced (removed, data deleted, added back empty)"),
        true,
    )
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
async fn inject(
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
    let mut gone = vec![false; plan.members];
    while t0.elapsed() < plan.duration {
        tokio::time::sleep(Duration::from_millis(400 + rng.below(600))).await;
        let i = rng.below(plan.members as u64) as usize;
        let name = cluster.members[i].name.clone();
        if gone[i] {
            continue;
        }
        let pause = Duration::from_millis(200 + rng.below(800));
        let fault = rng.below(kinds);
        let (kind, what) = match (fault, net.as_deref_mut()) {
            (k, _) if plan.membership && k == kinds - 1 => {
                let (what, back) = replace(cluster, i).await;
                gone[i] = !back;
                let done = what.contains(" replaced ");
                (if done { "replace" } else { "replace-refused" }, what)
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
                let j = (i + 1 + rng.below(plan.members as u64 - 1) as usize) % plan.members;
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

async fn connect(url: &str) -> Option<Channel> {
    Endpoint::from_shared(url.to_string())
        .ok()?
        .connect_timeout(Duration::from_millis(500))
        .timeout(REQUEST_TIMEOUT)
        .connect()
        .await
        .ok()
}

async fn client_loop(
    client: usize,
    seed: u64,
    keys: usize,
    urls: &[String],
    t0: Instant,
    history: &Mutex<Vec<Operation>>,
    stop: &std::sync::atomic::AtomicBool,
) {
    let mut rng = Rng(seed);
    let mut member = client % urls.len();
    let mut kv: Option<KvClient<Channel>> = None;
    let mut last_rev: BTreeMap<String, i64> = BTreeMap::new();
    let mut n = 0u64;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        if kv.is_none() {
            kv = connect(&urls[member]).await.map(KvClient::new);
            if kv.is_none() {
                member = (member + 1) % urls.len();
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        }
        let Some(client_kv) = kv.as_mut() else {
            continue;
        };
        n += 1;
        let key = format!("k{}", rng.below(keys as u64));
        let value = format!("c{client}-{n}");
        let input = match rng.below(10) {
            0..=3 => Input::Get { key },
            4..=6 => Input::Put { key, value },
            7 => Input::Delete { key },
            _ => Input::PutIf {
                expect: last_rev.get(&key).copied().unwrap_or(0),
                key,
                value,
            },
        };
        let call = t0.elapsed().as_nanos() as u64;
        let answer = send(client_kv, &input).await;
        let ret = t0.elapsed().as_nanos() as u64;
        match answer {
            Ok(output) => {
                if let Output::Get {
                    value: Some((_, rev)),
                    ..
                } = &output
                {
                    if let Input::Get { key } = &input {
                        last_rev.insert(key.clone(), *rev);
                    }
                }
                history.lock().unwrap().push(Operation {
                    client,
                    input,
                    call,
                    ret: Some((ret, output)),
                });
            }
            Err(()) => {
                // A read that failed changed nothing: left out. A write
                // may or may not have been applied.
                if !matches!(input, Input::Get { .. }) {
                    history.lock().unwrap().push(Operation {
                        client,
                        input,
                        call,
                        ret: None,
                    });
                }
                kv = None;
                member = (member + 1) % urls.len();
            }
        }
    }
}

async fn send(kv: &mut KvClient<Channel>, input: &Input) -> Result<Output, ()> {
    let revision =
        |h: Option<ferrocd_proto::etcdserverpb::ResponseHeader>| h.map_or(0, |h| h.revision);
    match input {
        Input::Get { key } => {
            let r = kv
                .range(RangeRequest {
                    key: key.clone().into_bytes(),
                    ..Default::default()
                })
                .await
                .map_err(|_| ())?
                .into_inner();
            let value = r.kvs.first().map(|kv| {
                (
                    String::from_utf8_lossy(&kv.value).to_string(),
                    kv.mod_revision,
                )
            });
            Ok(Output::Get {
                value,
                revision: revision(r.header),
            })
        }
        Input::Put { key, value } => {
            let r = kv
                .put(PutRequest {
                    key: key.clone().into_bytes(),
                    value: value.clone().into_bytes(),
                    ..Default::default()
                })
                .await
                .map_err(|_| ())?
                .into_inner();
            Ok(Output::Put {
                revision: revision(r.header),
            })
        }
        Input::Delete { key } => {
            let r = kv
                .delete_range(DeleteRangeRequest {
                    key: key.clone().into_bytes(),
                    ..Default::default()
                })
                .await
                .map_err(|_| ())?
                .into_inner();
            Ok(Output::Delete {
                deleted: r.deleted,
                revision: revision(r.header),
            })
        }
        Input::PutIf { key, expect, value } => {
            let r = kv
                .txn(TxnRequest {
                    compare: vec![Compare {
                        result: CompareResult::Equal as i32,
                        target: CompareTarget::Mod as i32,
                        key: key.clone().into_bytes(),
                        target_union: Some(TargetUnion::ModRevision(*expect)),
                        ..Default::default()
                    }],
                    success: vec![RequestOp {
                        request: Some(Op::RequestPut(PutRequest {
                            key: key.clone().into_bytes(),
                            value: value.clone().into_bytes(),
                            ..Default::default()
                        })),
                    }],
                    failure: vec![],
                })
                .await
                .map_err(|_| ())?
                .into_inner();
            Ok(Output::PutIf {
                succeeded: r.succeeded,
                revision: revision(r.header),
            })
        }
    }
}

/// One watch event: (revision, key, value, is_delete).
pub type Event = (i64, String, String, bool);

/// Watches every key from revision 2 until `stop`, moving to another
/// member (resuming after the last revision seen) when one fails.
async fn watch_all(urls: Vec<String>, stop: Arc<std::sync::atomic::AtomicBool>) -> Vec<Event> {
    let mut events: Vec<Event> = Vec::new();
    let mut member = 0;
    let mut idle_after_stop = 0;
    loop {
        let from = events.last().map_or(2, |e| e.0 + 1);
        let Some(channel) = connect(&urls[member]).await else {
            member = (member + 1) % urls.len();
            if stop.load(std::sync::atomic::Ordering::SeqCst) {
                idle_after_stop += 1;
                if idle_after_stop > 20 {
                    return events;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let mut client = WatchClient::new(channel);
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let create = WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: vec![0],
                range_end: vec![0],
                start_revision: from,
                ..Default::default()
            })),
        };
        let _ = tx.send(create).await;
        let stream = client
            .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await;
        let Ok(stream) = stream else {
            member = (member + 1) % urls.len();
            continue;
        };
        let mut stream = stream.into_inner();
        loop {
            // Once the clients stopped, what is left arrives within a
            // second; then the watch is over.
            let wait = if stop.load(std::sync::atomic::Ordering::SeqCst) {
                Duration::from_secs(2)
            } else {
                Duration::from_secs(3)
            };
            match tokio::time::timeout(wait, stream.message()).await {
                Ok(Ok(Some(resp))) => {
                    for e in resp.events {
                        let kv = e.kv.unwrap_or_default();
                        events.push((
                            kv.mod_revision,
                            String::from_utf8_lossy(&kv.key).to_string(),
                            String::from_utf8_lossy(&kv.value).to_string(),
                            e.r#type == 1,
                        ));
                    }
                }
                Ok(_) => break,
                Err(_) if stop.load(std::sync::atomic::Ordering::SeqCst) => {
                    drop(tx);
                    return events;
                }
                Err(_) => break,
            }
        }
        drop(tx);
        member = (member + 1) % urls.len();
    }
}

/// etcd's watch guarantees against the history: events come in revision
/// order and never twice (ordered, unique), every acknowledged write is
/// among them with its value (reliable), and every event is a write some
/// client made (no invented events).
pub fn check_watch(history: &[Operation], events: &[Event]) -> Vec<String> {
    let mut problems = Vec::new();
    for w in events.windows(2) {
        if w[1].0 < w[0].0 {
            problems.push(format!("event at revision {} after {}", w[1].0, w[0].0));
        }
        if w[1] == w[0] {
            problems.push(format!("event {:?} delivered twice", w[1]));
        }
    }
    let seen_until = events.last().map_or(0, |e| e.0);
    let by_rev: BTreeMap<i64, Vec<&Event>> = events.iter().fold(BTreeMap::new(), |mut m, e| {
        m.entry(e.0).or_default().push(e);
        m
    });
    for op in history {
        let Some((_, out)) = &op.ret else { continue };
        let (revision, key, value, delete) = match (&op.input, out) {
            (Input::Put { key, value }, Output::Put { revision }) => (*revision, key, value, false),
            (
                Input::PutIf { key, value, .. },
                Output::PutIf {
                    succeeded: true,
                    revision,
                },
            ) => (*revision, key, value, false),
            (
                Input::Delete { key },
                Output::Delete {
                    deleted: 1,
                    revision,
                },
            ) => (*revision, key, &String::new(), true),
            _ => continue,
        };
        if revision > seen_until {
            continue;
        }
        let found = by_rev.get(&revision).is_some_and(|evs| {
            evs.iter()
                .any(|e| &e.1 == key && e.3 == delete && (delete || &e.2 == value))
        });
        if !found {
            problems.push(format!(
                "acknowledged {:?} at revision {revision} missing from the watch",
                op.input
            ));
        }
    }
    let written: std::collections::HashSet<&str> = history
        .iter()
        .filter_map(|o| match &o.input {
            Input::Put { value, .. } | Input::PutIf { value, .. } => Some(value.as_str()),
            _ => None,
        })
        .collect();
    for e in events {
        if !e.3 && !written.contains(e.2.as_str()) {
            problems.push(format!("event {e:?} is no client's write"));
        }
    }
    problems
}

/// A planted bug: the history with one read changed to miss the write it
/// saw (as if the store had lost it): the key absent at the same header
/// revision. `None` if no read saw a value.
pub fn plant_lost_write(history: &[Operation]) -> Option<Vec<Operation>> {
    let i = history
        .iter()
        .rposition(|o| matches!(o.ret, Some((_, Output::Get { value: Some(_), .. }))))?;
    let mut planted = history.to_vec();
    if let Some((_, Output::Get { value, .. })) = &mut planted[i].ret {
        *value = None;
    }
    Some(planted)
}

/// A planted bug: one read answered with the key's previous value (a
/// stale read, as from a follower that had not applied the last write),
/// at the same header revision. `None` if no read saw a value that had an
/// acknowledged predecessor.
pub fn plant_stale_read(history: &[Operation]) -> Option<Vec<Operation>> {
    let written = |key: &str, below: i64| -> Option<(String, i64)> {
        history
            .iter()
            .filter_map(|o| match (&o.input, &o.ret) {
                (Input::Put { key: k, value }, Some((_, Output::Put { revision })))
                | (
                    Input::PutIf { key: k, value, .. },
                    Some((
                        _,
                        Output::PutIf {
                            succeeded: true,
                            revision,
                        },
                    )),
                ) if k == key && *revision < below => Some((value.clone(), *revision)),
                _ => None,
            })
            .max_by_key(|(_, r)| *r)
    };
    history.iter().enumerate().rev().find_map(|(i, o)| {
        let (
            Input::Get { key },
            Some((
                _,
                Output::Get {
                    value: Some((_, rev)),
                    ..
                },
            )),
        ) = (&o.input, &o.ret)
        else {
            return None;
        };
        let previous = written(key, *rev)?;
        let mut planted = history.to_vec();
        if let Some((_, Output::Get { value, .. })) = &mut planted[i].ret {
            *value = Some(previous);
        }
        Some(planted)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &str, revision: i64) -> Operation {
        Operation {
            client: 0,
            input: Input::Put {
                key: key.into(),
                value: value.into(),
            },
            call: 0,
            ret: Some((1, Output::Put { revision })),
        }
    }

    #[test]
    fn a_faithful_watch_passes() {
        let h = [put("a", "1", 2), put("b", "2", 3)];
        let events = [
            (2, "a".into(), "1".into(), false),
            (3, "b".into(), "2".into(), false),
        ];
        assert!(check_watch(&h, &events).is_empty());
    }

    #[test]
    fn a_reordered_a_duplicated_and_a_missing_event_are_found() {
        let h = [put("a", "1", 2), put("b", "2", 3), put("c", "3", 4)];
        let reordered = [
            (3, "b".into(), "2".into(), false),
            (2, "a".into(), "1".into(), false),
        ];
        assert!(check_watch(&h, &reordered)
            .iter()
            .any(|p| p.contains("after")));
        let twice = [
            (2, "a".into(), "1".into(), false),
            (2, "a".into(), "1".into(), false),
            (3, "b".into(), "2".into(), false),
        ];
        assert!(check_watch(&h, &twice).iter().any(|p| p.contains("twice")));
        let missing = [
            (2, "a".into(), "1".into(), false),
            (4, "c".into(), "3".into(), false),
        ];
        assert!(check_watch(&h, &missing)
            .iter()
            .any(|p| p.contains("missing")));
        let invented = [(2, "a".into(), "zzz".into(), false)];
        assert!(!check_watch(&h[..1], &invented).is_empty());
    }

    #[test]
    fn the_generator_replays_from_its_seed() {
        let (mut a, mut b) = (Rng(7), Rng(7));
        let xs: Vec<u64> = (0..5).map(|_| a.next()).collect();
        let ys: Vec<u64> = (0..5).map(|_| b.next()).collect();
        assert_eq!(xs, ys);
        assert_ne!(Rng(8).next(), xs[0]);
    }
}
