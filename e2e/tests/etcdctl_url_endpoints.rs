//! etcdctl 3.4 with its endpoints given as URLs, the usual form
//! (`--endpoints=http://127.0.0.1:PORT`), against ferrocd and etcd 3.4:
//! every command that takes endpoints succeeds on both, with the same
//! output where it is deterministic.
//!
//! `endpoint status` and `endpoint hashkv` dial each endpoint through
//! gRPC-Go's passthrough resolver, which sends the URL itself as the
//! HTTP/2 `:authority`; h2 alone resets such a request
//! (`store/src/authority`). Outputs are normalised as in `etcdctl.rs`: IDs
//! and URLs masked, and `endpoint health` timings, the fields of
//! `endpoint status` that legitimately differ (version, sizes, raft
//! indexes) and lease IDs.

use std::process::{Command, Output, Stdio};

use ferrocd_e2e::etcdctl_pair::{start_pair, Identity, Out};
use ferrocd_e2e::Server;
use serde_json::Value;

/// One server and what must be masked in its outputs.
struct Side {
    server: Server,
    id: Identity,
}

impl Side {
    fn etcdctl(&self, args: &[&str]) -> Output {
        ferrocd_e2e::etcdctl(&self.server.client_url, args, None)
    }

    /// Runs `etcdctl watch ...` for `seconds`, then stops it.
    fn watch_for(&self, seconds: u32, args: &[&str]) -> Output {
        Command::new("timeout")
            .arg(seconds.to_string())
            .arg("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.server.client_url))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("timeout etcdctl watch")
    }

    fn normalize(&self, out: &Output, leases: &[String]) -> Out {
        let mask = |s: &str| {
            let mut s = self.id.mask(s);
            for (i, lease) in leases.iter().enumerate() {
                s = s.replace(lease.as_str(), &format!("<LEASE#{}>", i + 1));
            }
            mask_took(&s)
        };
        Out::normalize(out, |s| mask_json(&mask(s)).trim_end().to_string(), mask)
    }
}

/// A ferrocd and an etcd, fresh and empty.
struct Pair {
    ferrocd: Side,
    etcd: Side,
    /// Lease IDs (hex) granted so far on each side: (ferrocd, etcd).
    leases: (Vec<String>, Vec<String>),
}

impl Pair {
    async fn start() -> Option<Pair> {
        let ((ferrocd, f), (etcd, e)) = start_pair().await?;
        Some(Pair {
            ferrocd: Side {
                server: ferrocd,
                id: f,
            },
            etcd: Side {
                server: etcd,
                id: e,
            },
            leases: Default::default(),
        })
    }

    /// Runs `run` on both sides at once, with the side's lease IDs; the
    /// raw outputs.
    fn both(&self, run: impl Fn(&Side, &[String]) -> Output + Sync) -> (Output, Output) {
        std::thread::scope(|s| {
            let f = s.spawn(|| run(&self.ferrocd, &self.leases.0));
            let e = run(&self.etcd, &self.leases.1);
            (f.join().expect("ferrocd side"), e)
        })
    }

    /// Runs `etcdctl args` on both; requires success and the same
    /// normalised output; returns it.
    fn ok(&self, args: &[&str]) -> Out {
        let out = self.same(&args.join(" "), self.both(|side, _| side.etcdctl(args)));
        assert_eq!(
            out.code,
            Some(0),
            "`etcdctl {}` failed on both",
            args.join(" ")
        );
        out
    }

    /// Runs `etcdctl args` on both, which must succeed; the outputs may
    /// differ (sizes, hashes in tables and simple output).
    fn succeeds(&self, args: &[&str]) -> (Out, Out) {
        let (f, e) = self.both(|side, _| side.etcdctl(args));
        let (f, e) = (
            self.ferrocd.normalize(&f, &self.leases.0),
            self.etcd.normalize(&e, &self.leases.1),
        );
        let what = args.join(" ");
        assert_eq!(e.code, Some(0), "`etcdctl {what}` failed on etcd: {e:?}");
        assert_eq!(f.code, Some(0), "`etcdctl {what}` failed on ferrocd: {f:?}");
        (f, e)
    }

    /// The same normalised output on both sides; returns it.
    fn same(&self, what: &str, (f, e): (Output, Output)) -> Out {
        let (f, e) = (
            self.ferrocd.normalize(&f, &self.leases.0),
            self.etcd.normalize(&e, &self.leases.1),
        );
        assert_eq!(
            f, e,
            "`etcdctl {what}` with a URL endpoint (left: ferrocd, right: etcd)"
        );
        f
    }

