//! The disk faults of the fault runs do what they claim: on a member's
//! own loop-device file system, a slowed disk holds fsync (of this process
//! and of a real etcd 3.4 and ferrocd) until healed, a filled one refuses
//! writes, healing gives the room back; loop devices are detached on drop
//! and what a killed run left is cleaned up by the next one.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ferrocd_e2e::diskfault::Disks;
use ferrocd_e2e::{in_ci, require_tool, Kind, Server};

fn available() -> bool {
    match Disks::available() {
        Ok(()) => true,
        Err(e) => {
            assert!(!in_ci(), "disk faults are required in CI: {e}");
            eprintln!("skipping: {e}");
            false
        }
    }
}

/// Held while a test makes what looks like a killed run's leftovers,
/// which any test's `Disks::new` would remove.
static LEFTOVERS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn new_disks() -> Disks {
    let _held = LEFTOVERS.lock().unwrap_or_else(|e| e.into_inner());
    Disks::new().unwrap()
}

/// How long writing 4 KiB to a new file in `dir` and fsyncing it takes.
fn timed_fsync(dir: &Path, name: &str) -> std::io::Result<Duration> {
    let t = Instant::now();
    let mut f = std::fs::File::create(dir.join(name))?;
    f.write_all(&[7; 4096])?;
    f.sync_all()?;
    Ok(t.elapsed())
}

/// Whether `/dev/loopN` is attached to a file.
fn attached(device: &str) -> bool {
    Path::new("/sys/block")
        .join(device.trim_start_matches("/dev/"))
        .join("loop/backing_file")
        .exists()
}

#[test]
fn a_slow_disk_holds_fsync_and_a_full_one_refuses_writes_until_healed() {
    if !available() {
        return;
    }
    let mut disks = new_disks();
    let dir = disks.data_dir("m0").unwrap();
    let device = disks.device("m0").unwrap().to_string();
    assert!(attached(&device));
    let quick = timed_fsync(&dir, "a").unwrap();
    assert!(quick < Duration::from_millis(300), "{quick:?}");

    disks.slow("m0", 1).unwrap();
    let d = dir.clone();
    let slowed = std::thread::spawn(move || timed_fsync(&d, "b"));
    std::thread::sleep(Duration::from_millis(800));
    disks.heal().unwrap();
    let slowed = slowed.join().unwrap().unwrap();
    assert!(slowed >= Duration::from_millis(600), "{slowed:?}");
    assert!(timed_fsync(&dir, "c").unwrap() < Duration::from_millis(300));

    let taken = disks.fill("m0").unwrap();
    assert!(taken > 200 << 20, "{taken}");
    let full = std::fs::write(dir.join("d"), vec![1; 1 << 20]);
    assert_eq!(
        full.unwrap_err().kind(),
        std::io::ErrorKind::StorageFull,
        "a full disk took 1 MiB"
    );
    disks.heal().unwrap();
    assert!(disks.free("m0").unwrap() > 200 << 20);
    std::fs::write(dir.join("d"), vec![1; 1 << 20]).unwrap();

    drop(disks);
    assert!(!attached(&device), "{device} still attached after drop");
}

/// A run killed midway left a mounted, throttled loop device: the next
/// run's disks remove it.
#[test]
fn what_a_killed_run_left_is_removed_by_the_next() {
    if !available() {
        return;
    }
    let _held = LEFTOVERS.lock().unwrap_or_else(|e| e.into_inner());
    // A pid above any pid_max: a run that no longer exists.
    let dir =
        std::env::temp_dir().join(format!("ferrocd-e2e-disks-99999999-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("m0")).unwrap();
    let image = dir.join("m0.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    let sh = |script: &str| {
        let out = Command::new("sh").args(["-c", script]).output().unwrap();
        assert!(out.status.success(), "{script}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    sh(&format!("mkfs.ext4 -q -F {}", image.display()));
    let device = sh(&format!("losetup --find --show {}", image.display()));
    sh(&format!("mount {device} {}", dir.join("m0").display()));
    assert!(attached(&device));

    let disks = Disks::new().unwrap();
    assert!(!attached(&device), "{device} left attached");
    assert!(!dir.exists(), "{} left", dir.display());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(!mounts.contains(&dir.display().to_string()), "{mounts}");
    drop(disks);
}

/// The faults reach the server's own writes, etcd's (a static Go binary)
/// as much as ferrocd's: a put waits while the disk is slow, and after a
/// full disk is healed the server (restarted if it exited) has every
/// acknowledged write and takes new ones.
async fn a_server_meets_a_slow_and_a_full_disk(kind: Kind) {
    if !available() || (kind == Kind::Etcd && !require_tool("etcd")) {
        return;
    }
    let mut disks = new_disks();
    let mut server = Server::prepare_https(kind, None, &[]);
    server.set_data_dir(disks.data_dir(&server.name).unwrap());
    server.launch();
    server.wait_ready().await;
    let mut client = server.client().await;
    client.put("before", "1", None).await.unwrap();

    disks.slow(&server.name, 1).unwrap();
    let t = Instant::now();
    let mut c = client.clone();
    let put = tokio::spawn(async move { c.put("slow", "2", None).await.map(|_| ()) });
    tokio::time::sleep(Duration::from_millis(800)).await;
    disks.heal().unwrap();
    put.await.unwrap().unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(700),
        "{kind:?}: a put on a slow disk took {:?}",
        t.elapsed()
    );

    disks.fill(&server.name).unwrap();
    let mut acknowledged = vec!["before", "slow"];
    let value = vec![b'x'; 256 << 10];
    for key in ["full-1", "full-2", "full-3", "full-4"] {
        let put = client.put(key, value.clone(), None);
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), put).await {
            acknowledged.push(key);
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    disks.heal().unwrap();
    let exited = server.exit_status();
    eprintln!("{kind:?} on a full disk: acknowledged {acknowledged:?}, exited: {exited:?}");
    if exited.is_some() {
        server.kill9();
        server.launch();
    }
    server.wait_ready().await;
    let mut client = server.client().await;
    for key in &acknowledged {
        let got = client.get(*key, None).await.unwrap();
        assert!(
            !got.kvs().is_empty(),
            "{kind:?} lost {key}:\n{}",
            server.log()
        );
    }
    client.put("after", "3", None).await.unwrap();
    server.kill9();
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_meets_a_slow_and_a_full_disk() {
    a_server_meets_a_slow_and_a_full_disk(Kind::Etcd).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ferrocd_meets_a_slow_and_a_full_disk() {
    a_server_meets_a_slow_and_a_full_disk(Kind::Ferrocd).await;
}
