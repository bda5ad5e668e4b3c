//! What the snapshot tests share: a script of writes that leaves history,
//! a compaction and a lease behind, and the views of a server that must
//! survive a snapshot and a restore (every key now and at a past
//! revision, the leases), through etcdctl and the `ferrocd snapshot` tool.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::{ferrocd_bin, Kind, Server};

/// The standard output of a command that must have succeeded.
pub fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// etcdctl against `server`; must succeed.
pub fn etcdctl(server: &Server, args: &[&str]) -> String {
    ok(server.etcdctl(args), &format!("etcdctl {args:?}"))
}

/// etcdctl commands that need no server.
pub fn etcdctl_offline(args: &[&str]) -> String {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(args)
        .output()
        .expect("etcdctl");
    ok(out, &format!("etcdctl {args:?}"))
}

/// Parses JSON output, naming it on failure.
pub fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Puts, overwrites, deletes, a txn, a lease with a key attached and a
/// compaction. Returns the lease id (hex).
pub fn write_script(server: &Server) -> String {
    for (k, v) in [
        ("a", "1"),
        ("b", "2"),
        ("a", "11"),
        ("c", "3"),
        ("big", &"x".repeat(5000)),
    ] {
        etcdctl(server, &["put", k, v]);
    }
    etcdctl(server, &["del", "b"]);
    let txn = "version(\"a\") = \"2\"\n\nput d 4\ndel c\n\nput e 5\n\n";
    ok(
        server.etcdctl_with_input(&["txn"], Some(txn)),
        "etcdctl txn",
    );
    let grant = etcdctl(server, &["lease", "grant", "600"]);
    let lease = grant
        .split_whitespace()
        .nth(1)
        .expect("lease id")
        .to_string();
    etcdctl(server, &["put", "--lease", &lease, "leased", "v"]);
    etcdctl(server, &["put", "a", "111"]);
    etcdctl(server, &["compaction", "--physical", "5"]);
    etcdctl(server, &["put", "after", "z"]);
    lease
}

/// `etcdctl snapshot save` of `server` into `dir/name`.
pub fn save(server: &Server, dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    etcdctl(server, &["snapshot", "save", path.to_str().unwrap()]);
    path
}

/// `etcdctl snapshot status -w json` of a file.
pub fn status(path: &Path) -> Value {
    json(&etcdctl_offline(&[
        "snapshot",
        "status",
        "-w",
        "json",
        path.to_str().unwrap(),
    ]))
}

/// What a client sees of every key, at the current revision and at
/// `at` (a past revision).
pub fn view(server: &Server, at: i64) -> (Value, Value) {
    let mut now = json(&etcdctl(server, &["get", "", "--from-key", "-w", "json"]));
    let mut then = json(&etcdctl(
        server,
        &[
            "get",
            "",
            "--from-key",
            "-w",
            "json",
            "--rev",
            &at.to_string(),
        ],
    ));
    for v in [&mut now, &mut then] {
        let header = v["header"].as_object_mut().unwrap();
        header.remove("cluster_id");
        header.remove("member_id");
        header.remove("raft_term");
    }
    (now, then)
}

pub fn lease_view(server: &Server, lease: &str) -> (String, Value) {
    let list = etcdctl(server, &["lease", "list"]);
    let mut ttl = json(&etcdctl(
        server,
        &["lease", "timetolive", lease, "--keys", "-w", "json"],
    ));
    let ttl = ttl.as_object_mut().unwrap();
    ttl.remove("cluster_id");
    ttl.remove("member_id");
    ttl.remove("raft_term");
    ttl.remove("revision");
    // Counts down on both; granted TTL and keys must agree.
    ttl.remove("ttl");
    (list, Value::Object(ttl.clone()))
}

/// Runs `ferrocd` (the tool form) and returns its standard output.
pub fn ferrocd_tool(args: &[&str]) -> String {
    let out = Command::new(ferrocd_bin())
        .args(args)
        .output()
        .expect("ferrocd");
    ok(out, &format!("ferrocd {args:?}"))
}

/// The arguments of `snapshot restore` (etcdctl's, etcdutl's and
/// ferrocd's alike) that make `snapshot` the data directory of `server`, a
/// single member named `default` not started yet.
pub fn restore_args(snapshot: &Path, server: &Server) -> Vec<String> {
    let data_dir = server.data_dir();
    [
        "snapshot",
        "restore",
        snapshot.to_str().unwrap(),
        "--name",
        "default",
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--initial-cluster",
        &format!("default={}", server.peer_url),
        "--initial-advertise-peer-urls",
        &server.peer_url,
    ]
    .map(String::from)
    .to_vec()
}

/// `etcdctl snapshot restore` of `snapshot` into a new etcd's data
/// directory, which is then started.
pub async fn restore_into_etcd(snapshot: &Path) -> Server {
    let mut etcd = Server::prepare_https(Kind::Etcd, None, &[]);
    let args = restore_args(snapshot, &etcd);
    etcdctl_offline(&args.iter().map(String::as_str).collect::<Vec<_>>());
    etcd.launch();
    etcd.wait_ready().await;
    etcd
}

/// Every key as of revision `rev` (`etcdctl get --from-key --rev`), with
/// the header fields that name a cluster, member or term removed; or,
/// when the read fails, etcdctl's error text.
pub fn keys_at(server: &Server, rev: i64) -> Result<Value, String> {
    let out = server.etcdctl(&[
        "get",
        "",
        "--from-key",
        "-w",
        "json",
        "--rev",
        &rev.to_string(),
    ]);
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let error = stderr.lines().find(|l| l.starts_with("Error: "));
        return Err(error.unwrap_or(&stderr).to_string());
    }
    let mut v = json(&String::from_utf8_lossy(&out.stdout));
    let header = v["header"].as_object_mut().expect("a response header");
    header.remove("cluster_id");
    header.remove("member_id");
    header.remove("raft_term");
    Ok(v)
}

/// Users `root` and `reader` and role `readers` (read on `pub/`), so that
/// the auth buckets travel in a snapshot; auth itself stays off.
pub fn add_users(server: &Server) {
    for args in [
        &["user", "add", "root:rootpw", "--interactive=false"][..],
        &["user", "add", "reader:readerpw", "--interactive=false"],
        &["role", "add", "readers"],
        &[
            "role",
            "grant-permission",
            "readers",
            "read",
            "pub/",
            "--prefix=true",
        ],
        &["user", "grant-role", "reader", "readers"],
    ] {
        etcdctl(server, args);
    }
}

/// Users, one user and one role as etcdctl lists them.
pub fn auth_view(server: &Server) -> (String, String, String) {
    (
        etcdctl(server, &["user", "list"]),
        etcdctl(server, &["user", "get", "reader"]),
        etcdctl(server, &["role", "get", "readers"]),
    )
}

/// Every revision from 1 to `upto` reads the same on `a` and `b` (the
/// ones below the compaction fail the same way).
pub fn same_history(a: &Server, b: &Server, upto: i64) {
    for rev in 1..=upto {
        assert_eq!(
            keys_at(a, rev),
            keys_at(b, rev),
            "revision {rev}: {} and {}",
            a.name,
            b.name
        );
    }
}
