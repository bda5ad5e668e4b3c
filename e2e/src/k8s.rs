//! The real single-node Kubernetes of `../shared/k8s` for tests: a [`Node`]
//! brought up by `node-up.sh` and always brought down again, `kubectl` and
//! `helm` against it, and the ferrocd image built from host binaries
//! (`e2e/k8s/local-image.sh`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::in_ci;

/// `../shared/k8s` beside the checkout; `None` (skip) outside CI when it is
/// missing, a panic in CI.
pub fn shared_k8s() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/k8s");
    if dir.join("node-up.sh").exists() {
        return Some(dir);
    }
    assert!(
        !in_ci(),
        "{} is missing and CI=true: the real-Kubernetes tests need ../shared/k8s",
        dir.display()
    );
    eprintln!("skipping: no {}", dir.display());
    None
}

/// Standard output and standard error of `out`, for messages.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A node brought up by node-up.sh, brought down again when dropped (also
/// when the test fails).
pub struct Node {
    scripts: PathBuf,
    dir: PathBuf,
    kubeconfig: PathBuf,
}

impl Node {
    /// Brings a node up in `dir` with node-up.sh's environment `env`.
    pub fn up(scripts: &Path, dir: &Path, env: &[(&str, String)]) -> Node {
        let mut node = Node {
            scripts: scripts.to_path_buf(),
            dir: dir.to_path_buf(),
            kubeconfig: dir.join("kubeconfig"),
        };
        let out = Command::new("bash")
            .arg(scripts.join("node-up.sh"))
            .env("K8S_NODE_DIR", dir)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .expect("node-up.sh");
        if !out.status.success() {
            let tail = node.log_tail("kube-apiserver", 30);
            node.down();
            panic!(
                "node-up.sh failed: {}\n--- kube-apiserver log (last lines) ---\n{tail}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        node.allow_pod_to_pod(true);
        node
    }

    /// dockerd (started by node-up.sh for `docker build`) sets the FORWARD
    /// policy to DROP, and with br_netfilter the traffic between pods on
    /// the node's bridge passes FORWARD: kube-proxy only lets established
    /// connections through, so pods could not open connections to each
    /// other (members could not reach their peers). This rule lets them,
    /// while the node runs.
    fn allow_pod_to_pod(&self, allow: bool) {
        let rule = [
            "FORWARD",
            "-i",
            "cni0",
            "-o",
            "cni0",
            "-m",
            "comment",
            "--comment",
            "ferrocd-e2e: pod to pod on the node bridge",
            "-j",
            "ACCEPT",
        ];
        let iptables = |op: &str| {
            Command::new("iptables")
                .arg(op)
                .args(rule)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if allow {
            if !iptables("-C") {
                assert!(iptables("-I"), "iptables -I {}", rule.join(" "));
            }
        } else {
            while iptables("-D") {}
        }
    }

    /// The kubeconfig of the node's admin.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The last `lines` lines of a component's log (`kubelet`, ...).
    pub fn log_tail(&self, component: &str, lines: usize) -> String {
        let log = std::fs::read_to_string(self.dir.join(format!("logs/{component}.log")))
            .unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Runs the node's kubectl.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_with_input(args, None)
    }

    /// Runs the node's kubectl with `input` on its standard input.
    pub fn kubectl_with_input(&self, args: &[&str], input: Option<&str>) -> Output {
        let mut child = Command::new(self.dir.join("bin/kubectl"))
            .env("KUBECONFIG", &self.kubeconfig)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl");
        let mut stdin = child.stdin.take().expect("stdin");
        if let Some(input) = input {
            stdin.write_all(input.as_bytes()).expect("kubectl stdin");
        }
        drop(stdin);
        child.wait_with_output().expect("kubectl output")
    }

    /// The `status` of EtcdCluster `name` (null when it can not be read).
    pub fn etcdcluster_status(&self, name: &str) -> serde_json::Value {
        let out = self.kubectl(&["get", "etcdcluster", name, "-o", "json"]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap_or_default()["status"]
            .clone()
    }

    /// Runs kubectl and returns its standard output; panics when it fails.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {}: {}",
            args.join(" "),
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `helm` (from PATH) against this node.
    pub fn helm(&self, args: &[&str]) -> Output {
        Command::new("helm")
            .env("KUBECONFIG", &self.kubeconfig)
            .args(args)
            .output()
            .expect("helm")
    }

    /// Builds the ferrocd image `image` from `ferrocd` and `ferrocd-operator`
    /// in `bin_dir` and imports it into the node's containerd.
    pub fn import_local_image(&self, bin_dir: &Path, image: &str) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("k8s/local-image.sh");
        let out = Command::new("bash")
            .arg(script)
            .arg(bin_dir)
            .arg(image)
            .env("PATH", self.path_with_node_bin())
            .output()
            .expect("local-image.sh");
        assert!(out.status.success(), "local-image.sh: {}", text(&out));
    }

    /// Builds `image` from `dockerfile` alone (an empty build context: it
    /// starts `FROM` an image already built here) and imports it into the
    /// node's containerd.
    pub fn import_derived_image(&self, dockerfile: &str, image: &str) {
        let context = tempfile::tempdir().expect("build context");
        std::fs::write(context.path().join("Dockerfile"), dockerfile).expect("Dockerfile");
        let out = Command::new("bash")
            .args([
                "-c",
                "set -euo pipefail; DOCKER_BUILDKIT=0 docker build -q -t \"$1\" \"$2\" >/dev/null; \
                 docker save \"$1\" | ctr -n k8s.io images import - >/dev/null",
                "derived-image",
                image,
            ])
            .arg(context.path())
            .env("PATH", self.path_with_node_bin())
            .output()
            .expect("docker build");
        assert!(out.status.success(), "building {image}: {}", text(&out));
    }

    fn path_with_node_bin(&self) -> String {
        format!(
            "{}:{}",
            self.dir.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    fn down(&mut self) {
        self.allow_pod_to_pod(false);
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

/// A child process killed when dropped.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The condition of type `type_` among a status's `conditions` (null
/// when there is none).
pub fn condition(status: &serde_json::Value, type_: &str) -> serde_json::Value {
    status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .cloned()
        .unwrap_or_default()
}

/// Polls `check` every 250 ms until it returns `Some` or `timeout` passes;
/// then panics with `what` and the last `describe()`.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
    describe: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if Instant::now() > deadline {
            panic!("{what}: not within {timeout:?}\n{}", describe());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The host's address on the pods' bridge (`cni0`, the pods' gateway),
/// where a server bound to 0.0.0.0 on this host is reachable from pods.
pub fn host_address_for_pods() -> String {
    let out = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "cni0"])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    listing
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next())
        .unwrap_or_else(|| panic!("no IPv4 address on cni0: {listing}"))
        .to_string()
}
