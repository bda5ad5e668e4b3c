//! Disk faults for the fault runs, on etcd (a static Go binary, which
//! LD_PRELOAD cannot reach) and ferrocd alike: every member's data
//! directory is on a small ext4 file system of its own, on a loop device
//! over a sparse file in a temp dir. Then
//!
//! - a **slow disk** is blkio (cgroup v1) throttling of that loop device
//!   to a few writes a second, set in the root blkio cgroup so it holds
//!   every writer alike (the member, the kernel's journal and writeback
//!   threads): the member's fsyncs wait until the throttle is lifted,
//!   when what was held back goes through at once;
//! - a **full disk** is filler files (fallocate) taking every free block,
//!   deleted to end the fault;
//! - a **power cut** is ext4's shutdown ioctl without a journal flush:
//!   from then on every read, write and fsync on that file system fails
//!   with EIO, and whatever the kernel had not yet written to the device
//!   (dirty pages, the journal's open transaction) is gone, as after a
//!   power loss; stronger than `kill -9`, which leaves the page cache to
//!   be written. [`Disks::power_on`] mounts the file system again (the
//!   journal is replayed), once the member's process is gone.
//!
//! Needs root, `losetup`, `mkfs.ext4` and a blkio v1 hierarchy
//! ([`Disks::available`]). Everything made is unthrottled, unmounted and
//! detached on drop; what a killed test run left (known by its backing
//! file's name) is removed by the next one, so loop devices, a finite
//! resource, never pile up.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Why disk faults cannot be set up or applied.
#[derive(Debug, thiserror::Error)]
pub enum DiskFaultError {
    #[error("disk faults need root")]
    NotRoot,
    #[error("no blkio (cgroup v1) hierarchy is mounted")]
    NoBlkio,
    #[error("{command}: {detail}")]
    Command { command: String, detail: String },
    #[error("no disk was made for member {0}")]
    UnknownMember(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Prefix of the temp dirs that hold the images and mount points.
const DIR_PREFIX: &str = "ferrocd-e2e-disks-";

/// Size of each member's file system. The image is sparse: only what is
/// written takes room (etcd preallocates 64 MiB for its WAL, which
/// fallocate does without writing).
const DISK_MIB: u64 = 256;

/// `EXT4_IOC_SHUTDOWN`, `_IOR('X', 125, __u32)`.
const EXT4_IOC_SHUTDOWN: u32 = 0x8004_587d;
/// Its flag that drops the journal's uncommitted transactions.
const EXT4_GOING_FLAGS_NOLOGFLUSH: u32 = 2;

/// The file that throttles writes to a device, in a blkio hierarchy.
const WRITE_IOPS: &str = "blkio.throttle.write_iops_device";

/// One run's member file systems.
pub struct Disks {
    dir: tempfile::TempDir,
    /// The blkio v1 mount point (its root cgroup).
    blkio: PathBuf,
    disks: Vec<Disk>,
}

/// One member's file system.
struct Disk {
    name: String,
    mount: PathBuf,
    /// `/dev/loopN`
    device: String,
    /// `MAJ:MIN` of the loop device, as the blkio files take it.
    numbers: String,
    mounted: bool,
    /// Filler files in place.
    fillers: Vec<PathBuf>,
}

impl Disks {
    /// Whether this machine can inject disk faults; the reason if not.
    pub fn available() -> Result<(), DiskFaultError> {
        if !crate::netfault::is_root() {
            return Err(DiskFaultError::NotRoot);
        }
        blkio_mount().ok_or(DiskFaultError::NoBlkio)?;
        run("losetup", &["--version"])?;
        run("mkfs.ext4", &["-V"])?;
        Ok(())
    }

    /// An empty set of disks; removes what killed runs left first.
    pub fn new() -> Result<Disks, DiskFaultError> {
        Self::available()?;
        let blkio = blkio_mount().ok_or(DiskFaultError::NoBlkio)?;
        remove_leftovers(&blkio);
        let dir = tempfile::Builder::new()
            .prefix(&format!("{DIR_PREFIX}{}-", std::process::id()))
            .tempdir()?;
        Ok(Disks {
            dir,
            blkio,
            disks: Vec::new(),
        })
    }

    /// A data directory for member `name` on a file system of its own
    /// (made on first use).
    pub fn data_dir(&mut self, name: &str) -> Result<PathBuf, DiskFaultError> {
        if let Some(d) = self.disks.iter().find(|d| d.name == name) {
            return Ok(d.mount.join("data"));
        }
        let image = self.dir.path().join(format!("{name}.img"));
        std::fs::File::create(&image)?.set_len(DISK_MIB << 20)?;
        let image_arg = image.display().to_string();
        // No blocks reserved for root: the members run as root and must
        // meet a full disk when it is full.
        run("mkfs.ext4", &["-q", "-F", "-m", "0", &image_arg])?;
        let device = run("losetup", &["--find", "--show", &image_arg])?
            .trim()
            .to_string();
        let sys = Path::new("/sys/block")
            .join(device.trim_start_matches("/dev/"))
            .join("dev");
        let numbers = std::fs::read_to_string(&sys);
        let mount = self.dir.path().join(name);
        self.disks.push(Disk {
            name: name.to_string(),
            mount: mount.clone(),
            device,
            numbers: numbers.as_deref().unwrap_or_default().trim().to_string(),
            mounted: false,
            fillers: Vec::new(),
        });
        numbers?;
        let disk = self.disks.last_mut().expect("just pushed");
        // A rule a killed run left on a reused device number goes.
        throttle(&self.blkio, &disk.numbers, 0)?;
        std::fs::create_dir(&mount)?;
        run("mount", &[&disk.device, &mount.display().to_string()])?;
        disk.mounted = true;
        let data = mount.join("data");
        std::fs::create_dir(&data)?;
        Ok(data)
    }

    /// The loop device (`/dev/loopN`) under member `name`'s data.
    pub fn device(&self, name: &str) -> Result<&str, DiskFaultError> {
        Ok(&self.disk(name)?.device)
    }

    /// Slows member `name`'s disk to `iops` writes a second, until
    /// [`Disks::heal`].
    pub fn slow(&mut self, name: &str, iops: u32) -> Result<(), DiskFaultError> {
        let numbers = self.disk(name)?.numbers.clone();
        throttle(&self.blkio, &numbers, iops)
    }

    /// Fills member `name`'s file system until [`Disks::heal`]; returns
    /// the bytes taken.
    pub fn fill(&mut self, name: &str) -> Result<u64, DiskFaultError> {
        let i = self
            .disks
            .iter()
            .position(|d| d.name == name)
            .ok_or_else(|| DiskFaultError::UnknownMember(name.to_string()))?;
        let disk = &mut self.disks[i];
        let mut taken = 0;
        // The first file takes nearly all; the extent blocks it needs
        // leave a little, which the next ones take.
        for n in 0..8 {
            let free = free_bytes(&disk.mount)?;
            if free < 64 << 10 {
                break;
            }
            let filler = disk.mount.join(format!("filler-{n}"));
            let path = filler.display().to_string();
            for size in [free, free - free / 16, free / 2] {
                if run("fallocate", &["-l", &size.to_string(), &path]).is_ok() {
                    taken += size;
                    break;
                }
            }
            disk.fillers.push(filler);
        }
        Ok(taken)
    }

    /// Cuts the power of member `name`'s disk (see the module): every
    /// later I/O on it fails, what was not yet on the device is lost.
    /// The member's process keeps running until killed.
    pub fn power_cut(&mut self, name: &str) -> Result<(), DiskFaultError> {
        let mount = std::fs::File::open(&self.disk(name)?.mount)?;
        let flags = EXT4_GOING_FLAGS_NOLOGFLUSH;
        // SAFETY: the request takes a pointer to a u32, which lives
        // through the call; the descriptor is open.
        let r = unsafe { libc::ioctl(mount.as_raw_fd(), EXT4_IOC_SHUTDOWN as _, &flags) };
        if r != 0 {
            return Err(DiskFaultError::Command {
                command: format!("EXT4_IOC_SHUTDOWN {}", self.disk(name)?.mount.display()),
                detail: std::io::Error::last_os_error().to_string(),
            });
        }
        Ok(())
    }

    /// Powers member `name`'s disk back on after [`Disks::power_cut`]:
    /// unmounts the dead file system and mounts it again, which replays
    /// its journal. The member's process must be gone (killed, and
    /// waited for), or the unmount fails.
    pub fn power_on(&mut self, name: &str) -> Result<(), DiskFaultError> {
        let disk = self.disk(name)?;
        let (mount, device) = (disk.mount.display().to_string(), disk.device.clone());
        let mut unmounted = run("umount", &[&mount]);
        for _ in 0..20 {
            if unmounted.is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
            unmounted = run("umount", &[&mount]);
        }
        unmounted?;
        run("mount", &[&device, &mount])?;
        Ok(())
    }

    /// Free bytes on member `name`'s file system.
    pub fn free(&self, name: &str) -> Result<u64, DiskFaultError> {
        free_bytes(&self.disk(name)?.mount)
    }

    /// Lifts every throttle and deletes every filler, durably: ext4
    /// commits its journal only every few seconds, and a power cut before
    /// that would bring the fillers back, leaving the disk full for good
    /// (found by a fault run: a member whose full disk had been healed
    /// lost power 1.3 s later and could never start again, ENOSPC).
    pub fn heal(&mut self) -> Result<(), DiskFaultError> {
        for d in &mut self.disks {
            throttle(&self.blkio, &d.numbers, 0)?;
            if d.fillers.is_empty() {
                continue;
            }
            for f in d.fillers.drain(..) {
                match std::fs::remove_file(&f) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                    _ => {}
                }
            }
            sync_fs(&d.mount)?;
        }
        Ok(())
    }

    fn disk(&self, name: &str) -> Result<&Disk, DiskFaultError> {
        self.disks
            .iter()
            .find(|d| d.name == name)
            .ok_or_else(|| DiskFaultError::UnknownMember(name.to_string()))
    }
}

impl Drop for Disks {
    fn drop(&mut self) {
        let _ = self.heal();
        for d in &self.disks {
            if d.mounted {
                unmount(&d.mount);
            }
            let _ = run("losetup", &["-d", &d.device]);
        }
    }
}

/// Writes everything of the file system mounted at `at` to its device.
fn sync_fs(at: &Path) -> Result<(), DiskFaultError> {
    let dir = std::fs::File::open(at)?;
    // SAFETY: the descriptor is open for the whole call.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(())
}

/// Unmounts `at`, lazily if a process still holds it after a few tries
/// (the loop device is then freed when the last one lets go).
fn unmount(at: &Path) {
    let at = at.display().to_string();
    for _ in 0..5 {
        if run("umount", &[&at]).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = run("umount", &["-l", &at]);
}

/// Sets the write limit of device `numbers` (`MAJ:MIN`) in the root
/// blkio cgroup; 0 lifts it.
fn throttle(blkio: &Path, numbers: &str, iops: u32) -> Result<(), DiskFaultError> {
    std::fs::write(blkio.join(WRITE_IOPS), format!("{numbers} {iops}"))?;
    Ok(())
}

fn free_bytes(at: &Path) -> Result<u64, DiskFaultError> {
    let out = run("stat", &["-f", "-c", "%a %S", &at.display().to_string()])?;
    let mut f = out.split_whitespace().map(str::parse::<u64>);
    match (f.next(), f.next()) {
        (Some(Ok(blocks)), Some(Ok(size))) => Ok(blocks * size),
        _ => Err(DiskFaultError::Command {
            command: format!("stat -f {}", at.display()),
            detail: format!("unexpected output {out:?}"),
        }),
    }
}

/// Where the blkio v1 hierarchy is mounted.
fn blkio_mount() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let blkio = f.len() > 3 && f[2] == "cgroup" && f[3].split(',').any(|o| o == "blkio");
        blkio.then(|| PathBuf::from(f[1]))
    })
}

