//! The cert-manager scenario of the real-node suite. cert-manager itself
//! can not run here, so the test installs a `Certificate` CRD with
//! cert-manager's field names and enums (no unknown field survives its
//! structural schema) and plays cert-manager's part: for each Certificate
//! the operator renders from `examples/etcdcluster-cert-manager.yaml`
//! (scaled to one member), it signs a key with openssl from the
//! Certificate's own common name, DNS names, IPs and usages, and writes the
//! Secret as cert-manager would. The member must start on those Secrets, the
//! client Service must serve the test issuer's certificate for its name,
//! and etcdctl with `status.clientSecret` must write and read.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ferrocd_e2e::etcdctl;
use ferrocd_e2e::k8s::{text, wait_for, Node};
use serde_json::Value;

use super::{IMAGE_REPOSITORY, IMAGE_TAG, OPERATOR_NAMESPACE};

/// Name of the EtcdCluster in examples/etcdcluster-cert-manager.yaml.
const NAME: &str = "ferrocd-cm";

/// A `Certificate` CRD restricted to the fields the operator writes, with
/// cert-manager's enums for them.
const CERTIFICATE_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: certificates.cert-manager.io
spec:
  group: cert-manager.io
  names: {kind: Certificate, listKind: CertificateList, plural: certificates, singular: certificate}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        required: [spec]
        properties:
          spec:
            type: object
            required: [issuerRef, secretName]
            properties:
              secretName: {type: string}
              commonName: {type: string}
              dnsNames: {type: array, items: {type: string}}
              ipAddresses: {type: array, items: {type: string}}
              duration: {type: string}
              renewBefore: {type: string}
              usages:
                type: array
                items:
                  type: string
                  enum: [signing, digital signature, content commitment, key encipherment, key agreement, data encipherment, cert sign, crl sign, encipher only, decipher only, any, server auth, client auth, code signing, email protection, s/mime, ipsec end system, ipsec tunnel, ipsec user, timestamping, ocsp signing, microsoft sgc, netscape sgc]
              issuerRef:
                type: object
                required: [name]
                properties:
                  name: {type: string}
                  kind: {type: string}
                  group: {type: string}
              privateKey:
                type: object
                properties:
                  algorithm: {type: string, enum: [RSA, ECDSA, Ed25519]}
                  size: {type: integer}
                  encoding: {type: string, enum: [PKCS1, PKCS8]}
                  rotationPolicy: {type: string, enum: [Never, Always]}
          status:
            type: object
            x-kubernetes-preserve-unknown-fields: true
"#;

/// Runs the scenario on `node`, where the operator is installed.
pub fn issuer_ref_certificates_signed_outside_serve_the_cluster(node: &Node) {
    let started = Instant::now();
    let crd = node.kubectl_with_input(&["apply", "-f", "-"], Some(CERTIFICATE_CRD));
    assert!(crd.status.success(), "Certificate CRD: {}", text(&crd));
    node.kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "crd/certificates.cert-manager.io",
        "--timeout=30s",
    ]);
    apply_one_member_example(node);
    let certificates = wait_for(
        "the operator's four Certificates",
        Duration::from_secs(60),
        || {
            let out = node.kubectl(&["get", "certificates.cert-manager.io", "-o", "json"]);
            let list: Value = serde_json::from_slice(&out.stdout).ok()?;
            let items = list["items"].as_array()?.clone();
            (items.len() == 4).then_some(items)
        },
        || describe(node),
    );
    let issuer = tempfile::tempdir().unwrap();
    let ca = make_ca(issuer.path());
    for certificate in &certificates {
        let spec = &certificate["spec"];
        assert_eq!(spec["issuerRef"]["name"], "etcd-ca", "{spec}");
        assert_eq!(
            spec["privateKey"]["encoding"], "PKCS8",
            "kept by the schema: {spec}"
        );
        sign_as_cert_manager(node, issuer.path(), &ca, spec);
    }
    let server = certificates
        .iter()
        .find(|c| c["spec"]["secretName"] == format!("{NAME}-server-tls"))
        .expect("server Certificate");
    let dns = strings(&server["spec"]["dnsNames"]);
    assert!(
        dns.contains(&format!("{NAME}-0.{NAME}-peer.default.svc")),
        "{dns:?}"
    );

    let client_secret = wait_for(
        "the cert-manager cluster ready with CertificatesReady",
        Duration::from_secs(120),
        || {
            let status = status(node);
            let certificates_ready = status["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "CertificatesReady" && c["status"] == "True");
            (status["readyReplicas"] == 1 && certificates_ready)
                .then(|| status["clientSecret"].as_str().map(str::to_string))
                .flatten()
        },
        || describe(node),
    );
    assert_eq!(client_secret, format!("{NAME}-client-tls"));
    let client = issuer.path().join(&client_secret);
    let flags = [
        format!("--cacert={}", ca.display()),
        format!("--cert={}", client.join("tls.crt").display()),
        format!("--key={}", client.join("tls.key").display()),
    ];
    let ip = node.kubectl_ok(&["get", "service", NAME, "-o", "jsonpath={.spec.clusterIP}"]);
    let endpoint = format!("https://{}:2379", ip.trim());
    let args = |extra: &[&'static str]| -> Vec<String> {
        flags
            .iter()
            .cloned()
            .chain(extra.iter().map(|s| s.to_string()))
            .collect()
    };
    let put_args = args(&["put", "cm/k", "v"]);
    let put = etcdctl(
        &endpoint,
        &put_args.iter().map(String::as_str).collect::<Vec<_>>(),
        None,
    );
    assert!(put.status.success(), "put: {}", text(&put));
    let get_args = args(&["get", "cm/k", "--print-value-only"]);
    let get = etcdctl(
        &endpoint,
        &get_args.iter().map(String::as_str).collect::<Vec<_>>(),
        None,
    );
    assert_eq!(
        String::from_utf8_lossy(&get.stdout).trim(),
        "v",
        "{}",
        text(&get)
    );
    let verify = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("{}:2379", ip.trim()),
            "-verify_return_error",
            "-verify_hostname",
            &format!("{NAME}.default.svc"),
            "-CAfile",
            &ca.display().to_string(),
            "-cert",
            &client.join("tls.crt").display().to_string(),
            "-key",
            &client.join("tls.key").display().to_string(),
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        text(&verify).contains("Verify return code: 0 (ok)"),
        "the client Service serves the issuer's certificate for its name: {}",
        text(&verify)
    );
    node.kubectl_ok(&["delete", "etcdcluster", NAME, "--wait=false"]);
    eprintln!(
        "cert-manager issuerRef: 4 Certificates rendered, signed outside, 1 member served them in {:.1?}",
        started.elapsed()
    );
}

