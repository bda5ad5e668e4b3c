//! etcdctl 3.4 `watch`, `lease`, `lock` and `elect` against ferrocd and
//! against etcd 3.4, with the outputs compared.
//!
//! Each test starts one ferrocd and one etcd and runs the same scenario
//! against both at the same time (one thread each). A scenario records a
//! transcript: every etcdctl command's exit code, stdout and stderr (for
//! long-running commands such as `watch`, what they printed until they were
//! stopped). The two transcripts must be identical after normalising what
//! must differ between two independently started servers:
//!
//! * cluster and member IDs (decimal and hex), the endpoint and the client
//!   and peer URLs;
//! * lease IDs, which servers generate: each lease is registered when a
//!   command reveals it (`lease grant`, a `lock`/`elect` key) and replaced,
//!   in decimal and in padded and unpadded hex, by `<LEASE#n>` in the order
//!   they were revealed;
//! * the remaining TTL in `lease timetolive` (checked to be within two
//!   seconds of the granted TTL first);
//! * the order of `lease list` (etcd lists in map order) and the number of
//!   identical repeated lines of a running `lease keep-alive` (one per
//!   keep-alive, timing-dependent);
//! * etcdctl's own stderr log lines: the timestamp and client id;
//! * the raft term where the fresh servers' terms differ (a KNOWN
//!   DIFFERENCE covered in `etcdctl.rs`).
//!
//! Timing properties (a second `lock` contender waits until the first's
//! command has exited; a lease that is no longer kept alive frees its lock;
//! an elected leader stays until its lease goes) are asserted on both
//! servers.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ferrocd_e2e::etcdctl_pair::{start_pair, Identity, Out};
use ferrocd_e2e::Server;
use serde_json::Value;

/// One server and what must be masked in its outputs.
struct Side {
    server: Server,
    name: &'static str,
    id: Identity,
    /// Lease IDs in the order commands revealed them.
    leases: Mutex<Vec<i64>>,
}

/// What a scenario saw: (what ran, its normalised output), in order.
#[derive(Default, Debug)]
struct Transcript(Vec<(String, Out)>);

impl Transcript {
    fn push(&mut self, what: impl Into<String>, out: Out) {
        self.0.push((what.into(), out));
    }
}

impl Side {
    fn new(server: Server, id: Identity) -> Side {
        Side {
            name: id.name,
            server,
            id,
            leases: Mutex::new(Vec::new()),
        }
    }

    /// Remembers a lease ID the server generated; its number.
    fn register(&self, id: i64) -> usize {
        let mut leases = self.leases.lock().unwrap();
        if let Some(i) = leases.iter().position(|l| *l == id) {
            return i + 1;
        }
        leases.push(id);
        leases.len()
    }

    /// Registers a lease ID written in hex, as etcdctl writes them.
    fn register_hex(&self, hex: &str) -> i64 {
        let id = i64::from_str_radix(hex, 16)
            .unwrap_or_else(|e| panic!("{}: lease id {hex:?}: {e}", self.name));
        self.register(id);
        id
    }

    fn mask(&self, s: &str) -> String {
        let mut s = s.to_string();
        let leases = self.leases.lock().unwrap().clone();
        // Padded hex first: unpadded hex is a substring of it.
        let forms: [fn(i64) -> String; 3] = [
            |id| format!("{id:016x}"),
            |id| format!("{id:x}"),
            |id| id.to_string(),
        ];
        for form in forms {
            for (i, id) in leases.iter().enumerate() {
                s = s.replace(&form(*id), &format!("<LEASE#{}>", i + 1));
            }
        }
        self.id.mask(&s)
    }

    fn normalize(&self, out: &Output) -> Out {
        Out::normalize(
            out,
            |stdout| sort_lease_keys(self.mask(stdout).trim_end()),
            |line| self.mask(line),
        )
    }

