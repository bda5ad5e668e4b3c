//! The disk faults of the fault runs do what they claim: on a member's
//! own loop-device file system, a slowed disk holds fsync (of this process
//! and of a real etcd 3.4 and ferrocd) until healed, a filled one refuses
//! writes, healing gives the room back; loop devices are detached on drop
//! and what a killed run left is cleaned up by the next one.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
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

/// A power cut fails every later I/O with EIO and loses what was written
/// but not synced; what was synced is there once the disk is back on.
#[test]
fn a_power_cut_loses_what_was_not_synced_and_keeps_what_was() {
    if !available() {
        return;
    }
    let mut disks = new_disks();
    let dir = disks.data_dir("m0").unwrap();
    timed_fsync(&dir, "synced").unwrap();
    std::fs::write(dir.join("unsynced"), [1; 4096]).unwrap();
    let mut open = std::fs::File::create(dir.join("open")).unwrap();

    disks.power_cut("m0").unwrap();
    let eio = Some(libc::EIO);
    assert_eq!(
        open.write_all(&[2; 4096])
            .and_then(|()| open.sync_all())
            .unwrap_err()
            .raw_os_error(),
        eio
    );
    assert_eq!(
        std::fs::write(dir.join("new"), [3; 16])
            .unwrap_err()
            .raw_os_error(),
        eio
    );
    drop(open);

    disks.power_on("m0").unwrap();
    assert_eq!(std::fs::read(dir.join("synced")).unwrap(), vec![7; 4096]);
    assert!(
        !dir.join("unsynced").exists(),
        "a write never synced survived the cut"
    );
    assert!(!dir.join("new").exists());
    timed_fsync(&dir, "after").unwrap();
}

/// A full disk healed just before a power cut stays healed: the cut
/// must not bring the fillers back.
#[test]
fn a_healed_full_disk_stays_healed_through_a_power_cut() {
    if !available() {
        return;
    }
    let mut disks = new_disks();
    let dir = disks.data_dir("m0").unwrap();
    let free = disks.free("m0").unwrap();
    assert!(disks.fill("m0").unwrap() > free / 2);
    assert!(disks.free("m0").unwrap() < free / 8);
    disks.heal().unwrap();
    // Within ext4's journal commit interval (5 s).
    disks.power_cut("m0").unwrap();
    disks.power_on("m0").unwrap();
    let after = disks.free("m0").unwrap();
    assert!(
        after > free - free / 8,
        "{after} of {free} bytes free after the cut"
    );
    timed_fsync(&dir, "after").unwrap();
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

/// Puts unique keys from `writers` clients until told to stop or a put
/// fails for 2 s; returns what was acknowledged, with its revision.
fn write_until_stopped(
    client: &etcd_client::Client,
    writers: usize,
    round: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<(String, i64)>>> {
    (0..writers)
        .map(|w| {
            let (mut client, stop) = (client.clone(), stop.clone());
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let key = format!("r{round}/w{w}/{i:06}");
                    let put = client.put(key.as_str(), vec![b'v'; 512], None);
                    match tokio::time::timeout(Duration::from_secs(2), put).await {
                        Ok(Ok(r)) => acked.push((key, r.header().map_or(0, |h| h.revision()))),
                        _ => break,
                    }
                }
                acked
            })
        })
        .collect()
}

/// Power cuts of a lone member's disk at three moments of a stream of
/// writes; after each the disk comes back on and the member restarts.
/// The member may run on the dead disk for a while: whatever it
/// acknowledges then must already be on the device. Returns how many
/// writes were acknowledged, those missing after the restarts (or at
/// another revision than acknowledged), and whether the member exited by
/// itself each time its disk died.
async fn power_cuts(kind: Kind) -> Option<(usize, Vec<String>, bool)> {
    if !available() || (kind == Kind::Etcd && !require_tool("etcd")) {
        return None;
    }
    let mut disks = new_disks();
    let mut server = Server::prepare_https(kind, None, &[]);
    server.set_data_dir(disks.data_dir(&server.name).unwrap());
    server.launch();
    server.wait_ready().await;
    let (mut acked, mut lost, mut exited_each_time) = (Vec::new(), Vec::new(), true);
    for (round, run_for) in [700u64, 1300, 350].into_iter().enumerate() {
        let client = server.client().await;
        let stop = Arc::new(AtomicBool::new(false));
        let writers = write_until_stopped(&client, 6, round, &stop);
        tokio::time::sleep(Duration::from_millis(run_for)).await;
        disks.power_cut(&server.name).unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        let exited = server.exit_status();
        exited_each_time &= exited.is_some();
        server.kill9();
        stop.store(true, Ordering::Relaxed);
        let before = acked.len();
        for w in writers {
            acked.extend(w.await.unwrap());
        }
        eprintln!(
            "{kind:?}, cut {round} after {run_for} ms: {} writes acknowledged, exited by itself: {exited:?}",
            acked.len() - before
        );
        assert!(
            acked.len() - before > 10,
            "{kind:?}: too few writes to test anything"
        );
        disks.power_on(&server.name).unwrap();
        server.launch();
        server.wait_ready().await;
        let mut client = server.client().await;
        for (key, revision) in &acked {
            let got = client.get(key.as_str(), None).await.unwrap();
            let found = got.kvs().first().map(|kv| kv.mod_revision());
            if found != Some(*revision) && !lost.contains(key) {
                lost.push(key.clone());
                eprintln!("{kind:?} after cut {round}: {key} acknowledged at {revision}, found at {found:?}");
            }
        }
        client.put("after", round.to_string(), None).await.unwrap();
    }
    if !lost.is_empty() {
        eprintln!("{kind:?}'s log:\n{}", server.log());
    }
    server.kill9();
    Some((acked.len(), lost, exited_each_time))
}

/// ferrocd syncs before it answers and stops when a sync fails: no
/// acknowledged write is lost to a power cut, and a dead disk stops it.
#[tokio::test(flavor = "multi_thread")]
async fn ferrocd_keeps_every_acknowledged_write_through_power_cuts() {
    let Some((acked, lost, exited)) = power_cuts(Kind::Ferrocd).await else {
        return;
    };
    assert!(
        lost.is_empty(),
        "ferrocd lost {} of {acked} acknowledged writes: {lost:?}",
        lost.len()
    );
    assert!(exited, "ferrocd kept running on a dead disk");
}

/// The reference: etcd 3.4 stops on a dead disk too. It can lose writes
/// it acknowledged (see RELIABILITY.md): its lone member applies and
/// answers an entry while writing it to its WAL, so this only reports
/// how many.
#[tokio::test(flavor = "multi_thread")]
async fn etcd_stops_on_a_dead_disk() {
    let Some((acked, lost, exited)) = power_cuts(Kind::Etcd).await else {
        return;
    };
    eprintln!(
        "etcd 3.4 lost {} of {acked} acknowledged writes to 3 power cuts",
        lost.len()
    );
    assert!(exited, "etcd kept running on a dead disk");
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_meets_a_slow_and_a_full_disk() {
    a_server_meets_a_slow_and_a_full_disk(Kind::Etcd).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ferrocd_meets_a_slow_and_a_full_disk() {
    a_server_meets_a_slow_and_a_full_disk(Kind::Ferrocd).await;
}
