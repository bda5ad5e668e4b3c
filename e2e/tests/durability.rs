//! Every acknowledged write survives `kill -9`, with the revision it was
//! acknowledged at; nothing is applied twice.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferrocd_e2e::Server;
use ferrocd_proto::etcdserverpb::kv_client::KvClient;
use ferrocd_proto::etcdserverpb::{PutRequest, RangeRequest};

async fn kv(server: &Server) -> KvClient<tonic::transport::Channel> {
    KvClient::connect(server.client_url.clone())
        .await
        .expect("connect")
}

/// Puts keys from several writers until the server dies; returns what was
/// acknowledged as (key, revision).
async fn write_until_killed(server: &mut Server, writers: usize) -> Vec<(String, i64)> {
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for w in 0..writers {
        let mut client = kv(server).await;
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let key = format!("w{w}/k{i:06}");
                let req = PutRequest {
                    key: key.clone().into_bytes(),
                    value: format!("value-{w}-{i}").into_bytes(),
                    ..Default::default()
                };
                match client.put(req).await {
                    Ok(resp) => {
                        let rev = resp.into_inner().header.expect("header").revision;
                        acked.lock().unwrap().push((key, rev));
                    }
                    Err(_) => break,
                }
            }
        }));
    }
    // Let the writers get going, then pull the plug mid-stream.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill9();
    for t in tasks {
        t.await.expect("writer task");
    }
    let acked = acked.lock().unwrap().clone();
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let mut server = Server::ferrocd(&[]).await;
    let acked = write_until_killed(&mut server, 8).await;
    assert!(
        acked.len() > 50,
        "too few writes acknowledged to test anything: {}",
        acked.len()
    );

    server.restart().await;
    let mut client = kv(&server).await;
    for (key, rev) in &acked {
        let resp = client
            .range(RangeRequest {
                key: key.clone().into_bytes(),
                ..Default::default()
            })
            .await
            .expect("range")
            .into_inner();
        assert_eq!(
            resp.kvs.len(),
            1,
            "acknowledged key {key} lost after kill -9"
        );
        assert_eq!(
            resp.kvs[0].mod_revision, *rev,
            "{key} has another revision after restart"
        );
        assert_eq!(resp.kvs[0].version, 1, "{key} applied twice");
    }
    // Revisions are dense: one per put, none lost or doubled. Unacknowledged
    // puts that reached the log may also have been applied, never more.
    let all = client
        .range(RangeRequest {
            key: b"\0".to_vec(),
            range_end: b"\0".to_vec(),
            count_only: true,
            ..Default::default()
        })
        .await
        .expect("count")
        .into_inner();
    let max_acked = acked.iter().map(|(_, r)| *r).max().unwrap();
    let current = all.header.expect("header").revision;
    assert!(
        current >= max_acked,
        "revision went back: {current} < {max_acked}"
    );
    assert_eq!(all.count, current - 1, "every revision is exactly one put");
}

#[tokio::test]
async fn kill_9_twice_in_a_row_keeps_data() {
    let mut server = Server::ferrocd(&[]).await;
    let mut client = kv(&server).await;
    for i in 0..20 {
        let req = PutRequest {
            key: format!("k{i}").into_bytes(),
            value: b"v".to_vec(),
            ..Default::default()
        };
        client.put(req).await.expect("put");
    }
    for _ in 0..2 {
        server.kill9();
        server.restart().await;
    }
    let mut client = kv(&server).await;
    let resp = client
        .range(RangeRequest {
            key: b"k".to_vec(),
            range_end: b"l".to_vec(),
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner();
    assert_eq!(resp.count, 20);
    assert_eq!(resp.header.expect("header").revision, 21);
}

#[tokio::test]
async fn sigterm_shuts_down_cleanly_and_keeps_data() {
    let mut server = Server::ferrocd(&[]).await;
    let mut client = kv(&server).await;
    let put = PutRequest {
        key: b"kept".to_vec(),
        value: b"yes".to_vec(),
        ..Default::default()
    };
    client.put(put).await.expect("put");
    let status = server.terminate();
    assert!(status.success(), "ferrocd exited with {status} on SIGTERM");
    server.restart().await;
    let mut client = kv(&server).await;
    let resp = client
        .range(RangeRequest {
            key: b"kept".to_vec(),
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner();
    assert_eq!(resp.kvs[0].value, b"yes");
}

/// The raft log's segment files of a stopped server, oldest first.
fn log_segments(server: &Server) -> Vec<std::path::PathBuf> {
    let dir = server.data_dir().join("member/wal");
    let mut segments: Vec<_> = std::fs::read_dir(&dir)
        .expect("wal dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    segments
}

/// Waits (at most 30 s) for a server that should not start to exit.
fn wait_for_exit(server: &mut Server) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = server.exit_status() {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "ferrocd kept running on a corrupt log: {}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_an_older_log_segment_stops_the_member() {
    let mut server = Server::ferrocd(&[]).await;
    let mut client = kv(&server).await;
    // 1 MiB values: a log segment (64 MiB) fills after about 60 of them.
    for i in 0..80u8 {
        let req = PutRequest {
            key: format!("big{i:02}").into_bytes(),
            value: vec![i; 1 << 20],
            ..Default::default()
        };
        client.put(req).await.expect("put");
    }
    assert!(server.terminate().success());
    let segments = log_segments(&server);
    assert!(segments.len() >= 2, "one segment only: {segments:?}");
    let older = &segments[0];
    let mut raw = std::fs::read(older).expect("read segment");
    let middle = raw.len() / 2;
    raw[middle] ^= 0x01;
    std::fs::write(older, raw).expect("write segment");

    server.launch();
    let status = wait_for_exit(&mut server);
    assert!(!status.success(), "exited with {status}");
    let log = server.log();
    let name = older.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        log.contains(&name) && log.contains("is corrupt at offset"),
        "the error names neither the segment nor the offset: {log}"
    );
    // Nothing was cut or deleted to get past the damage.
    assert_eq!(log_segments(&server), segments);
}

#[tokio::test]
async fn a_torn_last_log_segment_is_cut_and_the_member_keeps_what_came_before() {
    let mut server = Server::ferrocd(&[]).await;
    let mut client = kv(&server).await;
    for i in 0..20 {
        let req = PutRequest {
            key: format!("k{i:02}").into_bytes(),
            value: b"v".to_vec(),
            ..Default::default()
        };
        client.put(req).await.expect("put");
    }
    assert!(server.terminate().success());
    let last = log_segments(&server).pop().expect("a segment");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .expect("open segment");
    let len = file.metadata().expect("metadata").len();
    // A crash in the middle of writing the last record.
    file.set_len(len - 3).expect("truncate");
    drop(file);

    server.restart().await;
    let mut client = kv(&server).await;
    let resp = client
        .range(RangeRequest {
            key: b"k".to_vec(),
            range_end: b"l".to_vec(),
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner();
    // The torn record is the last entry; everything before it is kept.
    let keys: Vec<_> = resp.kvs.iter().map(|kv| kv.key.clone()).collect();
    let expected: Vec<_> = (0..19).map(|i| format!("k{i:02}").into_bytes()).collect();
    assert_eq!(keys[..19], expected[..]);
    assert!(
        server.log().contains("cutting a torn tail"),
        "{}",
        server.log()
    );
}