    fn etcdctl_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.server.endpoint))
            .arg("--command-timeout=10s")
            .args(args);
        cmd
    }

    /// Runs etcdctl; the raw output.
    fn raw(&self, args: &[&str], input: Option<&str>) -> Output {
        self.server.etcdctl_with_input(args, input)
    }

    /// Runs etcdctl and records the normalised output.
    fn run(&self, t: &mut Transcript, args: &[&str]) -> Out {
        self.run_in(t, args, None)
    }

    fn run_in(&self, t: &mut Transcript, args: &[&str], input: Option<&str>) -> Out {
        let out = self.normalize(&self.raw(args, input));
        t.push(self.mask(&args.join(" ")), out.clone());
        out
    }

    /// Runs etcdctl, which must succeed; records it; the normalised stdout.
    fn ok(&self, t: &mut Transcript, args: &[&str]) -> String {
        self.ok_in(t, args, None)
    }

    fn ok_in(&self, t: &mut Transcript, args: &[&str], input: Option<&str>) -> String {
        let out = self.run_in(t, args, input);
        assert_eq!(
            out.code,
            Some(0),
            "{}: `etcdctl {}` failed: {out:?}",
            self.name,
            args.join(" ")
        );
        out.stdout
    }

    /// Runs etcdctl, which must fail (exit non-zero, not killed); records it.
    fn fails(&self, t: &mut Transcript, args: &[&str]) -> Out {
        let out = self.run(t, args);
        assert!(
            matches!(out.code, Some(c) if c != 0),
            "{}: `etcdctl {}` did not fail: {out:?}",
            self.name,
            args.join(" ")
        );
        out
    }

    /// `lease grant` (any output format); registers and returns the ID.
    fn grant(&self, t: &mut Transcript, args: &[&str]) -> i64 {
        let raw = self.raw(args, None);
        assert!(
            raw.status.success(),
            "{}: `etcdctl {}`: {raw:?}",
            self.name,
            args.join(" ")
        );
        let stdout = String::from_utf8_lossy(&raw.stdout);
        let id = if let Some(rest) = stdout.strip_prefix("lease ") {
            self.register_hex(rest.split_whitespace().next().unwrap_or(""))
        } else if let Ok(v) = serde_json::from_str::<Value>(&stdout) {
            let id = v["ID"].as_i64().expect("ID in lease grant JSON");
            self.register(id);
            id
        } else {
            let line = stdout
                .lines()
                .find(|l| l.starts_with("\"ID\" : "))
                .unwrap_or_else(|| panic!("{}: no lease ID in {stdout:?}", self.name));
            let id = line["\"ID\" : ".len()..].parse().expect("decimal ID");
            self.register(id);
            id
        };
        t.push(self.mask(&args.join(" ")), self.normalize(&raw));
        id
    }

    /// Starts a long-running etcdctl.
    fn spawn(&self, args: &[&str]) -> Proc {
        Proc::spawn(self.etcdctl_cmd(args), args.join(" "))
    }

    /// Starts a long-running etcdctl with `ORDER_LOG` set in its environment
    /// (inherited by the command it runs).
    fn spawn_logging(&self, args: &[&str], log: &Path) -> Proc {
        let mut cmd = self.etcdctl_cmd(args);
        cmd.env("ORDER_LOG", log);
        Proc::spawn(cmd, args.join(" "))
    }

    /// Records what a long-running etcdctl printed, once it has ended.
    fn record(&self, t: &mut Transcript, p: Proc) -> Out {
        let what = format!("{} (until stopped)", self.mask(&p.what));
        let out = self.normalize(&p.finish());
        t.push(what, out.clone());
        out
    }
}

/// A ferrocd and an etcd, fresh and empty.
struct Pair {
    ferrocd: Side,
    etcd: Side,
}

/// Starts both servers; `None` (skip) when etcd or etcdctl is missing
/// outside CI.
async fn pair() -> Option<Pair> {
    let ((ferrocd, f), (etcd, e)) = start_pair().await?;
    Some(Pair {
        ferrocd: Side::new(ferrocd, f),
        etcd: Side::new(etcd, e),
    })
}

