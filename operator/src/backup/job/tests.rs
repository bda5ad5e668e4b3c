use k8s_openapi::api::core::v1::PodSpec;

use super::*;
use crate::crd::EtcdCluster;

fn cluster(spec_yaml: &str) -> (ClusterRef, EtcdClusterSpec) {
    let mut cluster = EtcdCluster::new(
        "demo",
        serde_yaml::from_str(spec_yaml).expect("fixture parses"),
    );
    cluster.metadata.namespace = Some("prod".into());
    cluster.metadata.uid = Some("0b6c9b4e-2f4e-4c1e-9d59-4f0f3b7f8a11".into());
    (ClusterRef::new(&cluster).unwrap(), cluster.spec)
}

fn owner() -> OwnerReference {
    OwnerReference {
        api_version: "ferrocd.io/v1alpha1".into(),
        kind: "EtcdBackup".into(),
        name: "nightly".into(),
        uid: "uid-1".into(),
        controller: Some(true),
        ..Default::default()
    }
}

fn job(spec_yaml: &str, destination_yaml: &str) -> Job {
    let (cluster, spec) = cluster(spec_yaml);
    job_of(&cluster, &spec, destination_yaml)
}

fn job_of(cluster: &ClusterRef, spec: &EtcdClusterSpec, destination_yaml: &str) -> Job {
    let destination: BackupDestination = serde_yaml::from_str(destination_yaml).unwrap();
    BackupJob {
        backup_name: "nightly",
        owner: owner(),
        cluster,
        cluster_spec: spec,
        destination: &destination,
        retention: None,
        keep: Vec::new(),
    }
    .build()
}

fn pod(job: &Job) -> &PodSpec {
    job.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
}

fn args(job: &Job) -> Vec<String> {
    pod(job).containers[0].args.clone().unwrap()
}

const S3: &str = "s3: {endpoint: 'http://10.0.0.1:9000', bucket: etcd, prefix: prod/, credentialsSecret: s3-creds}";

#[test]
fn s3_backup_runs_the_cluster_image_against_the_client_service() {
    let job = job("image: example.org/ferrocd:dev", S3);
    let container = &pod(&job).containers[0];
    assert_eq!(container.image.as_deref(), Some("example.org/ferrocd:dev"));
    assert_eq!(
        container.command,
        Some(vec!["ferrocd-operator".to_string()])
    );
    let args = args(&job);
    assert_eq!(args[0], "backup");
    assert!(args.contains(&"--endpoint=http://demo.prod.svc:2379".to_string()));
    assert!(args.contains(&"--s3-key=prod/nightly.db".to_string()));
    assert!(args.contains(&"--s3-bucket=etcd".to_string()));
    assert!(args.contains(&"--termination-log=/dev/termination-log".to_string()));
    assert_eq!(job.metadata.name.as_deref(), Some("nightly-snapshot"));
    assert_eq!(job.metadata.owner_references, Some(vec![owner()]));
}

#[test]
fn s3_credentials_come_from_the_secret_not_the_arguments() {
    let job = job("{}", S3);
    let env = pod(&job).containers[0].env.clone().unwrap();
    let refs: Vec<(String, String, String)> = env
        .iter()
        .map(|e| {
            let r = e
                .value_from
                .as_ref()
                .unwrap()
                .secret_key_ref
                .as_ref()
                .unwrap();
            (e.name.clone(), r.name.clone(), r.key.clone())
        })
        .collect();
    assert_eq!(
        refs,
        [
            (
                "AWS_ACCESS_KEY_ID".into(),
                "s3-creds".into(),
                "accessKeyID".into()
            ),
            (
                "AWS_SECRET_ACCESS_KEY".into(),
                "s3-creds".into(),
                "secretAccessKey".into()
            ),
        ]
    );
    assert!(env.iter().all(|e| e.value.is_none()));
}

#[test]
fn pvc_backup_mounts_the_claim_and_writes_under_its_path() {
    let job = job("{}", "pvc: {claimName: backups, path: demo}");
    let pod = pod(&job);
    let volume = &pod.volumes.as_ref().unwrap()[0];
    assert_eq!(
        volume.persistent_volume_claim.as_ref().unwrap().claim_name,
        "backups"
    );
    assert!(args(&job).contains(&"--file=/backup/demo/nightly.db".to_string()));
    assert_eq!(
        pod.security_context.as_ref().unwrap().fs_group,
        Some(crate::builders::MEMBER_UID),
        "the non-root container must be able to write the volume"
    );
    let violations = crate::builders::restricted_violations(pod);
    assert!(violations.is_empty(), "{violations:?}");
}

