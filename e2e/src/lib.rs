//! Harness for end-to-end tests: starts real `ferrocd` and `etcd` processes
//! on free loopback ports, each with its own data directory, and stops them
//! when dropped. [`Server`] is one single-member server, [`Cluster`] several
//! members of one cluster, [`etcdctl_pair`] runs etcdctl side by side on a
//! ferrocd and an etcd.

pub mod chaos;
mod cluster;
pub mod diskfault;
pub mod etcd35;
pub mod etcdctl_pair;
pub mod k8s;
pub mod linearizability;
pub mod netfault;
pub mod pki;
pub mod s3;
pub mod snapshots;
pub mod writer;

pub use cluster::{
    initial_cluster_of, member_add_when_healthy, Cluster, NewMember, FAST_ELECTIONS,
};

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ferrocd_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use ferrocd_proto::etcdserverpb::{StatusRequest, StatusResponse};
use tonic::transport::{Channel, Endpoint};

/// Which server a [`Server`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Ferrocd,
    Etcd,
}

/// A running server process.
pub struct Server {
    pub kind: Kind,
    /// The member name (`--name`).
    pub name: String,
    /// `http://127.0.0.1:PORT`
    pub client_url: String,
    /// `127.0.0.1:PORT`, as etcdctl's `--endpoints` takes it.
    pub endpoint: String,
    /// `http://127.0.0.1:PORT` of the peer listener.
    pub peer_url: String,
    /// The CA and client certificate this harness talks to an `https://`
    /// client URL with.
    pub tls: Option<pki::ClientCerts>,
    args: Vec<String>,
    /// The executable, when not the one `kind` names (etcd 3.5, say).
    program: Option<PathBuf>,
    child: Option<Child>,
    /// Whether the process was sent SIGSTOP and not SIGCONT since.
    stopped: bool,
    dir: tempfile::TempDir,
    /// `--data-dir` (in `dir` unless moved by [`Server::set_data_dir`]).
    data_dir: PathBuf,
    /// The `cgroup.procs` file of the cgroup the process starts in (for
    /// network faults aimed at it, see [`netfault`]).
    cgroup: Option<PathBuf>,
}

/// The ports and URLs of one member, chosen before it starts.
pub(crate) struct Addresses {
    pub(crate) client_url: String,
    pub(crate) endpoint: String,
    pub(crate) peer_url: String,
}

impl Addresses {
    /// Fresh free loopback ports for the client and the peer listener, with
    /// `https` for the listeners that speak TLS.
    pub(crate) fn with_schemes(client: &str, peer: &str) -> Addresses {
        let (client_port, peer_port) = (free_port(), free_port());
        Addresses {
            client_url: format!("{client}://127.0.0.1:{client_port}"),
            endpoint: format!("127.0.0.1:{client_port}"),
            peer_url: format!("{peer}://127.0.0.1:{peer_port}"),
        }
    }
}

/// Runs an `async fn scenario(kind: Kind)` as two tests, `scenario::on_etcd`
/// and `scenario::on_ferrocd`, so every scenario holds ferrocd to what etcd
/// does.
#[macro_export]
macro_rules! on_etcd_and_ferrocd {
    ($($scenario:ident),+ $(,)?) => {
        $(
            mod $scenario {
                #[tokio::test]
                async fn on_etcd() {
                    super::$scenario($crate::Kind::Etcd).await;
                }

                #[tokio::test]
                async fn on_ferrocd() {
                    super::$scenario($crate::Kind::Ferrocd).await;
                }
            }
        )+
    };
}

/// A byte string as a Rust literal for test reports: long ones cut after 48
/// bytes, with their length and an FNV-1a hash so differences stay visible.
pub fn byte_literal(bytes: &[u8]) -> String {
    const SHOWN: usize = 48;
    let text: String = bytes
        .iter()
        .take(SHOWN)
        .flat_map(|&c| std::ascii::escape_default(c))
        .map(char::from)
        .collect();
    if bytes.len() <= SHOWN {
        return format!("b\"{text}\"");
    }
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    format!("b\"{text}\"…({} bytes, fnv {hash:016x})", bytes.len())
}

/// Whether this run is CI, where a missing tool is a failure, not a skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Looks `tool` up on PATH. Missing: panics in CI, otherwise returns false
/// so the caller can skip with a message.
pub fn require_tool(tool: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        if in_ci() {
            panic!("{tool} is required and CI=true: scripts/test.sh installs it");
        }
        eprintln!("skipping: {tool} is not installed");
    }
    found
}

/// The `ferrocd` binary built alongside these tests (`FERROCD_BIN` overrides).
pub fn ferrocd_bin() -> PathBuf {
    if let Ok(p) = std::env::var("FERROCD_BIN") {
        return PathBuf::from(p);
    }
    // Test executables live in target/<profile>/deps.
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile dir");
    let bin = profile_dir.join("ferrocd");
    assert!(
        bin.exists(),
        "{} not found: build it first (cargo build --bin ferrocd) or set FERROCD_BIN",
        bin.display()
    );
    bin
}

