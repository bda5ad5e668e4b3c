//! The TLS scenario of the real-node suite: `examples/etcdcluster-tls.yaml`
//! (operator-issued certificates, mutual TLS on client and peer ports) comes
//! up with 3 ready members; a client with the certificate of
//! `status.clientSecret` writes and reads through the client Service, one
//! without a certificate is refused; a rotation asked for with the
//! `ferrocd.io/rotate-certificates` annotation reaches the members (new
//! connections see the new serial) while a writer goes on without a failure;
//! then `kubectl scale` takes it 3 -> 4 -> 3 under a TLS writer, the new
//! member's peer certificate must be valid for its DNS name, and every
//! member of the list must be reachable with the client Secret; last, the
//! CA is replaced (`ferrocd.io/rotate-ca`) under a writer that follows
//! `status.clientSecret`: no write may fail, and new connections must
//! verify against the new CA alone and no longer against the old one.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use ferrocd_e2e::k8s::{text, wait_for, Node};
use ferrocd_e2e::{etcdctl, free_port};
use serde_json::Value;

use super::{apply_example, writer, OPERATOR_NAMESPACE};

/// Name of the EtcdCluster in examples/etcdcluster-tls.yaml.
const NAME: &str = "ferrocd-tls";

/// Runs the scenario on `node`, where the operator is installed.
pub fn tls_cluster_serves_mutual_tls_and_rotates_under_writes(node: &Node) {
    let cluster = TlsCluster::create(node);
    let client = cluster.client_files();
    let flags = client.etcdctl_flags();
    let endpoint = cluster.endpoint();

    let put = etcdctl(&endpoint, &with(&flags, &["put", "tls/k", "v"]), None);
    assert!(
        put.status.success(),
        "put with the client certificate: {}",
        text(&put)
    );
    let get = etcdctl(
        &endpoint,
        &with(&flags, &["get", "tls/k", "--print-value-only"]),
        None,
    );
    assert_eq!(
        String::from_utf8_lossy(&get.stdout).trim(),
        "v",
        "{}",
        text(&get)
    );

    let ca_only = [format!("--cacert={}", client.path("ca.crt"))];
    let refused = etcdctl(
        &endpoint,
        &with(
            &ca_only,
            &[
                "--dial-timeout=2s",
                "--command-timeout=3s",
                "put",
                "tls/k",
                "x",
            ],
        ),
        None,
    );
    assert!(
        !refused.status.success(),
        "a client without a certificate wrote: {}",
        text(&refused)
    );

    let before = cluster.server_serial_in_status();
    assert_eq!(
        cluster.served_serial(&client).as_deref(),
        Some(before.as_str()),
        "the members serve the certificate the status reports"
    );
    let writer = writer(&endpoint, &flags);
    std::thread::sleep(Duration::from_secs(1));
    let asked = Instant::now();
    let token = format!("e2e-{}", free_port());
    node.kubectl_ok(&[
        "annotate",
        "etcdcluster",
        NAME,
        "--overwrite",
        &format!("ferrocd.io/rotate-certificates={token}"),
    ]);
    let after = wait_for(
        "the rotation is reported in status.tls",
        Duration::from_secs(30),
        || {
            let status = cluster.status()?;
            let honoured = status["tls"]["lastRotationRequest"].as_str() == Some(&token);
            let serial = server_serial(&status)?;
            (honoured && serial != before).then_some(serial)
        },
        || cluster.describe(),
    );
    wait_for(
        "new connections see the reissued server certificate",
        Duration::from_secs(60),
        || (cluster.served_serial(&client)? == after).then_some(()),
        || cluster.describe(),
    );
    let took = asked.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let report = writer.stop_when_settled();
    eprintln!(
        "TLS rotation: serial {before} -> {after} served {took:.1?} after the annotation; {} writes ok, {} failed: {:?}",
        report.ok, report.failed, report.errors
    );
    assert_eq!(
        report.failed, 0,
        "writes failed during the rotation: {:?}",
        report.errors
    );
    assert!(report.ok > 0, "no write went through during the rotation");

    scale_under_tls_writes(&cluster, &client);
    ca_rotation_under_writes(&cluster, &client);
}