    /// `lease grant`: registers the new lease on both sides.
    fn grant(&mut self, ttl: &str) {
        let (f, e) = self.both(|side, _| side.etcdctl(&["lease", "grant", ttl]));
        for (out, leases) in [(&f, &mut self.leases.0), (&e, &mut self.leases.1)] {
            let stdout = String::from_utf8_lossy(&out.stdout);
            // "lease 694d7a3c1f3e4b05 granted with TTL(60s)"
            if let Some(id) = stdout.split_whitespace().nth(1) {
                leases.push(id.to_string());
            }
        }
        let n = self.leases.1.len();
        let out = self.same(&format!("lease grant {ttl}"), (f, e));
        assert_eq!(
            out.stdout,
            format!("lease <LEASE#{n}> granted with TTL({ttl}s)")
        );
    }
}

/// `endpoint health` timings: `took = 2.5ms` and `"took":"2.5ms"`.
fn mask_took(s: &str) -> String {
    let mut out = s.to_string();
    for (marker, end) in [("took = ", &[' ', '\n'][..]), ("\"took\":\"", &['"'][..])] {
        if let Some(i) = out.find(marker) {
            let from = i + marker.len();
            let to = out[from..].find(end).map_or(out.len(), |j| from + j);
            out.replace_range(from..to, "<TOOK>");
        }
    }
    out
}

/// In JSON output of `endpoint status` and `endpoint hashkv`, the fields
/// that legitimately differ between the two servers: version, sizes, raft
/// indexes (see `etcdctl.rs`), and the hash (etcd hashes its bolt pages,
/// ferrocd its own store). Other output unchanged.
fn mask_json(s: &str) -> String {
    let Ok(Value::Array(mut endpoints)) = serde_json::from_str::<Value>(s) else {
        return s.to_string();
    };
    for e in &mut endpoints {
        for (object, field) in [
            ("Status", "version"),
            ("Status", "dbSize"),
            ("Status", "dbSizeInUse"),
            ("Status", "raftIndex"),
            ("Status", "raftAppliedIndex"),
            ("HashKV", "hash"),
        ] {
            if let Some(v) = e.get_mut(object).and_then(|o| o.get_mut(field)) {
                *v = Value::from(format!("<{field}>"));
            }
        }
    }
    Value::Array(endpoints).to_string()
}

#[tokio::test]
async fn endpoint_status_and_hashkv_answer_url_endpoints_like_etcd() {
    let Some(p) = Pair::start().await else { return };
    p.ok(&["put", "a", "1"]);
    for command in ["status", "hashkv"] {
        for args in [
            &["endpoint", command][..],
            &["endpoint", command, "-w", "table"],
        ] {
            let (f, _) = p.succeeds(args);
            assert!(f.stdout.contains("<CLIENT_URL>"), "{args:?}: {f:?}");
        }
        for args in [
            &["endpoint", command, "-w", "json"][..],
            &["endpoint", command, "--cluster", "-w", "json"],
        ] {
            let out = p.ok(args);
            assert!(out.stdout.contains("<CLIENT_URL>"), "{args:?}: {out:?}");
        }
    }
    let status = p.ok(&["endpoint", "status", "-w", "json"]).stdout;
    let status: Value = serde_json::from_str(&status).expect("JSON");
    assert_eq!(status[0]["Status"]["leader"], "<MEMBER_ID>");
    assert_eq!(status[0]["Status"]["header"]["revision"], 2);
    let hash = p.ok(&["endpoint", "hashkv", "-w", "json"]).stdout;
    let hash: Value = serde_json::from_str(&hash).expect("JSON");
    assert_eq!(hash[0]["HashKV"]["header"]["revision"], 2);
}

#[tokio::test]
async fn every_other_command_answers_url_endpoints_like_etcd() {
    let Some(mut p) = Pair::start().await else {
        return;
    };
    assert_eq!(p.ok(&["put", "k", "v1"]).stdout, "OK");
    p.ok(&["put", "k", "v2"]);
    let got = p.ok(&["get", "k", "-w", "json"]).stdout;
    assert!(got.contains("\"mod_revision\":3"), "{got}");
    p.ok(&["get", "", "--from-key", "--keys-only"]);
    assert_eq!(p.ok(&["del", "k"]).stdout, "1");
    let watched = p.same(
        "watch --rev=2 k (stopped after 3 s)",
        p.both(|side, _| side.watch_for(3, &["watch", "--rev=2", "k"])),
    );
    assert_eq!(watched.stdout, "PUT\nk\nv1\nPUT\nk\nv2\nDELETE\nk");
    p.ok(&["endpoint", "health"]);
    p.ok(&["endpoint", "health", "-w", "json"]);
    p.ok(&["endpoint", "health", "--cluster"]);
    p.ok(&["member", "list", "-w", "json"]);
    assert_eq!(p.ok(&["alarm", "list"]).stdout, "");
    p.ok(&["defrag"]);
    assert_eq!(p.ok(&["compaction", "3"]).stdout, "compacted revision 3");
    p.grant("60");
    assert_eq!(p.ok(&["lease", "list"]).stdout, "found 1 leases\n<LEASE#1>");
    let revoked = p.same(
        "lease revoke <LEASE#1>",
        p.both(|side, leases| side.etcdctl(&["lease", "revoke", &leases[0]])),
    );
    assert_eq!(revoked.stdout, "lease <LEASE#1> revoked");
}
