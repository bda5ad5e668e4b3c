//! A member whose disk fills up stops (exit status 1) instead of living on
//! unable to serve, and once there is space again it restarts with every
//! acknowledged write. The data directory is a small tmpfs (needs root).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ferrocd_e2e::{in_ci, Kind, Server};

/// A tmpfs mounted at a path, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size_mb: u32) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        mount(&[
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size_mb}m"),
            "tmpfs",
            at.to_str().unwrap(),
        ]);
        Tmpfs(at.to_path_buf())
    }

    fn resize(&self, size_mb: u32) {
        mount(&[
            "-o",
            &format!("remount,size={size_mb}m"),
            self.0.to_str().unwrap(),
        ]);
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mount(args: &[&str]) {
    let ok = Command::new("mount")
        .args(args)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "mount {args:?}");
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_stops_when_its_disk_fills_and_keeps_every_acknowledged_write() {
    if !is_root() {
        assert!(
            !in_ci(),
            "the disk-full test needs root in CI (to mount a tmpfs)"
        );
        eprintln!("skipping: mounting a tmpfs needs root");
        return;
    }
    let mut server = Server::prepare_https(Kind::Ferrocd, None, &[]);
    let disk = Tmpfs::mount(&server.data_dir(), 32);
    server.launch();
    server.wait_ready().await;
    let mut client = server.client().await;

    let value = vec![b'x'; 600 * 1024];
    let mut acknowledged = Vec::new();
    for i in 0..200 {
        let key = format!("k{i:03}");
        match tokio::time::timeout(
            Duration::from_secs(10),
            client.put(key.clone(), value.clone(), None),
        )
        .await
        {
            Ok(Ok(_)) => acknowledged.push(key),
            _ => break,
        }
    }
    assert!(
        acknowledged.len() > 5 && acknowledged.len() < 200,
        "{} writes acknowledged on a 32 MiB disk",
        acknowledged.len()
    );

    // The member exits, as etcd does when a disk write fails.
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = server.exit_status() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the member lives on with a full disk:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status.code(), Some(1), "{}", server.log());
    assert!(
        server.log().contains("No space left on device"),
        "{}",
        server.log()
    );

    // With room again, it restarts with every acknowledged write.
    server.kill9();
    disk.resize(256);
    server.launch();
    server.wait_ready().await;
    let mut client = server.client().await;
    for key in &acknowledged {
        let got = client.get(key.as_str(), None).await.unwrap();
        let kv = got.kvs().first().unwrap_or_else(|| panic!("{key} lost"));
        assert_eq!(kv.value().len(), value.len(), "{key}");
    }
    client.put("after", "space", None).await.unwrap();
    server.kill9();
    drop(disk);
}
