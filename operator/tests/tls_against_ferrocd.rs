//! The operator's certificates against a real `ferrocd` with mutual TLS:
//! a member started with the server certificate the operator issues (its
//! files laid out as a mounted `kubernetes.io/tls` Secret) answers the
//! operator's gRPC client with its client certificate and the readiness
//! probe tool, and refuses a client without a certificate.

use std::path::Path;
use std::time::Duration;

use ferrocd_e2e::pki::ClientCerts;
use ferrocd_e2e::{Kind, Server};
use ferrocd_operator::grpc::GrpcEtcd;
use ferrocd_operator::membership::{EtcdApi, EtcdError};
use ferrocd_operator::probe::{probe, ProbeError};
use ferrocd_operator::tls::pki::{Ca, LeafRequest, Names, Usage};
use ferrocd_operator::tls::{CertSecret, CA_CRT, TLS_CRT, TLS_KEY};
use k8s_openapi::jiff::Timestamp;

/// A certificate signed by `ca`, written into `dir` as a Secret volume holds it.
fn secret_dir(ca: &Ca, dir: &Path, usage: Usage, common_name: &str) -> CertSecret {
    let mut names = Names::default();
    names.ips.insert("127.0.0.1".parse().unwrap());
    names.dns.insert("localhost".into());
    let request = LeafRequest {
        common_name: common_name.into(),
        names,
        usage,
        validity: Duration::from_secs(3600),
    };
    let leaf = ca.issue(&request, Timestamp::now()).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(CA_CRT), ca.cert_pem()).unwrap();
    std::fs::write(dir.join(TLS_CRT), &leaf.cert_pem).unwrap();
    std::fs::write(dir.join(TLS_KEY), &leaf.key_pem).unwrap();
    CertSecret {
        ca_pem: ca.cert_pem().to_string(),
        cert_pem: leaf.cert_pem,
        key_pem: leaf.key_pem,
    }
}

