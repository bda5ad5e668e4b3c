//! `ferrocd-operator verify-backup` against a real `ferrocd` backed up to a
//! real S3 server (`s3s-fs`) and to a file: a good backup verifies; a
//! corrupted object, a wrong recorded SHA-256, revision or HashKV each
//! fail with their own reason, and no scratch is left. The restored store
//! is started and must hash as the cluster did, also when the cluster
//! compacted between the snapshot and its HashKV.

use std::path::{Path, PathBuf};

use ferrocd_e2e::s3::{S3Server, ACCESS_KEY, SECRET_KEY};
use ferrocd_e2e::snapshots::{etcdctl, save};
use ferrocd_e2e::{ferrocd_bin, Server};
use ferrocd_operator::backup::checksum::hex;
use ferrocd_operator::backup::cli::S3Args;
use ferrocd_operator::backup::s3::{S3Client, S3Config, DEFAULT_PART_SIZE};
use ferrocd_operator::backup::verify::{verify, VerifyArgs, VerifyError, VerifyOutcome};
use ferrocd_operator::backup::{take, BackupReport, BackupRequest, HashKvRecord, Target};
use ferrocd_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use ferrocd_proto::etcdserverpb::HashKvRequest;

const BUCKET: &str = "verify";

fn config(s3: &S3Server) -> S3Config {
    S3Config {
        endpoint: s3.endpoint.clone(),
        bucket: BUCKET.into(),
        region: "us-east-1".into(),
        path_style: true,
        access_key: ACCESS_KEY.into(),
        secret_key: SECRET_KEY.into(),
    }
}

fn args(s3: &S3Server, key: &str, report: &BackupReport, scratch: &Path) -> VerifyArgs {
    VerifyArgs {
        file: None,
        s3: S3Args {
            s3_endpoint: Some(s3.endpoint.clone()),
            s3_bucket: Some(BUCKET.into()),
            s3_key: Some(key.into()),
            s3_region: "us-east-1".into(),
            s3_path_style: true,
            s3_access_key: Some(ACCESS_KEY.into()),
            s3_secret_key: Some(SECRET_KEY.into()),
        },
        sha256: report.sha256.clone(),
        revision: report.revision,
        hash_kv: report.hash_kv.map(|h| h.hash),
        hash_kv_compact_revision: report.hash_kv.map(|h| h.compact_revision),
        scratch_dir: scratch.to_path_buf(),
        ferrocd_bin: ferrocd_bin(),
        termination_log: None,
    }
}

async fn put_object(config: &S3Config, key: &str, bytes: &[u8]) {
    let mut upload = S3Client::new(config)
        .unwrap()
        .upload(key, DEFAULT_PART_SIZE);
    upload.write(bytes).await.unwrap();
    upload.finish().await.unwrap();
}

