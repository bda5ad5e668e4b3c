//! The process's Prometheus metrics, named, typed, labelled and described
//! as etcd 3.4 exposes them, so that etcd's Grafana dashboard and alert
//! rules read ferrocd unchanged.
//!
//! One registry for the process (as etcd's default registry). The places
//! that count hold no handle: they call [`get`] and bump an atomic counter
//! or observe a histogram. Values that are state rather than events
//! (leadership, applied index, database size, revisions, watchers) are
//! read when `/metrics` is scraped (see `crate::http`).

pub mod grpc;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::LazyLock;
use std::time::Duration;

use ferrocd_proto::etcdserverpb::response_op::Response as Op;
use ferrocd_proto::etcdserverpb::TxnResponse;
use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry,
};

/// `--metrics`: how much detail `/metrics` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Detail {
    /// etcd's default.
    #[default]
    Basic,
    /// Adds the per-method `grpc_server_handling_seconds` histograms.
    Extensive,
}

/// An apply slower than this counts as slow (etcd's warning threshold).
pub const SLOW_APPLY: Duration = Duration::from_millis(100);

/// Every metric of the process.
pub struct Metrics {
    registry: Registry,
    extensive: AtomicBool,

    pub has_leader: IntGauge,
    pub is_leader: IntGauge,
    pub is_learner: IntGauge,
    pub leader_changes: IntCounter,
    pub proposals_committed: IntGauge,
    pub proposals_applied: IntGauge,
    pub proposals_pending: IntGauge,
    pub proposals_failed: IntCounter,
    pub slow_apply: IntCounter,
    pub heartbeat_send_failures: IntCounter,
    pub health_success: IntCounter,
    pub health_failures: IntCounter,
    pub learner_promote_successes: IntCounter,
    pub server_id: IntGaugeVec,
    pub server_version: IntGaugeVec,
    pub cluster_version: IntGaugeVec,
    pub quota_backend_bytes: IntGauge,

    pub wal_fsync: Histogram,
    pub backend_commit: Histogram,

    pub db_total_size: IntGauge,
    pub db_total_size_debugging: IntGauge,
    pub db_total_size_in_use: IntGauge,
    pub keys: IntGauge,
    pub current_revision: IntGauge,
    pub compact_revision: IntGauge,
    pub puts: IntCounter,
    pub deletes: IntCounter,
    pub ranges: IntCounter,
    pub txns: IntCounter,
    pub watchers: IntGauge,
    pub leases_granted: IntCounter,
    pub leases_revoked: IntCounter,

    pub peer_rtt: HistogramVec,
    pub peer_sent_bytes: IntCounterVec,
    pub peer_received_bytes: IntCounterVec,
    pub peer_sent_failures: IntCounterVec,
    pub peer_received_failures: IntCounterVec,

    pub client_sent_bytes: IntCounter,
    pub client_received_bytes: IntCounter,

    pub grpc: grpc::GrpcMetrics,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn get() -> &'static Metrics {
    &METRICS
}

/// Registers what `registry` collects and hands it back.
fn registered<C: prometheus::core::Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    registry
        .register(Box::new(c.clone()))
        .expect("metric names are unique");
    c
}