struct TlsMember {
    server: Server,
    operator: CertSecret,
    server_dir: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

async fn tls_member() -> TlsMember {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::generate("ferrocd CA test/demo", Timestamp::now()).unwrap();
    let server_dir = dir.path().join("server");
    secret_dir(&ca, &server_dir, Usage::ServerAndClient, "demo");
    let operator = secret_dir(&ca, &dir.path().join("operator"), Usage::Client, "root");
    let file = |name: &str| server_dir.join(name).display().to_string();
    let harness = ClientCerts {
        ca: server_dir.join(CA_CRT),
        cert: dir.path().join("operator").join(TLS_CRT),
        key: dir.path().join("operator").join(TLS_KEY),
    };
    let server = Server::start_https(
        Kind::Ferrocd,
        harness,
        &[
            &format!("--cert-file={}", file(TLS_CRT)),
            &format!("--key-file={}", file(TLS_KEY)),
            &format!("--trusted-ca-file={}", file(CA_CRT)),
            "--client-cert-auth=true",
        ],
    )
    .await;
    TlsMember {
        server,
        operator,
        server_dir,
        _dir: dir,
    }
}

#[tokio::test]
async fn operator_client_certificate_reaches_a_mutual_tls_member() {
    let member = tls_member().await;
    let url = &member.server.client_url;
    assert!(url.starts_with("https://"), "{url}");
    let api = GrpcEtcd::new(url, Some(&member.operator)).unwrap();
    let members = api.member_list().await.unwrap().members;
    assert_eq!(members.len(), 1);
    let status = api.status(url).await.unwrap();
    assert_eq!(status.leader, members[0].id);
}

#[tokio::test]
async fn client_without_the_clusters_ca_is_refused() {
    let member = tls_member().await;
    let stranger_ca = Ca::generate("another CA", Timestamp::now()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stranger = secret_dir(&stranger_ca, dir.path(), Usage::Client, "root");
    let api = GrpcEtcd::new(&member.server.client_url, Some(&stranger)).unwrap();
    assert!(matches!(
        api.member_list().await,
        Err(EtcdError::Unavailable(_))
    ));
}

#[tokio::test]
async fn probe_tool_reads_readyz_with_the_members_server_certificate() {
    let member = tls_member().await;
    let port = member.server.client_url.rsplit(':').next().unwrap();
    let body = probe(
        &format!("https://127.0.0.1:{port}/readyz"),
        Some(&member.server_dir),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(body.trim(), "ok");
    // A certificate of another CA: the member refuses the handshake.
    let dir = tempfile::tempdir().unwrap();
    let stranger_ca = Ca::generate("another CA", Timestamp::now()).unwrap();
    secret_dir(&stranger_ca, dir.path(), Usage::ServerAndClient, "demo");
    std::fs::copy(member.server_dir.join(CA_CRT), dir.path().join(CA_CRT)).unwrap();
    let refused = probe(
        &format!("https://127.0.0.1:{port}/readyz"),
        Some(dir.path()),
        Duration::from_secs(5),
    )
    .await;
    assert!(matches!(refused, Err(ProbeError::Io(_))), "{refused:?}");
}

#[tokio::test]
async fn backup_streams_a_snapshot_with_the_operator_client_certificate() {
    use ferrocd_operator::backup::{take, BackupError, BackupRequest, Target};
    let member = tls_member().await;
    let out = tempfile::tempdir().unwrap();
    let request = |tls_dir: &Path, file: &str| BackupRequest {
        endpoints: vec![member.server.client_url.clone()],
        tls_dir: Some(tls_dir.to_path_buf()),
        target: Target::File(out.path().join(file)),
        part_size: ferrocd_operator::backup::s3::DEFAULT_PART_SIZE,
    };
    let report = take(&request(&member._dir.path().join("operator"), "tls.db"))
        .await
        .unwrap();
    let written = std::fs::metadata(out.path().join("tls.db")).unwrap().len();
    assert_eq!(report.size, written);
    assert!(report.revision >= 1);

    // The member's CA, but a client certificate of another CA: refused.
    let stranger_ca = Ca::generate("another CA", Timestamp::now()).unwrap();
    let stranger = out.path().join("stranger");
    secret_dir(&stranger_ca, &stranger, Usage::Client, "root");
    std::fs::copy(member.server_dir.join(CA_CRT), stranger.join(CA_CRT)).unwrap();
    let refused = take(&request(&stranger, "refused.db")).await.unwrap_err();
    assert!(
        matches!(
            refused,
            BackupError::Connect { .. } | BackupError::Snapshot(_)
        ),
        "{refused:?}"
    );
    assert!(!out.path().join("refused.db").exists());
}

#[tokio::test]
async fn backup_made_before_tls_was_turned_on_reaches_the_member_at_its_next_endpoint() {
    use ferrocd_operator::backup::{take, BackupRequest, Target};
    let member = tls_member().await;
    let out = tempfile::tempdir().unwrap();
    let https = member.server.client_url.clone();
    // What a Job created while the cluster was still plain names first:
    // the same listener with the `http://` scheme.
    let http = https.replacen("https://", "http://", 1);
    let request = |endpoints: Vec<String>, file: &str| BackupRequest {
        endpoints,
        tls_dir: Some(member._dir.path().join("operator")),
        target: Target::File(out.path().join(file)),
        part_size: ferrocd_operator::backup::s3::DEFAULT_PART_SIZE,
    };
    let stale = take(&request(vec![http.clone()], "stale.db"))
        .await
        .unwrap_err();
    assert!(stale.unreachable(), "{stale:?}");
    assert!(!out.path().join("stale.db").exists());

    let unused = format!("https://127.0.0.1:{}", ferrocd_e2e::free_port());
    let report = take(&request(vec![http, unused, https], "moved.db"))
        .await
        .unwrap();
    let written = std::fs::metadata(out.path().join("moved.db"))
        .unwrap()
        .len();
    assert_eq!(report.size, written);
    assert!(report.revision >= 1);
}
