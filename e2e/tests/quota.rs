//! The backend space quota and alarms, as etcd 3.4 does them.
//!
//! * On a 3-member ferrocd cluster with a small `--quota-backend-bytes`,
//!   writes to one member until the database outgrows the quota: that
//!   member raises NOSPACE through raft, so every member lists it and
//!   refuses writes that grow the store with etcd's error, while reads,
//!   deletes, compaction and lease revokes still work; the alarm survives
//!   a restart, and `alarm disarm` clears it on every member.
//! * The same etcdctl script against one etcd 3.4 and one ferrocd with the
//!   same small quota (filling until NOSPACE), and a scenario where a
//!   client raises NOSPACE and CORRUPT itself below the quota, compared
//!   output for output once member IDs and URLs are masked.
//!
//! KNOWN DIFFERENCES (ferrocd reports version 3.6 and answers as etcd 3.5
//! and later do): etcd 3.4 answers Alarm without a response header, so
//! only the alarms of gRPC answers are compared; etcd 3.4 records an alarm
//! of type NONE when asked to raise one.

use std::process::Output;

use ferrocd_e2e::etcdctl_pair::{start_pair_with, Identity, Out};
use ferrocd_e2e::Cluster;
use ferrocd_e2e::Server;
use ferrocd_proto::etcdserverpb::alarm_request::AlarmAction;
use ferrocd_proto::etcdserverpb::kv_client::KvClient;
use ferrocd_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use ferrocd_proto::etcdserverpb::{AlarmMember, AlarmRequest, AlarmType, PutRequest};

const QUOTA: i64 = 4 * 1024 * 1024;
const NOSPACE: &str = "etcdserver: mvcc: database space exceeded";
/// Most writes of [`VALUE_LEN`] bytes before the quota must have been hit.
const MAX_FILL: usize = 400;
const VALUE_LEN: usize = 60_000;

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn assert_refused(out: &Output, what: &str) {
    assert_eq!(out.status.code(), Some(1), "{what}: {}", text(out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(NOSPACE),
        "{what}: {}",
        text(out)
    );
}

/// Puts large values through `server` until it answers NOSPACE; panics if
/// it never does.
async fn fill_until_nospace(server: &Server) -> usize {
    let mut kv = KvClient::new(server.channel().await.expect("connect"));
    for i in 0..MAX_FILL {
        let put = PutRequest {
            key: format!("fill/{i:04}").into_bytes(),
            value: vec![b'x'; VALUE_LEN],
            ..Default::default()
        };
        match kv.put(put).await {
            Ok(_) => {}
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
                assert_eq!(status.message(), NOSPACE);
                return i;
            }
        }
    }
    panic!("{MAX_FILL} writes of {VALUE_LEN} bytes never exceeded a quota of {QUOTA} bytes");
}

#[tokio::test(flavor = "multi_thread")]
async fn nospace_is_raised_on_every_member_and_refuses_only_growth() {
    let quota = format!("--quota-backend-bytes={QUOTA}");
    let mut cluster = Cluster::ferrocd(3, &[&quota]).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(cluster.member_id(i).await);
    }
    // Through a member that is not necessarily the leader.
    let writes = fill_until_nospace(&cluster.members[1]).await;
    assert!(writes > 0, "the first write was already refused");

    // Every member lists the same alarms: NOSPACE, raised by the member
    // that refused the write (or by one whose own copy filled up first).
    let alarms = alarm_lists_agree(&cluster);
    let lines: Vec<&str> = alarms.lines().collect();
    assert!(!lines.is_empty(), "no alarm after the quota was exceeded");
    for line in &lines {
        assert!(
            ids.iter()
                .any(|id| *line == format!("memberID:{id} alarm:NOSPACE ")),
            "{alarms}"
        );
    }

    for (i, m) in cluster.members.iter().enumerate() {
        let status = m.status().await.expect("status");
        assert_eq!(status.db_size_quota, QUOTA, "member {i}");
        assert!(!status.errors.is_empty(), "member {i}");
        // Each member refuses growth, small or not.
        assert_refused(&m.etcdctl(&["put", "small", "v"]), "put");
        let lease = m.etcdctl(&["lease", "grant", "60"]);
        assert_eq!(lease.status.code(), Some(1), "{}", text(&lease));
        assert!(
            String::from_utf8_lossy(&lease.stderr)
                .contains(&format!("Error: failed to grant lease ({NOSPACE})")),
            "{}",
            text(&lease)
        );
        let txn_put = m.etcdctl_with_input(&["txn"], Some("\nput small v\n\n\n"));
        assert_refused(&txn_put, "txn with a put");
    }

    // What does not grow the store still works.
    let m = &cluster.members[2];
    let get = m.etcdctl(&["get", "fill/0000", "--print-value-only"]);
    assert_eq!(stdout(&get).trim_end().len(), VALUE_LEN, "{}", text(&get));
    let read_txn = m.etcdctl_with_input(&["txn"], Some("\nget absent\n\n\n"));
    assert_eq!(read_txn.status.code(), Some(0), "{}", text(&read_txn));
    let del = m.etcdctl(&["del", "--prefix", "fill/"]);
    assert_eq!(stdout(&del), format!("{writes}\n"), "{}", text(&del));
    let rev = m.status().await.unwrap().header.unwrap().revision;
    let compact = m.etcdctl(&["compaction", &rev.to_string()]);
    assert_eq!(
        stdout(&compact),
        format!("compacted revision {rev}\n"),
        "{}",
        text(&compact)
    );

    // The alarms are applied state: a restarted member still has them.
    let alarms = alarm_lists_agree(&cluster);
    let errors: Vec<String> = alarms.lines().map(str::to_string).collect();
    cluster.members[0].terminate();
    cluster.members[0].restart().await;
    let status = cluster.members[0].status().await.expect("status");
    assert_eq!(status.errors, errors);

    // Disarming clears them through raft, on every member.
    let disarm = cluster.members[0].etcdctl(&["alarm", "disarm"]);
    assert_eq!(stdout(&disarm), alarms, "{}", text(&disarm));
    assert_eq!(alarm_lists_agree(&cluster), "");
    for (i, m) in cluster.members.iter().enumerate() {
        let errors = m.status().await.unwrap().errors;
        assert!(errors.is_empty(), "member {i}: {errors:?}");
    }
}

