//! `ferrocd-bench compare --quick` against real ferrocd and etcd processes,
//! one member each and 3-member clusters of each: it must run to the end and
//! print the ratio table and the cluster figures. Never asserts a speed.

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
    assert!(stdout.contains("check datascale ferrocd"), "{stdout}");
    for figure in [
        "3 members: kill -9 leader -> next write ok",
        "3 members: learner catch-up",
        "serializable read of last key",
    ] {
        assert!(stdout.contains(figure), "no {figure:?}:\n{stdout}");
    }
}

/// The trimmed cells of a Markdown table line.
fn cells(line: &str) -> Vec<&str> {
    line.split('|').skip(1).map(str::trim).collect()
}

#[test]
fn quick_compare_over_mutual_tls_prints_the_client_workloads() {
    if !require_tool("etcd") {
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
    for w in ["put-1client", "put", "range-l"] {
        let row = stdout
            .lines()
            .filter(|l| l.starts_with("| "))
            .find(|l| cells(l)[..2] == [w, "1"])
            .unwrap_or_else(|| panic!("no TLS row for {w}:\n{stdout}"));
        assert!(cells(row)[4].ends_with('x'), "{row}");
    }
}
