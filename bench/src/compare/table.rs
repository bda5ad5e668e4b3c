//! The comparison tables: one row per workload and cluster size with
//! ferrocd's figure, etcd's and their ratio (ferrocd / etcd), as Markdown so
//! RESULTS.md can quote it.

use serde::Serialize;

use crate::report::Summary;

/// One workload measured on both servers, with each server's RSS after it
/// (the sum over the members for a cluster).
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub workload: String,
    /// `1`, `3` (clients spread over every member) or `3 leader` (clients
    /// on the leader only).
    pub cluster: String,
    pub ferrocd: Summary,
    pub etcd: Summary,
    pub ferrocd_rss_bytes: Option<u64>,
    pub etcd_rss_bytes: Option<u64>,
}

/// Restart time of both servers with the data every workload left.
#[derive(Clone, Debug, Serialize)]
pub struct Restart {
    pub keys: i64,
    pub ferrocd_secs: f64,
    pub etcd_secs: f64,
    pub ferrocd_data_bytes: u64,
    pub etcd_data_bytes: u64,
    pub ferrocd_rss_bytes: Option<u64>,
    pub etcd_rss_bytes: Option<u64>,
}

/// The cluster figures of one cluster size, ferrocd's next to etcd's.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterFigures {
    pub members: usize,
    pub ferrocd: ClusterTimes,
    pub etcd: ClusterTimes,
}

/// One server's cluster figures; `None` is "not within the time limit".
#[derive(Clone, Debug, Serialize)]
pub struct ClusterTimes {
    /// `kill -9` of the leader until a put sent after it succeeded.
    pub failover_secs: Option<f64>,
    /// Keys stored when the learner started.
    pub catchup_keys: i64,
    /// Learner process start until its applied index reached the leader's.
    pub catchup_applied_secs: Option<f64>,
    /// Learner process start until it served a serializable read of the
    /// last key.
    pub catchup_read_secs: Option<f64>,
}

/// `a / b`, or `None` when `b` is not positive.
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0 && a.is_finite()).then(|| a / b)
}

/// The workload table.
pub fn render(rows: &[Row]) -> String {
    let mut t = Markdown::new(&[
        "workload",
        "members",
        "ferrocd ops/s",
        "etcd ops/s",
        "ops ratio",
        "ferrocd p99 ms",
        "etcd p99 ms",
        "p99 ratio",
        "ferrocd RSS",
        "etcd RSS",
        "RSS ratio",
        "errors f/e",
    ]);
    for r in rows {
        let (f, e) = (&r.ferrocd, &r.etcd);
        t.row(vec![
            r.workload.clone(),
            r.cluster.clone(),
            format!("{:.0}", f.ops_per_sec),
            format!("{:.0}", e.ops_per_sec),
            times(ratio(f.ops_per_sec, e.ops_per_sec)),
            format!("{:.2}", f.latency_ms.p99),
            format!("{:.2}", e.latency_ms.p99),
            times(ratio(f.latency_ms.p99, e.latency_ms.p99)),
            mib(r.ferrocd_rss_bytes),
            mib(r.etcd_rss_bytes),
            times(rss_ratio(r.ferrocd_rss_bytes, r.etcd_rss_bytes)),
            format!("{}/{}", f.errors, e.errors),
        ]);
    }
    t.finish()
}

/// The restart table.
pub fn render_restart(r: &Restart) -> String {
    let mut t = Markdown::new(&["after all workloads", "ferrocd", "etcd", "ratio"]);
    t.row(vec![
        format!("restart to first Status ({} keys)", r.keys),
        format!("{:.2} s", r.ferrocd_secs),
        format!("{:.2} s", r.etcd_secs),
        times(ratio(r.ferrocd_secs, r.etcd_secs)),
    ]);
    t.row(vec![
        "data dir".into(),
        mib(Some(r.ferrocd_data_bytes)),
        mib(Some(r.etcd_data_bytes)),
        times(ratio(r.ferrocd_data_bytes as f64, r.etcd_data_bytes as f64)),
    ]);
    t.row(vec![
        "RSS after restart".into(),
        mib(r.ferrocd_rss_bytes),
        mib(r.etcd_rss_bytes),
        times(rss_ratio(r.ferrocd_rss_bytes, r.etcd_rss_bytes)),
    ]);
    t.finish()
}

