//! `ferrocd-bench compare`: starts etcd 3.4 and ferrocd with the same flags
//! (one member each, fsync on, fresh data directories, loopback), runs every
//! workload on one then the other, and prints ferrocd/etcd ratios with each
//! server's RSS after each workload; then restart times with all the data,
//! and `etcdctl check perf` / `check datascale` against both.

mod cases;
mod checks;
mod server;
mod table;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use clap::Args;
use ferrocd_proto::etcdserverpb::RangeRequest;
use serde::Serialize;

use crate::cli::Common;
use crate::conn::Pool;
use crate::runner::{RunOpts, Until};
pub use cases::Case;
pub use checks::Check;
use server::{Kind, Server};
pub use table::{Restart, Row};

/// Why the 3-member comparison does not run yet.
const THREE_MEMBERS_SKIPPED: &str = "3 members: skipped (ferrocd runs a single member only: \
     membership changes and replication to peers are not implemented yet)";

#[derive(Args, Clone, Debug)]
pub struct CompareArgs {
    /// Tiny sizes that only prove everything runs (CI); no `check perf`.
    #[arg(long)]
    pub quick: bool,
    /// The ferrocd binary [default: $CARGO_TARGET_DIR/release/ferrocd, or
    /// target/release/ferrocd in the workspace].
    #[arg(long, env = "FERROCD_BIN")]
    pub ferrocd_bin: Option<PathBuf>,
    /// The etcd binary (Debian's etcd-server: etcd 3.4).
    #[arg(long, default_value = "etcd")]
    pub etcd_bin: PathBuf,
    /// The etcdctl binary (Debian's etcd-client).
    #[arg(long, default_value = "etcdctl")]
    pub etcdctl_bin: PathBuf,
    /// Keys written by the `put` workload (64 B keys, 256 B values) [default: 100000; quick: 300].
    #[arg(long)]
    pub put_keys: Option<u64>,
    /// Run only these workloads (comma-separated names from the table).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Skip `etcdctl check perf` and `check datascale`.
    #[arg(long)]
    pub skip_checks: bool,
}

/// Everything `compare` measured, for `--json`.
#[derive(Debug, Serialize)]
pub struct Report {
    pub members: usize,
    pub skipped: Vec<String>,
    pub rows: Vec<Row>,
    pub restart: Option<Restart>,
    pub checks: Vec<Check>,
}

pub async fn run(common: &Common, args: &CompareArgs) -> anyhow::Result<()> {
    let ferrocd_bin = args.ferrocd_bin.clone().unwrap_or_else(default_ferrocd_bin);
    if !ferrocd_bin.exists() {
        bail!(
            "{} not found: build it (cargo build --release --bin ferrocd) or pass --ferrocd-bin",
            ferrocd_bin.display()
        );
    }
    let etcd_version = version(&args.etcd_bin).with_context(|| {
        format!(
            "{} not found: install Debian's etcd-server (etcd 3.4)",
            args.etcd_bin.display()
        )
    })?;
    let text = !common.json;
    let say = |s: &str| {
        if text {
            println!("{s}");
        }
    };
    say(&format!(
        "ferrocd-bench compare{}: ferrocd {} vs {} on {} cores; 1 member each, fsync on, fresh data dirs, loopback",
        if args.quick { " --quick" } else { "" },
        ferrocd_bin.display(),
        etcd_version,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    ));
    say(THREE_MEMBERS_SKIPPED);

    let mut ferrocd = Server::start(Kind::Ferrocd, &ferrocd_bin).await?;
    let mut etcd = Server::start(Kind::Etcd, &args.etcd_bin).await?;
    let mut report = Report {
        members: 1,
        skipped: vec![THREE_MEMBERS_SKIPPED.to_string()],
        rows: Vec::new(),
        restart: None,
        checks: Vec::new(),
    };

    for case in cases::all(args.quick, args.put_keys) {
        if !args.only.is_empty() && !args.only.iter().any(|o| o == case.name) {
            continue;
        }
        let f = run_case(&case, &mut ferrocd, common).await?;
        let e = run_case(&case, &mut etcd, common).await?;
        if text {
            print!("{}{}", f.to_text(), e.to_text());
        }
        report.rows.push(Row {
            workload: case.name.to_string(),
            ferrocd: f,
            etcd: e,
            ferrocd_rss_bytes: ferrocd.rss_bytes(),
            etcd_rss_bytes: etcd.rss_bytes(),
        });
    }

    let keys = count_keys(&ferrocd).await?;
    let restart = Restart {
        keys,
        ferrocd_data_bytes: ferrocd.data_bytes(),
        etcd_data_bytes: etcd.data_bytes(),
        ferrocd_secs: ferrocd.restart().await?.as_secs_f64(),
        etcd_secs: etcd.restart().await?.as_secs_f64(),
        ferrocd_rss_bytes: ferrocd.rss_bytes(),
        etcd_rss_bytes: etcd.rss_bytes(),
    };
    report.restart = Some(restart);

    if args.skip_checks {
        say("etcdctl checks: skipped (--skip-checks)");
    } else {
        let mut checks = vec![("datascale", "s")];
        if args.quick {
            let why = "etcdctl check perf: skipped in --quick (it runs 60 s per server)";
            say(why);
            report.skipped.push(why.to_string());
        } else {
            checks.insert(0, ("perf", "s"));
        }
        for (check, load) in checks {
            for server in [&ferrocd, &etcd] {
                let c = checks::run(
                    &args.etcdctl_bin,
                    server.kind.name(),
                    &server.endpoint,
                    check,
                    load,
                )
                .await;
                report.checks.push(c);
            }
        }
    }

    if text {
        println!();
        print!("{}", table::render(&report.rows));
        println!();
        if let Some(r) = &report.restart {
            print!("{}", table::render_restart(r));
        }
        println!();
        print!("{}", checks::render(&report.checks));
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

async fn run_case(
    case: &Case,
    server: &mut Server,
    common: &Common,
) -> anyhow::Result<crate::report::Summary> {
    let opts = RunOpts {
        clients: case.clients,
        until: Until::Total(case.total),
        rate: None,
        timeout: common.timeout,
        progress: !common.no_progress && !common.json,
    };
    let label = format!("{} {}", server.kind.name(), case.name);
    let pool = Pool::connect(std::slice::from_ref(&server.client_url), case.conns, false).await?;
    let result = case.workload.run(&label, &opts, &pool).await;
    if !server.alive() {
        bail!(
            "{} died during {}; log:\n{}",
            server.kind.name(),
            case.name,
            server.log_tail()
        );
    }
    let mut summary = result.with_context(|| format!("{} on {}", case.name, server.kind.name()))?;
    summary.workload = label;
    Ok(summary)
}

async fn count_keys(server: &Server) -> anyhow::Result<i64> {
    let pool = Pool::connect(std::slice::from_ref(&server.client_url), 1, false).await?;
    let all = RangeRequest {
        key: vec![0],
        range_end: vec![0],
        count_only: true,
        ..Default::default()
    };
    Ok(pool.kv(0).range(all).await?.into_inner().count)
}

fn default_ferrocd_bin() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("target")
        });
    target.join("release").join("ferrocd")
}

/// The first line of `program --version`.
fn version(program: &Path) -> anyhow::Result<String> {
    let out = Command::new(program).arg("--version").output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.lines().next().unwrap_or("etcd").trim().to_string())
}
