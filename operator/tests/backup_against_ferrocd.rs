//! Backups of a real `ferrocd` written to a file and to a real S3 server
//! (`s3s-fs`): the recorded SHA-256 and size are the stored object's, the
//! revision is the store's, the file is a snapshot etcdctl reads, uploads
//! bigger than a part go up in parts, and failures are typed and leave no
//! object behind.

use std::path::Path;

use ferrocd_e2e::s3::{S3Server, ACCESS_KEY, SECRET_KEY};
use ferrocd_e2e::snapshots::{etcdctl, etcdctl_offline, json};
use ferrocd_e2e::Server;
use ferrocd_operator::backup::checksum::hex;
use ferrocd_operator::backup::s3::{S3Client, S3Config, S3Error, DEFAULT_PART_SIZE, MIN_PART_SIZE};
use ferrocd_operator::backup::{take, BackupError, BackupReport, BackupRequest, Outcome, Target};

const BUCKET: &str = "etcd-backups";

fn sha256_of(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    hex(ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref())
}

fn s3_config(s3: &S3Server, secret: &str) -> S3Config {
    S3Config {
        endpoint: s3.endpoint.clone(),
        bucket: BUCKET.into(),
        region: "us-east-1".into(),
        path_style: true,
        access_key: ACCESS_KEY.into(),
        secret_key: secret.into(),
    }
}

/// Puts `keys` keys of `size` bytes; returns the store's revision.
async fn store_with_keys(server: &Server, keys: usize, size: usize) -> i64 {
    let mut client = server.client().await;
    let value = "v".repeat(size);
    for i in 0..keys {
        client
            .put(format!("key-{i:04}"), value.clone(), None)
            .await
            .unwrap();
    }
    let get = json(&etcdctl(server, &["get", "key-0000", "-w", "json"]));
    get["header"]["revision"].as_i64().unwrap()
}

fn request(server: &Server, target: Target, part_size: usize) -> BackupRequest {
    BackupRequest {
        endpoints: vec![server.client_url.clone()],
        tls_dir: None,
        target,
        part_size,
    }
}

#[tokio::test]
async fn file_backup_records_the_files_sha256_size_and_revision() {
    let server = Server::ferrocd(&[]).await;
    let revision = store_with_keys(&server, 5, 1024).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/demo.db");
    let report = take(&request(
        &server,
        Target::File(path.clone()),
        DEFAULT_PART_SIZE,
    ))
    .await
    .unwrap();
    assert_eq!(report.sha256, sha256_of(&path));
    assert_eq!(report.size, std::fs::metadata(&path).unwrap().len());
    assert_eq!(report.revision, revision);
    assert_eq!(report.location, path.display().to_string());
    let status = json(&etcdctl_offline(&[
        "snapshot",
        "status",
        "-w",
        "json",
        path.to_str().unwrap(),
    ]));
    assert_eq!(status["revision"].as_i64(), Some(revision));
    assert!(!dir.path().join("nested/demo.db.part").exists());
}

#[tokio::test]
async fn s3_backup_in_one_put_and_in_parts_stores_what_it_recorded() {
    let Some(s3) = S3Server::start("127.0.0.1") else {
        return;
    };
    let server = Server::ferrocd(&[]).await;
    let revision = store_with_keys(&server, 120, 100 * 1024).await;
    S3Client::new(&s3_config(&s3, SECRET_KEY))
        .unwrap()
        .create_bucket()
        .await
        .unwrap();
    for (key, part_size) in [
        ("prod/single.db", 64 * 1024 * 1024),
        ("prod/parts.db", MIN_PART_SIZE),
    ] {
        let target = Target::S3 {
            config: s3_config(&s3, SECRET_KEY),
            key: key.into(),
        };
        let report = take(&request(&server, target, part_size)).await.unwrap();
        let object = s3.object_path(BUCKET, key);
        assert!(
            report.size > 2 * MIN_PART_SIZE as u64,
            "the snapshot spans several parts"
        );
        assert_eq!(report.sha256, sha256_of(&object), "{key}");
        assert_eq!(report.size, std::fs::metadata(&object).unwrap().len());
        assert_eq!(report.revision, revision);
        assert_eq!(report.location, format!("s3://{BUCKET}/{key}"));
    }
    let listed = S3Client::new(&s3_config(&s3, SECRET_KEY))
        .unwrap()
        .list("prod/")
        .await
        .unwrap();
    let keys: Vec<&str> = listed.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(keys, ["prod/parts.db", "prod/single.db"]);
}

