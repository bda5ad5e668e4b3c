//! A real Kubernetes on ferrocd, one suite (one node can run at a time on
//! this machine, so it is one test function).
//!
//! ferrocd is started with kubeadm's etcd command line over mutual TLS
//! (certificates from a test CA), then `../shared/k8s/node-up.sh` brings up
//! a single-node Kubernetes whose kube-apiserver stores everything in it: the
//! node must become Ready and a ConfigMap land in ferrocd. On that node
//! (so every step below also runs Kubernetes on ferrocd) the operator is
//! installed with its chart from an image built from this build's binaries,
//! runs `examples/etcdcluster-3.yaml`, and must repair a member whose volume
//! was lost, and ride out the loss of the leader's pod; then
//! `examples/etcdcluster-tls.yaml` runs mutual TLS, rotates its
//! certificates, scales 3 -> 4 -> 3 and replaces its CA under writes
//! (`kube_apiserver/tls.rs`). Between the two the
//! first cluster moves to a new image under writes and stops on a broken one
//! (`kube_apiserver/upgrade.rs`) and survives its operator's pod deleted
//! mid scale-up; after them the clusters are backed up to S3 and to a PVC
//! and restored into new clusters, as is an etcd 3.4 snapshot
//! (`kube_apiserver/backup.rs`), and `examples/etcdcluster-cert-manager.yaml`
//! runs on the Certificates it renders, signed by the test in
//! cert-manager's place (`kube_apiserver/cert_manager.rs`); at the end a
//! 1-member emptyDir cluster outlives its pod, a cluster with
//! `spec.recovery` is rebuilt from its survivor after losing two of three
//! members with their volumes (`kube_apiserver/recovery.rs`), and the
//! clusters are deleted with and without their PVCs
//! (`kube_apiserver/lifecycle.rs`). A plain-text cluster gets `spec.tls`
//! and turns TLS on under writes (`kube_apiserver/enable_tls.rs`).
//!
//! `FERROCD_E2E_SCENARIOS` (comma-separated: `volume`, `leader`, `upgrade`,
//! `expand`, `operator_restart`, `tls`, `enable_tls`, `backup`, `cert_manager`,
//! `lifecycle`, `recovery`, `recovery_backup`) runs only those scenarios
//! after the install; unset, all run. `recovery_backup`
//! (`kube_apiserver/recovery_backup.rs`, about 65 s) rebuilds a cluster
//! that lost every pod and PVC from its `EtcdBackup`.

#[path = "kube_apiserver/backup.rs"]
mod backup_scenario;
#[path = "kube_apiserver/cert_manager.rs"]
mod cert_manager_scenario;
#[path = "kube_apiserver/enable_tls.rs"]
mod enable_tls_scenario;
#[path = "kube_apiserver/expand.rs"]
mod expand_scenario;
#[path = "kube_apiserver/lifecycle.rs"]
mod lifecycle;
#[path = "kube_apiserver/recovery_backup.rs"]
mod recovery_backup_scenario;
#[path = "kube_apiserver/recovery.rs"]
mod recovery_scenario;
#[path = "kube_apiserver/tls.rs"]
mod tls_scenario;
#[path = "kube_apiserver/upgrade.rs"]
mod upgrade_scenario;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use ferrocd_e2e::k8s::{shared_k8s, text, wait_for, Node, Process};
use ferrocd_e2e::pki::{ClientCerts, Pki};
use ferrocd_e2e::writer::{Route, Writer};
use ferrocd_e2e::{etcdctl, ferrocd_bin, free_port, require_tool};
use serde_json::Value;

const NODE_DIR: &str = "/var/tmp/k8s-node-ferrocd-e2e";
const IMAGE_REPOSITORY: &str = "localhost/ferrocd";
const IMAGE_TAG: &str = "e2e";
const OPERATOR_NAMESPACE: &str = "ferrocd-system";
/// Name of the EtcdCluster in examples/etcdcluster-3.yaml.
const CLUSTER: &str = "ferrocd";
/// Keys written before the faults; all must survive them.
const KEYS: usize = 20;