impl Metrics {
    fn new() -> Self {
        let r = Registry::new();
        let counter = |name: &str, help: &str| {
            registered(&r, IntCounter::new(name, help).expect("valid metric"))
        };
        let gauge = |name: &str, help: &str| {
            registered(&r, IntGauge::new(name, help).expect("valid metric"))
        };
        let gauge_vec = |name: &str, help: &str, label: &str| {
            registered(
                &r,
                IntGaugeVec::new(Opts::new(name, help), &[label]).expect("valid metric"),
            )
        };
        let counter_vec = |name: &str, help: &str, label: &str| {
            registered(
                &r,
                IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric"),
            )
        };
        // etcd's disk histograms: 1 ms doubling to about 8 s.
        let disk = |name: &str, help: &str| {
            let opts = HistogramOpts::new(name, help)
                .buckets(exponential_buckets(0.001, 2.0, 14).expect("valid buckets"));
            registered(&r, Histogram::with_opts(opts).expect("valid metric"))
        };
        let db_help = "Total size of the underlying database physically allocated in bytes.";
        let m = Metrics {
            extensive: AtomicBool::new(false),
            has_leader: gauge(
                "etcd_server_has_leader",
                "Whether or not a leader exists. 1 is existence, 0 is not.",
            ),
            is_leader: gauge(
                "etcd_server_is_leader",
                "Whether or not this member is a leader. 1 if is, 0 otherwise.",
            ),
            is_learner: gauge(
                "etcd_server_is_learner",
                "Whether or not this member is a learner. 1 if is, 0 otherwise.",
            ),
            leader_changes: counter(
                "etcd_server_leader_changes_seen_total",
                "The number of leader changes seen.",
            ),
            proposals_committed: gauge(
                "etcd_server_proposals_committed_total",
                "The total number of consensus proposals committed.",
            ),
            proposals_applied: gauge(
                "etcd_server_proposals_applied_total",
                "The total number of consensus proposals applied.",
            ),
            proposals_pending: gauge(
                "etcd_server_proposals_pending",
                "The current number of pending proposals to commit.",
            ),
            proposals_failed: counter(
                "etcd_server_proposals_failed_total",
                "The total number of failed proposals seen.",
            ),
            slow_apply: counter(
                "etcd_server_slow_apply_total",
                "The total number of slow apply requests (likely overloaded from slow disk).",
            ),
            heartbeat_send_failures: counter(
                "etcd_server_heartbeat_send_failures_total",
                "The total number of leader heartbeat send failures (likely overloaded from slow disk).",
            ),
            health_success: counter(
                "etcd_server_health_success",
                "The total number of successful health checks",
            ),
            health_failures: counter(
                "etcd_server_health_failures",
                "The total number of failed health checks",
            ),
            learner_promote_successes: counter(
                "etcd_server_learner_promote_successes",
                "The total number of successful learner promotions while this member is leader.",
            ),
            server_id: gauge_vec(
                "etcd_server_id",
                "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID.",
                "server_id",
            ),
            server_version: gauge_vec(
                "etcd_server_version",
                "Which version is running. 1 for 'server_version' label with current version.",
                "server_version",
            ),
            cluster_version: gauge_vec(
                "etcd_cluster_version",
                "Which version is running. 1 for 'cluster_version' label with current cluster version",
                "cluster_version",
            ),
            quota_backend_bytes: gauge(
                "etcd_server_quota_backend_bytes",
                "Current backend storage quota size in bytes.",
            ),
            wal_fsync: disk(
                "etcd_disk_wal_fsync_duration_seconds",
                "The latency distributions of fsync called by WAL.",
            ),
            backend_commit: disk(
                "etcd_disk_backend_commit_duration_seconds",
                "The latency distributions of commit called by backend.",
            ),
            db_total_size: gauge("etcd_mvcc_db_total_size_in_bytes", db_help),
            db_total_size_debugging: gauge("etcd_debugging_mvcc_db_total_size_in_bytes", db_help),
            db_total_size_in_use: gauge(
                "etcd_mvcc_db_total_size_in_use_in_bytes",
                "Total size of the underlying database logically in use in bytes.",
            ),
            keys: gauge("etcd_debugging_mvcc_keys_total", "Total number of keys."),
            current_revision: gauge(
                "etcd_debugging_mvcc_current_revision",
                "The current revision of store.",
            ),
            compact_revision: gauge(
                "etcd_debugging_mvcc_compact_revision",
                "The revision of the last compaction in store.",
            ),
            puts: counter(
                "etcd_mvcc_put_total",
                "Total number of puts seen by this member.",
            ),
            deletes: counter(
                "etcd_mvcc_delete_total",
                "Total number of deletes seen by this member.",
            ),
            ranges: counter(
                "etcd_mvcc_range_total",
                "Total number of ranges seen by this member.",
            ),
            txns: counter(
                "etcd_mvcc_txn_total",
                "Total number of txns seen by this member.",
            ),
            watchers: gauge(
                "etcd_debugging_mvcc_watcher_total",
                "Total number of watchers.",
            ),
            leases_granted: counter(
                "etcd_debugging_lease_granted_total",
                "The total number of granted leases.",
            ),
            leases_revoked: counter(
                "etcd_debugging_lease_revoked_total",
                "The total number of revoked leases.",
            ),
            peer_rtt: registered(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "etcd_network_peer_round_trip_time_seconds",
                        "Round-Trip-Time histogram between peers",
                    )
                    .buckets(exponential_buckets(0.0001, 2.0, 14).expect("valid buckets")),
                    &["To"],
                )
                .expect("valid metric"),
            ),
            peer_sent_bytes: counter_vec(
                "etcd_network_peer_sent_bytes_total",
                "The total number of bytes sent to peers.",
                "To",
            ),
            peer_received_bytes: counter_vec(
                "etcd_network_peer_received_bytes_total",
                "The total number of bytes received from peers.",
                "From",
            ),
            peer_sent_failures: counter_vec(
                "etcd_network_peer_sent_failures_total",
                "The total number of send failures from peers.",
                "To",
            ),
            peer_received_failures: counter_vec(
                "etcd_network_peer_received_failures_total",
                "The total number of receive failures from peers.",
                "From",
            ),
            client_sent_bytes: counter(
                "etcd_network_client_grpc_sent_bytes_total",
                "The total number of bytes sent to grpc clients.",
            ),
            client_received_bytes: counter(
                "etcd_network_client_grpc_received_bytes_total",
                "The total number of bytes received from grpc clients.",
            ),
            grpc: grpc::GrpcMetrics::new(&r),
            registry: r,
        };
        m.server_version
            .with_label_values(&[crate::config::ETCD_VERSION])
            .set(1);
        m.cluster_version
            .with_label_values(&[&cluster_version(crate::config::ETCD_VERSION)])
            .set(1);
        let process = prometheus::process_collector::ProcessCollector::for_self();
        m.registry
            .register(Box::new(process))
            .expect("process metrics");
        m
    }

    /// Applies `--metrics`: extensive adds the gRPC handling histograms
    /// (registered once, from then on).
    pub fn set_detail(&self, detail: Detail) {
        if detail == Detail::Extensive && !self.extensive.swap(true, Ordering::SeqCst) {
            self.grpc.enable_handling_histogram(&self.registry);
        }
    }

    /// Records this member's id (the `server_id` label).
    pub fn set_member_id(&self, id: u64) {
        self.server_id.reset();
        self.server_id
            .with_label_values(&[&format!("{id:x}")])
            .set(1);
    }

    /// Everything, in Prometheus' text format.
    pub fn encode(&self) -> Result<Vec<u8>, prometheus::Error> {
        use prometheus::Encoder;
        let mut out = Vec::new();
        prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(out)
    }

    /// The counters of peer `id`, resolved once for a connection's life;
    /// they start at zero, so that rates over them (etcd's alert on send
    /// failures) have a series from the start.
    pub fn peer(&self, id: u64) -> PeerMetrics {
        let label = [peer_label(id)];
        PeerMetrics {
            sent_bytes: self.peer_sent_bytes.with_label_values(&label),
            received_bytes: self.peer_received_bytes.with_label_values(&label),
            sent_failures: self.peer_sent_failures.with_label_values(&label),
            received_failures: self.peer_received_failures.with_label_values(&label),
            rtt: self.peer_rtt.with_label_values(&label),
        }
    }
}

