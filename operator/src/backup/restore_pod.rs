//! The member pods' `restore` init container of a cluster with a resolved
//! `spec.restore` (an S3 object or a PVC file, never a `backupName`: the
//! reconciler resolves that first), as a pure function.

use k8s_openapi::api::core::v1::{
    Container, EnvVar, EnvVarSource, PersistentVolumeClaimVolumeSource, SecretKeySelector, Volume,
    VolumeMount,
};

use crate::builders::{ClusterRef, DATA_DIR, DATA_VOLUME, PEER_PORT};
use crate::crd::{EtcdClusterSpec, S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY};

/// Name of the init container.
pub const RESTORE_CONTAINER: &str = "restore";
/// Where a PVC source is mounted.
pub const SOURCE_MOUNT: &str = "/restore-source";
const SOURCE_VOLUME: &str = "restore-source";

/// The init container and the volumes it needs, when `spec.restore` is
/// set. `member_env` is the member container's environment (POD_NAME and
/// the initial cluster from the bootstrap ConfigMap), so both see the
/// same flags.
pub fn init_container(
    cluster: &ClusterRef,
    spec: &EtcdClusterSpec,
    member_env: &[EnvVar],
) -> Option<(Container, Vec<Volume>)> {
    let restore = spec.restore.as_ref()?;
    let peer_host = format!(
        "$(POD_NAME).{}.{}.svc",
        cluster.peer_service_name(),
        cluster.namespace()
    );
    let mut args = vec![
        "restore".to_string(),
        format!("--data-dir={DATA_DIR}"),
        "--name=$(POD_NAME)".to_string(),
        "--initial-cluster=$(INITIAL_CLUSTER)".to_string(),
        "--initial-cluster-state=$(INITIAL_CLUSTER_STATE)".to_string(),
        format!(
            "--initial-cluster-token={}",
            cluster.initial_cluster_token()
        ),
        format!(
            "--initial-advertise-peer-urls={}://{peer_host}:{PEER_PORT}",
            cluster.scheme()
        ),
        "--termination-log=/dev/termination-log".to_string(),
    ];
    if let Some(sha256) = &restore.sha256 {
        args.push(format!("--sha256={sha256}"));
    }
    if restore.skip_hash_check {
        args.push("--skip-hash-check".to_string());
    }
    let mut env = member_env.to_vec();
    let mut mounts = vec![VolumeMount {
        name: DATA_VOLUME.to_string(),
        mount_path: DATA_DIR.to_string(),
        ..Default::default()
    }];
    let mut volumes = Vec::new();
    if let Some(s3) = &restore.s3 {
        args.extend([
            format!("--s3-endpoint={}", s3.endpoint),
            format!("--s3-bucket={}", s3.bucket),
            format!("--s3-key={}", s3.key),
            format!(
                "--s3-region={}",
                s3.region
                    .as_deref()
                    .unwrap_or(crate::crd::DEFAULT_S3_REGION)
            ),
            format!("--s3-path-style={}", s3.force_path_style),
        ]);
        for (var, key) in [
            ("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY_ID),
            ("AWS_SECRET_ACCESS_KEY", S3_SECRET_ACCESS_KEY),
        ] {
            env.push(EnvVar {
                name: var.into(),
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: s3.credentials_secret.clone(),
                        key: key.into(),
                        optional: Some(false),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
    } else if let Some(pvc) = &restore.pvc {
        volumes.push(Volume {
            name: SOURCE_VOLUME.into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: pvc.claim_name.clone(),
                read_only: Some(true),
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: SOURCE_VOLUME.into(),
            mount_path: SOURCE_MOUNT.into(),
            read_only: Some(true),
            ..Default::default()
        });
        args.push(format!("--file={SOURCE_MOUNT}/{}", pvc.path));
    }
    let container = Container {
        name: RESTORE_CONTAINER.into(),
        image: Some(spec.image_or_default()),
        command: Some(vec!["ferrocd-operator".into()]),
        args: Some(args),
        env: Some(env),
        volume_mounts: Some(mounts),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        security_context: Some(crate::builders::restricted_container()),
        ..Default::default()
    };
    Some((container, volumes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::EtcdCluster;

    fn parts(restore_yaml: &str) -> (Container, Vec<Volume>) {
        let mut cluster = EtcdCluster::new(
            "demo",
            serde_yaml::from_str(&format!("{{restore: {restore_yaml}}}")).unwrap(),
        );
        cluster.metadata.namespace = Some("prod".into());
        cluster.metadata.uid = Some("uid".into());
        let cluster_ref = ClusterRef::new(&cluster).unwrap();
        init_container(&cluster_ref, &cluster.spec, &[]).unwrap()
    }

    #[test]
    fn every_member_restores_with_its_own_name_and_the_same_cluster_flags() {
        let (container, _) = parts("{pvc: {claimName: backups, path: demo/x.db}}");
        let args = container.args.unwrap();
        for flag in [
            "--name=$(POD_NAME)",
            "--initial-cluster=$(INITIAL_CLUSTER)",
            "--initial-cluster-state=$(INITIAL_CLUSTER_STATE)",
            "--initial-cluster-token=prod-demo",
            "--initial-advertise-peer-urls=http://$(POD_NAME).demo-peer.prod.svc:2380",
            "--data-dir=/var/lib/ferrocd",
            "--file=/restore-source/demo/x.db",
        ] {
            assert!(args.contains(&flag.to_string()), "{flag} in {args:?}");
        }
    }

    #[test]
    fn pvc_source_is_mounted_read_only() {
        let (container, volumes) = parts("{pvc: {claimName: backups, path: x.db}}");
        let claim = volumes[0].persistent_volume_claim.as_ref().unwrap();
        assert_eq!(claim.claim_name, "backups");
        assert_eq!(claim.read_only, Some(true));
        let mounts = container.volume_mounts.unwrap();
        assert!(mounts
            .iter()
            .any(|m| m.mount_path == SOURCE_MOUNT && m.read_only == Some(true)));
    }

    #[test]
    fn s3_source_checks_the_sha256_and_reads_credentials_from_the_secret() {
        let sha = "a".repeat(64);
        let (container, volumes) = parts(&format!(
            "{{sha256: '{sha}', s3: {{endpoint: 'http://s3:9000', bucket: b, key: k.db, credentialsSecret: creds}}}}"
        ));
        assert!(volumes.is_empty());
        let args = container.args.unwrap();
        assert!(args.contains(&format!("--sha256={sha}")));
        assert!(args.contains(&"--s3-key=k.db".to_string()));
        let env = container.env.unwrap();
        assert_eq!(env.len(), 2);
        assert!(env.iter().all(|e| e.value.is_none()));
    }

    #[test]
    fn no_restore_no_init_container() {
        let mut cluster = EtcdCluster::new("demo", EtcdClusterSpec::default());
        cluster.metadata.namespace = Some("prod".into());
        cluster.metadata.uid = Some("uid".into());
        let cluster_ref = ClusterRef::new(&cluster).unwrap();
        assert!(init_container(&cluster_ref, &cluster.spec, &[]).is_none());
    }
}
