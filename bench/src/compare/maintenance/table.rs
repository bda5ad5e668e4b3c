//! The maintenance figures of both servers and their table: ferrocd's,
//! etcd's and the ratio ferrocd / etcd (below 1 is better for times and
//! latencies, above 1 for throughput).

use serde::Serialize;

use crate::compare::table::{mib, ratio, times, Markdown};
use crate::report::Summary;

/// Maintenance on one member of each, with the data the workloads left.
#[derive(Clone, Debug, Serialize)]
pub struct Maintenance {
    /// Clients putting during each measurement.
    pub writers: usize,
    /// How long they put with no maintenance, and after the compaction.
    pub baseline_secs: f64,
    /// Keys of the `put` workload written again before the compaction.
    pub overwritten_keys: u64,
    pub ferrocd: Figures,
    pub etcd: Figures,
}

/// One server's maintenance figures; `None` where the step failed (see
/// `failures`) or could not run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Figures {
    /// Keys in the store when the snapshot was saved.
    pub keys: i64,
    /// `etcdctl snapshot save`.
    pub snapshot_save_secs: Option<f64>,
    pub snapshot_bytes: Option<u64>,
    pub snapshot_save_mib_per_sec: Option<f64>,
    /// `etcdctl snapshot restore` (etcd) or `ferrocd snapshot restore`
    /// (ferrocd) of the server's own snapshot into a new data directory.
    pub restore_secs: Option<f64>,
    /// A member started on the restored data until it answered Status
    /// with a leader.
    pub restored_start_secs: Option<f64>,
    pub restored_keys: Option<i64>,
    /// The writers with no maintenance running.
    pub baseline: Option<Summary>,
    /// Maintenance.Status's dbSize before and after the defrag.
    pub db_bytes_before_defrag: Option<i64>,
    pub db_bytes_after_defrag: Option<i64>,
    /// `etcdctl defrag`.
    pub defrag_secs: Option<f64>,
    /// The writers while `etcdctl defrag` ran.
    pub during_defrag: Option<Summary>,
    /// The revision compacted to (the current one before the writers).
    pub compaction_revision: Option<i64>,
    /// `etcdctl compaction --physical`.
    pub compaction_secs: Option<f64>,
    /// The writers while `etcdctl compaction --physical` ran.
    pub during_compaction: Option<Summary>,
    /// The writers for `baseline_secs` right after the compaction.
    pub after_compaction: Option<Summary>,
    /// Steps that failed, with what the tool said.
    pub failures: Vec<String>,
}