#[test]
fn tls_cluster_backup_presents_the_operator_client_certificate() {
    let job = job("tls: {auto: {}}", S3);
    let pod = pod(&job);
    let secret = pod.volumes.as_ref().unwrap()[0].secret.as_ref().unwrap();
    assert_eq!(
        secret.secret_name.as_deref(),
        Some("demo-operator-client-tls")
    );
    let args = args(&job);
    assert!(args.contains(&"--endpoint=https://demo.prod.svc:2379".to_string()));
    assert!(args.contains(&format!("--tls-dir={CLIENT_TLS_MOUNT}")));
}

#[test]
fn a_backup_created_while_tls_is_turned_on_names_every_endpoint_still_to_come() {
    use crate::tls::enable::EnablePhase;
    let endpoints = |phase: EnablePhase| {
        let (cluster, spec) = cluster("tls: {auto: {}}");
        args(&job_of(&cluster.with_phase(phase), &spec, S3))
            .into_iter()
            .filter_map(|a| a.strip_prefix("--endpoint=").map(str::to_string))
            .collect::<Vec<_>>()
    };
    let (plain, side, home) = (
        "http://demo.prod.svc:2379",
        "https://demo.prod.svc:2381",
        "https://demo.prod.svc:2379",
    );
    assert_eq!(endpoints(EnablePhase::Plain), [plain, side, home]);
    assert_eq!(endpoints(EnablePhase::Dual), [plain, side, home]);
    assert_eq!(endpoints(EnablePhase::Swap), [side, home]);
    assert_eq!(endpoints(EnablePhase::Tls), [home]);
    // Without TLS asked for, only the plain listener.
    assert_eq!(
        args(&job("replicas: 3", S3))
            .iter()
            .filter(|a| a.starts_with("--endpoint="))
            .collect::<Vec<_>>(),
        ["--endpoint=http://demo.prod.svc:2379"]
    );
}

#[test]
fn locations_name_bucket_and_claim() {
    let s3: BackupDestination = serde_yaml::from_str(S3).unwrap();
    assert_eq!(location("nightly", &s3), "s3://etcd/prod/nightly.db");
    let pvc: BackupDestination = serde_yaml::from_str("pvc: {claimName: backups}").unwrap();
    assert_eq!(location("nightly", &pvc), "pvc://backups/nightly.db");
}

#[test]
fn scheduled_backup_prunes_with_the_schedules_retention() {
    let (cluster, spec) = cluster("{}");
    let destination: BackupDestination = serde_yaml::from_str(S3).unwrap();
    let retention = Retention {
        max_count: Some(3),
        max_age: Some("24h".into()),
    };
    let job = BackupJob {
        backup_name: "demo-20261206-183000",
        owner: owner(),
        cluster: &cluster,
        cluster_spec: &spec,
        destination: &destination,
        retention: Some(&retention),
        keep: vec!["demo-20261206-120000".into()],
    }
    .build();
    let args = args(&job);
    for flag in [
        "--retain-cluster=demo",
        "--retain-count=3",
        "--retain-age=24h",
        "--retain-keep=demo-20261206-120000",
    ] {
        assert!(args.contains(&flag.to_string()), "{flag} in {args:?}");
    }
}

#[test]
fn the_backups_members_restore_from_are_kept() {
    let mut cluster = EtcdCluster::new(
        "demo",
        serde_yaml::from_str("{restore: {backupName: seed}}").unwrap(),
    );
    assert_eq!(restore_sources(&cluster), ["seed"]);
    let rebuild = |backup: &str, phase: &str| {
        format!(
            "{{backupName: {backup}, source: {{backupName: {backup}}}, phase: {phase}, startedAt: '2026-12-06T10:00:00Z'}}"
        )
    };
    cluster.status = Some(
        serde_yaml::from_str(&format!(
            "{{recovery: {{rebuild: {}, lastRebuild: {}}}}}",
            rebuild("demo-20261206-120000", "Restoring"),
            rebuild("seed", "Restored")
        ))
        .unwrap(),
    );
    assert_eq!(restore_sources(&cluster), ["demo-20261206-120000", "seed"]);
    cluster.spec.restore = None;
    cluster.status = None;
    assert!(restore_sources(&cluster).is_empty());
}