fn sha256(bytes: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_backup_verifies_and_each_mismatch_fails_with_its_own_reason() {
    let Some(s3) = S3Server::start("127.0.0.1") else {
        return;
    };
    let source = Server::ferrocd(&[]).await;
    for i in 0..20 {
        etcdctl(&source, &["put", &format!("k/{i:02}"), &format!("v{i}")]);
    }
    // Second versions, for a compaction to remove the first ones.
    for i in 0..10 {
        etcdctl(&source, &["put", &format!("k/{i:02}"), &format!("w{i}")]);
    }
    let config = config(&s3);
    S3Client::new(&config)
        .unwrap()
        .create_bucket()
        .await
        .unwrap();
    let report = take(&BackupRequest {
        endpoints: vec![source.client_url.clone()],
        tls_dir: None,
        target: Target::S3 {
            config: config.clone(),
            key: "demo/good.db".into(),
        },
        part_size: DEFAULT_PART_SIZE,
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let scratch = dir.path().join("scratch");

    let verified = verify(&args(&s3, "demo/good.db", &report, &scratch))
        .await
        .unwrap();
    assert_eq!(verified.sha256, report.sha256);
    assert_eq!(verified.revision, report.revision);
    // 20 keys in the `key` bucket, plus the other buckets' records.
    assert!(verified.total_keys >= 20, "{verified:?}");
    let recorded = report.hash_kv.expect("the backup records HashKV");
    assert_eq!(verified.hash_kv, Some(recorded.hash));
    assert!(verified.hash_kv_compared, "{verified:?}");
    assert!(!scratch.exists(), "scratch left behind");

    // The recorded HashKV is not the restored store's.
    let mut wrong_hash = report.clone();
    wrong_hash.hash_kv = Some(HashKvRecord {
        hash: recorded.hash.wrapping_add(1),
        ..recorded
    });
    let error = verify(&args(&s3, "demo/good.db", &wrong_hash, &scratch))
        .await
        .unwrap_err();
    assert!(
        matches!(error, VerifyError::HashKvMismatch { restored, recorded: r, revision, .. }
            if restored == recorded.hash && r == recorded.hash.wrapping_add(1)
                && revision == report.revision),
        "{error:?}"
    );
    assert_eq!(error.reason(), "HashKVMismatch");

    // The member compacted between the snapshot and its HashKV: the
    // restored store, compacted to the same revision, hashes the same.
    let compact_to = report.revision - 5;
    etcdctl(&source, &["compact", &compact_to.to_string()]);
    let mut maintenance = MaintenanceClient::connect(source.client_url.clone())
        .await
        .unwrap();
    let after = maintenance
        .hash_kv(HashKvRequest {
            revision: report.revision,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.compact_revision, compact_to);
    assert_ne!(after.hash, recorded.hash, "a compaction changes the hash");
    let mut compacted_later = report.clone();
    compacted_later.hash_kv = Some(HashKvRecord {
        hash: after.hash,
        compact_revision: compact_to,
    });
    let verified = verify(&args(&s3, "demo/good.db", &compacted_later, &scratch))
        .await
        .unwrap();
    assert_eq!(verified.hash_kv, Some(after.hash), "{verified:?}");

    // The recorded checksum is not the stored file's.
    let mut wrong_sha = report.clone();
    wrong_sha.sha256 = "0".repeat(64);
    let error = verify(&args(&s3, "demo/good.db", &wrong_sha, &scratch))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, VerifyError::ChecksumMismatch { expected, actual }
            if *expected == wrong_sha.sha256 && *actual == report.sha256),
        "{error:?}"
    );
    assert_eq!(error.reason(), "ChecksumMismatch");

    // The snapshot holds changes after the recorded revision.
    let mut wrong_revision = report.clone();
    wrong_revision.revision -= 5;
    let error = verify(&args(&s3, "demo/good.db", &wrong_revision, &scratch))
        .await
        .unwrap_err();
    assert!(
        matches!(error, VerifyError::RevisionMismatch { recorded, snapshot }
            if recorded == report.revision - 5 && snapshot == report.revision),
        "{error:?}"
    );
    assert!(error.to_string().contains("recorded revision"), "{error}");

    // An object corrupted in storage: the recorded checksum catches it.
    let mut bytes = fetch_object(&config, "demo/good.db").await;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    put_object(&config, "demo/corrupt.db", &bytes).await;
    let error = verify(&args(&s3, "demo/corrupt.db", &report, &scratch))
        .await
        .unwrap_err();
    assert_eq!(error.reason(), "ChecksumMismatch", "{error}");

    // Corrupted before its checksum was recorded: the snapshot's own
    // integrity checks (bbolt's, the trailer's, the restore's) catch it.
    let mut recorded_corrupt = report.clone();
    recorded_corrupt.sha256 = sha256(&bytes);
    let error = verify(&args(&s3, "demo/corrupt.db", &recorded_corrupt, &scratch))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            VerifyError::Status { .. } | VerifyError::Restore { .. }
        ),
        "{error:?}"
    );
    assert!(!scratch.exists(), "scratch left behind");

    // A missing object fails to fetch.
    let error = verify(&args(&s3, "demo/missing.db", &report, &scratch))
        .await
        .unwrap_err();
    assert_eq!(error.reason(), "FetchFailed", "{error}");
}

