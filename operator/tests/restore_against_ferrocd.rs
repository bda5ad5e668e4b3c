//! `ferrocd-operator restore`, the members' init step of `spec.restore`,
//! against real processes: an `etcdctl snapshot save` file of a real etcd
//! 3.4 and a backup of ferrocd in a real S3 server (`s3s-fs`) each become a
//! 3-member ferrocd cluster serving every key; a wrong checksum leaves the
//! data directory empty; a member with data, or one joining an existing
//! cluster, restores nothing.

use std::path::{Path, PathBuf};

use ferrocd_e2e::s3::{S3Server, ACCESS_KEY, SECRET_KEY};
use ferrocd_e2e::snapshots::{etcdctl, json, save};
use ferrocd_e2e::{ferrocd_bin, Cluster, Kind, Server};
use ferrocd_operator::backup::checksum::hex;
use ferrocd_operator::backup::cli::S3Args;
use ferrocd_operator::backup::restore::{
    restore_member, RestoreArgs, RestoreError, RestoreOutcome,
};
use ferrocd_operator::backup::s3::{S3Client, S3Config, DEFAULT_PART_SIZE};
use ferrocd_operator::backup::{take, BackupRequest, Target};

fn restore_args(cluster: &Cluster, member: usize, data_dir: &Path) -> RestoreArgs {
    let m = &cluster.members[member];
    RestoreArgs {
        data_dir: data_dir.to_path_buf(),
        name: m.name.clone(),
        initial_cluster: cluster.initial_cluster(),
        initial_cluster_state: "new".into(),
        initial_cluster_token: cluster.token().into(),
        initial_advertise_peer_urls: m.peer_url.clone(),
        file: None,
        s3: S3Args {
            s3_endpoint: None,
            s3_bucket: None,
            s3_key: None,
            s3_region: "us-east-1".into(),
            s3_path_style: true,
            s3_access_key: Some(ACCESS_KEY.into()),
            s3_secret_key: Some(SECRET_KEY.into()),
        },
        sha256: None,
        skip_hash_check: false,
        ferrocd_bin: ferrocd_bin(),
        termination_log: None,
    }
}

fn sha256_of(path: &Path) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, &std::fs::read(path).unwrap()).as_ref())
}

/// Every key (`get "" --from-key`), without the header.
fn keys(server: &Server) -> serde_json::Value {
    let mut all = json(&etcdctl(server, &["get", "", "--from-key", "-w", "json"]));
    all["kvs"].take()
}

/// Restores every member of a prepared 3-member cluster with `source`
/// applied to its arguments, starts it and checks it serves `expected`.
async fn restore_cluster(source: impl Fn(&mut RestoreArgs), expected: &serde_json::Value) {
    let mut cluster = Cluster::prepare(Kind::Ferrocd, 3, &[]);
    for i in 0..3 {
        let data_dir = cluster.members[i].data_dir();
        let mut args = restore_args(&cluster, i, &data_dir);
        source(&mut args);
        let outcome = restore_member(&args).await.unwrap();
        assert!(
            matches!(outcome, RestoreOutcome::Restored { .. }),
            "{outcome:?}"
        );
        assert!(!data_dir.join(".restore").exists(), "scratch left behind");
    }
    cluster.launch_all().await;
    for m in &cluster.members {
        assert_eq!(&keys(m), expected, "{}", m.name);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_etcd_3_4_snapshot_file_becomes_a_ferrocd_cluster() {
    let Some(etcd) = Server::etcd(&[]).await else {
        return;
    };
    for i in 0..20 {
        etcdctl(&etcd, &["put", &format!("etcd/{i:02}"), &format!("v{i}")]);
    }
    let dir = tempfile::tempdir().unwrap();
    let file = save(&etcd, dir.path(), "etcd.db");
    let sha256 = sha256_of(&file);
    let expected = keys(&etcd);
    restore_cluster(
        |args| {
            args.file = Some(file.clone());
            args.sha256 = Some(sha256.clone());
        },
        &expected,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ferrocd_backup_in_s3_becomes_a_new_cluster() {
    let Some(s3) = S3Server::start("127.0.0.1") else {
        return;
    };
    let source = Server::ferrocd(&[]).await;
    for i in 0..20 {
        etcdctl(&source, &["put", &format!("s3/{i:02}"), &format!("v{i}")]);
    }
    let config = S3Config {
        endpoint: s3.endpoint.clone(),
        bucket: "restore".into(),
        region: "us-east-1".into(),
        path_style: true,
        access_key: ACCESS_KEY.into(),
        secret_key: SECRET_KEY.into(),
    };
    S3Client::new(&config)
        .unwrap()
        .create_bucket()
        .await
        .unwrap();
    let report = take(&BackupRequest {
        endpoints: vec![source.client_url.clone()],
        tls_dir: None,
        target: Target::S3 {
            config,
            key: "demo/nightly.db".into(),
        },
        part_size: DEFAULT_PART_SIZE,
    })
    .await
    .unwrap();
    let expected = keys(&source);
    restore_cluster(
        |args| {
            args.s3.s3_endpoint = Some(s3.endpoint.clone());
            args.s3.s3_bucket = Some("restore".into());
            args.s3.s3_key = Some("demo/nightly.db".into());
            args.sha256 = Some(report.sha256.clone());
        },
        &expected,
    )
    .await;
}

#[tokio::test]
async fn wrong_checksum_leaves_the_data_directory_empty() {
    let source = Server::ferrocd(&[]).await;
    etcdctl(&source, &["put", "k", "v"]);
    let dir = tempfile::tempdir().unwrap();
    let file = save(&source, dir.path(), "s.db");
    let cluster = Cluster::prepare(Kind::Ferrocd, 1, &[]);
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let mut args = restore_args(&cluster, 0, &data_dir);
    args.file = Some(file);
    args.sha256 = Some("0".repeat(64));
    let error = restore_member(&args).await.unwrap_err();
    assert!(
        matches!(error, RestoreError::ChecksumMismatch { .. }),
        "{error:?}"
    );
    assert!(std::fs::read_dir(&data_dir).unwrap().next().is_none());
}

#[tokio::test]
async fn members_with_data_or_joining_restore_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::prepare(Kind::Ferrocd, 1, &[]);
    let missing = PathBuf::from("/nonexistent/snapshot.db");

    let with_data = dir.path().join("with-data");
    std::fs::create_dir_all(with_data.join("member")).unwrap();
    let mut args = restore_args(&cluster, 0, &with_data);
    args.file = Some(missing.clone());
    assert_eq!(
        restore_member(&args).await.unwrap(),
        RestoreOutcome::HasData
    );

    let joining = dir.path().join("joining");
    let mut args = restore_args(&cluster, 0, &joining);
    args.file = Some(missing);
    args.initial_cluster_state = "existing".into();
    assert_eq!(
        restore_member(&args).await.unwrap(),
        RestoreOutcome::Joining
    );
    assert!(!joining.exists());
}
