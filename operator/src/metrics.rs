//! Prometheus metrics of the reconciler: how often it runs, how long it
//! takes, how it fails and which membership steps it takes.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramTimer, IntCounter, IntCounterVec, Opts, Registry,
    TextEncoder,
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
        for collector in [
            Box::new(reconciliations.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(failures.clone()),
            Box::new(duration.clone()),
            Box::new(member_steps.clone()),
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
}
