//! `ferrocd-bench compare --quick` against real ferrocd and etcd processes:
//! it must run to the end and print the ratio table. Never asserts a speed.

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

#[test]
fn quick_compare_prints_a_ratio_row_per_workload() {
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
    for w in WORKLOADS {
        let row = table
            .iter()
            .find(|l| l.starts_with(&format!("| {w} ")))
            .unwrap_or_else(|| panic!("no row for {w}:\n{stdout}"));
        let ratio = row.split('|').nth(4).expect("ops ratio cell").trim();
        assert!(ratio.ends_with('x'), "{w}: ops ratio {ratio:?}");
    }
    assert!(stdout.contains("3 members: skipped"), "{stdout}");
    assert!(stdout.contains("restart to first Status"), "{stdout}");
    assert!(stdout.contains("check datascale ferrocd"), "{stdout}");
}
