//! Network faults between members on one machine, for the fault runs:
//! every member runs in a cgroup (v2) of its own, and rules in an iptables
//! chain of the harness's own drop what one member's processes send to
//! another member's ports. Cutting A's traffic to B's ports blocks every
//! connection A opens to B; cutting both directions partitions the two;
//! cutting one is one-way loss. The test process itself is in no member's
//! cgroup, so clients keep reaching every member.
//!
//! Needs root, `iptables` with the `cgroup` match, and a cgroup2 mount
//! (pure or hybrid); [`NetFaults::available`] says whether this machine
//! has them. Everything made is removed on drop, and what a killed test
//! run left is removed by the next one.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Why network faults cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum NetFaultError {
    #[error("network faults need root")]
    NotRoot,
    #[error("no cgroup2 file system is mounted")]
    NoCgroup2,
    #[error("iptables {args:?}: {detail}")]
    Iptables { args: Vec<String>, detail: String },
    #[error("cgroup: {0}")]
    Io(#[from] std::io::Error),
}

/// Prefix of the cgroups and chains this harness makes.
const CGROUP_PREFIX: &str = "ferrocd-e2e-";
const CHAIN_PREFIX: &str = "FCD-";

/// One run's cgroups and iptables chain.
pub struct NetFaults {
    chain: String,
    /// The cgroup2 mount point.
    mount: PathBuf,
    /// This instance's cgroup, relative to the mount.
    group: String,
    members: Vec<String>,
    rules: usize,
}

impl NetFaults {
    /// Whether this machine can inject network faults; the reason if not.
    pub fn available() -> Result<(), NetFaultError> {
        if !is_root() {
            return Err(NetFaultError::NotRoot);
        }
        cgroup2_mount().ok_or(NetFaultError::NoCgroup2)?;
        iptables(&["-m", "cgroup", "--help"]).map(|_| ())
    }

    /// Makes the cgroup and the (empty) chain, hooked into OUTPUT.
    pub fn new() -> Result<NetFaults, NetFaultError> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        Self::available()?;
        let mount = cgroup2_mount().ok_or(NetFaultError::NoCgroup2)?;
        remove_leftovers(&mount);
        let tag = format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let group = format!("{CGROUP_PREFIX}{tag}");
        std::fs::create_dir(mount.join(&group))?;
        let chain = format!("{CHAIN_PREFIX}{tag}");
        let faults = NetFaults {
            chain,
            mount,
            group,
            members: Vec::new(),
            rules: 0,
        };
        iptables(&["-N", &faults.chain])?;
        iptables(&["-I", "OUTPUT", "-j", &faults.chain])?;
        Ok(faults)
    }

    /// The `cgroup.procs` file of member `name`'s cgroup (made on first
    /// use): a process that writes its pid there belongs to the member.
    pub fn procs_file(&mut self, name: &str) -> Result<PathBuf, NetFaultError> {
        let dir = self.mount.join(&self.group).join(name);
        if !dir.exists() {
            std::fs::create_dir(&dir)?;
            self.members.push(name.to_string());
        }
        Ok(dir.join("cgroup.procs"))
    }

    /// Drops every TCP packet member `from` sends to `ports` on loopback
    /// (another member's peer and client ports), until [`NetFaults::heal`].
    pub fn cut(&mut self, from: &str, ports: &[u16]) -> Result<(), NetFaultError> {
        let path = format!("{}/{from}", self.group);
        for port in ports {
            let port = port.to_string();
            iptables(&[
                "-A",
                &self.chain,
                "-m",
                "cgroup",
                "--path",
                &path,
                "-p",
                "tcp",
                "-d",
                "127.0.0.0/8",
                "--dport",
                &port,
                "-j",
                "DROP",
            ])?;
            self.rules += 1;
        }
        Ok(())
    }

    /// Whether any cut is in place.
    pub fn is_cut(&self) -> bool {
        self.rules > 0
    }

    /// Removes every cut.
    pub fn heal(&mut self) -> Result<(), NetFaultError> {
        iptables(&["-F", &self.chain])?;
        self.rules = 0;
        Ok(())
    }
}

impl Drop for NetFaults {
    fn drop(&mut self) {
        let _ = iptables(&["-F", &self.chain]);
        let _ = iptables(&["-D", "OUTPUT", "-j", &self.chain]);
        let _ = iptables(&["-X", &self.chain]);
        remove_group(&self.mount.join(&self.group));
    }
}

pub(crate) fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Where the cgroup2 hierarchy is mounted (`/sys/fs/cgroup` on a pure
/// v2 machine, `/sys/fs/cgroup/unified` on a hybrid one).
fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_, at, kind) = (f.next()?, f.next()?, f.next()?);
        (kind == "cgroup2").then(|| PathBuf::from(at))
    })
}

fn iptables(args: &[&str]) -> Result<String, NetFaultError> {
    let failed = |detail: String| NetFaultError::Iptables {
        args: args.iter().map(|a| a.to_string()).collect(),
        detail,
    };
    // -w: wait for the xtables lock when another run changes rules too.
    let out = Command::new("iptables")
        .arg("-w")
        .args(args)
        .output()
        .map_err(|e| failed(e.to_string()))?;
    if !out.status.success() {
        return Err(failed(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Removes a cgroup and its members' cgroups, moving any process still in
/// them to the root first (rmdir refuses a cgroup with processes).
fn remove_group(group: &Path) {
    let Ok(entries) = std::fs::read_dir(group) else {
        return;
    };
    let root_procs = group
        .parent()
        .map(|p| p.join("cgroup.procs"))
        .unwrap_or_default();
    for entry in entries.flatten() {
        let dir = entry.path();
        if !dir.is_dir() {
            continue;
        }
        if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            for pid in procs.split_whitespace() {
                let _ = std::fs::write(&root_procs, pid);
            }
        }
        let _ = std::fs::remove_dir(&dir);
    }
    let _ = std::fs::remove_dir(group);
}

/// Removes the cgroups and chains of test processes that no longer run.
fn remove_leftovers(mount: &Path) {
    let dead = |tag: &str| {
        tag.split('-')
            .next()
            .and_then(|pid| pid.parse::<u32>().ok())
            .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
    };
    if let Ok(entries) = std::fs::read_dir(mount) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.strip_prefix(CGROUP_PREFIX).is_some_and(dead) {
                remove_group(&entry.path());
            }
        }
    }
    let Ok(rules) = iptables(&["-S"]) else {
        return;
    };
    for line in rules.lines() {
        if let Some(chain) = line.strip_prefix("-N ") {
            if chain.strip_prefix(CHAIN_PREFIX).is_some_and(dead) {
                let _ = iptables(&["-F", chain]);
                let _ = iptables(&["-D", "OUTPUT", "-j", chain]);
                let _ = iptables(&["-X", chain]);
            }
        }
    }
}
