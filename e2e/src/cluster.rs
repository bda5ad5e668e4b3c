//! A multi-member cluster of one kind of server on loopback.

use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ferrocd_proto::etcdserverpb::cluster_client::ClusterClient;
use ferrocd_proto::etcdserverpb::MemberAddRequest;

use crate::{etcdctl, require_tool, Addresses, Kind, Server};

/// Test timings: a heartbeat every 50 ms and elections after 500 ms, so
/// failovers take about a second. A flag of the same name in `extra`
/// replaces the default.
pub const FAST_ELECTIONS: &[&str] = &["--heartbeat-interval=50", "--election-timeout=500"];

/// Members of one cluster, all of one [`Kind`], each with its own ports and
/// data directory; every process is killed when the cluster is dropped.
pub struct Cluster {
    pub kind: Kind,
    /// The members, `m0`, `m1`, ... in start order.
    pub members: Vec<Server>,
    token: String,
    /// Flags every member gets: [`FAST_ELECTIONS`] merged with `extra`.
    flags: Vec<String>,
    /// Number for the next member's name.
    next: usize,
    /// `http` or `https` (peer TLS, with the certificate flags in `extra`).
    peer_scheme: &'static str,
}

impl Cluster {
    /// Starts an `n`-member ferrocd cluster.
    pub async fn ferrocd(n: usize, extra: &[&str]) -> Cluster {
        Cluster::start(Kind::Ferrocd, n, extra).await
    }

    /// Starts an `n`-member etcd cluster; `None` when etcd is not installed
    /// outside CI.
    pub async fn etcd(n: usize, extra: &[&str]) -> Option<Cluster> {
        if !require_tool("etcd") {
            return None;
        }
        Some(Cluster::start(Kind::Etcd, n, extra).await)
    }

    /// Starts an `n`-member cluster of `kind` for a test that also drives
    /// it with etcdctl; `None` when etcd or etcdctl is not installed
    /// outside CI (in CI a missing tool fails the test).
    pub async fn of_kind_with_etcdctl(kind: Kind, n: usize, extra: &[&str]) -> Option<Cluster> {
        if !require_tool("etcdctl") {
            return None;
        }
        match kind {
            Kind::Etcd => Cluster::etcd(n, extra).await,
            Kind::Ferrocd => Some(Cluster::ferrocd(n, extra).await),
        }
    }

    /// Starts `n` members of `kind` and waits until each knows a leader.
    /// All are launched before any is waited on: one member of a new
    /// cluster cannot elect a leader alone.
    pub async fn start(kind: Kind, n: usize, extra: &[&str]) -> Cluster {
        Cluster::start_with_peer_scheme(kind, n, "http", extra).await
    }

    /// Starts `n` members whose peer URLs are `https://`; `extra` gives
    /// the peer certificate flags.
    pub async fn start_with_peer_tls(kind: Kind, n: usize, extra: &[&str]) -> Cluster {
        Cluster::start_with_peer_scheme(kind, n, "https", extra).await
    }

    async fn start_with_peer_scheme(
        kind: Kind,
        n: usize,
        peer_scheme: &'static str,
        extra: &[&str],
    ) -> Cluster {
        let mut cluster = Cluster::prepare_new(kind, n, peer_scheme, extra);
        cluster.launch_all().await;
        cluster
    }

    /// `n` members of a new cluster with `http://` peer URLs, prepared
    /// (names, addresses, flags, data directories) but not started: for
    /// tests that fill the data directories first (`snapshot restore`),
    /// then call [`Cluster::launch_all`].
    pub fn prepare(kind: Kind, n: usize, extra: &[&str]) -> Cluster {
        Cluster::prepare_new(kind, n, "http", extra)
    }

    /// The new cluster's `--initial-cluster` value.
    pub fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The cluster's `--initial-cluster-token`.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Starts every member and waits until each knows a leader. All are
    /// launched before any is waited on: one member of a new cluster
    /// cannot elect a leader alone.
    pub async fn launch_all(&mut self) {
        for m in &mut self.members {
            m.launch();
        }
        for m in &mut self.members {
            m.wait_ready().await;
        }
    }

