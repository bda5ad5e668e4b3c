//! TLS on the client port, against etcd 3.4 and ferrocd alike: etcdctl
//! over mutual TLS with the outputs compared, the certificates both refuse
//! (none, another CA's, expired, revoked), certificate rotation under load,
//! `--auto-tls`, `--listen-metrics-urls`, and the startup errors for bad
//! certificate files.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use ferrocd_e2e::etcdctl_pair::{Identity, Out};
use ferrocd_e2e::pki::{CertFiles, ClientCerts, Pki};
use ferrocd_e2e::{etcdctl, free_port, on_etcd_and_ferrocd, require_tool, Kind, Server};
use ferrocd_proto::etcdserverpb::kv_client::KvClient;
use ferrocd_proto::etcdserverpb::PutRequest;

/// The server flags for mutual TLS with `server`'s files and `pki`'s CA.
fn mtls_flags(pki: &Pki, server: &CertFiles) -> Vec<String> {
    vec![
        format!("--cert-file={}", server.cert.display()),
        format!("--key-file={}", server.key.display()),
        format!("--trusted-ca-file={}", pki.ca().display()),
        "--client-cert-auth=true".to_string(),
    ]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Starts `kind` serving `https://` with mutual TLS; `None` when etcd is
/// missing outside CI.
async fn mtls_server(kind: Kind, pki: &mut Pki, extra: &[&str]) -> Option<Server> {
    if kind == Kind::Etcd && !require_tool("etcd") {
        return None;
    }
    let server_cert = pki.issue("server", "server");
    let client = pki.client("root");
    let mut flags = mtls_flags(pki, &server_cert);
    flags.extend(extra.iter().map(|s| s.to_string()));
    Some(Server::start_https(kind, client, &strs(&flags)).await)
}

fn normalize(id: &Identity, out: &Output) -> Out {
    Out::normalize(
        out,
        |s| mask_took(&id.mask(s)).trim_end().to_string(),
        |l| mask_took(&id.mask(l)),
    )
}

#[tokio::test]
async fn etcdctl_over_mutual_tls_answers_as_etcd_does() {
    if !require_tool("etcdctl") {
        return;
    }
    let mut pki = Pki::new("e2e-ca");
    let (Some(ferrocd), Some(etcd)) = (
        mtls_server(Kind::Ferrocd, &mut pki, &[]).await,
        mtls_server(Kind::Etcd, &mut pki, &[]).await,
    ) else {
        return;
    };
    let (f_id, e_id) = (Identity::of(&ferrocd).await, Identity::of(&etcd).await);
    // (command, whether it succeeds)
    let script: &[(&[&str], bool)] = &[
        (&["put", "a", "1"], true),
        (&["put", "b", "2", "-w", "json"], true),
        (&["get", "a", "-w", "json"], true),
        (&["get", "", "--prefix", "--keys-only"], true),
        (&["get", "a", "--rev=1", "-w", "json"], true),
        (&["del", "b", "-w", "json"], true),
        (&["get", "b", "-w", "json"], true),
        (&["member", "list", "-w", "json"], true),
        (&["compaction", "99"], false),
        (&["compaction", "2"], true),
        (&["endpoint", "health"], true),
    ];
    for &(args, succeeds) in script {
        let f = normalize(&f_id, &ferrocd.etcdctl(args));
        let e = normalize(&e_id, &etcd.etcdctl(args));
        assert_eq!(
            f,
            e,
            "`etcdctl {}` differs over TLS (left: ferrocd, right: etcd)",
            args.join(" ")
        );
        assert_eq!(
            f.code == Some(0),
            succeeds,
            "`etcdctl {}`: {}",
            args.join(" "),
            f.stderr
        );
    }
    // With the endpoint as an https:// URL (etcdctl then sends the URL
    // as the request's authority).
    for args in [
        &["endpoint", "status"][..],
        &["endpoint", "hashkv"],
        &["defrag"],
    ] {
        for server in [&ferrocd, &etcd] {
            let mut all = server.tls.as_ref().unwrap().etcdctl_flags();
            all.extend(args.iter().map(|s| s.to_string()));
            let out = etcdctl(&server.client_url, &strs(&all), None);
            assert!(
                out.status.success(),
                "{:?}: `etcdctl --endpoints={} {}`: {}",
                server.kind,
                server.client_url,
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let txn = "mod(\"a\") > \"0\"\n\nput a 3\n\nput a 4\n\n";
    let f = ferrocd.etcdctl_with_input(&["txn", "-w", "json"], Some(txn));
    let e = etcd.etcdctl_with_input(&["txn", "-w", "json"], Some(txn));
    assert_eq!(normalize(&f_id, &f), normalize(&e_id, &e), "txn over TLS");
    assert_eq!(f.status.code(), Some(0));
}

/// `endpoint health`'s timing, the one part that differs run to run.
fn mask_took(s: &str) -> String {
    s.lines()
        .map(|l| match l.find("took = ") {
            Some(i) => format!("{}<TOOK>", &l[..i + "took = ".len()]),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A client certificate the server must refuse: the put fails on etcd and
/// on ferrocd, and nothing is written.
/// `bad_client` gets the server's CA and another one.
async fn refuses(kind: Kind, bad_client: impl FnOnce(&mut Pki, &mut Pki) -> Vec<String>) {
    let mut pki = Pki::new("e2e-ca");
    let mut other = Pki::new("other-ca");
    let Some(server) = mtls_server(kind, &mut pki, &[]).await else {
        return;
    };
    let flags = bad_client(&mut pki, &mut other);
    let out = server.etcdctl_as(
        &flags,
        &[
            "--command-timeout=2s",
            "--dial-timeout=2s",
            "put",
            "refused",
            "x",
        ],
        None,
    );
    assert_ne!(
        out.status.code(),
        Some(0),
        "{kind:?} accepted a bad client certificate: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let get = server.etcdctl(&["get", "refused", "--print-value-only"]);
    assert_eq!(
        get.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&get.stderr)
    );
    assert!(get.stdout.is_empty(), "a refused client wrote a key");
}

async fn a_client_without_a_certificate_is_refused(kind: Kind) {
    refuses(kind, |pki, _| {
        vec![format!("--cacert={}", pki.ca().display())]
    })
    .await;
}

async fn a_certificate_from_another_ca_is_refused(kind: Kind) {
    refuses(kind, |pki, other| {
        let stranger = other.client("root");
        vec![
            format!("--cacert={}", pki.ca().display()),
            format!("--cert={}", stranger.cert.display()),
            format!("--key={}", stranger.key.display()),
        ]
    })
    .await;
}

async fn an_expired_client_certificate_is_refused(kind: Kind) {
    refuses(kind, |pki, _| {
        let expired = pki.issue_expired("expired", "root");
        vec![
            format!("--cacert={}", pki.ca().display()),
            format!("--cert={}", expired.cert.display()),
            format!("--key={}", expired.key.display()),
        ]
    })
    .await;
}

async fn a_revoked_client_certificate_is_refused_and_others_are_not(kind: Kind) {
    if kind == Kind::Etcd && !require_tool("etcd") {
        return;
    }
    let mut pki = Pki::new("e2e-ca");
    let revoked = pki.issue("revoked", "root");
    let good = pki.client("good");
    let crl = pki.crl("crl.pem", &[&revoked]);
    let server_cert = pki.issue("server", "server");
    let mut flags = mtls_flags(&pki, &server_cert);
    flags.push(format!("--client-crl-file={}", crl.display()));
    let server = Server::start_https(kind, good.clone(), &strs(&flags)).await;
    let bad = vec![
        format!("--cacert={}", pki.ca().display()),
        format!("--cert={}", revoked.cert.display()),
        format!("--key={}", revoked.key.display()),
    ];
    let out = server.etcdctl_as(
        &bad,
        &["--command-timeout=2s", "--dial-timeout=2s", "put", "k", "v"],
        None,
    );
    assert_ne!(
        out.status.code(),
        Some(0),
        "{kind:?} accepted a revoked certificate"
    );
    let out = server.etcdctl(&["put", "k", "v"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{kind:?} refused a good certificate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

on_etcd_and_ferrocd!(
    a_client_without_a_certificate_is_refused,
    a_certificate_from_another_ca_is_refused,
    an_expired_client_certificate_is_refused,
    a_revoked_client_certificate_is_refused_and_others_are_not,
    rotated_certificates_reach_new_connections_without_a_failed_request,
    listen_metrics_urls_serve_metrics_in_plain_http,
    http_endpoints_answer_on_the_tls_client_port,
);

/// Certificate files laid out as Kubernetes mounts a Secret: `tls.crt`
/// and `tls.key` are links through `..data`, which a rotation swaps in
/// one rename, so the pair on disk is always consistent.
struct MountedSecret {
    dir: PathBuf,
    generation: usize,
}

impl MountedSecret {
    fn new(dir: &Path, files: &CertFiles) -> MountedSecret {
        let mut secret = MountedSecret {
            dir: dir.join("secret"),
            generation: 0,
        };
        std::fs::create_dir_all(&secret.dir).unwrap();
        secret.publish(files);
        for name in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(format!("..data/{name}"), secret.dir.join(name)).unwrap();
        }
        secret
    }

    fn publish(&mut self, files: &CertFiles) {
        self.generation += 1;
        let version = self.dir.join(format!("..v{}", self.generation));
        std::fs::create_dir(&version).unwrap();
        std::fs::copy(&files.cert, version.join("tls.crt")).unwrap();
        std::fs::copy(&files.key, version.join("tls.key")).unwrap();
        let tmp = self.dir.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(format!("..v{}", self.generation), &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
    }

    fn cert(&self) -> PathBuf {
        self.dir.join("tls.crt")
    }

    fn key(&self) -> PathBuf {
        self.dir.join("tls.key")
    }
}

/// A new TLS connection to `server` with `client`'s files.
async fn tls_connect(
    server: &Server,
    client: &ClientCerts,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for ca in rustls_pki_types::CertificateDer::pem_file_iter(&client.ca).unwrap() {
        roots.add(ca.unwrap()).unwrap();
    }
    let chain = rustls_pki_types::CertificateDer::pem_file_iter(&client.cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(&client.key).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .unwrap();
    let tcp = tokio::net::TcpStream::connect(&server.endpoint)
        .await
        .unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("handshake")
}

/// The certificate a new TLS connection is served (whole: as good as its
/// serial number for telling two apart).
async fn served_serial(server: &Server, client: &ClientCerts) -> Vec<u8> {
    let tls = tls_connect(server, client).await;
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    leaf.as_ref().to_vec()
}

async fn http_endpoints_answer_on_the_tls_client_port(kind: Kind) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut pki = Pki::new("e2e-ca");
    let Some(server) = mtls_server(kind, &mut pki, &[]).await else {
        return;
    };
    let client = server.tls.clone().unwrap();
    for path in ["/health", "/metrics"] {
        let mut tls = tls_connect(&server, &client).await;
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        tls.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut raw)).await;
        let text = String::from_utf8_lossy(&raw);
        assert!(
            text.starts_with("HTTP/1.1 200"),
            "{kind:?} GET {path} over TLS: {text}"
        );
        let expected = if path == "/health" {
            "\"health\":\"true\""
        } else {
            "etcd_server_has_leader 1"
        };
        assert!(
            text.contains(expected),
            "{kind:?} GET {path} over TLS: {text}"
        );
    }
}

async fn rotated_certificates_reach_new_connections_without_a_failed_request(kind: Kind) {
    if kind == Kind::Etcd && !require_tool("etcd") {
        return;
    }
    let mut pki = Pki::new("e2e-ca");
    let first = pki.issue("server-1", "server");
    let second = pki.issue("server-2", "server");
    let client = pki.client("root");
    let secret = MountedSecret::new(pki.dir(), &first);
    let flags = vec![
        format!("--cert-file={}", secret.cert().display()),
        format!("--key-file={}", secret.key().display()),
        format!("--trusted-ca-file={}", pki.ca().display()),
        "--client-cert-auth=true".to_string(),
    ];
    let server = Server::start_https(kind, client.clone(), &strs(&flags)).await;
    let before = served_serial(&server, &client).await;

    // Load: puts over one long-lived connection, and each on a new one.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let channel = server.channel().await.unwrap();
    let load = {
        let (stop, server_url) = (stop.clone(), server.client_url.clone());
        let fresh = server.tls.clone().unwrap();
        tokio::spawn(async move {
            let mut kv = KvClient::new(channel);
            let (mut ok, mut failed) = (0u32, Vec::new());
            let mut i = 0u32;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                i += 1;
                let put = PutRequest {
                    key: format!("rotation/{i}").into_bytes(),
                    value: b"v".to_vec(),
                    ..Default::default()
                };
                match kv.put(put.clone()).await {
                    Ok(_) => ok += 1,
                    Err(e) => failed.push(format!("long-lived: {e}")),
                }
                match new_connection_put(&server_url, &fresh, put).await {
                    Ok(()) => ok += 1,
                    Err(e) => failed.push(format!("new connection: {e}")),
                }
            }
            (ok, failed)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut secret = secret;
    secret.publish(&second);
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let served = served_serial(&server, &client).await;
        if served != before {
            break served;
        }
        assert!(
            Instant::now() < deadline,
            "{kind:?} kept serving the old certificate"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (ok, failed) = load.await.unwrap();
    assert!(
        failed.is_empty(),
        "{kind:?}: {} requests failed: {failed:?}",
        failed.len()
    );
    assert!(ok > 10, "too little load to show anything: {ok} requests");
    assert_eq!(
        after,
        std::fs::read(&second.cert)
            .map(|pem| {
                use rustls_pki_types::pem::PemObject;
                rustls_pki_types::CertificateDer::from_pem_slice(&pem)
                    .unwrap()
                    .as_ref()
                    .to_vec()
            })
            .unwrap(),
        "the new certificate is the one served"
    );
}

async fn new_connection_put(url: &str, tls: &ClientCerts, put: PutRequest) -> Result<(), String> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| e.to_string());
    let config = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(read(&tls.ca)?))
        .identity(tonic::transport::Identity::from_pem(
            read(&tls.cert)?,
            read(&tls.key)?,
        ));
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())
        .map_err(|e| e.to_string())?
        .tls_config(config)
        .map_err(|e| e.to_string())?
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    KvClient::new(channel)
        .put(put)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

async fn listen_metrics_urls_serve_metrics_in_plain_http(kind: Kind) {
    let port = free_port();
    let mut pki = Pki::new("e2e-ca");
    let metrics = format!("--listen-metrics-urls=http://127.0.0.1:{port}");
    let Some(_server) = mtls_server(kind, &mut pki, &[&metrics]).await else {
        return;
    };
    for path in ["/metrics", "/health"] {
        let (status, body) = http_get(port, path).await;
        assert_eq!(status, 200, "{kind:?} GET {path}: {body}");
        if path == "/metrics" {
            assert!(
                body.contains("etcd_server_has_leader 1"),
                "{kind:?}: {body}"
            );
        } else {
            assert!(body.contains("\"health\":\"true\""), "{kind:?}: {body}");
        }
    }
}

/// A plain HTTP/1.1 GET on loopback: (status, body).
async fn http_get(port: u16, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the metrics port");
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut raw))
        .await
        .expect("response in time")
        .unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

#[tokio::test]
async fn auto_tls_serves_https_with_a_self_signed_certificate() {
    if !require_tool("etcdctl") {
        return;
    }
    let client_port = free_port();
    let peer_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("https://127.0.0.1:{client_port}");
    let mut child = std::process::Command::new(ferrocd_e2e::ferrocd_bin())
        .args([
            "--auto-tls".to_string(),
            format!("--data-dir={}", dir.path().join("data").display()),
            format!("--listen-client-urls={url}"),
            format!("--advertise-client-urls={url}"),
            format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"),
            format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"),
            format!("--initial-cluster=default=http://127.0.0.1:{peer_port}"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let endpoint = format!("127.0.0.1:{client_port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let insecure = ["--insecure-skip-tls-verify", "--insecure-transport=false"];
    let put = loop {
        let mut args = insecure.to_vec();
        args.extend(["put", "auto", "tls"]);
        let out = etcdctl(&endpoint, &args, None);
        if out.status.success() || Instant::now() > deadline {
            break out;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let plain = etcdctl(&endpoint, &["--command-timeout=2s", "get", "auto"], None);
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    assert!(
        !plain.status.success(),
        "plain text accepted on an https listener"
    );
    let cert = dir.path().join("data/fixtures/client/cert.pem");
    assert!(
        cert.exists(),
        "no self-signed certificate at {}",
        cert.display()
    );
}

/// Starts ferrocd with `args` and returns its exit code and stderr.
fn start_fails(args: &[String]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(ferrocd_e2e::ferrocd_bin())
        .arg(format!("--data-dir={}", dir.path().join("data").display()))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn bad_certificate_files_stop_the_start_with_a_clear_error() {
    let mut pki = Pki::new("e2e-ca");
    let a = pki.issue("a", "a");
    let b = pki.issue("b", "b");
    let https = "--listen-client-urls=https://127.0.0.1:1".to_string();
    let cases = [
        (
            vec![
                "--cert-file=/nonexistent/cert.pem".to_string(),
                format!("--key-file={}", a.key.display()),
                https.clone(),
            ],
            "/nonexistent/cert.pem",
        ),
        (
            vec![
                format!("--cert-file={}", a.cert.display()),
                format!("--key-file={}", b.key.display()),
                https.clone(),
            ],
            "client TLS",
        ),
        (
            vec![
                format!("--cert-file={}", a.cert.display()),
                format!("--key-file={}", a.key.display()),
                format!("--trusted-ca-file={}", a.key.display()),
                https.clone(),
            ],
            "no PEM block",
        ),
        (
            vec![https.clone()],
            "must be provided for client url https://127.0.0.1:1",
        ),
        (
            vec![format!("--cert-file={}", a.cert.display()), https],
            "KeyFile and CertFile must both be present",
        ),
    ];
    for (args, expect) in cases {
        let (code, stderr) = start_fails(&args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(expect),
            "{args:?}: expected {expect:?} in {stderr}"
        );
    }
}