/// `etcdctl alarm list` on every member; asserts they print the same and
/// returns it.
fn alarm_lists_agree(cluster: &Cluster) -> String {
    let lists: Vec<String> = cluster
        .members
        .iter()
        .map(|m| {
            let out = m.etcdctl(&["alarm", "list"]);
            assert_eq!(out.status.code(), Some(0), "{}", text(&out));
            stdout(&out)
        })
        .collect();
    assert!(lists.iter().all(|l| *l == lists[0]), "{lists:#?}");
    lists[0].clone()
}

/// One server of the differential pair.
struct Side {
    server: Server,
    id: Identity,
}

impl Side {
    fn run(&self, args: &[&str], input: Option<&str>) -> Out {
        let out = self.server.etcdctl_with_input(args, input);
        Out::normalize(&out, |s| self.id.mask(s), |line| self.id.mask(line))
    }

    /// An Alarm request over gRPC; the alarms answered (or the error), with
    /// this server's member ID masked as 1.
    async fn alarm(
        &self,
        action: AlarmAction,
        alarm: AlarmType,
    ) -> Result<Vec<AlarmMember>, String> {
        let mut c = MaintenanceClient::new(self.server.channel().await.expect("connect"));
        let member_id = if action == AlarmAction::Get {
            0
        } else {
            self.id.member_id
        };
        let req = AlarmRequest {
            action: action as i32,
            member_id,
            alarm: alarm as i32,
        };
        c.alarm(req)
            .await
            .map(|r| {
                r.into_inner()
                    .alarms
                    .into_iter()
                    .map(|mut m| {
                        if m.member_id == self.id.member_id {
                            m.member_id = 1;
                        }
                        m
                    })
                    .collect()
            })
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
    }

    /// Status errors, masked.
    async fn status_errors(&self) -> Vec<String> {
        let status = self.server.status().await.expect("status");
        status.errors.iter().map(|e| self.id.mask(e)).collect()
    }
}

/// Runs `script` on both sides at once; asserts each step's output is the
/// same on both.
fn compare(ferrocd: &Side, etcd: &Side, script: &[(&[&str], Option<&str>)]) {
    for (step, (args, input)) in script.iter().enumerate() {
        let (f, e) = std::thread::scope(|s| {
            let f = s.spawn(|| ferrocd.run(args, *input));
            let e = s.spawn(|| etcd.run(args, *input));
            (f.join().unwrap(), e.join().unwrap())
        });
        assert_eq!(
            f, e,
            "step {step}: etcdctl {args:?}\n ferrocd: {f:#?}\n etcd: {e:#?}"
        );
    }
}

async fn pair(extra: &[&str]) -> Option<(Side, Side)> {
    let ((f, fid), (e, eid)) = start_pair_with(extra).await?;
    Some((Side { server: f, id: fid }, Side { server: e, id: eid }))
}

