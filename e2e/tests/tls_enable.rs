//! Turning TLS on for a running plain-text cluster, one member at a time,
//! with real ferrocd processes and a writer that never stops: the sequence
//! the operator follows (`operator/src/tls/enable.rs`), checked against the
//! real store before the operator relies on it.
//!
//! Each member gets TLS side ports first (peer and client listeners on both
//! schemes), then `member update` moves the peer URLs onto the TLS side
//! port, the main ports switch to TLS, the peer URLs move home, and the side
//! ports go. Only one member is ever down, so writes fail at most for an
//! election; every acknowledged write must be kept, and at the end a
//! plain-text client is refused while one with a certificate is served.

use std::time::{Duration, Instant};

use ferrocd_e2e::pki::{CertFiles, ClientCerts, Pki};
use ferrocd_e2e::writer::{Route, Writer};
use ferrocd_e2e::{etcdctl, free_port, Cluster, Server};

/// Longest time writes may fail during the whole change: an election
/// after the leader's restart, and a client's reconnect.
const MAX_OUTAGE: Duration = Duration::from_secs(5);

/// One member's ports: the main ones it started with and the TLS side ones.
#[derive(Clone)]
struct Ports {
    client: String,
    peer: String,
    side_client: String,
    side_peer: String,
}

impl Ports {
    fn of(member: &Server) -> Ports {
        let port = |url: &str| url.rsplit(':').next().unwrap().to_string();
        Ports {
            client: port(&member.client_url),
            peer: port(&member.peer_url),
            side_client: free_port().to_string(),
            side_peer: free_port().to_string(),
        }
    }
}

fn url(tls: bool, port: &str) -> String {
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://127.0.0.1:{port}")
}

/// Listeners as `(tls, port)`.
type Listeners = Vec<(bool, String)>;

/// The listeners of one step of the change: for peers, then for clients.
fn listeners(step: &str, p: &Ports) -> (Listeners, Listeners) {
    let (peer, client) = (p.peer.clone(), p.client.clone());
    let (side_peer, side_client) = (p.side_peer.clone(), p.side_client.clone());
    match step {
        "dual" => (
            vec![(false, peer), (true, side_peer)],
            vec![(false, client), (true, side_client)],
        ),
        "swap" => (
            vec![(true, peer), (true, side_peer)],
            vec![(true, client), (true, side_client)],
        ),
        "tls" => (vec![(true, peer)], vec![(true, client)]),
        other => panic!("no step {other}"),
    }
}

fn join(list: &[(bool, String)]) -> String {
    list.iter()
        .map(|(tls, port)| url(*tls, port))
        .collect::<Vec<_>>()
        .join(",")
}

/// Restarts `member` with the listeners of `step` and mutual TLS flags;
/// `advertised` is the peer URL the member list has for it.
async fn restart_onto(
    member: &mut Server,
    step: &str,
    ports: &Ports,
    tls: &TlsFiles,
    advertised: &str,
    initial_cluster: &str,
) {
    let (peer, client) = listeners(step, ports);
    member.terminate();
    member.set_flag("--listen-peer-urls", &join(&peer));
    member.set_flag("--listen-client-urls", &join(&client));
    member.set_flag("--advertise-client-urls", &join(&client));
    member.set_flag("--initial-advertise-peer-urls", advertised);
    member.set_flag("--initial-cluster", initial_cluster);
    for (flag, value) in tls.flags() {
        member.set_flag(&flag, &value);
    }
    // The harness talks to the first client listener.
    let (first_tls, first_port) = &client[0];
    let first_tls = *first_tls;
    member.client_url = url(first_tls, first_port);
    member.endpoint = format!("127.0.0.1:{first_port}");
    member.tls = first_tls.then(|| tls.client.clone());
    member.restart().await;
}

struct TlsFiles {
    member: CertFiles,
    ca: std::path::PathBuf,
    client: ClientCerts,
}

impl TlsFiles {
    fn flags(&self) -> Vec<(String, String)> {
        let (cert, key, ca) = (
            self.member.cert.display().to_string(),
            self.member.key.display().to_string(),
            self.ca.display().to_string(),
        );
        [
            ("--cert-file", cert.clone()),
            ("--key-file", key.clone()),
            ("--trusted-ca-file", ca.clone()),
            ("--client-cert-auth", "true".into()),
            ("--peer-cert-file", cert),
            ("--peer-key-file", key),
            ("--peer-trusted-ca-file", ca),
            ("--peer-client-cert-auth", "true".into()),
        ]
        .into_iter()
        .map(|(f, v)| (f.to_string(), v))
        .collect()
    }
}