/// The maintenance table, then one line per failed step.
pub fn render(m: &Maintenance) -> String {
    let (f, e) = (&m.ferrocd, &m.etcd);
    let keys = if f.keys == e.keys {
        f.keys.to_string()
    } else {
        format!("{}/{}", f.keys, e.keys)
    };
    let bytes = |b: Option<i64>| b.map(|b| b as f64);
    let w = m.writers;
    let b = m.baseline_secs;
    let mut rows = vec![
        Figure::new(
            format!("snapshot save ({keys} keys)"),
            Unit::Secs,
            f.snapshot_save_secs,
            e.snapshot_save_secs,
        ),
        Figure::new(
            "snapshot save throughput (above 1 is better)".into(),
            Unit::MibPerSec,
            f.snapshot_save_mib_per_sec,
            e.snapshot_save_mib_per_sec,
        ),
        Figure::new(
            "snapshot file".into(),
            Unit::Bytes,
            f.snapshot_bytes.map(|b| b as f64),
            e.snapshot_bytes.map(|b| b as f64),
        ),
        Figure::new(
            "snapshot restore into a new data dir".into(),
            Unit::Secs,
            f.restore_secs,
            e.restore_secs,
        ),
        Figure::new(
            "restored member: start to first Status".into(),
            Unit::Secs,
            f.restored_start_secs,
            e.restored_start_secs,
        ),
        Figure::new(
            "restored member: keys".into(),
            Unit::Count,
            f.restored_keys.map(|k| k as f64),
            e.restored_keys.map(|k| k as f64),
        ),
    ];
    rows.extend(puts(
        &format!("{w} writers, {b:.1} s, no maintenance"),
        &f.baseline,
        &e.baseline,
    ));
    rows.extend([
        Figure::new("defrag".into(), Unit::Secs, f.defrag_secs, e.defrag_secs),
        Figure::new(
            "db size before defrag".into(),
            Unit::Bytes,
            bytes(f.db_bytes_before_defrag),
            bytes(e.db_bytes_before_defrag),
        ),
        Figure::new(
            "db size after defrag".into(),
            Unit::Bytes,
            bytes(f.db_bytes_after_defrag),
            bytes(e.db_bytes_after_defrag),
        ),
    ]);
    rows.extend(puts(
        &format!("{w} writers during defrag"),
        &f.during_defrag,
        &e.during_defrag,
    ));
    rows.push(Figure::new(
        format!(
            "compaction --physical after rewriting {} keys",
            m.overwritten_keys
        ),
        Unit::Secs,
        f.compaction_secs,
        e.compaction_secs,
    ));
    rows.extend(puts(
        &format!("{w} writers during compaction"),
        &f.during_compaction,
        &e.during_compaction,
    ));
    rows.extend(puts(
        &format!("{w} writers, {:.1} s after compaction", m.baseline_secs),
        &f.after_compaction,
        &e.after_compaction,
    ));

    let mut t = Markdown::new(&["maintenance", "ferrocd", "etcd", "ratio"]);
    for r in rows {
        t.row(vec![
            r.label,
            r.unit.show(r.ferrocd),
            r.unit.show(r.etcd),
            times(r.ferrocd.zip(r.etcd).and_then(|(f, e)| ratio(f, e))),
        ]);
    }
    t.row(vec![
        "put errors: none/defrag/compaction/after".into(),
        errors(f),
        errors(e),
        "-".into(),
    ]);
    let mut out = t.finish();
    for (name, figures) in [("ferrocd", f), ("etcd", e)] {
        for failure in &figures.failures {
            out.push_str(&format!("maintenance {name}: {failure}\n"));
        }
    }
    out
}

/// One row: a figure of both servers.
struct Figure {
    label: String,
    unit: Unit,
    ferrocd: Option<f64>,
    etcd: Option<f64>,
}

impl Figure {
    fn new(label: String, unit: Unit, ferrocd: Option<f64>, etcd: Option<f64>) -> Figure {
        Figure {
            label,
            unit,
            ferrocd,
            etcd,
        }
    }
}

/// Throughput, p99 and max of the writers in one phase.
fn puts(phase: &str, f: &Option<Summary>, e: &Option<Summary>) -> [Figure; 3] {
    let of = |s: &Option<Summary>, pick: fn(&Summary) -> f64| s.as_ref().map(pick);
    [
        Figure::new(
            format!("{phase}: puts/s (above 1 is better)"),
            Unit::Count,
            of(f, |s| s.ops_per_sec),
            of(e, |s| s.ops_per_sec),
        ),
        Figure::new(
            format!("{phase}: put p99"),
            Unit::Millis,
            of(f, |s| s.latency_ms.p99),
            of(e, |s| s.latency_ms.p99),
        ),
        Figure::new(
            format!("{phase}: put max"),
            Unit::Millis,
            of(f, |s| s.latency_ms.max),
            of(e, |s| s.latency_ms.max),
        ),
    ]
}

fn errors(f: &Figures) -> String {
    let n = |s: &Option<Summary>| s.as_ref().map_or("-".to_string(), |s| s.errors.to_string());
    format!(
        "{}/{}/{}/{}",
        n(&f.baseline),
        n(&f.during_defrag),
        n(&f.during_compaction),
        n(&f.after_compaction)
    )
}

#[derive(Clone, Copy)]
enum Unit {
    Secs,
    Millis,
    Bytes,
    MibPerSec,
    Count,
}