fn apply_one_member_example(node: &Node) {
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/etcdcluster-cert-manager.yaml"),
    )
    .unwrap();
    let manifest = example
        .replacen(
            "\nspec:\n",
            &format!("\nspec:\n  image: {IMAGE_REPOSITORY}:{IMAGE_TAG}\n"),
            1,
        )
        .replacen("replicas: 3", "replicas: 1", 1)
        .replacen("    size: 1Gi", "    emptyDir: {}", 1);
    let apply = node.kubectl_with_input(&["apply", "-f", "-"], Some(&manifest));
    assert!(apply.status.success(), "kubectl apply: {}", text(&apply));
}

/// A self-signed CA in `dir` (`ca.crt`, `ca.key`), as the test's issuer.
fn make_ca(dir: &Path) -> std::path::PathBuf {
    openssl(
        dir,
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
         -keyout ca.key -out ca.crt -subj /CN=e2e-issuer -days 1 \
         -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign",
    );
    dir.join("ca.crt")
}

/// What cert-manager does for `spec`: a new key, a certificate with the
/// spec's names and usages from the issuer, the Secret `spec.secretName`.
fn sign_as_cert_manager(node: &Node, dir: &Path, ca: &Path, spec: &Value) {
    let secret = spec["secretName"].as_str().expect("secretName");
    let out = dir.join(secret);
    std::fs::create_dir(&out).unwrap();
    let mut sans: Vec<String> = strings(&spec["dnsNames"])
        .iter()
        .map(|d| format!("DNS:{d}"))
        .collect();
    sans.extend(
        strings(&spec["ipAddresses"])
            .iter()
            .map(|ip| format!("IP:{ip}")),
    );
    let usages = strings(&spec["usages"]);
    let pick = |table: &[(&str, &str)]| -> String {
        table
            .iter()
            .filter(|(usage, _)| usages.iter().any(|u| u == usage))
            .map(|(_, openssl)| *openssl)
            .collect::<Vec<_>>()
            .join(",")
    };
    let key_usage = pick(&[
        ("digital signature", "digitalSignature"),
        ("key encipherment", "keyEncipherment"),
    ]);
    let extended = pick(&[("server auth", "serverAuth"), ("client auth", "clientAuth")]);
    let mut extensions = format!("keyUsage={key_usage}\nextendedKeyUsage={extended}\n");
    if !sans.is_empty() {
        extensions.push_str(&format!("subjectAltName={}\n", sans.join(",")));
    }
    std::fs::write(out.join("ext.cnf"), extensions).unwrap();
    let common_name = spec["commonName"].as_str().unwrap_or(secret);
    openssl(
        &out,
        &format!(
            "openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
             -keyout tls.key -out tls.csr -subj '/CN={common_name}' && \
             openssl x509 -req -in tls.csr -CA {ca} -CAkey {ca_key} -CAcreateserial -days 1 \
             -extfile ext.cnf -out tls.crt",
            ca = ca.display(),
            ca_key = ca.with_extension("key").display(),
        ),
    );
    let from = |key: &str, path: &Path| format!("--from-file={key}={}", path.display());
    node.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        secret,
        "--type=kubernetes.io/tls",
        &from("tls.crt", &out.join("tls.crt")),
        &from("tls.key", &out.join("tls.key")),
        &from("ca.crt", ca),
    ]);
}

fn openssl(dir: &Path, script: &str) {
    let out = Command::new("bash")
        .args(["-c", script])
        .current_dir(dir)
        .output()
        .expect("bash");
    assert!(out.status.success(), "{script}: {}", text(&out));
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn status(node: &Node) -> Value {
    node.etcdcluster_status(NAME)
}

fn describe(node: &Node) -> String {
    let get = |args: &[&str]| text(&node.kubectl(args));
    format!(
        "--- EtcdCluster ---\n{}\n--- Certificates ---\n{}\n--- pods ---\n{}\n--- operator log ---\n{}\n--- member log ---\n{}",
        get(&["get", "etcdcluster", NAME, "-o", "yaml"]),
        get(&["get", "certificates.cert-manager.io", "-o", "yaml"]),
        get(&["get", "pods", "-o", "wide"]),
        get(&["logs", "-n", OPERATOR_NAMESPACE, "deployment/ferrocd-operator", "--tail=30"]),
        get(&["logs", &format!("{NAME}-0"), "--tail=20"]),
    )
}