/// A port nobody listens on right now, below Linux's ephemeral range
/// (32768-60999): a port the kernel hands out for binding to port 0 may
/// be taken, before the server binds it, as the source port of any
/// outgoing connection (and the tests make thousands), which failed
/// starts with "Address already in use". Ports are drawn at random from
/// 20000-29999 (below Kubernetes' NodePort range too), never one this
/// process handed out before.
pub fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    // Different test processes start from different points.
    let mut seed = u64::from(std::process::id())
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
    for _ in 0..10_000 {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let port = 20_000 + ((seed >> 33) % 10_000) as u16;
        if given.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
    panic!("no free port below the ephemeral range");
}

impl Server {
    /// Starts ferrocd with etcd-style flags plus `extra`.
    pub async fn ferrocd(extra: &[&str]) -> Server {
        Server::start(Kind::Ferrocd, extra).await
    }

    /// Starts etcd 3.4 with the same flags plus `extra`; `None` when etcd is
    /// not installed outside CI.
    pub async fn etcd(extra: &[&str]) -> Option<Server> {
        if !require_tool("etcd") {
            return None;
        }
        Some(Server::start(Kind::Etcd, extra).await)
    }

    async fn start(kind: Kind, extra: &[&str]) -> Server {
        let server = Server::prepare_https(kind, None, extra);
        Server::started(server).await
    }

    /// Starts `kind` with an `https://` client URL and `extra` (which gives
    /// the certificate flags); the harness talks to it with `client`.
    pub async fn start_https(kind: Kind, client: pki::ClientCerts, extra: &[&str]) -> Server {
        let server = Server::prepare_https(kind, Some(client), extra);
        Server::started(server).await
    }

    /// A single member not started yet: `https://` client URL when
    /// `client` is given.
    pub fn prepare_https(kind: Kind, client: Option<pki::ClientCerts>, extra: &[&str]) -> Server {
        let scheme = if client.is_some() { "https" } else { "http" };
        let addrs = Addresses::with_schemes(scheme, "http");
        let cluster = vec![format!("--initial-cluster=default={}", addrs.peer_url)];
        let mut server = Server::prepare(kind, "default", addrs, &cluster, extra);
        server.tls = client;
        server
    }

    async fn started(mut server: Server) -> Server {
        server.launch();
        server.wait_ready().await;
        server
    }

