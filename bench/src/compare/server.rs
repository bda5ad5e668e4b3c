//! A server under comparison: ferrocd or etcd started with the same
//! etcd-style flags on free loopback ports with a fresh data directory.

use std::fs::OpenOptions;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::conn;

/// How long a server may take to answer Status after starting.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Ferrocd,
    Etcd,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Ferrocd => "ferrocd",
            Kind::Etcd => "etcd",
        }
    }
}

/// A running server; killed when dropped.
pub struct Server {
    pub kind: Kind,
    /// `http://127.0.0.1:PORT`
    pub client_url: String,
    /// `127.0.0.1:PORT`, as etcdctl takes it.
    pub endpoint: String,
    program: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Server {
    /// Starts `program` as a single member and waits until it has a leader;
    /// with `tls`, its client URL is `https://` and these are its
    /// certificate flags.
    pub async fn start(kind: Kind, program: &Path, tls: &[String]) -> anyhow::Result<Server> {
        Server::start_in(kind, program, tls, scratch_dir(kind)?, free_port()?).await
    }

    /// As [`Server::start`], on the data in `dir`/data if there is some
    /// (a restored member named `default` whose peer URL is
    /// [`peer_url`]`(peer)`); the server owns `dir` from then on.
    pub async fn start_in(
        kind: Kind,
        program: &Path,
        tls: &[String],
        dir: tempfile::TempDir,
        peer: u16,
    ) -> anyhow::Result<Server> {
        let client = free_port()?;
        let scheme = if tls.is_empty() { "http" } else { "https" };
        let client_url = format!("{scheme}://127.0.0.1:{client}");
        let peer_url = peer_url(peer);
        // Both fsync every write (neither has a flag to turn it off here).
        let mut args = vec![
            "--name=default".to_string(),
            format!("--data-dir={}", data_dir(dir.path()).display()),
            format!("--listen-client-urls={client_url}"),
            format!("--advertise-client-urls={client_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=default={peer_url}"),
            "--logger=zap".to_string(),
            "--log-level=error".to_string(),
        ];
        args.extend(tls.iter().cloned());
        let mut server = Server {
            kind,
            endpoint: format!("127.0.0.1:{client}"),
            client_url,
            program: program.to_path_buf(),
            args,
            child: None,
            dir,
        };
        server.spawn()?;
        server.wait_ready().await?;
        Ok(server)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let child = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.program.display()))?;
        self.child = Some(child);
        Ok(())
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let ready = conn::wait_ready(&self.client_url, READY_TIMEOUT);
        tokio::pin!(ready);
        loop {
            tokio::select! {
                r = &mut ready => {
                    return r.with_context(|| format!("{} log:\n{}", self.kind.name(), self.log_tail()));
                }
                _ = tokio::time::sleep(Duration::from_millis(100)) => {
                    if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                        bail!("{} exited with {status}; log:\n{}", self.kind.name(), self.log_tail());
                    }
                }
            }
        }
    }

    /// Resident memory of the process (VmRSS in /proc), in bytes.
    pub fn rss_bytes(&self) -> Option<u64> {
        rss_of(self.child.as_ref()?.id())
    }

    /// The program the server runs.
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// Bytes in the data directory.
    pub fn data_bytes(&self) -> u64 {
        dir_size(&data_dir(self.dir.path()))
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// Stops the server with SIGTERM (SIGKILL after 30 s), starts it again
    /// on the same data and returns how long it took to answer Status.
    pub async fn restart(&mut self) -> anyhow::Result<Duration> {
        self.stop()?;
        let t0 = Instant::now();
        self.spawn()?;
        self.wait_ready().await?;
        Ok(t0.elapsed())
    }

    fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .context("kill -TERM")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                eprintln!("{} ignored SIGTERM for 30 s; killing it", self.kind.name());
                child.kill()?;
                child.wait()?;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A fresh directory for one server: its data directory ([`data_dir`]) and
/// its log go in it.
pub fn scratch_dir(kind: Kind) -> anyhow::Result<tempfile::TempDir> {
    Ok(tempfile::Builder::new()
        .prefix(&format!("ferrocd-bench-{}-", kind.name()))
        .tempdir()?)
}

/// The data directory in a server's scratch directory.
pub fn data_dir(scratch: &Path) -> PathBuf {
    scratch.join("data")
}

/// The peer URL of a member listening on loopback `port`.
pub fn peer_url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Resident memory of process `pid` (VmRSS in /proc), in bytes.
pub fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss(&status)
}

/// Whether process `pid` exists and has not exited (a child that exited
/// stays a zombie until it is reaped).
pub fn is_live(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("State:"))
            .is_some_and(|l| !l.contains('Z') && !l.contains('X'))
    })
}

/// VmRSS from the text of /proc/<pid>/status, in bytes.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_read_in_kibibytes() {
        let status = "Name:\tetcd\nVmPeak:\t  900 kB\nVmRSS:\t   12345 kB\nThreads: 9\n";
        assert_eq!(parse_vm_rss(status), Some(12345 * 1024));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
    }
}
