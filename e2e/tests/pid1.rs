//! A member as a container's first process: PID 1 of a PID namespace of
//! its own (`unshare --pid --fork`), where the kernel delivers only the
//! signals the process has a handler for, as in a Kubernetes pod. It must
//! stop on SIGTERM at any stage: while it starts (here: joining a cluster
//! whose members are not up, which ferrocd retries for a minute) and
//! while it serves, as etcd 3.4 does. Before the handlers were installed
//! first thing, a starting member ignored SIGTERM and its pod waited for
//! the kill at the end of the grace period.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferrocd_e2e::{ferrocd_bin, free_port, in_ci, require_tool};

/// How long a stopped member may take to exit.
const EXIT_WITHIN: Duration = Duration::from_secs(10);

/// `program args` as PID 1 of a new PID namespace, its output in `log`.
struct Pid1 {
    unshare: Child,
}

impl Pid1 {
    fn start(program: &Path, args: &[String], log: &Path) -> Pid1 {
        let log = std::fs::File::create(log).unwrap();
        let unshare = Command::new("unshare")
            .args(["--pid", "--fork", "--kill-child"])
            .arg(program)
            .args(args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare");
        Pid1 { unshare }
    }

    /// The member's pid as this namespace sees it.
    fn member_pid(&self) -> u32 {
        let pid = self.unshare.id();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let children =
                std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
            if let Some(child) = children.split_whitespace().next() {
                return child.parse().unwrap();
            }
            assert!(Instant::now() < deadline, "unshare started no child");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM to the member; whether it exited within `limit`.
    fn terminate(&mut self, limit: Duration) -> bool {
        let pid = self.member_pid().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success(), "kill -TERM {pid}");
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.unshare.try_wait().unwrap().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Pid1 {
    fn drop(&mut self) {
        // --kill-child: the member goes with unshare.
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
    }
}

/// Whether this machine can make PID namespaces; fails in CI if not.
fn namespaces_available() -> bool {
    let ok = Command::new("unshare")
        .args(["--pid", "--fork", "true"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok || !in_ci(),
        "PID namespaces (unshare --pid) are required in CI"
    );
    ok
}

/// Flags of a member named `name` on fresh ports, in `dir`.
fn member_flags(dir: &Path, name: &str, peer: u16, client: u16) -> Vec<String> {
    vec![
        format!("--name={name}"),
        format!("--data-dir={}", dir.join(name).display()),
        format!("--listen-client-urls=http://127.0.0.1:{client}"),
        format!("--advertise-client-urls=http://127.0.0.1:{client}"),
        format!("--listen-peer-urls=http://127.0.0.1:{peer}"),
        format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"),
    ]
}

#[test]
fn a_member_joining_a_cluster_that_is_not_up_stops_on_sigterm_as_pid_1() {
    if !namespaces_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (peer, client) = (free_port(), free_port());
    let mut args = member_flags(dir.path(), "joining", peer, client);
    args.push(format!(
        "--initial-cluster=joining=http://127.0.0.1:{peer},gone=http://127.0.0.1:{}",
        free_port()
    ));
    args.push("--initial-cluster-state=existing".to_string());
    let log = dir.path().join("log");
    let mut member = Pid1::start(&ferrocd_bin(), &args, &log);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        member.unshare.try_wait().unwrap().is_none(),
        "the joining member exited by itself; log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(
        member.terminate(EXIT_WITHIN),
        "the joining member ignored SIGTERM for {EXIT_WITHIN:?}; log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

#[test]
fn a_serving_member_stops_on_sigterm_as_pid_1_as_etcd_does() {
    if !namespaces_available() || !require_tool("etcdctl") {
        return;
    }
    let mut programs = vec![("ferrocd", ferrocd_bin())];
    if require_tool("etcd") {
        programs.push(("etcd", "etcd".into()));
    }
    for (kind, program) in programs {
        let dir = tempfile::tempdir().unwrap();
        let (peer, client) = (free_port(), free_port());
        let mut args = member_flags(dir.path(), "single", peer, client);
        args.push(format!("--initial-cluster=single=http://127.0.0.1:{peer}"));
        let log = dir.path().join("log");
        let mut member = Pid1::start(&program, &args, &log);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let health = ferrocd_e2e::etcdctl(
                &format!("127.0.0.1:{client}"),
                &["endpoint", "health", "--command-timeout=1s"],
                None,
            );
            if health.status.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{kind} did not serve; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            member.terminate(EXIT_WITHIN),
            "{kind} ignored SIGTERM for {EXIT_WITHIN:?}"
        );
    }
}
