//! The HTTP endpoints on the client port: what probes, `etcdctl check
//! datascale` and operators read.

use ferrocd_e2e::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A plain HTTP/1.1 GET; returns (status code, body).
async fn get(server: &Server, path: &str) -> (u16, String) {
    let mut conn = tokio::net::TcpStream::connect(&server.endpoint)
        .await
        .expect("connect");
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        server.endpoint
    );
    conn.write_all(req.as_bytes()).await.expect("send");
    let mut raw = String::new();
    conn.read_to_string(&mut raw).await.expect("read");
    let (head, body) = raw.split_once("\r\n\r\n").expect("http response");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    (status, body.to_string())
}

#[tokio::test]
async fn health_version_and_probes_answer_like_etcd() {
    let server = Server::ferrocd(&[]).await;
    let (code, body) = get(&server, "/health").await;
    assert_eq!(code, 200);
    let health: serde_json::Value = serde_json::from_str(&body).expect("health json");
    assert_eq!(health["health"], "true");

    let (code, body) = get(&server, "/version").await;
    assert_eq!(code, 200);
    let version: serde_json::Value = serde_json::from_str(&body).expect("version json");
    assert!(version["etcdserver"].as_str().unwrap().starts_with("3.6."));
    assert!(version["etcdcluster"].as_str().unwrap().starts_with("3.6."));

    assert_eq!(get(&server, "/livez").await.0, 200);
    assert_eq!(get(&server, "/readyz").await.0, 200);
}

#[tokio::test]
async fn metrics_report_resident_memory_and_store_state() {
    let server = Server::ferrocd(&[]).await;
    let mut client = server.client().await;
    client.put("m", "1", None).await.expect("put");
    let (code, body) = get(&server, "/metrics").await;
    assert_eq!(code, 200);
    let value = |name: &str| -> f64 {
        body.lines()
            .find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|rest| rest.trim().parse().ok())
            })
            .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{body}"))
    };
    assert!(value("process_resident_memory_bytes ") > 1_000_000.0);
    assert_eq!(value("etcd_server_has_leader "), 1.0);
    assert_eq!(value("etcd_debugging_mvcc_current_revision "), 2.0);
}
