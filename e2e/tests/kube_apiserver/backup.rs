//! The backup scenario of the real-node suite: two `EtcdBackup`s of the
//! 3-member cluster, one to a real S3 server (`s3s-fs` on this host, bound
//! where pods reach it) and one to a PVC, and one of the mutual-TLS cluster
//! to S3, succeed with the SHA-256 and size of the stored files in their
//! status; then new clusters bootstrap
//! from them (`spec.restore.backupName`) and from an etcd 3.4 snapshot
//! (`etcdctl snapshot save` of a real etcd, as an S3 object) with every
//! key present, and a restore whose checksum does not match leaves its
//! cluster with the `Restored=False` condition. The S3 backup is verified
//! (`spec.verify`): restored into scratch by a Job whose member must
//! answer the HashKV the backup recorded.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ferrocd_e2e::k8s::{host_address_for_pods, text, wait_for, Node};
use ferrocd_e2e::s3::{S3Server, ACCESS_KEY, SECRET_KEY};
use ferrocd_e2e::{etcdctl, Server};
use serde_json::Value;

use super::{CLUSTER, IMAGE_REPOSITORY, IMAGE_TAG};

const BUCKET: &str = "ferrocd-e2e";
/// The mutual-TLS cluster of the TLS scenario, backed up with the
/// operator's client certificate.
const TLS_CLUSTER: &str = "ferrocd-tls";