#[test]
fn kubernetes_on_ferrocd_runs_the_operator_through_volume_and_leader_loss() {
    let started = Instant::now();
    for tool in ["etcdctl", "helm", "objcopy", "openssl", "base64"] {
        if !require_tool(tool) {
            return;
        }
    }
    let Some(scripts) = shared_k8s() else {
        return;
    };
    let bin_dir = ferrocd_bin().parent().unwrap().to_path_buf();
    assert!(
        bin_dir.join("ferrocd-operator").exists(),
        "{} not found: build it first (cargo build --bin ferrocd-operator)",
        bin_dir.join("ferrocd-operator").display()
    );

    let mut timings = Timings::starting_at(started);
    let store = KubeadmStore::start();
    timings.lap("ferrocd started with kubeadm's flags");
    let node = Node::up(
        &scripts,
        Path::new(NODE_DIR),
        &[
            ("K8S_ETCD", format!("https://{}", store.endpoint)),
            ("K8S_ETCD_CAFILE", path(&store.apiserver.ca)),
            ("K8S_ETCD_CERTFILE", path(&store.apiserver.cert)),
            ("K8S_ETCD_KEYFILE", path(&store.apiserver.key)),
            ("K8S_API_PORT", free_port().to_string()),
        ],
    );
    timings.lap("node up on ferrocd");
    control_plane_stores_in_ferrocd(&node, &store);

    node.import_local_image(&bin_dir, &format!("{IMAGE_REPOSITORY}:{IMAGE_TAG}"));
    timings.lap("image built and imported");
    let cluster = Cluster::install(&node);
    timings.lap("chart installed, EtcdCluster 3/3 ready");
    let keys = cluster.write_keys("before", KEYS);

    let (mut outage, mut upgrade_outage, mut enable_outage, mut recovery_outage) =
        Default::default();
    if wanted("volume") {
        cluster.lost_volume_is_repaired(&keys);
        timings.lap("lost volume repaired");
    }
    if wanted("leader") {
        outage = cluster.leader_pod_loss_is_ridden_out(&keys);
        timings.lap("leader pod lost and back");
    }
    if wanted("upgrade") {
        upgrade_outage =
            upgrade_scenario::image_upgrade_under_writes_and_a_broken_image_stops(&cluster, &keys);
        timings.lap("image upgraded under writes; broken image stopped and rolled back");
    }
    if wanted("expand") {
        expand_scenario::volumes_grow_without_a_restart(&node, CLUSTER);
        timings
            .lap("volumes grown without a restart; shrink and a class without expansion refused");
    }
    if wanted("operator_restart") {
        lifecycle::operator_restarted_mid_scale_up_completes_it(&cluster);
        timings.lap("operator pod deleted mid scale-up, the new one finished it");
    }
    if wanted("tls") {
        tls_scenario::tls_cluster_serves_mutual_tls_and_rotates_under_writes(&node);
        timings.lap("TLS cluster up, certificates rotated under writes");
    }
    if wanted("enable_tls") {
        enable_outage = enable_tls_scenario::plain_cluster_turns_tls_on_under_writes(&node);
        timings.lap("plain-text cluster turned TLS on under writes");
    }
    if wanted("backup") {
        backup_scenario::backups_to_s3_and_a_pvc_restore_into_new_clusters(&node, &keys);
        timings.lap("backups to S3 and a PVC, restored into new clusters");
    }
    if wanted("cert_manager") {
        cert_manager_scenario::issuer_ref_certificates_signed_outside_serve_the_cluster(&node);
        timings.lap("cert-manager Certificates rendered, Secrets signed outside, cluster served");
    }
    if wanted("lifecycle") {
        lifecycle::lone_empty_dir_member_survives_its_pod(&node);
        timings.lap("1-member emptyDir cluster outlived its pod");
    }
    if wanted("recovery") {
        recovery_outage = recovery_scenario::quorum_loss_is_rebuilt_from_the_survivor(&node);
        timings.lap("quorum lost (2 of 3 pods and PVCs), rebuilt from the survivor");
    }
    if wanted("recovery_backup") {
        let took = recovery_backup_scenario::quorum_loss_is_rebuilt_from_the_latest_backup(&node);
        timings.lap(&format!(
            "quorum lost (all pods and PVCs), rebuilt from the latest backup in {took:.1?}"
        ));
    }
    if wanted("lifecycle") {
        lifecycle::deletion_keeps_or_removes_volumes(&node);
        timings.lap("clusters deleted, PVCs kept or removed per retainOnDelete");
    }

    drop(node);
    timings.lap("node down");
    eprintln!(
        "suite: {:.1?} in all; writes through the client Service failed for {outage:.1?} after the leader pod was deleted, {upgrade_outage:.1?} during the image upgrade, {enable_outage:.1?} while TLS came on, {recovery_outage:.1?} during the quorum-loss recovery\n{}",
        started.elapsed(),
        timings.report()
    );
}

