//! Command-line flags. The common ones (`--endpoints`, `--conns`,
//! `--clients`, `--total`, ...) are global: they may come before or after
//! the subcommand, as with etcd's `benchmark`.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::compare::CompareArgs;
use crate::runner::{RunOpts, Until};
use crate::workload::{lease::LeaseArgs, mixed::MixedArgs, put::PutArgs, range::RangeArgs};
use crate::workload::{txn_put::TxnPutArgs, watch::WatchArgs, Workload};

/// Operations per run when neither `--total` nor `--duration` is given.
pub const DEFAULT_TOTAL: u64 = 10_000;

/// Load generator for etcd v3 endpoints: ferrocd's and etcd's alike.
#[derive(Parser, Debug)]
#[command(name = "ferrocd-bench", version)]
pub struct Cli {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Put keys (`--key-size`, `--val-size`, `--sequential-keys`, `--key-space-size`).
    Put(PutArgs),
    /// Range over preloaded keys, linearizable or serializable.
    Range(RangeArgs),
    /// kube-apiserver's create/update transactions.
    TxnPut(TxnPutArgs),
    /// N watchers, M writers: event delivery latency.
    Watch(WatchArgs),
    /// Lease grant + keep-alive.
    Lease(LeaseArgs),
    /// Random reads and writes with `--read-ratio`.
    Mixed(MixedArgs),
    /// Start ferrocd and etcd side by side, run every workload on both and
    /// print ferrocd/etcd ratios (uses its own sizes; `--quick` for CI).
    Compare(CompareArgs),
}

impl Command {
    /// The workload to run, or `None` for `compare`.
    pub fn workload(&self) -> Option<(&'static str, Workload)> {
        Some(match self {
            Command::Put(a) => ("put", Workload::Put(a.clone())),
            Command::Range(a) => ("range", Workload::Range(a.clone())),
            Command::TxnPut(a) => ("txn-put", Workload::TxnPut(a.clone())),
            Command::Watch(a) => ("watch", Workload::Watch(a.clone())),
            Command::Lease(a) => ("lease", Workload::Lease(a.clone())),
            Command::Mixed(a) => ("mixed", Workload::Mixed(a.clone())),
            Command::Compare(_) => return None,
        })
    }
}

#[derive(Args, Clone, Debug)]
pub struct Common {
    /// gRPC endpoints, comma-separated (`host:port` or URLs).
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = "127.0.0.1:2379"
    )]
    pub endpoints: Vec<String>,
    /// gRPC connections (channels), spread over the endpoints.
    #[arg(long, global = true, default_value_t = 1)]
    pub conns: usize,
    /// Concurrent request loops, spread over the connections.
    #[arg(long, global = true, default_value_t = 1)]
    pub clients: usize,
    /// Send everything to the leader only (found with Maintenance.Status).
    #[arg(long, global = true)]
    pub target_leader: bool,
    /// Operations to send [default: 10000].
    #[arg(long, global = true, conflicts_with = "duration")]
    pub total: Option<u64>,
    /// Run for this long instead (`30s`, `500ms`, `2m`).
    #[arg(long, global = true, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Operations per second over all clients (default: unlimited).
    #[arg(long, global = true)]
    pub rate: Option<f64>,
    /// A request with no answer after this long counts as an error.
    #[arg(long, global = true, default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Print results as JSON on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// No progress bar on stderr.
    #[arg(long, global = true)]
    pub no_progress: bool,
    /// CA bundle that `https://` endpoints' certificates must chain to.
    #[arg(long, global = true, requires_all = ["cert", "key"])]
    pub cacert: Option<std::path::PathBuf>,
    /// Client certificate for `https://` endpoints.
    #[arg(long, global = true, requires = "cacert")]
    pub cert: Option<std::path::PathBuf>,
    /// Client key for `https://` endpoints.
    #[arg(long, global = true, requires = "cacert")]
    pub key: Option<std::path::PathBuf>,
}

impl Common {
    pub fn run_opts(&self) -> RunOpts {
        RunOpts {
            clients: self.clients.max(1),
            until: match self.duration {
                Some(d) => Until::Duration(d),
                None => Until::Total(self.total.unwrap_or(DEFAULT_TOTAL)),
            },
            rate: self.rate.filter(|r| *r > 0.0),
            timeout: self.timeout,
            progress: !self.no_progress,
        }
    }
}

/// `250ms`, `30s`, `2m`, `1h`, or plain seconds (`1.5`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("bad duration unit in {s:?} (use ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("bad duration {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_the_usual_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("5 days").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn common_flags_may_follow_the_subcommand() {
        let cli = Cli::try_parse_from([
            "ferrocd-bench",
            "put",
            "--clients=8",
            "--endpoints=a:1,b:2",
            "--duration=2s",
        ])
        .unwrap();
        assert_eq!(cli.common.endpoints, ["a:1", "b:2"]);
        let opts = cli.common.run_opts();
        assert_eq!(opts.clients, 8);
        assert_eq!(opts.until, Until::Duration(Duration::from_secs(2)));
    }

    #[test]
    fn total_and_duration_exclude_each_other() {
        let r = Cli::try_parse_from(["ferrocd-bench", "put", "--total=5", "--duration=1s"]);
        assert!(r.is_err());
    }
}