/// Runs the scenario on `node`, where cluster `ferrocd` serves `keys`.
pub fn backups_to_s3_and_a_pvc_restore_into_new_clusters(node: &Node, keys: &[(String, String)]) {
    let Some(s3) = S3Server::start("0.0.0.0") else {
        return;
    };
    let endpoint = format!("http://{}:{}", host_address_for_pods(), s3.port);
    std::fs::create_dir_all(s3.root.join(BUCKET)).unwrap();
    let scenario = Scenario { node, s3: &s3 };
    // Scheduled backups every minute; the first is due at once (the
    // cluster has been up for more than a minute), and checked last.
    scenario.node.kubectl_ok(&[
        "patch",
        "etcdcluster",
        CLUSTER,
        "--type=merge",
        "-p",
        &format!(
            r#"{{"spec":{{"backup":{{"schedule":"* * * * *","retention":{{"maxCount":2}},"destination":{{"s3":{{"endpoint":"{endpoint}","bucket":"{BUCKET}","prefix":"scheduled","credentialsSecret":"s3-credentials"}}}}}}}}}}"#
        ),
    ]);
    scenario.apply(&format!(
        r#"
apiVersion: v1
kind: Secret
metadata: {{name: s3-credentials}}
stringData: {{accessKeyID: {ACCESS_KEY}, secretAccessKey: {SECRET_KEY}}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: backups}}
spec:
  accessModes: [ReadWriteOnce]
  resources: {{requests: {{storage: 100Mi}}}}
---
apiVersion: ferrocd.io/v1alpha1
kind: EtcdBackup
metadata: {{name: to-s3}}
spec:
  clusterName: {CLUSTER}
  verify: true
  destination:
    s3: {{endpoint: "{endpoint}", bucket: {BUCKET}, prefix: e2e/, credentialsSecret: s3-credentials}}
---
apiVersion: ferrocd.io/v1alpha1
kind: EtcdBackup
metadata: {{name: tls-to-s3}}
spec:
  clusterName: {TLS_CLUSTER}
  destination:
    s3: {{endpoint: "{endpoint}", bucket: {BUCKET}, prefix: e2e/, credentialsSecret: s3-credentials}}
---
apiVersion: ferrocd.io/v1alpha1
kind: EtcdBackup
metadata: {{name: to-pvc}}
spec:
  clusterName: {CLUSTER}
  destination:
    pvc: {{claimName: backups, path: {CLUSTER}}}
"#
    ));
    // And the TLS cluster every minute to the PVC.
    scenario.node.kubectl_ok(&[
        "patch",
        "etcdcluster",
        TLS_CLUSTER,
        "--type=merge",
        "-p",
        r#"{"spec":{"backup":{"schedule":"* * * * *","destination":{"pvc":{"claimName":"backups","path":"scheduled"}}}}}"#,
    ]);
    let to_s3 = scenario.backup_succeeded("to-s3");
    let object = s3.object_path(BUCKET, "e2e/to-s3.db");
    scenario.status_matches_file(&to_s3, &object, &format!("s3://{BUCKET}/e2e/to-s3.db"));
    let tls = scenario.backup_succeeded("tls-to-s3");
    scenario.status_matches_file(
        &tls,
        &s3.object_path(BUCKET, "e2e/tls-to-s3.db"),
        &format!("s3://{BUCKET}/e2e/tls-to-s3.db"),
    );
    let to_pvc = scenario.backup_succeeded("to-pvc");
    let volume = PathBuf::from(
        node.kubectl_ok(&[
            "get",
            "pv",
            node.kubectl_ok(&["get", "pvc", "backups", "-o", "jsonpath={.spec.volumeName}"])
                .trim(),
            "-o",
            "jsonpath={.spec.hostPath.path}",
        ]),
    );
    scenario.status_matches_file(
        &to_pvc,
        &volume.join(CLUSTER).join("to-pvc.db"),
        &format!("pvc://backups/{CLUSTER}/to-pvc.db"),
    );

    let (etcd_keys, etcd_sha256) = etcd_snapshot_in_s3(&s3, "etcd/etcd-3.4.db");
    let image = format!("{IMAGE_REPOSITORY}:{IMAGE_TAG}");
    let s3_object = |sha256: &str| {
        format!(
            r#"{{sha256: "{sha256}", s3: {{endpoint: "{endpoint}", bucket: {BUCKET}, key: etcd/etcd-3.4.db, credentialsSecret: s3-credentials}}}}"#
        )
    };
    scenario.apply(&format!(
        r#"
apiVersion: ferrocd.io/v1alpha1
kind: EtcdCluster
metadata: {{name: restored-s3}}
spec: {{image: "{image}", replicas: 3, restore: {{backupName: to-s3}}}}
---
apiVersion: ferrocd.io/v1alpha1
kind: EtcdCluster
metadata: {{name: restored-pvc}}
spec: {{image: "{image}", replicas: 1, storage: {{emptyDir: {{}}}}, restore: {{backupName: to-pvc}}}}
---
apiVersion: ferrocd.io/v1alpha1
kind: EtcdCluster
metadata: {{name: from-etcd}}
spec: {{image: "{image}", replicas: 1, storage: {{emptyDir: {{}}}}, restore: {restored}}}
---
apiVersion: ferrocd.io/v1alpha1
kind: EtcdCluster
metadata: {{name: bad-checksum}}
spec: {{image: "{image}", replicas: 1, storage: {{emptyDir: {{}}}}, restore: {bad}}}
"#,
        restored = s3_object(&etcd_sha256),
        bad = s3_object(&"0".repeat(64)),
    ));
    for (name, replicas, expected) in [
        ("restored-s3", 3, keys),
        ("restored-pvc", 1, keys),
        ("from-etcd", 1, &etcd_keys[..]),
    ] {
        let service = scenario.ready(name, replicas);
        for (key, value) in expected {
            let get = etcdctl(&service, &["get", key, "--print-value-only"], None);
            assert_eq!(
                String::from_utf8_lossy(&get.stdout).trim(),
                value,
                "{name}: {key}: {}",
                text(&get)
            );
        }
    }
    let message = wait_for(
        "bad-checksum reports its failed restore",
        Duration::from_secs(60),
        || {
            let cluster = scenario.get("etcdcluster", "bad-checksum")?;
            let condition = &cluster["status"]["restore"]["conditions"][0];
            (condition["status"] == "False" && condition["reason"] == "RestoreFailed").then(|| {
                condition["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
        },
        || scenario.describe(),
    );
    assert!(message.contains("sha256"), "{message}");

    // The verify Job restored `to-s3` into scratch, started a member on it
    // and compared its HashKV with the one the backup recorded.
    assert!(to_s3["hashKV"].as_i64().is_some(), "{to_s3}");
    let verified = wait_for(
        "to-s3 is verified",
        Duration::from_secs(120),
        || {
            let backup = scenario.get("etcdbackup", "to-s3")?;
            let conditions = backup["status"]["conditions"].as_array()?.clone();
            let verified = conditions.into_iter().find(|c| c["type"] == "Verified")?;
            match verified["status"].as_str() {
                Some("True") => Some(verified),
                Some("False") => panic!("to-s3 failed verification: {verified}"),
                _ => None,
            }
        },
        || scenario.describe(),
    );
    let message = verified["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("serves HashKV {}, the cluster's", to_s3["hashKV"])),
        "{verified}"
    );

    let scheduled = scenario.scheduled_success(CLUSTER);
    let name = scheduled["lastSuccessfulBackup"].as_str().unwrap();
    let key = format!("scheduled/{name}.db");
    assert_eq!(
        scheduled["lastSuccessLocation"].as_str(),
        Some(format!("s3://{BUCKET}/{key}").as_str())
    );
    assert_eq!(
        scheduled["lastSuccessSha256"].as_str(),
        Some(sha256sum(&s3.object_path(BUCKET, &key)).as_str()),
        "{scheduled}"
    );
    let scheduled = scenario.scheduled_success(TLS_CLUSTER);
    let name = scheduled["lastSuccessfulBackup"].as_str().unwrap();
    assert_eq!(
        scheduled["lastSuccessLocation"].as_str(),
        Some(format!("pvc://backups/scheduled/{name}.db").as_str())
    );
    assert_eq!(
        scheduled["lastSuccessSha256"].as_str(),
        Some(sha256sum(&volume.join("scheduled").join(format!("{name}.db"))).as_str()),
        "{scheduled}"
    );

    let metrics = scenario.operator_metrics();
    for cluster in [CLUSTER, TLS_CLUSTER] {
        let sample = format!(
            "ferrocd_operator_backup_last_success_timestamp_seconds{{cluster=\"{cluster}\",namespace=\"default\"}}"
        );
        assert!(metrics.contains(&sample), "{sample} not in:\n{metrics}");
    }
    // The restored clusters have shown what they had to.
    for name in ["restored-s3", "restored-pvc", "from-etcd", "bad-checksum"] {
        node.kubectl_ok(&["delete", "etcdcluster", name, "--wait=false"]);
    }
}

struct Scenario<'a> {
    node: &'a Node,
    s3: &'a S3Server,
}

impl Scenario<'_> {
    fn apply(&self, manifest: &str) {
        let apply = self
            .node
            .kubectl_with_input(&["apply", "-f", "-"], Some(manifest));
        assert!(apply.status.success(), "kubectl apply: {}", text(&apply));
    }

    fn get(&self, kind: &str, name: &str) -> Option<Value> {
        let out = self.node.kubectl(&["get", kind, name, "-o", "json"]);
        serde_json::from_slice(&out.stdout).ok()
    }

    fn backup_succeeded(&self, name: &str) -> Value {
        wait_for(
            &format!("EtcdBackup {name} succeeds"),
            Duration::from_secs(90),
            || {
                let backup = self.get("etcdbackup", name)?;
                match backup["status"]["phase"].as_str() {
                    Some("Succeeded") => Some(backup["status"].clone()),
                    Some("Failed") => {
                        panic!("{name} failed: {}\n{}", backup["status"], self.describe())
                    }
                    _ => None,
                }
            },
            || self.describe(),
        )
    }

    /// `status.backup` of `cluster` once a scheduled backup succeeded.
    fn scheduled_success(&self, cluster: &str) -> Value {
        let status = wait_for(
            &format!("a scheduled backup of {cluster} succeeds"),
            Duration::from_secs(90),
            || {
                let object = self.get("etcdcluster", cluster)?;
                let status = &object["status"]["backup"];
                status["lastSuccessfulBackup"].as_str()?;
                Some(status.clone())
            },
            || self.describe(),
        );
        let name = status["lastSuccessfulBackup"].as_str().unwrap();
        assert!(name.starts_with(&format!("{cluster}-")), "{status}");
        status
    }

    /// The operator's /metrics, read from its pod.
    fn operator_metrics(&self) -> String {
        use std::io::{Read, Write};
        let ip = self.node.kubectl_ok(&[
            "get",
            "pods",
            "-n",
            super::OPERATOR_NAMESPACE,
            "-l",
            "app.kubernetes.io/component=operator",
            "-o",
            "jsonpath={.items[0].status.podIP}",
        ]);
        let mut stream = std::net::TcpStream::connect((ip.trim(), 8080)).unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: operator\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    }

    fn status_matches_file(&self, status: &Value, file: &Path, location: &str) {
        let bytes = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert_eq!(
            status["sha256"].as_str(),
            Some(sha256sum(file).as_str()),
            "{status}"
        );
        assert_eq!(
            status["size"].as_u64(),
            Some(bytes.len() as u64),
            "{status}"
        );
        assert!(status["revision"].as_i64() > Some(1), "{status}");
        assert_eq!(status["location"].as_str(), Some(location), "{status}");
        assert!(status["duration"].as_str().is_some(), "{status}");
        assert!(status["completionTime"].as_str().is_some(), "{status}");
        assert!(status["conditions"][0]["type"] == "Complete", "{status}");
    }

    /// The client Service of `name` once it reports `replicas` ready members.
    fn ready(&self, name: &str, replicas: i64) -> String {
        wait_for(
            &format!("{name} restores {replicas} ready members"),
            Duration::from_secs(120),
            || {
                let cluster = self.get("etcdcluster", name)?;
                (cluster["status"]["readyReplicas"].as_i64() == Some(replicas)).then_some(())
            },
            || self.describe(),
        );
        let ip =
            self.node
                .kubectl_ok(&["get", "service", name, "-o", "jsonpath={.spec.clusterIP}"]);
        format!("{}:2379", ip.trim())
    }

    fn describe(&self) -> String {
        let get = |args: &[&str]| text(&self.node.kubectl(args));
        format!(
            "--- backups, clusters ---\n{}\n--- jobs, pods ---\n{}\n--- events ---\n{}\n--- backup pod logs ---\n{}\n--- restore logs ---\n{}\n--- operator log ---\n{}\n--- s3 root ---\n{:?}",
            get(&["get", "etcdbackup,etcdcluster", "-o", "yaml"]),
            get(&["get", "jobs,pods,pvc", "-o", "wide"]),
            get(&["get", "events", "--sort-by=.lastTimestamp"]),
            get(&["logs", "-l", "ferrocd.io/backup", "--tail=20"]),
            get(&["logs", "-l", "app.kubernetes.io/name=ferrocd", "-c", "restore", "--tail=10"]),
            get(&["logs", "-n", super::OPERATOR_NAMESPACE, "deployment/ferrocd-operator", "--tail=40"]),
            std::fs::read_dir(self.s3.root.join(BUCKET)).map(|d| d.count()),
        )
    }
}