async fn fetch_object(config: &S3Config, key: &str) -> Vec<u8> {
    use http_body_util::BodyExt;
    let body = S3Client::new(config).unwrap().download(key).await.unwrap();
    body.collect().await.unwrap().to_bytes().to_vec()
}

#[tokio::test]
async fn verify_backup_command_checks_a_file_and_writes_its_outcome() {
    let source = Server::ferrocd(&[]).await;
    etcdctl(&source, &["put", "k", "v"]);
    let dir = tempfile::tempdir().unwrap();
    let file: PathBuf = save(&source, dir.path(), "s.db");
    let bytes = std::fs::read(&file).unwrap();
    let status = ferrocd_e2e::snapshots::json(&snapshot_status(&file));
    let revision = status["revision"].as_i64().unwrap();
    let log = dir.path().join("termination-log");
    let run = |revision: i64| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ferrocd-operator"))
            .arg("verify-backup")
            .arg(format!("--file={}", file.display()))
            .arg(format!("--sha256={}", sha256(&bytes)))
            .arg(format!("--revision={revision}"))
            .arg(format!(
                "--scratch-dir={}",
                dir.path().join("scratch").display()
            ))
            .arg(format!("--ferrocd-bin={}", ferrocd_bin().display()))
            .arg(format!("--termination-log={}", log.display()))
            .output()
            .unwrap()
    };
    let out = run(revision);
    assert!(out.status.success(), "{out:?}");
    let outcome: VerifyOutcome = serde_json::from_slice(&std::fs::read(&log).unwrap()).unwrap();
    assert!(
        matches!(&outcome, VerifyOutcome::Verified(r) if r.revision == revision),
        "{outcome:?}"
    );

    let out = run(revision - 1);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let outcome: VerifyOutcome = serde_json::from_slice(&std::fs::read(&log).unwrap()).unwrap();
    assert!(
        matches!(&outcome, VerifyOutcome::Failed { reason, .. } if reason == "RevisionMismatch"),
        "{outcome:?}"
    );
}

/// `ferrocd snapshot status -w json` of `file`, as its own process.
fn snapshot_status(file: &Path) -> String {
    let out = std::process::Command::new(ferrocd_bin())
        .args(["snapshot", "status", "-w", "json"])
        .arg(file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// Backups whose newest changes are gone from the snapshot's `key` bucket
/// (an empty store; a deleted key compacted at the head) still verify.
#[tokio::test]
async fn backups_of_an_empty_or_compacted_store_verify() {
    let server = Server::ferrocd(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let backup = |name: &str| {
        let file = dir.path().join(name);
        let request = BackupRequest {
            endpoints: vec![server.client_url.clone()],
            tls_dir: None,
            target: Target::File(file.clone()),
            part_size: DEFAULT_PART_SIZE,
        };
        async move { (take(&request).await.unwrap(), file) }
    };
    let (empty, empty_file) = backup("empty.db").await;
    etcdctl(&server, &["put", "k", "v"]);
    etcdctl(&server, &["del", "k"]);
    etcdctl(&server, &["compact", "3"]);
    let (compacted, compacted_file) = backup("compacted.db").await;
    assert_eq!(compacted.revision, 3);
    for (report, file) in [(empty, empty_file), (compacted, compacted_file)] {
        let args = VerifyArgs {
            file: Some(file),
            s3: S3Args {
                s3_endpoint: None,
                s3_bucket: None,
                s3_key: None,
                s3_region: "us-east-1".into(),
                s3_path_style: true,
                s3_access_key: None,
                s3_secret_key: None,
            },
            sha256: report.sha256.clone(),
            revision: report.revision,
            hash_kv: report.hash_kv.map(|h| h.hash),
            hash_kv_compact_revision: report.hash_kv.map(|h| h.compact_revision),
            scratch_dir: dir.path().join("scratch"),
            ferrocd_bin: ferrocd_bin(),
            termination_log: None,
        };
        let verified = verify(&args).await.unwrap();
        assert!(verified.revision <= report.revision, "{verified:?}");
        assert!(report.hash_kv.is_some(), "{report:?}");
        assert!(verified.hash_kv_compared, "{verified:?}");
    }
}