fn run(program: &str, args: &[&str]) -> Result<String, DiskFaultError> {
    let failed = |detail: String| DiskFaultError::Command {
        command: format!("{program} {}", args.join(" ")),
        detail,
    };
    let out = Command::new(program)
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

/// Whether `name` (a temp dir's, `ferrocd-e2e-disks-<pid>-...`) belongs
/// to a test process that no longer runs.
fn of_dead_run(name: &str) -> bool {
    name.strip_prefix(DIR_PREFIX)
        .and_then(|rest| rest.split('-').next())
        .and_then(|pid| pid.parse::<u32>().ok())
        .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
}

/// Unmounts, unthrottles and detaches the loop devices of killed runs,
/// and deletes their temp dirs.
fn remove_leftovers(blkio: &Path) {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    if let Ok(entries) = std::fs::read_dir("/sys/block") {
        for entry in entries.flatten() {
            let dev = entry.file_name().to_string_lossy().into_owned();
            let Ok(backing) = std::fs::read_to_string(entry.path().join("loop/backing_file"))
            else {
                continue;
            };
            let dead = Path::new(backing.trim())
                .parent()
                .and_then(Path::file_name)
                .is_some_and(|d| of_dead_run(&d.to_string_lossy()));
            if !dead {
                continue;
            }
            let device = format!("/dev/{dev}");
            for l in mounts.lines() {
                let mut f = l.split_whitespace();
                if let (Some(source), Some(at)) = (f.next(), f.next()) {
                    if source == device {
                        let _ = run("umount", &["-l", at]);
                    }
                }
            }
            if let Ok(numbers) = std::fs::read_to_string(entry.path().join("dev")) {
                let _ = throttle(blkio, numbers.trim(), 0);
            }
            let _ = run("losetup", &["-d", &device]);
        }
    }
    if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
        for entry in entries.flatten() {
            if of_dead_run(&entry.file_name().to_string_lossy()) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_dirs_of_runs_that_ended_are_leftovers() {
        let me = std::process::id();
        assert!(!of_dead_run(&format!("{DIR_PREFIX}{me}-abc")));
        // Above any pid_max Linux allows.
        assert!(of_dead_run(&format!("{DIR_PREFIX}99999999-abc")));
        assert!(!of_dead_run("ferrocd-e2e-other-99999999-abc"));
    }
}