#[tokio::test(flavor = "multi_thread")]
async fn filling_a_small_quota_reads_as_on_etcd() {
    let quota = format!("--quota-backend-bytes={QUOTA}");
    let Some((ferrocd, etcd)) = pair(&[&quota]).await else {
        return;
    };
    let value = "x".repeat(VALUE_LEN);
    // The same script on both: put until a put fails (how many fit
    // differs: the two databases grow differently), then compare the
    // refusal and what follows it.
    let fill = |side: &Side| -> Out {
        for i in 0..MAX_FILL {
            let out = side.run(&["put", &format!("fill/{i:04}"), &value], None);
            if out.code != Some(0) {
                return out;
            }
        }
        panic!("{}: {MAX_FILL} puts never exceeded the quota", side.id.name);
    };
    let (f, e) = std::thread::scope(|s| {
        let f = s.spawn(|| fill(&ferrocd));
        let e = s.spawn(|| fill(&etcd));
        (f.join().unwrap(), e.join().unwrap())
    });
    assert_eq!(f, e, "the refused put");
    assert!(f.stderr.contains(NOSPACE), "{f:#?}");
    // The refused put had the same cost as the one below, and the database
    // does not shrink: refused up front again, on both. Smaller writes are
    // left out: whether they still fit depends on how close to the quota
    // each database stopped.
    let big_put = ["put", "fill/big", value.as_str()];
    let big_txn = format!("\nput fill/big {value}\n\n\n");
    compare(
        &ferrocd,
        &etcd,
        &[
            (&["alarm", "list"], None),
            (&big_put, None),
            (&["txn"], Some(&big_txn)),
            (&["txn"], Some("\nget small\n\n\n")),
            (&["get", "fill/0000", "--keys-only"], None),
            (&["del", "fill/0000"], None),
            // Disarming. Whether the next large write fits again is left
            // out: ferrocd's database may shrink a little after the delete
            // above (sled reuses segments), so it can land just under the
            // quota where etcd's stays over (one CI run saw that).
            (&["alarm", "disarm"], None),
            (&["alarm", "list"], None),
        ],
    );
    assert_eq!(ferrocd.status_errors().await, etcd.status_errors().await);
}

#[tokio::test(flavor = "multi_thread")]
async fn alarms_raised_by_a_client_read_as_on_etcd() {
    let Some((ferrocd, etcd)) = pair(&[]).await else {
        return;
    };
    compare(
        &ferrocd,
        &etcd,
        &[(&["put", "a", "1"], None), (&["alarm", "list"], None)],
    );
    use AlarmAction::{Activate, Deactivate, Get};
    use AlarmType::{Corrupt, Nospace};
    // KNOWN DIFFERENCE: etcd 3.4 records an alarm of type NONE when asked
    // to raise one (and lists it from then on); 3.5 and later raise
    // nothing, as ferrocd.
    assert_eq!(ferrocd.alarm(Activate, AlarmType::None).await, Ok(vec![]));
    for (action, alarm) in [
        (Get, AlarmType::None),
        (Deactivate, Nospace),
        (Activate, Nospace),
        (Activate, Nospace),
        (Get, Corrupt),
        (Get, Nospace),
    ] {
        let (f, e) = (
            ferrocd.alarm(action, alarm).await,
            etcd.alarm(action, alarm).await,
        );
        assert_eq!(f, e, "{action:?} {alarm:?}");
    }
    assert_eq!(ferrocd.status_errors().await, etcd.status_errors().await);
    // Below the quota, only apply refuses: growth fails, the rest works,
    // and once disarmed, writes work again.
    compare(
        &ferrocd,
        &etcd,
        &[
            (&["alarm", "list"], None),
            (&["put", "b", "2"], None),
            (&["lease", "grant", "60"], None),
            (&["txn"], Some("\nput b 2\n\n\n")),
            (&["txn"], Some("\nget a\n\n\n")),
            (&["get", "a"], None),
            (&["del", "a"], None),
            (&["compaction", "2"], None),
            (&["alarm", "disarm"], None),
            (&["alarm", "disarm"], None),
            (&["alarm", "list"], None),
            (&["put", "b", "2"], None),
            (&["get", "b"], None),
        ],
    );
    // CORRUPT refuses every write, and clears the same way.
    for (action, alarm) in [(Activate, Corrupt), (Get, AlarmType::None)] {
        let (f, e) = (
            ferrocd.alarm(action, alarm).await,
            etcd.alarm(action, alarm).await,
        );
        assert_eq!(f, e, "{action:?} {alarm:?}");
    }
    compare(
        &ferrocd,
        &etcd,
        &[
            (&["alarm", "list"], None),
            (&["put", "c", "3"], None),
            (&["del", "b"], None),
            (&["get", "b"], None),
            (&["alarm", "disarm"], None),
            (&["put", "c", "3"], None),
        ],
    );
}
