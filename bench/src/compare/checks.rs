//! `etcdctl check perf` and `etcdctl check datascale` against a server: the
//! verdict lines (`PASS: Throughput is 150 writes/s`, ...) are the result.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

/// One etcdctl check on one server.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub server: String,
    /// `perf` or `datascale`.
    pub check: String,
    /// etcdctl exited 0.
    pub passed: bool,
    /// The PASS/FAIL lines with their figures (or the error output).
    pub lines: Vec<String>,
    pub elapsed_secs: f64,
}

/// Runs `etcdctl check <check> --load=<load>` against `endpoint`.
pub async fn run(etcdctl: &Path, server: &str, endpoint: &str, check: &str, load: &str) -> Check {
    let t0 = Instant::now();
    let out = tokio::process::Command::new(etcdctl)
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg("--command-timeout=30s")
        .args([
            "check",
            check,
            &format!("--load={load}"),
            "--auto-compact",
            "--auto-defrag",
        ])
        .kill_on_drop(true)
        .output();
    let (passed, lines) = match tokio::time::timeout(Duration::from_secs(300), out).await {
        Ok(Ok(o)) => {
            let text = format!(
                "{}\n{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            let mut lines = verdicts(&text);
            if lines.is_empty() {
                lines = last_lines(&text, 5);
            }
            (o.status.success(), lines)
        }
        Ok(Err(e)) => (
            false,
            vec![format!("could not run {}: {e}", etcdctl.display())],
        ),
        Err(_) => (false, vec!["no result within 300 s".to_string()]),
    };
    Check {
        server: server.to_string(),
        check: check.to_string(),
        passed,
        lines,
        elapsed_secs: t0.elapsed().as_secs_f64(),
    }
}

/// The PASS/FAIL lines of etcdctl's output (its progress bar redraws
/// with carriage returns, so those split lines too).
pub fn verdicts(output: &str) -> Vec<String> {
    output
        .split(['\n', '\r'])
        .map(str::trim)
        .filter(|l| l.starts_with("PASS") || l.starts_with("FAIL"))
        .map(str::to_string)
        .collect()
}

fn last_lines(text: &str, n: usize) -> Vec<String> {
    let lines: Vec<&str> = text
        .split(['\n', '\r'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// The checks as text, one line per verdict.
pub fn render(checks: &[Check]) -> String {
    let mut out = String::new();
    for c in checks {
        for line in &c.lines {
            out.push_str(&format!(
                "check {:<9} {:<7} ({:>5.1} s) {line}\n",
                c.check, c.server, c.elapsed_secs
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_are_picked_out_of_a_progress_bar() {
        let out = " 60 / 60 Boooo! 100.00% 1m0s\rPASS: Throughput is 150 writes/s\n\
                   PASS: Slowest request took 0.02s\nFAIL: Stddev is 0.3s\nFAIL\n";
        assert_eq!(
            verdicts(out),
            [
                "PASS: Throughput is 150 writes/s",
                "PASS: Slowest request took 0.02s",
                "FAIL: Stddev is 0.3s",
                "FAIL"
            ]
        );
    }
}