    fn prepare_new(kind: Kind, n: usize, peer_scheme: &'static str, extra: &[&str]) -> Cluster {
        let addrs = distinct_addresses(n, peer_scheme);
        let initial = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("m{i}={}", a.peer_url))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Cluster {
            kind,
            members: Vec::new(),
            token: unique_token(),
            flags: merge_flags(FAST_ELECTIONS, extra),
            next: n,
            peer_scheme,
        };
        for (i, a) in addrs.into_iter().enumerate() {
            let flags = cluster.bootstrap_flags(&initial, "new");
            let member = cluster.prepare_member(&format!("m{i}"), a, &flags, &[]);
            cluster.members.push(member);
        }
        cluster
    }

    /// The client endpoints of all members, comma-separated, as etcdctl's
    /// `--endpoints` takes them.
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| m.endpoint.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The client URLs of all members.
    pub fn client_urls(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// Runs etcdctl against every member's endpoint.
    pub fn etcdctl(&self, args: &[&str]) -> Output {
        etcdctl(&self.endpoints(), args, None)
    }

    /// The index of the leader that every running member reports, retried
    /// for up to 15 s until they agree and the leader is one of them.
    pub async fn leader(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let seen = self.leader_views().await;
            if let Some(i) = agreed_leader(&seen) {
                return i;
            }
            assert!(
                Instant::now() < deadline,
                "the running members did not agree on a leader in 15 s: {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// For each running member: its member ID and the leader it reports
    /// (`None` for a member that did not answer).
    async fn leader_views(&self) -> Vec<(usize, Option<(u64, u64)>)> {
        let mut seen = Vec::new();
        for (i, m) in self.members.iter().enumerate() {
            if !m.is_running() {
                continue;
            }
            let view = m.status().await.ok().and_then(|s| {
                let id = s.header.as_ref().map(|h| h.member_id)?;
                Some((id, s.leader))
            });
            seen.push((i, view));
        }
        seen
    }

    /// The member ID of member `i` (from its Status header).
    pub async fn member_id(&self, i: usize) -> u64 {
        let s = self.members[i]
            .status()
            .await
            .unwrap_or_else(|e| panic!("status of {}: {e}", self.members[i].name));
        s.header.expect("status header").member_id
    }

    /// Adds a member through the Cluster API (MemberAdd on a running member)
    /// and starts it with the member list MemberAdd returned (see
    /// [`Cluster::start_member`]). Returns its index in [`Cluster::members`]
    /// and its member ID.
    pub async fn add_member(&mut self, learner: bool, extra: &[&str]) -> (usize, u64) {
        let new = self.plan_member();
        let via = self
            .members
            .iter()
            .find(|m| m.is_running())
            .expect("a running member");
        let mut c = ClusterClient::new(via.channel().await.expect("connect"));
        let request = MemberAddRequest {
            peer_ur_ls: vec![new.peer_url().to_string()],
            is_learner: learner,
        };
        // etcd refuses reconfigurations until every member has been
        // connected for 5 s.
        let deadline = Instant::now() + Duration::from_secs(15);
        let resp = loop {
            match c.member_add(request.clone()).await {
                Ok(resp) => break resp.into_inner(),
                Err(e)
                    if e.message().contains("unhealthy cluster") && Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("MemberAdd through {}: {e}", via.name),
            }
        };
        let id = resp.member.as_ref().expect("added member").id;
        let initial = resp
            .members
            .iter()
            .flat_map(|m| {
                // Members that have not started yet have no name.
                let n = if m.name.is_empty() {
                    &new.name
                } else {
                    &m.name
                };
                m.peer_ur_ls.iter().map(move |u| format!("{n}={u}"))
            })
            .collect::<Vec<_>>()
            .join(",");
        (self.start_member(new, &initial, extra).await, id)
    }

    /// A name and free addresses for a member about to be added (by
    /// [`Cluster::add_member`] or by `etcdctl member add`).
    pub fn plan_member(&mut self) -> NewMember {
        let name = format!("m{}", self.next);
        self.next += 1;
        NewMember {
            name,
            addrs: distinct_from(&self.members, self.peer_scheme),
        }
    }

    /// Starts a member that MemberAdd has announced, with
    /// `--initial-cluster=<initial_cluster>` (`name=peer_url,...`, as
    /// MemberAdd's answer or `etcdctl member add` prints it) and
    /// `--initial-cluster-state=existing`; waits until it answers Status
    /// and knows the leader (a learner too). Returns its index.
    pub async fn start_member(
        &mut self,
        new: NewMember,
        initial_cluster: &str,
        extra: &[&str],
    ) -> usize {
        let flags = self.bootstrap_flags(initial_cluster, "existing");
        let mut member = self.prepare_member(&new.name, new.addrs, &flags, extra);
        member.launch();
        member.wait_ready().await;
        self.members.push(member);
        self.members.len() - 1
    }

    /// Launches a member that MemberAdd has announced, like
    /// [`Cluster::start_member`], without waiting for it or counting it
    /// among the members (for a member expected not to get in).
    pub fn launch_member(&self, new: NewMember, initial_cluster: &str, extra: &[&str]) -> Server {
        let mut member = self.prepare_added(new, initial_cluster, extra);
        member.launch();
        member
    }

    /// A member that MemberAdd has announced, prepared as for
    /// [`Cluster::launch_member`] but not started (to put it in a cgroup
    /// first, say).
    pub fn prepare_added(&self, new: NewMember, initial_cluster: &str, extra: &[&str]) -> Server {
        let flags = self.bootstrap_flags(initial_cluster, "existing");
        self.prepare_member(&new.name, new.addrs, &flags, extra)
    }

    /// Takes member `i` out of [`Cluster::members`] (after a MemberRemove,
    /// say); the process keeps running until the returned server drops.
    pub fn take_member(&mut self, i: usize) -> Server {
        self.members.remove(i)
    }

    fn bootstrap_flags(&self, initial: &str, state: &str) -> Vec<String> {
        vec![
            format!("--initial-cluster={initial}"),
            format!("--initial-cluster-state={state}"),
            format!("--initial-cluster-token={}", self.token),
        ]
    }

    fn prepare_member(
        &self,
        name: &str,
        addrs: Addresses,
        bootstrap: &[String],
        extra: &[&str],
    ) -> Server {
        let flags: Vec<&str> = self.flags.iter().map(String::as_str).collect();
        let flags = merge_flags(&flags, extra);
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        Server::prepare(self.kind, name, addrs, bootstrap, &flags)
    }
}

/// Runs `member_add` (an `etcdctl member add` of a voter) until it is not
/// refused as "etcdserver: unhealthy cluster": etcd, and ferrocd, refuse
/// a new voter until every voter has been connected for 5 s, so right
/// after a cluster starts the first tries are refused. Gives up after 15 s.
pub fn member_add_when_healthy(member_add: impl Fn() -> Output) -> Output {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = member_add();
        let refused = String::from_utf8_lossy(&out.stderr).contains("unhealthy cluster");
        if !refused || Instant::now() >= deadline {
            return out;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The `ETCD_INITIAL_CLUSTER` that `etcdctl member add` printed: what the
/// added member starts with.
pub fn initial_cluster_of(member_add: &Output) -> String {
    assert!(
        member_add.status.success(),
        "etcdctl member add: {}",
        String::from_utf8_lossy(&member_add.stderr)
    );
    String::from_utf8_lossy(&member_add.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("ETCD_INITIAL_CLUSTER=\""))
        .map(|l| l.trim_end_matches('"').to_string())
        .expect("member add prints ETCD_INITIAL_CLUSTER")
}

/// A member to be added: its name and the addresses it will listen on.
pub struct NewMember {
    pub name: String,
    addrs: Addresses,
}

impl NewMember {
    /// The peer URL to announce in MemberAdd.
    pub fn peer_url(&self) -> &str {
        &self.addrs.peer_url
    }
}

/// The member every view names as leader, if they all answered, agree, and
/// the leader is one of them.
fn agreed_leader(seen: &[(usize, Option<(u64, u64)>)]) -> Option<usize> {
    let views: Vec<(usize, u64, u64)> = seen
        .iter()
        .map(|(i, v)| v.map(|(id, leader)| (*i, id, leader)))
        .collect::<Option<_>>()?;
    let leader = views.first()?.2;
    if leader == 0 || views.iter().any(|v| v.2 != leader) {
        return None;
    }
    views.iter().find(|v| v.1 == leader).map(|v| v.0)
}

/// `base` with every flag that `extra` also sets replaced by `extra`'s.
fn merge_flags(base: &[&str], extra: &[&str]) -> Vec<String> {
    let name = |f: &str| f.split('=').next().unwrap_or(f).to_string();
    let overridden: Vec<String> = extra.iter().map(|f| name(f)).collect();
    base.iter()
        .filter(|f| !overridden.contains(&name(f)))
        .chain(extra)
        .map(|f| f.to_string())
        .collect()
}

/// `n` sets of loopback addresses with no port used twice.
fn distinct_addresses(n: usize, peer_scheme: &str) -> Vec<Addresses> {
    let mut used = Vec::new();
    (0..n)
        .map(|_| {
            let a = fresh_addresses(&used, peer_scheme);
            used.extend([a.client_url.clone(), a.peer_url.clone()]);
            a
        })
        .collect()
}

/// Loopback addresses none of `members` uses.
fn distinct_from(members: &[Server], peer_scheme: &str) -> Addresses {
    let used: Vec<String> = members
        .iter()
        .flat_map(|m| [m.client_url.clone(), m.peer_url.clone()])
        .collect();
    fresh_addresses(&used, peer_scheme)
}

/// Loopback addresses with two different ports, neither in `used` (URLs).
fn fresh_addresses(used: &[String], peer_scheme: &str) -> Addresses {
    loop {
        let a = Addresses::with_schemes("http", peer_scheme);
        if a.client_url != a.peer_url
            && !used.contains(&a.client_url)
            && !used.contains(&a.peer_url)
        {
            return a;
        }
    }
}

/// A cluster token no other cluster of this machine uses, so members of
/// two test clusters can never join each other.
fn unique_token() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "e2e-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_flags_replace_defaults_of_the_same_name() {
        let flags = merge_flags(
            FAST_ELECTIONS,
            &["--election-timeout=900", "--snapshot-count=5"],
        );
        assert_eq!(
            flags,
            [
                "--heartbeat-interval=50",
                "--election-timeout=900",
                "--snapshot-count=5"
            ]
        );
    }

    #[test]
    fn a_leader_counts_only_when_every_member_names_it() {
        let agree = [
            (0, Some((10, 20))),
            (1, Some((20, 20))),
            (2, Some((30, 20))),
        ];
        assert_eq!(agreed_leader(&agree), Some(1));
        let split = [(0, Some((10, 20))), (1, Some((20, 10)))];
        assert_eq!(agreed_leader(&split), None);
        let silent = [(0, Some((10, 10))), (1, None)];
        assert_eq!(agreed_leader(&silent), None);
        let unknown = [(0, Some((10, 99))), (1, Some((20, 99)))];
        assert_eq!(agreed_leader(&unknown), None);
    }
}