/// `ferrocd.io/rotate-ca` under a writer whose files follow the client
/// Secret, as a client of `status.clientSecret` should.
fn ca_rotation_under_writes(cluster: &TlsCluster<'_>, old_client: &ClientFiles) {
    let endpoint = cluster.endpoint();
    let service = format!("{NAME}.default.svc");
    let address = endpoint.trim_start_matches("https://").to_string();
    let followed = FollowedClient::new(cluster);
    let writer = writer(&endpoint, &followed.etcdctl_flags());
    let ca_before = cluster
        .certificate_serial("ca")
        .expect("CA serial in status");
    std::thread::sleep(Duration::from_secs(1));
    let asked = Instant::now();
    let token = format!("e2e-ca-{}", free_port());
    cluster.node.kubectl_ok(&[
        "annotate",
        "etcdcluster",
        NAME,
        "--overwrite",
        &format!("ferrocd.io/rotate-ca={token}"),
    ]);
    let mut phases = Vec::new();
    let ca_after = wait_for(
        "the CA rotation to finish (status.tls.lastCaRotationRequest, no caRotation phase)",
        // Two phases of at least 10 s each; a member whose kubelet missed
        // a refresh is updated again every 15 s of waiting.
        Duration::from_secs(180),
        || {
            followed.refresh(cluster);
            let status = cluster.status()?;
            let phase = status["tls"]["caRotation"].as_str().unwrap_or("Stable");
            if phases.last().map(String::as_str) != Some(phase) {
                phases.push(phase.to_string());
            }
            let honoured = status["tls"]["lastCaRotationRequest"].as_str() == Some(&token);
            let serial = cluster.certificate_serial("ca")?;
            (honoured && phase == "Stable" && serial != ca_before).then_some(serial)
        },
        || cluster.describe(),
    );
    followed.refresh(cluster);
    let new_client = followed.files();
    wait_for(
        "new connections verify against the new CA alone",
        Duration::from_secs(60),
        || {
            let new_ok = cluster.verifies_as(&new_client, &address, &service).is_ok();
            let old_ok = cluster.verifies_as(old_client, &address, &service).is_ok();
            (new_ok && !old_ok).then_some(())
        },
        || cluster.describe(),
    );
    let took = asked.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let report = writer.stop_when_settled();
    eprintln!(
        "CA rotation: CA {ca_before} -> {ca_after} through {phases:?} in {took:.1?}; {} writes ok, {} failed: {:?}",
        report.ok, report.failed, report.errors
    );
    assert!(
        phases.iter().any(|p| p == "Trust" || p == "Reissue"),
        "no rotation phase was seen: {phases:?}"
    );
    assert_eq!(
        report.failed, 0,
        "writes failed during the CA rotation: {:?}",
        report.errors
    );
    assert!(
        report.ok > 0,
        "no write went through during the CA rotation"
    );
}

/// Client files that follow the client Secret: `current` is a symbolic
/// link swapped to a complete new directory whenever the Secret changes.
struct FollowedClient {
    root: tempfile::TempDir,
    seen: std::cell::RefCell<(usize, String)>,
}

impl FollowedClient {
    fn new(cluster: &TlsCluster<'_>) -> FollowedClient {
        let followed = FollowedClient {
            root: tempfile::tempdir().unwrap(),
            seen: std::cell::RefCell::new((0, String::new())),
        };
        followed.refresh(cluster);
        followed
    }

    fn current(&self) -> std::path::PathBuf {
        self.root.path().join("current")
    }

    fn etcdctl_flags(&self) -> Vec<String> {
        let current = self.current();
        vec![
            format!("--cacert={}", current.join("ca.crt").display()),
            format!("--cert={}", current.join("tls.crt").display()),
            format!("--key={}", current.join("tls.key").display()),
        ]
    }

    /// A copy of the current files.
    fn files(&self) -> ClientFiles {
        let dir = tempfile::tempdir().unwrap();
        for key in ["ca.crt", "tls.crt", "tls.key"] {
            std::fs::copy(self.current().join(key), dir.path().join(key)).unwrap();
        }
        ClientFiles { dir }
    }

    fn refresh(&self, cluster: &TlsCluster<'_>) {
        let Some(data) = cluster.client_secret_data() else {
            return;
        };
        let fingerprint = format!("{data}");
        let mut seen = self.seen.borrow_mut();
        if seen.1 == fingerprint {
            return;
        }
        let generation = seen.0 + 1;
        let dir = self.root.path().join(format!("gen-{generation}"));
        std::fs::create_dir(&dir).unwrap();
        for key in ["ca.crt", "tls.crt", "tls.key"] {
            let Some(encoded) = data[key].as_str() else {
                return;
            };
            std::fs::write(dir.join(key), decode_base64(encoded)).unwrap();
        }
        let link = self.root.path().join("current.new");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        std::fs::rename(&link, self.current()).unwrap();
        *seen = (generation, fingerprint);
    }
}

