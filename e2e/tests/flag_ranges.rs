//! Flag values out of range stop ferrocd at startup with exit code 2 and a
//! message naming the flag, as malformed flags do, instead of starting a
//! server whose tasks panic later.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferrocd_e2e::{ferrocd_bin, free_port};

/// Starts ferrocd on free ports with `extra`; it must exit by itself within
/// 10 s. Returns its exit code and what it printed.
fn run_to_exit(extra: &[&str]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let peer = format!("http://127.0.0.1:{}", free_port());
    let client = format!("http://127.0.0.1:{}", free_port());
    let log_path = dir.path().join("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new(ferrocd_bin())
        .arg(format!("--data-dir={}", dir.path().join("data").display()))
        .arg(format!("--listen-client-urls={client}"))
        .arg(format!("--advertise-client-urls={client}"))
        .arg(format!("--listen-peer-urls={peer}"))
        .arg(format!("--initial-advertise-peer-urls={peer}"))
        .arg(format!("--initial-cluster=default={peer}"))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start ferrocd");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "ferrocd {extra:?} kept running: {}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        status.code(),
        std::fs::read_to_string(&log_path).unwrap_or_default(),
    )
}

#[test]
fn zero_watch_progress_notify_interval_exits_2_naming_the_flag() {
    let (code, out) = run_to_exit(&["--experimental-watch-progress-notify-interval=0"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains(
            "--watch-progress-notify-interval=0ns is too short: it must be at least 100ms"
        ),
        "{out}"
    );
}

#[test]
fn out_of_range_raft_timing_and_snapshot_count_exit_2() {
    for (flags, text) in [
        (
            &["--heartbeat-interval=0"][..],
            "--heartbeat-interval must be greater than 0",
        ),
        (
            &["--election-timeout=60000"][..],
            "--election-timeout[60000ms] is too long, and should be set less than 50000ms",
        ),
        (
            &["--heartbeat-interval=300", "--election-timeout=1000"][..],
            "--election-timeout[1000ms] should be at least as 5 times as --heartbeat-interval[300ms]",
        ),
        (&["--snapshot-count=0"][..], "--snapshot-count must be greater than 0"),
    ] {
        let (code, out) = run_to_exit(flags);
        assert_eq!(code, Some(2), "{flags:?}: {out}");
        assert!(out.contains(text), "{flags:?}: {out}");
    }
}

#[test]
fn a_corrupt_check_period_under_100_ms_exits_2_naming_the_flag() {
    let (code, out) = run_to_exit(&["--experimental-corrupt-check-time=10ms"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains(
            "--experimental-corrupt-check-time=10ms is too short: it must be at least 100ms"
        ),
        "{out}"
    );
}