/// The operations of one store transaction, counted as etcd 3.4 counts
/// them: each kind on its own counter, and the transaction as a txn when
/// it did more than one.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StoreOps {
    pub ranges: u64,
    pub puts: u64,
    pub deletes: u64,
}

impl StoreOps {
    /// The ops a Txn ran in its chosen branches (nested txns included).
    pub fn of_txn(resp: &TxnResponse) -> StoreOps {
        let mut ops = StoreOps::default();
        ops.add_txn(resp);
        ops
    }

    fn add_txn(&mut self, resp: &TxnResponse) {
        for op in &resp.responses {
            match &op.response {
                Some(Op::ResponseRange(_)) => self.ranges += 1,
                Some(Op::ResponsePut(_)) => self.puts += 1,
                Some(Op::ResponseDeleteRange(_)) => self.deletes += 1,
                Some(Op::ResponseTxn(t)) => self.add_txn(t),
                None => {}
            }
        }
    }

    /// Adds the counts to the process's counters.
    pub fn record(self) {
        let m = get();
        if self.ranges + self.puts + self.deletes > 1 {
            m.txns.inc();
        }
        m.ranges.inc_by(self.ranges);
        m.puts.inc_by(self.puts);
        m.deletes.inc_by(self.deletes);
    }
}

/// Counts the leader changes this member sees (the first leader it
/// learns of included, as etcd counts), until raft shuts down.
pub fn spawn_leader_watch(raft: crate::raft::Raft) {
    tokio::spawn(async move {
        // The server metrics change only with leadership and membership,
        // not with every write.
        let mut rx = raft.server_metrics();
        drop(raft);
        let mut last = None;
        loop {
            let leader = rx.borrow_and_update().current_leader;
            if leader.is_some() && leader != last {
                get().leader_changes.inc();
                last = leader;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    });
}

/// One peer's series of the `etcd_network_peer_*` families.
pub struct PeerMetrics {
    pub sent_bytes: IntCounter,
    pub received_bytes: IntCounter,
    pub sent_failures: IntCounter,
    pub received_failures: IntCounter,
    pub rtt: Histogram,
}

/// The cluster version etcd reports: the server version's major.minor.
fn cluster_version(server: &str) -> String {
    server.splitn(3, '.').take(2).collect::<Vec<_>>().join(".")
}

/// A member id as etcd writes it in peer labels (hex, no padding).
pub fn peer_label(id: u64) -> String {
    format!("{id:x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txn_ops_are_counted_through_nested_txns() {
        use ferrocd_proto::etcdserverpb::{PutResponse, RangeResponse, ResponseOp};
        let op = |r| ResponseOp { response: Some(r) };
        let inner = TxnResponse {
            responses: vec![op(Op::ResponsePut(PutResponse::default()))],
            ..Default::default()
        };
        let outer = TxnResponse {
            responses: vec![
                op(Op::ResponseRange(RangeResponse::default())),
                op(Op::ResponseTxn(inner)),
                op(Op::ResponsePut(PutResponse::default())),
            ],
            ..Default::default()
        };
        assert_eq!(
            StoreOps::of_txn(&outer),
            StoreOps {
                ranges: 1,
                puts: 2,
                deletes: 0
            }
        );
    }

    #[test]
    fn cluster_version_is_major_minor() {
        assert_eq!(cluster_version("3.6.0"), "3.6");
        assert_eq!(cluster_version("3.4"), "3.4");
    }

    #[test]
    fn disk_histograms_have_etcds_buckets() {
        let text = String::from_utf8(get().encode().unwrap()).unwrap();
        let les: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("etcd_disk_wal_fsync_duration_seconds_bucket"))
            .filter_map(|l| l.split("le=\"").nth(1)?.split('"').next())
            .collect();
        assert_eq!(les.len(), 15, "{les:?}");
        assert_eq!(les[0], "0.001");
        assert_eq!(les[13], "8.192");
        assert_eq!(les[14], "+Inf");
    }
}