impl Pair {
    /// Runs `scenario` on both servers at once; requires equal transcripts.
    fn same<T: Send>(&self, scenario: impl Fn(&Side, &mut Transcript) -> T + Sync) -> (T, T) {
        let ((f, ft), (e, et)) = std::thread::scope(|s| {
            let etcd = s.spawn(|| {
                let mut t = Transcript::default();
                (scenario(&self.etcd, &mut t), t)
            });
            let mut t = Transcript::default();
            let f = (scenario(&self.ferrocd, &mut t), t);
            let e = etcd.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
            (f, e)
        });
        compare(&ft, &et);
        (f, e)
    }
}

fn compare(f: &Transcript, e: &Transcript) {
    for (i, ((fw, fo), (ew, eo))) in f.0.iter().zip(&e.0).enumerate() {
        assert_eq!(fw, ew, "step {i}: the scenarios ran different commands");
        assert_eq!(
            fo, eo,
            "step {i}: `etcdctl {fw}` differs (left: ferrocd, right: etcd)\n\
             --- ferrocd ---\n{}\n{}\n--- etcd ---\n{}\n{}",
            fo.stdout, fo.stderr, eo.stdout, eo.stderr
        );
    }
    assert_eq!(
        f.0.len(),
        e.0.len(),
        "transcripts of different lengths:\nferrocd: {:#?}\netcd: {:#?}",
        f.0,
        e.0
    );
    eprintln!("{} steps with the same output on both", f.0.len());
    if std::env::var_os("SHOW_TRANSCRIPT").is_some() {
        for (what, out) in &f.0 {
            eprintln!(
                "$ etcdctl {what}\n{}\n{}[exit {:?}]",
                out.stdout, out.stderr, out.code
            );
        }
    }
}

/// A long-running etcdctl whose output lines are collected, each with the
/// instant it was read.
struct Proc {
    what: String,
    child: Child,
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
    stdout: Option<JoinHandle<()>>,
    stderr: Option<JoinHandle<Vec<u8>>>,
}