/// Updates every member's peer URL to `url_of(ports)` through a member
/// that serves `flags`' scheme on `endpoint`, and waits until the list
/// shows them all.
fn move_peer_urls(
    cluster: &Cluster,
    ports: &[Ports],
    tls: bool,
    pick: impl Fn(&Ports) -> &str,
    client: &ClientCerts,
) {
    let flags = if cluster.members[0].tls.is_some() {
        client.etcdctl_flags()
    } else {
        Vec::new()
    };
    let with = |args: &[&str]| -> Vec<String> {
        flags
            .iter()
            .cloned()
            .chain(args.iter().map(|s| s.to_string()))
            .collect()
    };
    for (i, member) in cluster.members.iter().enumerate() {
        let id = member_id_hex(member);
        let new = url(tls, pick(&ports[i]));
        let args = with(&["member", "update", &id, &format!("--peer-urls={new}")]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = etcdctl(&cluster.members[0].endpoint, &args, None);
        assert!(
            out.status.success(),
            "member update {} -> {new}: {}",
            member.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let args = with(&["member", "list"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let list = etcdctl(&cluster.members[0].endpoint, &args, None);
    let text = String::from_utf8_lossy(&list.stdout).to_string();
    for p in ports {
        assert!(
            text.contains(&url(tls, pick(p))),
            "member list lacks {}: {text}",
            url(tls, pick(p))
        );
    }
}

/// The member's id in hex, from its own status.
fn member_id_hex(member: &Server) -> String {
    let rt = tokio::runtime::Handle::current();
    let status = tokio::task::block_in_place(|| rt.block_on(member.status())).expect("status");
    format!(
        "{:x}",
        status.header.expect("status has a header").member_id
    )
}

/// Restarts every member onto `step`, followers first, the leader last.
async fn roll(cluster: &mut Cluster, step: &str, ports: &[Ports], tls: &TlsFiles, adv: &[String]) {
    let leader = cluster.leader().await;
    let initial_cluster = cluster
        .members
        .iter()
        .zip(adv)
        .map(|(m, url)| format!("{}={url}", m.name))
        .collect::<Vec<_>>()
        .join(",");
    let order: Vec<usize> = (0..cluster.members.len())
        .filter(|&i| i != leader)
        .chain([leader])
        .collect();
    for i in order {
        restart_onto(
            &mut cluster.members[i],
            step,
            &ports[i],
            tls,
            &adv[i],
            &initial_cluster,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_comes_on_member_by_member_while_writes_go_on() {
    if !ferrocd_e2e::require_tool("etcdctl") {
        return;
    }
    let started = Instant::now();
    let mut pki = Pki::new("enable-ca");
    let tls = TlsFiles {
        member: pki.issue("member", "member"),
        ca: pki.ca(),
        client: pki.client("root"),
    };
    let mut cluster = Cluster::ferrocd(3, &[]).await;
    let ports: Vec<Ports> = cluster.members.iter().map(Ports::of).collect();
    let before: Vec<String> = (0..20).map(|i| format!("before/{i:02}")).collect();
    for key in &before {
        let put = cluster.members[0].etcdctl(&["put", key, key]);
        assert!(put.status.success());
    }
    let plain = ports
        .iter()
        .map(|p| format!("127.0.0.1:{}", p.client))
        .collect::<Vec<_>>()
        .join(",");
    let secure = ports
        .iter()
        .flat_map(|p| [url(true, &p.client), url(true, &p.side_client)])
        .collect::<Vec<_>>()
        .join(",");
    let writer = Writer::start(
        vec![
            Route::plain(&plain),
            Route::with_flags(&secure, tls.client.etcdctl_flags()),
        ],
        "during/",
        Duration::from_millis(30),
    );
    std::thread::sleep(Duration::from_millis(500));

    let plain_peer: Vec<String> = ports.iter().map(|p| url(false, &p.peer)).collect();
    let side_peer: Vec<String> = ports.iter().map(|p| url(true, &p.side_peer)).collect();
    let home_peer: Vec<String> = ports.iter().map(|p| url(true, &p.peer)).collect();

    roll(&mut cluster, "dual", &ports, &tls, &plain_peer).await;
    move_peer_urls(&cluster, &ports, true, |p| &p.side_peer, &tls.client);
    roll(&mut cluster, "swap", &ports, &tls, &side_peer).await;
    move_peer_urls(&cluster, &ports, true, |p| &p.peer, &tls.client);
    roll(&mut cluster, "tls", &ports, &tls, &home_peer).await;
    std::thread::sleep(Duration::from_millis(500));
    let report = writer.stop();
    let (acknowledged, outage) = (report.acknowledged, report.longest_outage);
    eprintln!(
        "TLS turned on in {:.1?}: {} writes acknowledged, {} attempts failed, longest time without an acknowledgement {outage:.1?}",
        started.elapsed(),
        acknowledged.len(),
        report.failed
    );
    assert!(outage < MAX_OUTAGE, "no write acknowledged for {outage:?}");
    // The outage bound is what shows the writes went on; how many fit in
    // depends on how fast etcdctl starts on a loaded machine.
    assert!(acknowledged.len() >= 5, "the writer wrote {acknowledged:?}");

    let secure_main = ports
        .iter()
        .map(|p| url(true, &p.client))
        .collect::<Vec<_>>()
        .join(",");
    let flags = tls.client.etcdctl_flags();
    let wanted: Vec<&String> = before.iter().chain(&acknowledged).collect();
    for m in &cluster.members {
        let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
        args.extend(["get", "", "--prefix", "--keys-only", "--consistency=s"]);
        // A follower may still be applying the last writes.
        let mut missing = Vec::new();
        for _ in 0..20 {
            let got = etcdctl(&m.endpoint, &args, None);
            let keys = String::from_utf8_lossy(&got.stdout).to_string();
            let have: std::collections::HashSet<&str> = keys.lines().collect();
            missing = wanted
                .iter()
                .filter(|k| !have.contains(k.as_str()))
                .map(|k| k.to_string())
                .collect();
            if missing.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(missing.is_empty(), "{} lacks {missing:?}", m.name);
    }
    let refused = etcdctl(
        &plain,
        &["--dial-timeout=1s", "--command-timeout=2s", "put", "k", "v"],
        None,
    );
    assert!(
        !refused.status.success(),
        "a plain-text client still writes"
    );
    let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
    args.extend(["member", "list"]);
    let list = etcdctl(&secure_main, &args, None);
    let list = String::from_utf8_lossy(&list.stdout).to_string();
    for p in &home_peer {
        assert!(list.contains(p), "member list lacks {p}: {list}");
    }
    assert!(!list.contains("http://"), "a plain URL is left: {list}");
}
