//! Prometheus metrics of the reconciler: how often it runs, how long it
//! takes, how it fails and which membership steps it takes.

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramTimer, IntCounter, IntCounterVec, Opts,
    Registry, TextEncoder,
};

use crate::controller::Error;
use crate::membership::MemberStep;

/// The operator's metrics, in a registry of their own.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    reconciliations: IntCounter,
    failures: IntCounterVec,
    duration: Histogram,
    member_steps: IntCounterVec,
    backup_last_success: GaugeVec,
    backup_failures: IntCounterVec,
    backup_verify_failures: IntCounterVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers the metrics.
    pub fn new() -> Self {
        let registry = Registry::new();
        let reconciliations = IntCounter::with_opts(Opts::new(
            "ferrocd_operator_reconciliations_total",
            "Reconciliations started",
        ))
        .expect("valid metric");
        let failures = IntCounterVec::new(
            Opts::new(
                "ferrocd_operator_reconcile_failures_total",
                "Reconciliations that failed, by error",
            ),
            &["error"],
        )
        .expect("valid metric");
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "ferrocd_operator_reconcile_duration_seconds",
                "Duration of reconciliations",
            )
            .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
        )
        .expect("valid metric");
        let member_steps = IntCounterVec::new(
            Opts::new(
                "ferrocd_operator_member_steps_total",
                "Membership steps taken, by step and outcome",
            ),
            &["step", "outcome"],
        )
        .expect("valid metric");
        let backup_last_success = GaugeVec::new(
            Opts::new(
                "ferrocd_operator_backup_last_success_timestamp_seconds",
                "Unix time of the last successful backup, by cluster",
            ),
            &["namespace", "cluster"],
        )
        .expect("valid metric");
        let backup_failures = IntCounterVec::new(
            Opts::new(
                "ferrocd_operator_backup_failures_total",
                "Backups that failed, by cluster",
            ),
            &["namespace", "cluster"],
        )
        .expect("valid metric");
        let backup_verify_failures = IntCounterVec::new(
            Opts::new(
                "ferrocd_operator_backup_verify_failures_total",
                "Backups whose verification failed, by cluster",
            ),
            &["namespace", "cluster"],
        )
        .expect("valid metric");
        for collector in [
            Box::new(reconciliations.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(failures.clone()),
            Box::new(duration.clone()),
            Box::new(member_steps.clone()),
            Box::new(backup_last_success.clone()),
            Box::new(backup_failures.clone()),
            Box::new(backup_verify_failures.clone()),
        ] {
            registry
                .register(collector)
                .expect("metric names are unique");
        }
        Self {
            registry,
            reconciliations,
            failures,
            duration,
            member_steps,
            backup_last_success,
            backup_failures,
            backup_verify_failures,
        }
    }

    /// Counts a reconciliation; its duration is observed when the timer drops.
    pub fn reconcile_started(&self) -> HistogramTimer {
        self.reconciliations.inc();
        self.duration.start_timer()
    }

    /// Counts a failed reconciliation under the error's label.
    pub fn reconcile_failed(&self, error: &Error) {
        self.failures
            .with_label_values(&[error.metric_label()])
            .inc();
    }

    /// Counts a membership step and whether it succeeded.
    pub fn member_step(&self, step: &MemberStep, succeeded: bool) {
        let step = match step {
            MemberStep::AddLearner { .. } => "add_learner",
            MemberStep::Promote { .. } => "promote",
            MemberStep::Remove { .. } => "remove",
        };
        let outcome = if succeeded { "ok" } else { "error" };
        self.member_steps.with_label_values(&[step, outcome]).inc();
    }

    /// Records a finished backup of `namespace/cluster`: its time when it
    /// succeeded, one more failure when not.
    pub fn backup_finished(&self, namespace: &str, cluster: &str, succeeded: bool) {
        if succeeded {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            self.backup_last_success
                .with_label_values(&[namespace, cluster])
                .set(now);
        } else {
            self.backup_failures
                .with_label_values(&[namespace, cluster])
                .inc();
        }
    }

    /// Counts a backup of `namespace/cluster` whose verification failed.
    pub fn backup_verify_failed(&self, namespace: &str, cluster: &str) {
        self.backup_verify_failures
            .with_label_values(&[namespace, cluster])
            .inc();
    }

    /// All metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("text encoding into a Vec does not fail");
        String::from_utf8(buffer).expect("the text format is UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::EtcdError;

    #[test]
    fn failures_are_counted_by_error_label() {
        let metrics = Metrics::new();
        drop(metrics.reconcile_started());
        metrics.reconcile_failed(&Error::Membership(EtcdError::LearnerNotReady));
        let text = metrics.render();
        assert!(text.contains("ferrocd_operator_reconciliations_total 1"));
        assert!(text.contains("ferrocd_operator_reconcile_failures_total{error=\"membership\"} 1"));
        assert!(text.contains("ferrocd_operator_reconcile_duration_seconds_count 1"));
    }

    #[test]
    fn backups_record_last_success_and_failures_per_cluster() {
        let metrics = Metrics::new();
        metrics.backup_finished("prod", "demo", false);
        metrics.backup_finished("prod", "demo", false);
        metrics.backup_finished("prod", "demo", true);
        let text = metrics.render();
        assert!(text.contains(
            "ferrocd_operator_backup_failures_total{cluster=\"demo\",namespace=\"prod\"} 2"
        ));
        let success = text
            .lines()
            .find(|l| l.starts_with("ferrocd_operator_backup_last_success_timestamp_seconds{"))
            .expect("a last success sample");
        let value: f64 = success.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(value > 1.7e9, "{success}");
    }
}