/// The cluster figures table, one block of rows per cluster size.
pub fn render_cluster(figures: &[ClusterFigures]) -> String {
    let mut t = Markdown::new(&["cluster figure", "ferrocd", "etcd", "ratio"]);
    for c in figures {
        let (f, e) = (&c.ferrocd, &c.etcd);
        let n = c.members;
        t.row(vec![
            format!("{n} members: kill -9 leader -> next write ok"),
            secs(f.failover_secs),
            secs(e.failover_secs),
            times(opt_ratio(f.failover_secs, e.failover_secs)),
        ]);
        let keys = if f.catchup_keys == e.catchup_keys {
            f.catchup_keys.to_string()
        } else {
            format!("{}/{}", f.catchup_keys, e.catchup_keys)
        };
        t.row(vec![
            format!("{n} members: learner catch-up, {keys} keys: applied index = leader's"),
            secs(f.catchup_applied_secs),
            secs(e.catchup_applied_secs),
            times(opt_ratio(f.catchup_applied_secs, e.catchup_applied_secs)),
        ]);
        t.row(vec![
            format!("{n} members: learner catch-up, {keys} keys: serializable read of last key"),
            secs(f.catchup_read_secs),
            secs(e.catchup_read_secs),
            times(opt_ratio(f.catchup_read_secs, e.catchup_read_secs)),
        ]);
    }
    t.finish()
}

fn opt_ratio(f: Option<f64>, e: Option<f64>) -> Option<f64> {
    ratio(f?, e?)
}

fn secs(s: Option<f64>) -> String {
    s.map_or("not in time".into(), |s| format!("{s:.2} s"))
}

fn rss_ratio(f: Option<u64>, e: Option<u64>) -> Option<f64> {
    ratio(f? as f64, e? as f64)
}

pub(super) fn times(r: Option<f64>) -> String {
    r.map_or("-".into(), |r| format!("{r:.2}x"))
}

pub(super) fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("-".into(), |b| {
        format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
    })
}

/// A Markdown table with columns padded to line up in a terminal.
pub(super) struct Markdown {
    rows: Vec<Vec<String>>,
}

impl Markdown {
    pub(super) fn new(header: &[&str]) -> Markdown {
        Markdown {
            rows: vec![header.iter().map(|h| h.to_string()).collect()],
        }
    }

    pub(super) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub(super) fn finish(self) -> String {
        let cols = self.rows[0].len();
        let widths: Vec<usize> = (0..cols)
            .map(|c| {
                self.rows
                    .iter()
                    .map(|r| r[c].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: &[String]| {
            let padded: Vec<String> = cells
                .iter()
                .zip(&widths)
                .map(|(s, w)| format!("{s:<w$}"))
                .collect();
            format!("| {} |\n", padded.join(" | "))
        };
        let mut out = line(&self.rows[0]);
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        out.push_str(&format!("|-{}-|\n", rule.join("-|-")));
        for r in &self.rows[1..] {
            out.push_str(&line(r));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::report::Recorder;

    fn summary(ops: u64, p99_ms: u64) -> Summary {
        let mut r = Recorder::default();
        for _ in 0..ops {
            r.record(Duration::from_millis(p99_ms));
        }
        r.summary("w", Duration::from_secs(1))
    }

    #[test]
    fn ratios_are_ferrocd_over_etcd_and_undefined_over_zero() {
        assert_eq!(ratio(3.0, 2.0), Some(1.5));
        assert_eq!(ratio(1.0, 0.0), None);
        assert_eq!(times(None), "-");
        assert_eq!(times(Some(0.5)), "0.50x");
    }

    #[test]
    fn the_table_has_a_header_a_rule_and_a_row_per_workload() {
        let rows: Vec<Row> = ["put", "range-l"]
            .iter()
            .map(|w| Row {
                workload: w.to_string(),
                cluster: "1".to_string(),
                ferrocd: summary(300, 2),
                etcd: summary(200, 4),
                ferrocd_rss_bytes: Some(50 << 20),
                etcd_rss_bytes: Some(100 << 20),
            })
            .collect();
        let table = render(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[0].contains("ops ratio") && lines[0].contains("RSS ratio"));
        assert!(lines[1].starts_with("|-"));
        assert!(lines[2].starts_with("| put "));
        assert!(lines[2].contains("| 1 "), "{table}");
        assert!(lines[2].contains("1.50x"), "{table}");
        assert!(lines[2].contains("0.50x"), "{table}");
        assert!(lines[2].contains("50.0 MiB"), "{table}");
        // Columns line up.
        assert!(lines.iter().all(|l| l.len() == lines[0].len()));
    }

    #[test]
    fn cluster_figures_missing_a_time_say_so_and_have_no_ratio() {
        let times = |failover| ClusterTimes {
            failover_secs: failover,
            catchup_keys: 100,
            catchup_applied_secs: Some(1.0),
            catchup_read_secs: Some(2.0),
        };
        let table = render_cluster(&[ClusterFigures {
            members: 3,
            ferrocd: times(None),
            etcd: times(Some(1.5)),
        }]);
        let failover = table.lines().nth(2).unwrap();
        assert!(failover.contains("not in time") && failover.contains("1.50 s"));
        assert!(failover.trim_end().ends_with("| -     |"), "{table}");
        assert!(table.contains("learner catch-up, 100 keys"), "{table}");
    }
}