/// An `etcdctl snapshot save` of a real etcd 3.4 with a few keys, stored
/// as object `key` (s3s-fs serves the bucket's files); the keys and the
/// file's SHA-256.
fn etcd_snapshot_in_s3(s3: &S3Server, key: &str) -> (Vec<(String, String)>, String) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let etcd = runtime
        .block_on(Server::etcd(&[]))
        .expect("etcd 3.4 is installed (the suite requires etcdctl)");
    let keys: Vec<(String, String)> = (0..10)
        .map(|i| (format!("from-etcd/{i:02}"), format!("etcd-value-{i}")))
        .collect();
    for (k, v) in &keys {
        let put = etcd.etcdctl(&["put", k, v]);
        assert!(put.status.success(), "etcd put: {}", text(&put));
    }
    let object = s3.object_path(BUCKET, key);
    std::fs::create_dir_all(object.parent().unwrap()).unwrap();
    let save = etcd.etcdctl(&["snapshot", "save", object.to_str().unwrap()]);
    assert!(
        save.status.success(),
        "etcdctl snapshot save: {}",
        text(&save)
    );
    drop(etcd);
    let sha256 = sha256sum(&object);
    (keys, sha256)
}

fn sha256sum(file: &Path) -> String {
    let out = Command::new("sha256sum").arg(file).output().unwrap();
    assert!(out.status.success(), "sha256sum: {}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}
