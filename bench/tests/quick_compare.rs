//! `ferrocd-bench compare --quick` against real ferrocd and etcd processes:
//! it must run to the end and print the ratio table. Never asserts a speed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Whether `tool` is on PATH; in CI a missing tool fails the test.
fn have(tool: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            !in_ci(),
            "{tool} is required in CI (Debian packages etcd-server and etcd-client)"
        );
        eprintln!("skipping: {tool} is not installed");
    }
    found
}

/// The `ferrocd` binary of this build (`FERROCD_BIN` overrides).
fn ferrocd_bin() -> PathBuf {
    if let Ok(p) = std::env::var("FERROCD_BIN") {
        return PathBuf::from(p);
    }
    // Test executables live in target/<profile>/deps.
    let exe = std::env::current_exe().expect("test executable path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile dir")
        .join("ferrocd");
    assert!(
        bin.exists(),
        "{} not found: build it first (cargo build --bin ferrocd) or set FERROCD_BIN",
        bin.display()
    );
    bin
}

#[test]
fn quick_compare_prints_a_ratio_row_per_workload() {
    if !have("etcd") || !have("etcdctl") {
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
