//! A real Kubernetes control plane on ferrocd over mutual TLS: ferrocd is
//! started with kubeadm's etcd command line (certificates from a test CA),
//! then `../shared/k8s/node-up.sh` brings up a single-node Kubernetes whose
//! kube-apiserver stores everything in it, and the node must become Ready.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferrocd_e2e::pki::Pki;
use ferrocd_e2e::{etcdctl, ferrocd_bin, free_port, in_ci, require_tool};

/// `../shared/k8s` beside the checkout.
fn shared_k8s() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/k8s");
    if dir.join("node-up.sh").exists() {
        return Some(dir);
    }
    assert!(
        !in_ci(),
        "{} is missing and CI=true: the real-Kubernetes test needs ../shared/k8s",
        dir.display()
    );
    eprintln!("skipping: no {}", dir.display());
    None
}

/// A node brought up by node-up.sh, brought down again when dropped (also
/// when the test fails).
struct Node {
    scripts: PathBuf,
    dir: PathBuf,
    kubeconfig: PathBuf,
}

impl Node {
    fn up(scripts: &Path, env: &[(&str, String)]) -> Node {
        let dir = PathBuf::from("/var/tmp/k8s-node-ferrocd-e2e");
        let mut node = Node {
            scripts: scripts.to_path_buf(),
            dir: dir.clone(),
            kubeconfig: dir.join("kubeconfig"),
        };
        let out = Command::new("bash")
            .arg(scripts.join("node-up.sh"))
            .env("K8S_NODE_DIR", &dir)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .expect("node-up.sh");
        if !out.status.success() {
            let log =
                std::fs::read_to_string(dir.join("logs/kube-apiserver.log")).unwrap_or_default();
            let tail: String = log.lines().rev().take(30).collect::<Vec<_>>().join("\n");
            node.down();
            panic!(
                "node-up.sh failed: {}\n--- kube-apiserver log (last lines, newest first) ---\n{tail}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        node
    }

    fn kubectl(&self, args: &[&str]) -> std::process::Output {
        Command::new(self.dir.join("bin/kubectl"))
            .env("KUBECONFIG", &self.kubeconfig)
            .args(args)
            .output()
            .expect("kubectl")
    }

    fn down(&mut self) {
        let _ = Command::new("bash")
            .arg(self.scripts.join("node-down.sh"))
            .env("K8S_NODE_DIR", &self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.down();
    }
}

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn kube_apiserver_runs_on_ferrocd_started_with_kubeadms_command_line() {
    if !require_tool("etcdctl") {
        return;
    }
    let Some(scripts) = shared_k8s() else {
        return;
    };
    let mut pki = Pki::new("etcd-ca");
    let server = pki.issue("server", "ferrocd-member");
    let peer = pki.issue("peer", "ferrocd-member");
    let apiserver = pki.client("kube-apiserver-etcd-client");
    let (client_port, peer_port, metrics_port) = (free_port(), free_port(), free_port());
    let data = tempfile::tempdir().unwrap();
    let log_path = data.path().join("ferrocd.log");
    let (ca, cert, key) = (pki.ca(), server.cert.clone(), server.key.clone());
    let path = |p: &Path| p.display().to_string();
    // kubeadm's etcd static pod command line, with 127.0.0.1 and
    // 127.0.0.2 for the node's addresses and free ports for 2379/2380/2381.
    let args = [
        format!("--advertise-client-urls=https://127.0.0.1:{client_port}"),
        format!("--cert-file={}", path(&cert)),
        "--client-cert-auth=true".to_string(),
        format!("--data-dir={}", path(&data.path().join("etcd"))),
        "--experimental-initial-corrupt-check=true".to_string(),
        "--experimental-watch-progress-notify-interval=5s".to_string(),
        format!("--initial-advertise-peer-urls=https://127.0.0.1:{peer_port}"),
        format!("--initial-cluster=node=https://127.0.0.1:{peer_port}"),
        format!("--key-file={}", path(&key)),
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
    let _ferrocd = Process(
        Command::new(ferrocd_bin())
            .args(&args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let endpoint = format!("127.0.0.1:{client_port}");
    let tls = apiserver.etcdctl_flags();
    let tls: Vec<&str> = tls.iter().map(String::as_str).collect();
    let health = [tls.as_slice(), &["endpoint", "health"]].concat();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !etcdctl(&endpoint, &health, None).status.success() {
        assert!(
            Instant::now() < deadline,
            "ferrocd did not start with kubeadm's flags: {}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let started = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        started.contains("--experimental-initial-corrupt-check is accepted but has no effect yet"),
        "a flag accepted without effect must be named at start: {started}"
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

    let node = Node::up(
        &scripts,
        &[
            ("K8S_ETCD", format!("https://127.0.0.1:{client_port}")),
            ("K8S_ETCD_CAFILE", path(&apiserver.ca)),
            ("K8S_ETCD_CERTFILE", path(&apiserver.cert)),
            ("K8S_ETCD_KEYFILE", path(&apiserver.key)),
            ("K8S_API_PORT", free_port().to_string()),
        ],
    );
    let ready = node.kubectl(&[
        "get",
        "nodes",
        "-o",
        "jsonpath={.items[*].status.conditions[?(@.type==\"Ready\")].status}",
    ]);
    assert_eq!(text(&ready).trim(), "True", "node not Ready");
    let create = node.kubectl(&[
        "create",
        "configmap",
        "on-ferrocd",
        "--from-literal=store=ferrocd",
    ]);
    assert!(create.status.success(), "{}", text(&create));
    let get = node.kubectl(&[
        "get",
        "configmap",
        "on-ferrocd",
        "-o",
        "jsonpath={.data.store}",
    ]);
    assert_eq!(text(&get).trim(), "ferrocd");
    let stored = [
        tls.as_slice(),
        &[
            "get",
            "/registry/configmaps/default/on-ferrocd",
            "--keys-only",
        ],
    ]
    .concat();
    let stored = etcdctl(&endpoint, &stored, None);
    assert!(
        text(&stored).contains("/registry/configmaps/default/on-ferrocd"),
        "the ConfigMap is not in ferrocd: {}",
        text(&stored)
    );
}
