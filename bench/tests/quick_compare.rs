//! `ferrocd-bench compare --quick` against real ferrocd and etcd processes,
//! one member each and 3-member clusters of each: it must run to the end and
//! print the ratio table, the maintenance figures and the cluster figures.
//! Never asserts a speed.

use std::process::Command;

use ferrocd_e2e::{ferrocd_bin, require_tool};

const WORKLOADS: &[&str] = &[
    "put-1client",
    "put",
    "range-l",
    "range-s",
    "range-l-100keys",
    "txn-create",
    "txn-update",
    "watch",
    "lease",
    "mixed-90r",
];

/// Workloads that clusters also run with every client on the leader.
const LEADER_VARIANTS: &[&str] = &["put", "range-l"];

#[test]
fn quick_compare_prints_a_ratio_row_per_workload_and_cluster_size() {
    if !require_tool("etcd") || !require_tool("etcdctl") {
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_ferrocd-bench"))
        .args(["compare", "--quick", "--no-progress", "--ferrocd-bin"])
        .arg(ferrocd_bin())
        .output()
        .expect("run ferrocd-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "compare --quick failed ({}):\n{stdout}\n{stderr}",
        out.status
    );

    let table: Vec<&str> = stdout.lines().filter(|l| l.starts_with("| ")).collect();
    let header = table.first().expect("a table");
    assert!(
        header.contains("ops ratio") && header.contains("p99 ratio"),
        "{stdout}"
    );
    let row = |w: &str, members: &str| {
        table
            .iter()
            .find(|l| cells(l)[..2] == [w, members])
            .unwrap_or_else(|| panic!("no row for {w} on {members} members:\n{stdout}"))
    };
    let rows = WORKLOADS
        .iter()
        .flat_map(|w| [(*w, "1"), (*w, "3")])
        .chain(LEADER_VARIANTS.iter().map(|w| (*w, "3 leader")));
    for (w, members) in rows {
        let ratio = cells(row(w, members))[4];
        assert!(ratio.ends_with('x'), "{w} [{members}]: ops ratio {ratio:?}");
    }
    assert!(stdout.contains("restart to first Status"), "{stdout}");
    assert_maintenance_measured(&table, &stdout);
    assert!(stdout.contains("check datascale ferrocd"), "{stdout}");
    for figure in [
        "3 members: kill -9 leader -> next write ok",
        "3 members: learner catch-up",
        "serializable read of last key",
    ] {
        assert!(stdout.contains(figure), "no {figure:?}:\n{stdout}");
    }
}

/// Every maintenance figure has a value for both servers, and each restored
/// member holds every key its snapshot was taken with.
fn assert_maintenance_measured(table: &[&str], stdout: &str) {
    let figure = |label: &str| {
        table
            .iter()
            .map(|l| cells(l))
            .find(|c| c[0].starts_with(label))
            .unwrap_or_else(|| panic!("no maintenance row {label:?}:\n{stdout}"))
    };
    for label in [
        "snapshot save (",
        "snapshot save throughput",
        "snapshot restore into a new data dir",
        "restored member: start to first Status",
        "defrag",
        "4 writers during defrag: put max",
        "compaction --physical after rewriting",
        "4 writers during compaction: put p99",
    ] {
        let row = figure(label);
        assert!(row[1] != "-" && row[2] != "-", "{label}: {row:?}\n{stdout}");
    }
    let saved = figure("snapshot save (");
    let keys = saved[0]
        .trim_start_matches("snapshot save (")
        .trim_end_matches(" keys)");
    let restored = figure("restored member: keys");
    assert_eq!(restored[1..3], [keys, keys], "{stdout}");
    assert!(!stdout.contains("maintenance ferrocd:"), "{stdout}");
}

/// The trimmed cells of a Markdown table line.
fn cells(line: &str) -> Vec<&str> {
    line.split('|').skip(1).map(str::trim).collect()
}

#[test]
fn quick_compare_over_mutual_tls_prints_the_client_workloads() {
    if !require_tool("etcd") || !require_tool("etcdctl") {
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_ferrocd-bench"))
        .args([
            "compare",
            "--quick",
            "--tls",
            "--members=1",
            "--only=put-1client,put,range-l",
        ])
        .args(["--no-progress", "--ferrocd-bin"])
        .arg(ferrocd_bin())
        .output()
        .expect("run ferrocd-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "compare --quick --tls failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("--tls (clients over mutual TLS)"),
        "{stdout}"
    );
    let table: Vec<&str> = stdout.lines().filter(|l| l.starts_with("| ")).collect();
    assert_maintenance_measured(&table, &stdout);
    for w in ["put-1client", "put", "range-l"] {
        let row = stdout
            .lines()
            .filter(|l| l.starts_with("| "))
            .find(|l| cells(l)[..2] == [w, "1"])
            .unwrap_or_else(|| panic!("no TLS row for {w}:\n{stdout}"));
        assert!(cells(row)[4].ends_with('x'), "{row}");
    }
}

#[test]
fn quick_compare_json_holds_the_maintenance_figures_of_both() {
    if !require_tool("etcd") || !require_tool("etcdctl") {
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_ferrocd-bench"))
        .args(["compare", "--quick", "--json", "--members=1", "--only=put"])
        .args(["--skip-checks", "--ferrocd-bin"])
        .arg(ferrocd_bin())
        .output()
        .expect("run ferrocd-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "compare --quick --json failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("JSON on stdout");
    let m = &report["maintenance"];
    assert_eq!(m["overwritten_keys"], 300, "{m}");
    for server in ["ferrocd", "etcd"] {
        let f = &m[server];
        assert_eq!(f["failures"], serde_json::json!([]), "{server}: {f}");
        assert!(f["keys"].as_i64().unwrap() >= 300, "{server}: {f}");
        assert_eq!(f["restored_keys"], f["keys"], "{server}: {f}");
        assert!(f["snapshot_bytes"].as_u64().unwrap() > 0, "{server}: {f}");
        let phases = [
            "baseline",
            "during_defrag",
            "during_compaction",
            "after_compaction",
        ];
        for phase in phases {
            let puts = &f[phase];
            assert!(
                puts["ops"].as_u64().unwrap() > 0,
                "{server} {phase}: {puts}"
            );
            assert_eq!(puts["errors"], 0, "{server} {phase}: {puts}");
        }
        for secs in [
            "snapshot_save_secs",
            "restore_secs",
            "defrag_secs",
            "compaction_secs",
        ] {
            assert!(f[secs].as_f64().unwrap() > 0.0, "{server} {secs}: {f}");
        }
        // The compaction was at a revision after every overwrite.
        assert!(
            f["compaction_revision"].as_i64().unwrap() > 600,
            "{server}: {f}"
        );
    }
}