/// 3 -> 4 -> 3 with `kubectl scale` while a writer with the client Secret
/// runs through the client Service.
fn scale_under_tls_writes(cluster: &TlsCluster<'_>, client: &ClientFiles) {
    let flags = client.etcdctl_flags();
    let endpoint = cluster.endpoint();
    let writer = writer(&endpoint, &flags);
    let started = Instant::now();
    cluster.scale(4);
    cluster.wait_voters(4);
    let grown = started.elapsed();
    let new_member = format!("{NAME}-3");
    let dns = format!("{new_member}.{NAME}-peer.default.svc");
    let ip =
        cluster
            .node
            .kubectl_ok(&["get", "pod", &new_member, "-o", "jsonpath={.status.podIP}"]);
    let verified = cluster.verifies_as(client, &format!("{}:2380", ip.trim()), &dns);
    assert!(
        verified.is_ok(),
        "the new member's peer certificate is not valid for {dns}: {}",
        verified.unwrap_err()
    );
    let listed = etcdctl(
        &endpoint,
        &with(&flags, &["member", "list", "-w", "json"]),
        None,
    );
    let list: Value = serde_json::from_slice(&listed.stdout).unwrap_or_default();
    let client_urls: Vec<String> = list["members"]
        .as_array()
        .map(|members| {
            members
                .iter()
                .flat_map(|m| m["clientURLs"].as_array().cloned().unwrap_or_default())
                .filter_map(|u| u.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(client_urls.len(), 4, "member list: {}", text(&listed));
    assert!(
        client_urls.iter().any(|u| u.contains(&new_member)),
        "the new member advertises its name: {client_urls:?}"
    );
    cluster.scale(3);
    cluster.wait_voters(3);
    let took = started.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let report = writer.stop_when_settled();
    eprintln!(
        "TLS scale 3 -> 4 ({grown:.1?}) -> 3 ({took:.1?} in all): {} writes ok, {} failed (longest outage {:.1?}): {:?}",
        report.ok, report.failed, report.longest_outage, report.errors
    );
    assert!(report.ok > 0, "no write went through while scaling");
    assert!(
        report.longest_outage < Duration::from_secs(5),
        "writes failed for {:.1?} while scaling: {:?}",
        report.longest_outage,
        report.errors
    );
    let put = etcdctl(&endpoint, &with(&flags, &["put", "tls/scaled", "v"]), None);
    assert!(
        put.status.success(),
        "put after scaling back: {}",
        text(&put)
    );
}

fn with<'a>(flags: &'a [String], args: &[&'a str]) -> Vec<&'a str> {
    flags
        .iter()
        .map(String::as_str)
        .chain(args.iter().copied())
        .collect()
}

fn server_serial(status: &Value) -> Option<String> {
    secret_serial(status, "server-tls")
}

/// Serial of Secret `<cluster>-<suffix>` in `status.tls.certificates`.
fn secret_serial(status: &Value, suffix: &str) -> Option<String> {
    status["tls"]["certificates"]
        .as_array()?
        .iter()
        .find(|c| c["secret"] == format!("{NAME}-{suffix}"))?["serial"]
        .as_str()
        .map(str::to_string)
}

struct TlsCluster<'a> {
    node: &'a Node,
}

/// The files of the client Secret, in a temporary directory.
struct ClientFiles {
    dir: tempfile::TempDir,
}

impl ClientFiles {
    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn etcdctl_flags(&self) -> Vec<String> {
        vec![
            format!("--cacert={}", self.path("ca.crt")),
            format!("--cert={}", self.path("tls.crt")),
            format!("--key={}", self.path("tls.key")),
        ]
    }
}

impl<'a> TlsCluster<'a> {
    fn create(node: &'a Node) -> TlsCluster<'a> {
        apply_example(node, "etcdcluster-tls.yaml");
        let cluster = TlsCluster { node };
        wait_for(
            "the TLS EtcdCluster reports 3 ready members and CertificatesReady",
            Duration::from_secs(120),
            || {
                let status = cluster.status()?;
                let ready = status["readyReplicas"].as_i64() == Some(3);
                let certificates = status["conditions"]
                    .as_array()?
                    .iter()
                    .any(|c| c["type"] == "CertificatesReady" && c["status"] == "True");
                (ready && certificates && status["clientSecret"].is_string()).then_some(())
            },
            || cluster.describe(),
        );
        cluster
    }

    /// `kubectl scale`, through the scale subresource.
    fn scale(&self, replicas: i32) {
        self.node.kubectl_ok(&[
            "scale",
            "etcdcluster",
            NAME,
            &format!("--replicas={replicas}"),
        ]);
    }

    /// Waits for `count` ready pods and as many healthy voters in the status.
    fn wait_voters(&self, count: usize) {
        wait_for(
            &format!("{count} ready, healthy voters under TLS"),
            Duration::from_secs(120),
            || {
                let status = self.status()?;
                let members = status["members"].as_array()?;
                let voters = members
                    .iter()
                    .all(|m| m["healthy"] == true && m["isLearner"] != true);
                (status["readyReplicas"].as_u64() == Some(count as u64)
                    && members.len() == count
                    && voters)
                    .then_some(())
            },
            || self.describe(),
        );
    }

    /// Whether the certificate served at `host:port` chains to the client
    /// Secret's CA and is valid for `name`; `Err` with openssl's words.
    fn verifies_as(&self, client: &ClientFiles, address: &str, name: &str) -> Result<(), String> {
        let out = Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                address,
                "-verify_return_error",
                "-verify_hostname",
                name,
                "-CAfile",
                &client.path("ca.crt"),
                "-cert",
                &client.path("tls.crt"),
                "-key",
                &client.path("tls.key"),
            ])
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        let all = text(&out);
        if out.status.success() && all.contains("Verify return code: 0 (ok)") {
            Ok(())
        } else {
            Err(all)
        }
    }

    fn status(&self) -> Option<Value> {
        let out = self
            .node
            .kubectl(&["get", "etcdcluster", NAME, "-o", "json"]);
        let cluster: Value = serde_json::from_slice(&out.stdout).ok()?;
        Some(cluster["status"].clone())
    }

    /// Serial of Secret `<cluster>-<suffix>` as the status reports it.
    fn certificate_serial(&self, suffix: &str) -> Option<String> {
        secret_serial(&self.status()?, suffix)
    }

    /// `data` of the Secret named in `status.clientSecret`.
    fn client_secret_data(&self) -> Option<Value> {
        let status = self.status()?;
        let name = status["clientSecret"].as_str()?;
        let out = self.node.kubectl(&["get", "secret", name, "-o", "json"]);
        let secret: Value = serde_json::from_slice(&out.stdout).ok()?;
        Some(secret["data"].clone())
    }

    fn server_serial_in_status(&self) -> String {
        self.status()
            .as_ref()
            .and_then(server_serial)
            .unwrap_or_else(|| panic!("no server certificate in the status\n{}", self.describe()))
    }

    /// `https://<ClusterIP>:2379`: the client Service (its IP is among the
    /// certificate's names).
    fn endpoint(&self) -> String {
        let ip =
            self.node
                .kubectl_ok(&["get", "service", NAME, "-o", "jsonpath={.spec.clusterIP}"]);
        format!("https://{}:2379", ip.trim())
    }

    /// The Secret named in `status.clientSecret`, as files.
    fn client_files(&self) -> ClientFiles {
        let status = self.status().expect("status");
        let secret = status["clientSecret"]
            .as_str()
            .expect("status.clientSecret");
        let out = self
            .node
            .kubectl_ok(&["get", "secret", secret, "-o", "json"]);
        let secret: Value = serde_json::from_str(&out).unwrap();
        let dir = tempfile::tempdir().unwrap();
        for key in ["ca.crt", "tls.crt", "tls.key"] {
            let encoded = secret["data"][key].as_str().expect(key);
            let decoded = decode_base64(encoded);
            std::fs::write(dir.path().join(key), decoded).unwrap();
        }
        ClientFiles { dir }
    }

    /// Serial of the certificate a new TLS connection to the client Service
    /// is served, as `openssl x509 -serial` prints it.
    fn served_serial(&self, client: &ClientFiles) -> Option<String> {
        let host = self.endpoint().trim_start_matches("https://").to_string();
        let script = format!(
            "openssl s_client -connect {host} -CAfile {} -cert {} -key {} </dev/null 2>/dev/null | openssl x509 -noout -serial",
            client.path("ca.crt"),
            client.path("tls.crt"),
            client.path("tls.key"),
        );
        let out: Output = Command::new("bash").args(["-c", &script]).output().ok()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        stdout.trim().strip_prefix("serial=").map(str::to_string)
    }

    fn describe(&self) -> String {
        let get = |args: &[&str]| text(&self.node.kubectl(args));
        format!(
            "--- EtcdCluster ---\n{}\n--- pods ---\n{}\n--- events ---\n{}\n--- operator log ---\n{}\n--- member logs ---\n{}",
            get(&["get", "etcdcluster", NAME, "-o", "yaml"]),
            get(&["get", "pods", "-o", "wide"]),
            get(&["get", "events", "--sort-by=.lastTimestamp"]),
            get(&["logs", "-n", OPERATOR_NAMESPACE, "deployment/ferrocd-operator", "--tail=40"]),
            (0..3)
                .map(|i| get(&["logs", &format!("{NAME}-{i}"), "--tail=15"]))
                .collect::<Vec<_>>()
                .join("\n---\n"),
        )
    }
}

pub(super) fn decode_base64(encoded: &str) -> Vec<u8> {
    let mut child = Command::new("base64")
        .arg("-d")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("base64");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(encoded.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "base64 -d");
    out.stdout
}