impl Unit {
    fn show(self, v: Option<f64>) -> String {
        let Some(v) = v else {
            return "-".into();
        };
        match self {
            Unit::Secs => format!("{v:.2} s"),
            Unit::Millis => format!("{v:.1} ms"),
            Unit::Bytes => mib(Some(v as u64)),
            Unit::MibPerSec => format!("{v:.1} MiB/s"),
            Unit::Count => format!("{v:.0}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::report::Recorder;

    fn puts(ms: u64) -> Option<Summary> {
        let mut r = Recorder::default();
        for _ in 0..100 {
            r.record(Duration::from_millis(ms));
        }
        Some(r.summary("puts", Duration::from_secs(1)))
    }

    fn figures(scale: f64) -> Figures {
        Figures {
            keys: 1000,
            snapshot_save_secs: Some(scale),
            snapshot_bytes: Some(10 << 20),
            snapshot_save_mib_per_sec: Some(10.0 / scale),
            restore_secs: Some(2.0 * scale),
            restored_start_secs: Some(scale),
            restored_keys: Some(1000),
            baseline: puts(2),
            db_bytes_before_defrag: Some(20 << 20),
            db_bytes_after_defrag: Some(10 << 20),
            defrag_secs: Some(scale),
            during_defrag: puts((400.0 * scale) as u64),
            compaction_revision: Some(5000),
            compaction_secs: Some(scale),
            during_compaction: puts(4),
            after_compaction: puts(3),
            failures: Vec::new(),
        }
    }

    fn line<'a>(table: &'a str, label: &str) -> Vec<&'a str> {
        let line = table
            .lines()
            .find(|l| l.starts_with(&format!("| {label}")))
            .unwrap_or_else(|| panic!("no {label:?} in\n{table}"));
        line.split('|').skip(1).map(str::trim).collect()
    }

    #[test]
    fn every_figure_has_a_row_with_ferrocd_over_etcd() {
        let m = Maintenance {
            writers: 8,
            baseline_secs: 3.0,
            overwritten_keys: 1000,
            ferrocd: figures(0.25),
            etcd: figures(1.0),
        };
        let table = render(&m);
        assert_eq!(
            line(&table, "snapshot save (1000 keys)"),
            ["snapshot save (1000 keys)", "0.25 s", "1.00 s", "0.25x", ""]
        );
        assert_eq!(line(&table, "snapshot save throughput")[3], "4.00x");
        // The histogram keeps three significant digits: 400 ms reads 400.1.
        let max = line(&table, "8 writers during defrag: put max");
        assert_eq!((max[1], max[3]), ("100.0 ms", "0.25x"));
        assert_eq!(line(&table, "db size after defrag")[1], "10.0 MiB");
        assert_eq!(
            line(&table, "restored member: keys")[1..3],
            ["1000", "1000"]
        );
        assert!(table.contains("compaction --physical after rewriting 1000 keys"));
        assert_eq!(line(&table, "put errors")[1], "0/0/0/0");
        assert!(table.contains("8 writers, 3.0 s after compaction: put p99"));
        let widths: Vec<usize> = table.lines().map(str::len).collect();
        assert!(widths.iter().all(|w| *w == widths[0]), "{table}");
    }

    #[test]
    fn a_failed_step_shows_no_figure_no_ratio_and_says_why() {
        let mut ferrocd = figures(1.0);
        ferrocd.defrag_secs = None;
        ferrocd
            .failures
            .push("defrag: etcdctl exited with 1".into());
        let m = Maintenance {
            writers: 4,
            baseline_secs: 0.3,
            overwritten_keys: 300,
            ferrocd,
            etcd: figures(1.0),
        };
        let table = render(&m);
        assert_eq!(line(&table, "defrag")[1..4], ["-", "1.00 s", "-"]);
        assert!(table.ends_with("maintenance ferrocd: defrag: etcdctl exited with 1\n"));
    }
}