impl Proc {
    fn spawn(mut cmd: Command, what: String) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("etcdctl");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().expect("stdout");
        let sink = lines.clone();
        let stdout = std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push((Instant::now(), line));
            }
        });
        let mut err = child.stderr.take().expect("stderr");
        let stderr = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = err.read_to_end(&mut buf);
            buf
        });
        Proc {
            what,
            child,
            lines,
            stdout: Some(stdout),
            stderr: Some(stderr),
        }
    }

    fn lines(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|(_, l)| l.clone())
            .collect()
    }

    /// When a line matching `pred` was read; waits up to `timeout`.
    fn wait_line(&self, pred: impl Fn(&str) -> bool, timeout: Duration) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((at, _)) = self.lines.lock().unwrap().iter().find(|(_, l)| pred(l)) {
                return Some(*at);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends a signal (`INT`, `KILL`, ...).
    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig} {}", self.child.id());
    }

    /// Waits up to `timeout` for the process to exit.
    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn exited(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_some()
    }

    /// Stops the process if it still runs (SIGKILL); everything it printed.
    fn finish(mut self) -> Output {
        let _ = self.child.kill();
        let status = self.child.wait().expect("wait");
        if let Some(h) = self.stdout.take() {
            h.join().expect("stdout reader");
        }
        let stderr = self.stderr.take().map(|h| h.join().expect("stderr reader"));
        let mut stdout = self.lines().join("\n");
        stdout.push('\n');
        Output {
            status,
            stdout: stdout.into_bytes(),
            stderr: stderr.unwrap_or_default(),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Collapses runs of identical lines into one.
fn dedup_lines(s: &str) -> String {
    let mut lines: Vec<&str> = s.lines().collect();
    lines.dedup();
    lines.join("\n")
}

/// Replaces the remaining TTL in `lease timetolive` output (simple, JSON and
/// fields formats) after checking it is within 2 s below `granted`.
/// etcd lists a lease's keys in Go map order (random); sort them so the
/// two servers compare: `attached keys([b a])` and `"keys":["Yg==","YQ=="]`.
fn sort_lease_keys(s: &str) -> String {
    let sort_between = |s: &str, open: &str, close: char, sep: &str| -> String {
        let Some(start) = s.find(open).map(|i| i + open.len()) else {
            return s.to_string();
        };
        let Some(len) = s[start..].find(close) else {
            return s.to_string();
        };
        let mut items: Vec<&str> = s[start..start + len].split(sep).collect();
        items.sort_unstable();
        format!("{}{}{}", &s[..start], items.join(sep), &s[start + len..])
    };
    let s = sort_between(s, "attached keys([", ']', " ");
    sort_between(&s, "\"keys\":[", ']', ",")
}

fn mask_remaining(side: &str, out: &mut Out, granted: i64) {
    let original = out.stdout.clone();
    let check = |n: &str| {
        let n: i64 = n.parse().unwrap_or_else(|_| panic!("{side}: TTL {n:?}"));
        assert!(
            (granted - 2..=granted).contains(&n),
            "{side}: remaining TTL {n} of a lease granted {granted} s: {original}"
        );
    };
    let mut masked = false;
    for (before, after) in [
        ("remaining(", "s)"),
        ("\"ttl\":", ","),
        ("\"TTL\" : ", "\n"),
    ] {
        let s = &out.stdout;
        if let Some(i) = s.find(before) {
            let from = i + before.len();
            let to = s[from..].find(after).map_or(s.len(), |j| from + j);
            check(&s[from..to]);
            out.stdout.replace_range(from..to, "<REMAINING>");
            masked = true;
        }
    }
    assert!(masked, "{side}: no remaining TTL in {out:?}");
}

/// Sorts the lease IDs of `lease list` output (etcd lists in map order).
fn sort_lease_list(out: &mut Out) {
    if let Some(start) = out.stdout.find("\"leases\":[") {
        let from = start + "\"leases\":[".len();
        let to = from + out.stdout[from..].find(']').expect("]");
        let mut items: Vec<&str> = out.stdout[from..to].split(',').collect();
        items.sort();
        let sorted = items.join(",");
        out.stdout.replace_range(from..to, &sorted);
    } else {
        let mut lines: Vec<&str> = out.stdout.lines().collect();
        if lines.len() > 1 {
            lines[1..].sort();
        }
        out.stdout = lines.join("\n");
    }
}

// ---------------------------------------------------------------- watch

/// The watchers of [`watch_scenario`]: (etcdctl arguments, the text their
/// output shows once they have seen the final `put w/a end`).
const WATCHERS: [(&[&str], &str); 5] = [
    (&["watch", "--prefix", "--prev-kv", "w/"], "end"),
    // History from revision 2, one key.
    (&["watch", "--rev=2", "w/a"], "end"),
    // All history of the prefix, with previous values, as JSON.
    (
        &["watch", "--rev=1", "--prefix", "--prev-kv", "w/", "-w", "json"],
        "ZW5k",
    ),
    // A range [w/a, w/c).
    (&["watch", "w/a", "w/c"], "end"),
    // A command run per event, with the event in its environment.
    (
        &[
            "watch",
            "--prefix",
            "w/",
            "--",
            "sh",
            "-c",
            "echo \"exec: $ETCD_WATCH_REVISION $ETCD_WATCH_EVENT_TYPE $ETCD_WATCH_KEY $ETCD_WATCH_VALUE\"",
        ],
        "end",
    ),
];

fn watch_scenario(side: &Side, t: &mut Transcript) {
    let who = side.name;
    side.ok(t, &["put", "w/a", "1"]); // revision 2
    side.ok(t, &["put", "x", "outside"]);
    side.ok(t, &["put", "w/a", "2"]);
    let watchers: Vec<Proc> = WATCHERS.iter().map(|(a, _)| side.spawn(a)).collect();
    // etcdctl prints nothing when its watch is created: give the watchers
    // from "now" (the 1st, 4th and 5th) a second to start, then check they
    // see a put (they fail the test if they were not in place).
    std::thread::sleep(Duration::from_secs(1));
    side.ok(t, &["put", "w/aa", "sync"]);
    for i in [0, 3, 4] {
        assert!(
            watchers[i]
                .wait_line(|l| l.contains("w/aa"), Duration::from_secs(10))
                .is_some(),
            "{who}: `etcdctl {}` saw nothing in 10 s: {:?}",
            WATCHERS[i].0.join(" "),
            watchers[i].lines()
        );
    }
    side.ok(t, &["put", "w/a", "3"]);
    side.ok(t, &["put", "w/b", "1"]);
    side.ok(t, &["del", "w/a"]);
    // Three events in one revision.
    side.ok_in(t, &["txn"], Some("\nput w/c 1\nput w/d 1\ndel w/b\n\n\n"));
    let lease = side.grant(t, &["lease", "grant", "60"]);
    let hex = format!("{lease:x}");
    side.ok(t, &["put", &format!("--lease={hex}"), "w/e", "1"]);
    side.ok(t, &["put", &format!("--lease={hex}"), "w/f", "1"]);
    // Two deletes in one revision.
    side.ok(t, &["lease", "revoke", &hex]);
    side.ok(t, &["del", "--prefix", "w/c"]);
    side.ok(t, &["put", "w/a", "end"]); // revision 14
    for (w, (args, done)) in watchers.iter().zip(WATCHERS) {
        assert!(
            w.wait_line(|l| l.contains(done), Duration::from_secs(10))
                .is_some(),
            "{who}: `etcdctl {}` did not see the last put: {:?}",
            args.join(" "),
            w.lines()
        );
    }
    // Anything late would be a difference too.
    std::thread::sleep(Duration::from_millis(300));
    let outs: Vec<Out> = watchers.into_iter().map(|w| side.record(t, w)).collect();
    // Not vacuous: the events the commands above make, as each watcher
    // should show them.
    let count = |s: &str, what: &str| s.lines().filter(|l| *l == what).count();
    assert_eq!(
        (
            count(&outs[0].stdout, "PUT"),
            count(&outs[0].stdout, "DELETE")
        ),
        (8, 5),
        "{who}: prefix watcher: {}",
        outs[0].stdout
    );
    assert_eq!(
        (
            count(&outs[1].stdout, "PUT"),
            count(&outs[1].stdout, "DELETE")
        ),
        (4, 1),
        "{who}: `--rev=2 w/a`: {}",
        outs[1].stdout
    );
    let json = &outs[2].stdout;
    assert_eq!(
        json.matches("{\"kv\":").count() + json.matches("\"type\":1,\"kv\":").count(),
        15,
        "{who}: every event under w/ since revision 1: {json}"
    );
    assert_eq!(
        outs[4]
            .stdout
            .lines()
            .filter(|l| l.starts_with("exec: "))
            .count(),
        13,
        "{who}: one command per event: {}",
        outs[4].stdout
    );
}

#[tokio::test]
async fn watch_rev_prefix_prev_kv_range_and_exec_match_etcd() {
    let Some(p) = pair().await else { return };
    p.same(watch_scenario);
}

// ---------------------------------------------------------------- lease

fn lease_scenario(side: &Side, t: &mut Transcript) {
    // Below the minimum TTL (2 s with the default election timeout).
    let short = side.grant(t, &["lease", "grant", "1"]);
    let zero = side.grant(t, &["lease", "grant", "0"]);
    side.ok(t, &["lease", "revoke", &format!("{short:x}")]);
    side.ok(t, &["lease", "revoke", &format!("{zero:x}")]);
    side.fails(t, &["lease", "grant", "9000000001"]);
    let largest = side.grant(t, &["lease", "grant", "9000000000"]);
    let l = side.grant(t, &["lease", "grant", "100", "-w", "json"]);
    let lh = format!("{l:x}");
    side.grant(t, &["lease", "grant", "50", "-w", "fields"]);
    side.ok(t, &["put", &format!("--lease={lh}"), "k1", "v1"]);
    side.ok(t, &["put", &format!("--lease={lh}"), "k2", "v2"]);
    side.ok(t, &["put", "k3", "v3"]);
    for args in [
        &["lease", "timetolive", &lh][..],
        &["lease", "timetolive", "--keys", &lh],
        &["lease", "timetolive", "--keys", "-w", "json", &lh],
        &["lease", "timetolive", "-w", "fields", &lh],
    ] {
        let mut out = side.normalize(&side.raw(args, None));
        assert_eq!(out.code, Some(0), "{}: {out:?}", side.name);
        mask_remaining(side.name, &mut out, 100);
        t.push(side.mask(&args.join(" ")), out);
    }
    let mut big =
        side.normalize(&side.raw(&["lease", "timetolive", &format!("{largest:x}")], None));
    mask_remaining(side.name, &mut big, 9_000_000_000);
    t.push("lease timetolive <largest>", big);
    side.ok(t, &["lease", "keep-alive", "--once", &lh]);
    side.ok(t, &["lease", "keep-alive", "--once", "-w", "json", &lh]);
    for args in [&["lease", "list"][..], &["lease", "list", "-w", "json"]] {
        let mut out = side.normalize(&side.raw(args, None));
        sort_lease_list(&mut out);
        t.push(side.mask(&args.join(" ")), out);
    }
    side.ok(t, &["get", "--prefix", "k"]);
    side.ok(t, &["lease", "revoke", &lh]);
    // The attached keys went with the lease; k3 had none.
    let left = side.ok(t, &["get", "--prefix", "k"]);
    assert_eq!(left, "k3\nv3", "{}: keys after revoke", side.name);
    side.fails(t, &["lease", "revoke", &lh]);
    side.ok(t, &["lease", "timetolive", &lh]);
    side.ok(t, &["lease", "timetolive", "--keys", "-w", "json", &lh]);
    side.fails(t, &["lease", "keep-alive", "--once", &lh]);
    side.fails(t, &["put", &format!("--lease={lh}"), "k4", "v"]);
    // IDs nobody granted.
    side.fails(t, &["lease", "revoke", "1234"]);
    side.fails(t, &["lease", "keep-alive", "--once", "1234"]);
    side.ok(t, &["lease", "timetolive", "1234"]);
    side.ok(t, &["lease", "timetolive", "-w", "json", "1234"]);
    side.fails(t, &["put", "--lease=1234", "k5", "v"]);
    side.ok(t, &["put", "--lease=0", "k6", "v"]);
    let mut out = side.normalize(&side.raw(&["lease", "list"], None));
    sort_lease_list(&mut out);
    t.push("lease list", out);
}

#[tokio::test]
async fn lease_grant_revoke_timetolive_keep_alive_list_match_etcd() {
    let Some(p) = pair().await else { return };
    p.same(lease_scenario);
}

/// `lease keep-alive` (not `--once`) keeps a 3 s lease and its key alive
/// past its TTL, and ends when the lease is revoked.
fn keep_alive_scenario(side: &Side, t: &mut Transcript) {
    let who = side.name;
    let l = side.grant(t, &["lease", "grant", "3"]);
    let granted = Instant::now();
    let lh = format!("{l:x}");
    side.ok(t, &["put", &format!("--lease={lh}"), "ka", "1"]);
    let mut keeper = side.spawn(&["lease", "keep-alive", &lh]);
    std::thread::sleep(
        (granted + Duration::from_millis(4500)).saturating_duration_since(Instant::now()),
    );
    assert!(
        !keeper.exited(),
        "{who}: keep-alive ended early: {:?}",
        keeper.lines()
    );
    let kept = keeper.lines().len();
    assert!(
        kept >= 3,
        "{who}: {kept} keep-alives in 4.5 s of a 3 s lease"
    );
    side.ok(t, &["get", "ka"]);
    let mut out = side.normalize(&side.raw(&["lease", "timetolive", "--keys", &lh], None));
    mask_remaining(who, &mut out, 3);
    t.push("lease timetolive --keys", out);
    side.ok(t, &["lease", "revoke", &lh]);
    let status = keeper.wait_exit(Duration::from_secs(5));
    assert!(
        status.is_some(),
        "{who}: keep-alive still running after revoke"
    );
    let mut out = side.record(t, keeper);
    out.stdout = dedup_lines(&out.stdout);
    t.0.last_mut().expect("recorded").1 = out;
    side.ok(t, &["get", "ka"]);
}

#[tokio::test]
async fn lease_keep_alive_keeps_a_lease_past_its_ttl_and_stops_at_revoke_like_etcd() {
    let Some(p) = pair().await else { return };
    p.same(keep_alive_scenario);
}

// ---------------------------------------------------------------- lock

fn read(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Two contenders for one lock: the second runs its command only after the
/// first's command has exited.
fn lock_scenario(side: &Side, t: &mut Transcript) {
    let who = side.name;
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("order");
    let script = |me: &str, hold: &str| {
        format!(
            "echo {me} start >> \"$ORDER_LOG\"; echo {me} holds the lock; sleep {hold}; echo {me} end >> \"$ORDER_LOG\""
        )
    };
    let a_script = script("A", "1.5");
    let b_script = script("B", "0");
    let a = side.spawn_logging(&["lock", "job", "--", "sh", "-c", &a_script], &log);
    let a_started = a
        .wait_line(|l| l == "A holds the lock", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("{who}: A never got the free lock"));
    let mut b = side.spawn_logging(&["lock", "job", "--", "sh", "-c", &b_script], &log);
    // B waits: both hold a key under the lock name while A's command runs.
    let deadline = Instant::now() + Duration::from_secs(5);
    let keys = loop {
        let out = side.raw(&["get", "--prefix", "--keys-only", "job/"], None);
        let keys: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        if keys.len() >= 2 || Instant::now() > deadline {
            break keys;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(keys.len(), 2, "{who}: two contenders' keys: {keys:?}");
    for k in &keys {
        side.register_hex(k.trim_start_matches("job/"));
    }
    let during = read(&log);
    assert_eq!(during, ["A start"], "{who}: while A holds the lock");
    t.push(
        "get --prefix --keys-only job/ (while A holds)",
        Out {
            code: Some(0),
            stdout: side.mask(&keys.join("\n")),
            stderr: String::new(),
        },
    );
    let b_started = b
        .wait_line(|l| l == "B holds the lock", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("{who}: B never got the lock after A"));
    let b_exit = b.wait_exit(Duration::from_secs(10));
    assert!(b_exit.is_some_and(|s| s.success()), "{who}: B: {b_exit:?}");
    assert_eq!(
        read(&log),
        ["A start", "A end", "B start", "B end"],
        "{who}: B ran only after A's command had ended"
    );
    let waited = b_started - a_started;
    assert!(
        waited >= Duration::from_millis(1400),
        "{who}: B got the lock {waited:?} after A, whose command holds it 1.5 s"
    );
    eprintln!("{who}: B got the lock {waited:?} after A");
    side.record(t, a);
    side.record(t, b);
    // Both released their keys.
    side.ok(t, &["get", "--prefix", "job/"]);
}

#[tokio::test]
async fn lock_second_contender_waits_for_the_first_command_like_etcd() {
    let Some(p) = pair().await else { return };
    p.same(lock_scenario);
}

/// A holder killed with SIGKILL cannot release the lock; its session lease
/// (`--ttl=2`) expires, and the waiting contender gets the lock then.
fn lock_expiry_scenario(side: &Side, t: &mut Transcript) {
    let who = side.name;
    let holder = side.spawn(&["lock", "--ttl=2", "held"]);
    holder
        .wait_line(|l| l.starts_with("held/"), Duration::from_secs(10))
        .unwrap_or_else(|| panic!("{who}: no lock for the holder: {:?}", holder.lines()));
    let key = holder.lines()[0].clone();
    side.register_hex(key.trim_start_matches("held/"));
    let mut waiter = side.spawn(&["lock", "held", "--", "echo", "waiter holds the lock"]);
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        waiter.lines().is_empty() && !waiter.exited(),
        "{who}: the waiter got a held lock: {:?}",
        waiter.lines()
    );
    holder.signal("KILL");
    let killed = Instant::now();
    let got = waiter
        .wait_line(|l| l == "waiter holds the lock", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("{who}: the lock was not freed 10 s after its holder died"));
    let after = got - killed;
    eprintln!("{who}: the waiter got the lock {after:?} after the holder was killed");
    assert!(
        after >= Duration::from_millis(1000) && after <= Duration::from_secs(6),
        "{who}: a 2 s session lease freed the lock {after:?} after its holder died"
    );
    assert!(waiter
        .wait_exit(Duration::from_secs(10))
        .is_some_and(|s| s.success()));
    let out = side.record(t, holder);
    // Killed by a signal: no exit code, on both.
    assert_eq!(out.code, None, "{who}");
    side.record(t, waiter);
    side.ok(t, &["get", "--prefix", "held/"]);
}

#[tokio::test]
async fn lock_is_freed_when_a_dead_holders_lease_expires_like_etcd() {
    let Some(p) = pair().await else { return };
    p.same(lock_expiry_scenario);
}

// ---------------------------------------------------------------- elect

fn elect_scenario(side: &Side, t: &mut Transcript) {
    let who = side.name;
    let observer = side.spawn(&["elect", "-l", "office"]);
    // Give the observer time to start watching before anyone campaigns.
    std::thread::sleep(Duration::from_millis(500));
    let alice = side.spawn(&["elect", "office", "alice"]);
    alice
        .wait_line(|l| l == "alice", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("{who}: alice never led: {:?}", alice.lines()));
    let alice_key = alice.lines()[0].clone();
    let alice_lease = side.register_hex(alice_key.trim_start_matches("office/"));
    observer
        .wait_line(|l| l == "alice", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("{who}: the observer missed alice: {:?}", observer.lines()));
    let mut bob = side.spawn(&["elect", "office", "bob"]);
    // Bob campaigns (his key exists) but does not lead.
    let deadline = Instant::now() + Duration::from_secs(5);
    let keys = loop {
        let out = side.raw(&["get", "--prefix", "--keys-only", "office/"], None);
        let keys: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        if keys.len() >= 2 || Instant::now() > deadline {
            break keys;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(keys.len(), 2, "{who}: two candidates: {keys:?}");
    side.register_hex(keys[1].trim_start_matches("office/"));
    side.ok(t, &["get", "--prefix", "office/"]);
    // Alice dies without resigning: her lease (60 s) keeps her the leader.
    alice.signal("KILL");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        bob.lines().is_empty(),
        "{who}: bob led while alice's lease lived: {:?}",
        bob.lines()
    );
    side.ok(t, &["get", "--prefix", "--keys-only", "office/"]);
    // Her lease revoked, bob leads, and the observer sees it.
    side.ok(t, &["lease", "revoke", &format!("{alice_lease:x}")]);
    bob.wait_line(|l| l == "bob", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("{who}: bob never led after alice's lease went"));
    observer
        .wait_line(|l| l == "bob", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("{who}: the observer missed bob: {:?}", observer.lines()));
    side.ok(t, &["get", "--prefix", "office/"]);
    // Interrupted, bob resigns: his key goes, and he exits.
    bob.signal("INT");
    let status = bob.wait_exit(Duration::from_secs(10));
    assert!(status.is_some(), "{who}: bob ignored SIGINT");
    side.ok(t, &["get", "--prefix", "office/"]);
    std::thread::sleep(Duration::from_millis(300));
    let out = side.record(t, alice);
    assert_eq!(out.code, None, "{who}: alice was killed");
    side.record(t, bob);
    let seen = side.record(t, observer);
    assert!(
        seen.stdout.ends_with("\nbob"),
        "{who}: the observer's last leader: {}",
        seen.stdout
    );
}

#[tokio::test]
async fn elect_leader_observer_and_succession_match_etcd() {
    let Some(p) = pair().await else { return };
    p.same(elect_scenario);
}
