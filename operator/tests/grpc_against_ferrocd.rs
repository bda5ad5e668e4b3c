//! The gRPC `EtcdApi` against a real single-member `ferrocd` process.
//! ferrocd answers MemberAdd/Remove/Promote with Unimplemented today, so
//! only the read side is exercised here.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use ferrocd_operator::grpc::GrpcEtcd;
use ferrocd_operator::membership::{observe_members, EtcdApi, EtcdError};

struct Ferrocd {
    client_url: String,
    peer_url: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Ferrocd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `ferrocd` binary next to this test's profile directory (`FERROCD_BIN` overrides).
fn ferrocd_bin() -> PathBuf {
    if let Ok(path) = std::env::var("FERROCD_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile dir")
        .join("ferrocd");
    assert!(
        bin.exists(),
        "{} not found: build it first (cargo build --bin ferrocd) or set FERROCD_BIN",
        bin.display()
    );
    bin
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

async fn start_ferrocd() -> Ferrocd {
    let dir = tempfile::tempdir().expect("temp dir");
    let client_url = format!("http://127.0.0.1:{}", free_port());
    let peer_url = format!("http://127.0.0.1:{}", free_port());
    let log = std::fs::File::create(dir.path().join("server.log")).expect("log file");
    let child = Command::new(ferrocd_bin())
        .args([
            "--name=solo".to_string(),
            format!("--data-dir={}", dir.path().join("data").display()),
            format!("--listen-client-urls={client_url}"),
            format!("--advertise-client-urls={client_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=solo={peer_url}"),
        ])
        .stdout(log.try_clone().expect("log fd"))
        .stderr(log)
        .spawn()
        .expect("starting ferrocd");
    let server = Ferrocd {
        client_url,
        peer_url,
        child,
        _dir: dir,
    };
    let api = GrpcEtcd::new(&server.client_url).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !api
        .status(&server.client_url)
        .await
        .is_ok_and(|s| s.leader != 0)
    {
        assert!(
            Instant::now() < deadline,
            "ferrocd not ready in 30s; log:\n{}",
            std::fs::read_to_string(server._dir.path().join("server.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server
}

#[tokio::test]
async fn member_list_of_a_single_member_lists_that_member() {
    let server = start_ferrocd().await;
    let api = GrpcEtcd::new(&server.client_url).unwrap();
    let members = api.member_list().await.unwrap();
    assert_eq!(members.len(), 1);
    let solo = &members[0];
    assert_eq!(solo.name, "solo");
    assert_eq!(solo.peer_urls, vec![server.peer_url.clone()]);
    assert_eq!(solo.client_urls, vec![server.client_url.clone()]);
    assert!(!solo.is_learner);
}

#[tokio::test]
async fn single_member_reports_itself_as_leader() {
    let server = start_ferrocd().await;
    let api = GrpcEtcd::new(&server.client_url).unwrap();
    let id = api.member_list().await.unwrap()[0].id;
    let status = api.status(&server.client_url).await.unwrap();
    assert_eq!(status.member_id, id);
    assert_eq!(status.leader, id);
    assert!(!status.is_learner);
    assert!(status.raft_applied_index <= status.raft_index);
    assert!(!status.version.is_empty());
}

#[tokio::test]
async fn observed_single_member_is_a_healthy_caught_up_voter() {
    let server = start_ferrocd().await;
    let api = GrpcEtcd::new(&server.client_url).unwrap();
    let observed = observe_members(&api).await.expect("store answers");
    assert_eq!(observed.len(), 1);
    let solo = &observed[0];
    assert_eq!(solo.peer_url, server.peer_url);
    assert!(solo.healthy && solo.caught_up && !solo.is_learner);
}

#[tokio::test]
async fn closed_port_is_unavailable() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let api = GrpcEtcd::new(&url).unwrap();
    assert!(matches!(
        api.member_list().await,
        Err(EtcdError::Unavailable(_))
    ));
    assert!(matches!(
        api.status(&url).await,
        Err(EtcdError::Unavailable(_))
    ));
}