/// Whether the scenario named `name` runs: `FERROCD_E2E_SCENARIOS` unset,
/// or listing it.
fn wanted(name: &str) -> bool {
    std::env::var("FERROCD_E2E_SCENARIOS")
        .map_or(true, |list| list.split(',').any(|s| s.trim() == name))
}

/// Time spent in each phase of the suite, printed at the end.
struct Timings {
    laps: Vec<(String, Duration)>,
    last: Instant,
}

impl Timings {
    fn starting_at(start: Instant) -> Timings {
        Timings {
            laps: Vec::new(),
            last: start,
        }
    }

    fn lap(&mut self, what: &str) {
        let now = Instant::now();
        self.laps.push((what.to_string(), now - self.last));
        self.last = now;
    }

    fn report(&self) -> String {
        self.laps
            .iter()
            .map(|(what, took)| format!("  {took:>8.1?}  {what}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// ferrocd started with kubeadm's etcd static pod command line (127.0.0.1
/// and 127.0.0.2 for the node's addresses, free ports for 2379/2380/2381).
struct KubeadmStore {
    endpoint: String,
    apiserver: ClientCerts,
    _process: Process,
    /// Holds the certificate files while the store and the node run.
    _pki: Pki,
    _data: tempfile::TempDir,
}

impl KubeadmStore {
    fn start() -> KubeadmStore {
        let mut pki = Pki::new("etcd-ca");
        let server = pki.issue("server", "ferrocd-member");
        let peer = pki.issue("peer", "ferrocd-member");
        let apiserver = pki.client("kube-apiserver-etcd-client");
        let (client_port, peer_port, metrics_port) = (free_port(), free_port(), free_port());
        let data = tempfile::tempdir().unwrap();
        let log_path = data.path().join("ferrocd.log");
        let ca = pki.ca();
        let args = [
            format!("--advertise-client-urls=https://127.0.0.1:{client_port}"),
            format!("--cert-file={}", path(&server.cert)),
            "--client-cert-auth=true".to_string(),
            format!("--data-dir={}", path(&data.path().join("etcd"))),
            "--experimental-initial-corrupt-check=true".to_string(),
            "--experimental-watch-progress-notify-interval=5s".to_string(),
            format!("--initial-advertise-peer-urls=https://127.0.0.1:{peer_port}"),
            format!("--initial-cluster=node=https://127.0.0.1:{peer_port}"),
            format!("--key-file={}", path(&server.key)),
            format!(
                "--listen-client-urls=https://127.0.0.1:{client_port},https://127.0.0.2:{client_port}"
            ),
            format!("--listen-metrics-urls=http://127.0.0.1:{metrics_port}"),
            format!("--listen-peer-urls=https://127.0.0.1:{peer_port}"),
            "--name=node".to_string(),
            format!("--peer-cert-file={}", path(&peer.cert)),
            "--peer-client-cert-auth=true".to_string(),
            format!("--peer-key-file={}", path(&peer.key)),
            format!("--peer-trusted-ca-file={}", path(&ca)),
            "--snapshot-count=10000".to_string(),
            format!("--trusted-ca-file={}", path(&ca)),
        ];
        let log = std::fs::File::create(&log_path).unwrap();
        let process = Process(
            Command::new(ferrocd_bin())
                .args(&args)
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        let store = KubeadmStore {
            endpoint: format!("127.0.0.1:{client_port}"),
            apiserver,
            _process: process,
            _pki: pki,
            _data: data,
        };
        wait_for(
            "ferrocd started with kubeadm's flags answers endpoint health",
            Duration::from_secs(30),
            || {
                store
                    .etcdctl(&["endpoint", "health"])
                    .status
                    .success()
                    .then_some(())
            },
            || std::fs::read_to_string(&log_path).unwrap_or_default(),
        );
        let log = std::fs::read_to_string(&log_path).unwrap();
        assert!(
            !log.contains("corrupt-check is accepted but has no effect"),
            "the corruption check flags take effect: {log}"
        );
        let metrics = Command::new("bash")
            .args([
                "-c",
                &format!("exec 3<>/dev/tcp/127.0.0.1/{metrics_port}; printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3"),
            ])
            .output()
            .unwrap();
        assert!(
            text(&metrics).contains("etcd_server_has_leader 1"),
            "--listen-metrics-urls: {}",
            text(&metrics)
        );
        store
    }

    /// etcdctl as kube-apiserver: with its client certificate.
    fn etcdctl(&self, args: &[&str]) -> Output {
        let tls = self.apiserver.etcdctl_flags();
        let all: Vec<&str> = tls
            .iter()
            .map(String::as_str)
            .chain(args.iter().copied())
            .collect();
        etcdctl(&self.endpoint, &all, None)
    }
}

fn control_plane_stores_in_ferrocd(node: &Node, store: &KubeadmStore) {
    let ready = node.kubectl_ok(&[
        "get",
        "nodes",
        "-o",
        "jsonpath={.items[*].status.conditions[?(@.type==\"Ready\")].status}",
    ]);
    assert_eq!(ready.trim(), "True", "node not Ready");
    node.kubectl_ok(&[
        "create",
        "configmap",
        "on-ferrocd",
        "--from-literal=store=ferrocd",
    ]);
    let get = node.kubectl_ok(&[
        "get",
        "configmap",
        "on-ferrocd",
        "-o",
        "jsonpath={.data.store}",
    ]);
    assert_eq!(get.trim(), "ferrocd");
    let stored = store.etcdctl(&[
        "get",
        "/registry/configmaps/default/on-ferrocd",
        "--keys-only",
    ]);
    assert!(
        text(&stored).contains("/registry/configmaps/default/on-ferrocd"),
        "the ConfigMap is not in ferrocd: {}",
        text(&stored)
    );
}

/// The operator installed with its chart and the three-member EtcdCluster
/// of examples/ running on the node.
struct Cluster<'a> {
    node: &'a Node,
    /// ClusterIP:port of the client Service.
    service: String,
}

/// One member as the EtcdCluster's status lists it.
#[derive(Debug, Clone, PartialEq)]
struct MemberSeen {
    name: String,
    id: String,
    is_leader: bool,
}

impl<'a> Cluster<'a> {
    fn install(node: &'a Node) -> Cluster<'a> {
        let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/ferrocd-operator");
        let install = node.helm(&[
            "install",
            "ferrocd-operator",
            &path(&chart),
            "--namespace",
            OPERATOR_NAMESPACE,
            "--create-namespace",
            "--set",
            &format!("image.repository={IMAGE_REPOSITORY}"),
            "--set",
            &format!("image.tag={IMAGE_TAG}"),
            "--set",
            "image.pullPolicy=Never",
            "--wait",
            "--timeout=90s",
        ]);
        assert!(install.status.success(), "helm install: {}", text(&install));
        // The chart's own test: the operator answers ready through its Service.
        let test = node.helm(&[
            "test",
            "ferrocd-operator",
            "--namespace",
            OPERATOR_NAMESPACE,
            "--timeout=60s",
        ]);
        assert!(test.status.success(), "helm test: {}", text(&test));

        apply_example(node, "etcdcluster-3.yaml");

        let mut cluster = Cluster {
            node,
            service: String::new(),
        };
        cluster.wait_ready("the EtcdCluster reports 3 ready voters", |_| true);
        let ip = node.kubectl_ok(&[
            "get",
            "service",
            CLUSTER,
            "-o",
            "jsonpath={.spec.clusterIP}",
        ]);
        cluster.service = format!("{}:2379", ip.trim());
        // The member pods pass the `restricted` Pod Security profile: the
        // API server lists those that would not when asked to enforce it.
        let pss = node.kubectl(&[
            "label",
            "--dry-run=server",
            "--overwrite",
            "namespace",
            "default",
            "pod-security.kubernetes.io/enforce=restricted",
        ]);
        assert!(pss.status.success(), "{}", text(&pss));
        assert!(
            !text(&pss).contains("violate"),
            "member pods fail the restricted profile: {}",
            text(&pss)
        );
        cluster
    }

    /// The EtcdCluster's status once it reports 3 ready replicas and 3
    /// healthy voters of which `also` approves.
    fn ready_members(&self, also: &dyn Fn(&[MemberSeen]) -> bool) -> Option<Vec<MemberSeen>> {
        let out = self
            .node
            .kubectl(&["get", "etcdcluster", CLUSTER, "-o", "json"]);
        let cluster: Value = serde_json::from_slice(&out.stdout).ok()?;
        let status = &cluster["status"];
        let members = status["members"].as_array()?;
        let voters = members.iter().all(|m| {
            m["healthy"].as_bool() == Some(true) && m["isLearner"].as_bool() != Some(true)
        });
        if status["readyReplicas"].as_i64() != Some(3) || members.len() != 3 || !voters {
            return None;
        }
        let seen: Vec<MemberSeen> = members
            .iter()
            .map(|m| MemberSeen {
                name: m["name"].as_str().unwrap_or_default().to_string(),
                id: m["id"].as_str().unwrap_or_default().to_string(),
                is_leader: m["isLeader"].as_bool() == Some(true),
            })
            .collect();
        also(&seen).then_some(seen)
    }

    fn wait_ready(&self, what: &str, also: impl Fn(&[MemberSeen]) -> bool) -> Vec<MemberSeen> {
        wait_for(
            what,
            Duration::from_secs(120),
            || self.ready_members(&also),
            || self.describe(),
        )
    }

    /// What a failure message needs: the EtcdCluster, pods, PVCs, events and
    /// the operator's log.
    fn describe(&self) -> String {
        let get = |args: &[&str]| text(&self.node.kubectl(args));
        format!(
            "--- EtcdCluster ---\n{}\n--- pods, PVCs ---\n{}\n--- events ---\n{}\n--- operator log ---\n{}\n--- member logs ---\n{}",
            get(&["get", "etcdcluster", CLUSTER, "-o", "yaml"]),
            get(&["get", "pods,pvc", "-o", "wide"]),
            get(&["get", "events", "--sort-by=.lastTimestamp"]),
            get(&[
                "logs",
                "-n",
                OPERATOR_NAMESPACE,
                "deployment/ferrocd-operator",
                "--tail=60"
            ]),
            (0..3)
                .map(|i| get(&["logs", &format!("{CLUSTER}-{i}"), "--tail=15"]))
                .collect::<Vec<_>>()
                .join("\n---\n"),
        )
    }

    fn etcdctl(&self, args: &[&str]) -> Output {
        etcdctl(&self.service, args, None)
    }

    /// Writes `count` keys `<prefix>/<i>` through the client Service.
    fn write_keys(&self, prefix: &str, count: usize) -> Vec<(String, String)> {
        let keys: Vec<(String, String)> = (0..count)
            .map(|i| (format!("{prefix}/{i:03}"), format!("value-{i}")))
            .collect();
        for (key, value) in &keys {
            let put = self.etcdctl(&["put", key, value]);
            assert!(put.status.success(), "put {key}: {}", text(&put));
        }
        keys
    }

    /// Every key reads back its value through the client Service.
    fn assert_keys(&self, keys: &[(String, String)], when: &str) {
        for (key, value) in keys {
            let get = self.etcdctl(&["get", key, "--print-value-only"]);
            assert_eq!(
                String::from_utf8_lossy(&get.stdout).trim(),
                value,
                "{when}: {key}: {}",
                text(&get)
            );
        }
    }

    /// Client endpoints (pod IP:2379) of the three members.
    fn member_endpoints(&self) -> String {
        (0..3)
            .map(|i| {
                let ip = self.node.kubectl_ok(&[
                    "get",
                    "pod",
                    &format!("{CLUSTER}-{i}"),
                    "-o",
                    "jsonpath={.status.podIP}",
                ]);
                format!("{}:2379", ip.trim())
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// All members hash their key-value history the same at one revision.
    fn assert_hashkv_equal(&self) {
        let endpoints = self.member_endpoints();
        let mut last = String::new();
        let equal = (0..20).any(|_| {
            let out = etcdctl(&endpoints, &["endpoint", "hashkv", "-w", "json"], None);
            last = text(&out);
            let answers: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
            let pairs: Vec<(Value, Value)> = answers
                .iter()
                .map(|a| {
                    (
                        a["HashKV"]["header"]["revision"].clone(),
                        a["HashKV"]["hash"].clone(),
                    )
                })
                .collect();
            if answers.len() == 3 && pairs.iter().all(|p| *p == pairs[0]) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(500));
            false
        });
        assert!(equal, "HashKV differs between members: {last}");
    }

    /// A member's disk is lost: its PVC and pod are deleted. The operator
    /// must remove it and add it back at the same peer URL; the new pod
    /// joins on an empty volume under a new member id, catches up and is
    /// promoted; no key is lost.
    fn lost_volume_is_repaired(&self, keys: &[(String, String)]) {
        let before = self.wait_ready("3 ready voters before the volume loss", |_| true);
        let victim = before
            .iter()
            .find(|m| !m.is_leader)
            .expect("a follower")
            .clone();
        let lost_at = Instant::now();
        self.node.kubectl_ok(&[
            "delete",
            "pvc",
            &format!("data-{}", victim.name),
            "--wait=false",
        ]);
        self.node
            .kubectl_ok(&["delete", "pod", &victim.name, "--wait=true"]);
        let after = self.wait_ready(
            &format!(
                "{} (was member {}) back as a new voter after its volume was lost",
                victim.name, victim.id
            ),
            |members| {
                members
                    .iter()
                    .any(|m| m.name == victim.name && !m.id.is_empty() && m.id != victim.id)
            },
        );
        let took = lost_at.elapsed();
        eprintln!(
            "lost volume: {} replaced {} -> {} in {took:.1?}",
            victim.name,
            victim.id,
            after.iter().find(|m| m.name == victim.name).unwrap().id
        );
        assert!(
            took < Duration::from_secs(120),
            "lost volume repaired in {took:?}"
        );
        self.assert_keys(keys, "after the volume loss");
        self.assert_hashkv_equal();
    }

    /// The leader's pod is deleted while a writer puts keys through the
    /// client Service: the cluster elects a leader, the pod comes back on
    /// its volume as the same member, every acknowledged write is kept.
    /// Returns the longest time writes failed.
    fn leader_pod_loss_is_ridden_out(&self, keys: &[(String, String)]) -> Duration {
        let before = self.wait_ready("3 ready voters before the leader loss", |_| true);
        let leader = before
            .iter()
            .find(|m| m.is_leader)
            .expect("a leader in the status")
            .clone();
        let writer = writer(&self.service, &[]);
        std::thread::sleep(Duration::from_secs(2));
        self.node
            .kubectl_ok(&["delete", "pod", &leader.name, "--wait=false"]);
        self.wait_ready(
            &format!(
                "{} back as the same member after its pod was deleted",
                leader.name
            ),
            |members| {
                members
                    .iter()
                    .any(|m| m.name == leader.name && m.id == leader.id)
            },
        );
        let report = writer.stop_when_settled();
        eprintln!(
            "leader pod loss ({} was leader): {} writes ok, {} failed, longest failure window {:.1?}; first errors: {:?}",
            leader.name, report.ok, report.failed, report.longest_outage, report.errors
        );
        assert!(
            report.settled >= Writer::SETTLED,
            "writes still fail {:?} after the cluster is ready again: {:?}",
            Writer::SETTLE_TIMEOUT,
            report.errors
        );
        self.assert_keys(keys, "after the leader loss");
        let acknowledged: Vec<(String, String)> = report
            .acknowledged
            .iter()
            .map(|k| (k.clone(), k.clone()))
            .collect();
        self.assert_keys(&acknowledged, "acknowledged during the leader loss");
        self.assert_hashkv_equal();
        report.longest_outage
    }
}

/// Waits until EtcdCluster `name`'s status shows three ready voters,
/// `also` holds (asked first, so it sees every status on the way) and the
/// client Service takes a put of `probe`; returns the Service's endpoint.
fn three_ready_voters(
    node: &Node,
    name: &str,
    probe: &str,
    what: &str,
    limit: Duration,
    mut also: impl FnMut(&Value) -> bool,
    describe: impl Fn() -> String,
) -> String {
    wait_for(
        what,
        limit,
        || {
            let s = node.etcdcluster_status(name);
            let also_holds = also(&s);
            let voters = s["members"]
                .as_array()
                .map_or(0, |m| m.iter().filter(|m| m["isLearner"] != true).count());
            if s["readyReplicas"] != 3 || voters != 3 || !also_holds {
                return None;
            }
            let ip = node.kubectl_ok(&["get", "service", name, "-o", "jsonpath={.spec.clusterIP}"]);
            let endpoint = format!("{}:2379", ip.trim());
            etcdctl(&endpoint, &["put", probe, "x"], None)
                .status
                .success()
                .then_some(endpoint)
        },
        describe,
    )
}

/// The scenarios' writer: keys `during/NNNNN` through `endpoint` with
/// etcdctl `flags` (TLS files) first, one every 50 ms.
fn writer(endpoint: &str, flags: &[String]) -> Writer {
    Writer::start(
        vec![Route::with_flags(endpoint, flags.to_vec())],
        "during/",
        Duration::from_millis(50),
    )
}

/// `kubectl apply` of `examples/<file>` with the locally built image put
/// in its spec (the node has no registry).
fn apply_example(node: &Node, file: &str) {
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples")
            .join(file),
    )
    .unwrap();
    let manifest = example.replacen(
        "\nspec:\n",
        &format!("\nspec:\n  image: {IMAGE_REPOSITORY}:{IMAGE_TAG}\n"),
        1,
    );
    assert_ne!(manifest, example, "no `spec:` in examples/{file}");
    let apply = node.kubectl_with_input(&["apply", "-f", "-"], Some(&manifest));
    assert!(apply.status.success(), "kubectl apply: {}", text(&apply));
}