    /// A server not started yet: `--name`, data dir and listener flags,
    /// then `cluster_flags`, then `extra`.
    pub(crate) fn prepare(
        kind: Kind,
        name: &str,
        addrs: Addresses,
        cluster_flags: &[String],
        extra: &[&str],
    ) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let Addresses {
            client_url,
            endpoint,
            peer_url,
        } = addrs;
        let data_dir = dir.path().join("data");
        let mut args: Vec<String> = vec![
            format!("--name={name}"),
            format!("--data-dir={}", data_dir.display()),
            format!("--listen-client-urls={client_url}"),
            format!("--advertise-client-urls={client_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
        ];
        args.extend(cluster_flags.iter().cloned());
        if kind == Kind::Etcd {
            args.extend(["--logger=zap".into(), "--log-level=error".into()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        Server {
            kind,
            name: name.to_string(),
            endpoint,
            client_url,
            peer_url,
            tls: None,
            args,
            program: None,
            child: None,
            stopped: false,
            dir,
            data_dir,
            cgroup: None,
        }
    }

    /// Runs `program` instead of the executable `kind` names.
    pub(crate) fn set_program(&mut self, program: PathBuf) {
        self.program = Some(program);
    }

    fn program(&self) -> PathBuf {
        if let Some(program) = &self.program {
            return program.clone();
        }
        match self.kind {
            Kind::Ferrocd => ferrocd_bin(),
            Kind::Etcd => PathBuf::from("etcd"),
        }
    }

    /// The server's log file (stdout and stderr).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// Sets `--flag=value` for the next start, replacing the flag's earlier
    /// value if it had one.
    pub fn set_flag(&mut self, flag: &str, value: &str) {
        let prefix = format!("{flag}=");
        self.args.retain(|a| !a.starts_with(&prefix));
        self.args.push(format!("{flag}={value}"));
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone()
    }

    /// Moves the data directory to `dir` from the next start on (onto a
    /// file system of its own, for disk faults: [`diskfault`]).
    pub fn set_data_dir(&mut self, dir: PathBuf) {
        self.set_flag("--data-dir", &dir.display().to_string());
        self.data_dir = dir;
    }

    /// Starts the process without waiting for it to be ready (members of
    /// a new cluster can only elect a leader once enough of them run).
    pub fn launch(&mut self) {
        assert!(self.child.is_none(), "the server is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("log file");
        let mut command = match &self.cgroup {
            // The shell joins the cgroup, then becomes the server (same
            // pid), so every socket the server opens belongs to it.
            Some(procs) => {
                let mut c = Command::new("sh");
                c.args(["-c", "echo $$ > \"$0\" && exec \"$@\""])
                    .arg(procs)
                    .arg(self.program());
                c
            }
            None => Command::new(self.program()),
        };
        let child = command
            .args(&self.args)
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {:?}: {e}", self.program()));
        self.child = Some(child);
        self.stopped = false;
    }

    /// Waits until the server answers Maintenance.Status and knows a
    /// leader.
    pub async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "{:?} exited early with {status}; log:\n{}",
                    self.kind,
                    self.log()
                );
            }
            if self.status().await.is_ok_and(|s| s.leader != 0) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{:?} {} not ready in 30s; log:\n{}",
                self.kind,
                self.name,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Maintenance.Status of this server, failing after 2 s (a stopped
    /// process never answers).
    pub async fn status(&self) -> Result<StatusResponse, String> {
        let mut c = MaintenanceClient::new(self.channel().await?);
        c.status(StatusRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(|e| e.message().to_string())
    }

    /// A gRPC channel to this server whose calls fail after 2 s.
    pub async fn channel(&self) -> Result<Channel, String> {
        let mut endpoint =
            Endpoint::from_shared(self.client_url.clone()).map_err(|e| e.to_string())?;
        if let Some(tls) = &self.tls {
            let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
            let config = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(read(&tls.ca)?))
                .identity(tonic::transport::Identity::from_pem(
                    read(&tls.cert)?,
                    read(&tls.key)?,
                ));
            endpoint = endpoint.tls_config(config).map_err(|e| e.to_string())?;
        }
        endpoint
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(2))
            .connect()
            .await
            .map_err(|e| e.to_string())
    }

    /// Whether the process runs and is not stopped.
    pub fn is_running(&self) -> bool {
        self.child.is_some() && !self.stopped
    }

    /// The exit status, once the process has exited by itself.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// The peer and client ports (what a network fault aimed at this
    /// member cuts).
    pub fn ports(&self) -> Vec<u16> {
        [&self.peer_url, &self.client_url]
            .iter()
            .map(|u| {
                u.rsplit(':')
                    .next()
                    .and_then(|p| p.parse().ok())
                    .unwrap_or_else(|| panic!("no port in {u}"))
            })
            .collect()
    }

    /// Starts the process in the cgroup whose `cgroup.procs` file is
    /// `procs` from its next launch on.
    pub fn set_cgroup(&mut self, procs: PathBuf) {
        self.cgroup = Some(procs);
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.stopped = false;
    }

    /// Freezes the process (SIGSTOP): it holds its ports but answers
    /// nothing, like a member cut off by a partition.
    pub fn sigstop(&mut self) {
        self.signal("STOP");
        self.stopped = true;
    }

    /// Resumes a process frozen by [`Server::sigstop`] (SIGCONT).
    pub fn sigcont(&mut self) {
        self.signal("CONT");
        self.stopped = false;
    }

    fn signal(&self, sig: &str) {
        let pid = self.pid().expect("server is running").to_string();
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &pid])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{sig} {pid}");
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("server is running");
        let pid = c.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = c.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "server ignored SIGTERM for 20s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the process again with the same flags and data.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the server before restarting it");
        self.launch();
        self.wait_ready().await;
    }

    /// Runs `etcdctl` (API v3) against this server.
    pub fn etcdctl(&self, args: &[&str]) -> Output {
        self.etcdctl_with_input(args, None)
    }

    /// Runs `etcdctl` with `input` on its standard input.
    pub fn etcdctl_with_input(&self, args: &[&str], input: Option<&str>) -> Output {
        let flags = self
            .tls
            .as_ref()
            .map(pki::ClientCerts::etcdctl_flags)
            .unwrap_or_default();
        self.etcdctl_as(&flags, args, input)
    }

    /// Runs `etcdctl` with `flags` (other TLS files, say) instead of this
    /// harness's own, before `args`.
    pub fn etcdctl_as(&self, flags: &[String], args: &[&str], input: Option<&str>) -> Output {
        let all: Vec<&str> = flags
            .iter()
            .map(String::as_str)
            .chain(args.iter().copied())
            .collect();
        etcdctl(&self.endpoint, &all, input)
    }

    /// An `etcd-client` crate client connected to this server.
    pub async fn client(&self) -> etcd_client::Client {
        etcd_client::Client::connect([self.client_url.as_str()], None)
            .await
            .expect("etcd-client connect")
    }
}

/// Runs `etcdctl` (API v3, 10 s command timeout) against `endpoints`
/// (comma-separated `host:port`), with `input` on its standard input.
pub fn etcdctl(endpoints: &str, args: &[&str], input: Option<&str>) -> Output {
    use std::io::Write;
    let mut cmd = Command::new("etcdctl");
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .arg("--command-timeout=10s")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("etcdctl");
    let mut stdin = child.stdin.take().expect("stdin");
    if let Some(text) = input {
        stdin.write_all(text.as_bytes()).expect("etcdctl stdin");
    }
    drop(stdin);
    child.wait_with_output().expect("etcdctl output")
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}