#[tokio::test]
async fn wrong_s3_secret_fails_with_the_servers_status_and_stores_nothing() {
    let Some(s3) = S3Server::start("127.0.0.1") else {
        return;
    };
    let server = Server::ferrocd(&[]).await;
    store_with_keys(&server, 3, 1024).await;
    S3Client::new(&s3_config(&s3, SECRET_KEY))
        .unwrap()
        .create_bucket()
        .await
        .unwrap();
    let target = Target::S3 {
        config: s3_config(&s3, "not-the-secret"),
        key: "denied.db".into(),
    };
    let error = take(&request(&server, target, DEFAULT_PART_SIZE))
        .await
        .unwrap_err();
    assert!(
        matches!(error, BackupError::S3(S3Error::Status { status: 403, .. })),
        "{error:?}"
    );
    assert_eq!(error.reason(), "ObjectStorageFailed");
    assert!(!s3.object_path(BUCKET, "denied.db").exists());
}

#[tokio::test]
async fn unreachable_store_fails_to_connect_and_writes_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("never.db");
    let request = BackupRequest {
        endpoints: vec![format!("http://127.0.0.1:{}", ferrocd_e2e::free_port())],
        tls_dir: None,
        target: Target::File(path.clone()),
        part_size: DEFAULT_PART_SIZE,
    };
    let error = take(&request).await.unwrap_err();
    assert!(matches!(error, BackupError::Connect { .. }), "{error:?}");
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
}

#[tokio::test]
async fn backup_command_writes_its_report_as_termination_message() {
    let server = Server::ferrocd(&[]).await;
    let revision = store_with_keys(&server, 2, 1024).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cli.db");
    let log = dir.path().join("termination-log");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferrocd-operator"))
        .arg("backup")
        .arg(format!("--endpoint={}", server.client_url))
        .arg(format!("--file={}", file.display()))
        .arg(format!("--termination-log={}", log.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let outcome: Outcome = serde_json::from_slice(&std::fs::read(&log).unwrap()).unwrap();
    let Outcome::Succeeded(BackupReport {
        sha256,
        revision: r,
        ..
    }) = outcome
    else {
        panic!("expected success, got {outcome:?}");
    };
    assert_eq!(sha256, sha256_of(&file));
    assert_eq!(r, revision);

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferrocd-operator"))
        .arg("backup")
        .arg(format!(
            "--endpoint=http://127.0.0.1:{}",
            ferrocd_e2e::free_port()
        ))
        .arg(format!("--file={}", dir.path().join("x.db").display()))
        .arg(format!("--termination-log={}", log.display()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let outcome: Outcome = serde_json::from_slice(&std::fs::read(&log).unwrap()).unwrap();
    assert!(
        matches!(&outcome, Outcome::Failed { reason, .. } if reason == "StoreUnreachable"),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn retention_deletes_only_the_schedules_oldest_objects_and_keeps_restore_sources() {
    let Some(s3) = S3Server::start("127.0.0.1") else {
        return;
    };
    let client = S3Client::new(&s3_config(&s3, SECRET_KEY)).unwrap();
    client.create_bucket().await.unwrap();
    let keys = [
        "prod/demo-20261206-100000.db",
        "prod/demo-20261206-110000.db",
        "prod/demo-20261206-120000.db",
        "prod/demo-manual.db",
        "prod/other-20261206-090000.db",
    ];
    for key in keys {
        let mut upload = client.upload(key, DEFAULT_PART_SIZE);
        upload.write(b"snapshot").await.unwrap();
        upload.finish().await.unwrap();
    }
    let target = Target::S3 {
        config: s3_config(&s3, SECRET_KEY),
        key: keys[2].into(),
    };
    // Only the newest is to stay, but 11:00's snapshot is what the
    // cluster's members restore from.
    let retention = ferrocd_operator::crd::Retention {
        max_count: Some(1),
        max_age: None,
    };
    let pruned = ferrocd_operator::backup::prune::prune(
        &target,
        "demo",
        &retention,
        &["demo-20261206-110000".to_string()],
        k8s_openapi::jiff::Timestamp::now(),
    )
    .await
    .unwrap();
    assert_eq!(pruned, [keys[0]]);
    let left: Vec<String> = client
        .list("prod/")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(left, &keys[1..]);
}
