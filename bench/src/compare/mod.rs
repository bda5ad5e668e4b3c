//! `ferrocd-bench compare`: starts etcd 3.4 and ferrocd with the same flags
//! (fsync on, fresh data directories, loopback), first one member each, then
//! 3-member clusters of each, runs every workload on one then the other, and
//! prints ferrocd/etcd ratios with the servers' RSS after each workload;
//! then restart times with all the data, snapshot save and restore, put
//! latencies during defrag and compaction ([`maintenance`]) and `etcdctl
//! check perf` / `check datascale` (one member), failover and learner
//! catch-up times (clusters).

mod cases;
mod checks;
mod cluster;
mod maintenance;
mod server;
mod table;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use ferrocd_proto::etcdserverpb::RangeRequest;
use serde::Serialize;

use crate::cli::Common;
use crate::conn::Pool;
use crate::runner::{RunOpts, Until};
pub use cases::Case;
pub use checks::Check;
use cluster::Members;
pub use maintenance::{Figures as MaintenanceFigures, Maintenance};
use server::{Kind, Server};
pub use table::{ClusterFigures, ClusterTimes, Restart, Row};

/// Workloads that clusters also run with every client on the leader.
const LEADER_VARIANTS: &[&str] = &["put-1client", "put", "range-l"];

#[derive(Args, Clone, Debug)]
pub struct CompareArgs {
    /// Tiny sizes that only prove everything runs (CI); no `check perf`.
    #[arg(long)]
    pub quick: bool,
    /// The ferrocd binary [default: $CARGO_TARGET_DIR/release/ferrocd, or
    /// target/release/ferrocd in the workspace].
    #[arg(long, env = "FERROCD_BIN")]
    pub ferrocd_bin: Option<PathBuf>,
    /// The etcd binary (Debian's etcd-server: etcd 3.4); clusters of more
    /// than one member always start `etcd` from PATH.
    #[arg(long, default_value = "etcd")]
    pub etcd_bin: PathBuf,
    /// The etcdctl binary (Debian's etcd-client).
    #[arg(long, default_value = "etcdctl")]
    pub etcdctl_bin: PathBuf,
    /// Cluster sizes to compare, in order (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [1, 3])]
    pub members: Vec<usize>,
    /// Keys written by the `put` workload (64 B keys, 256 B values) [default: 100000; quick: 300].
    #[arg(long)]
    pub put_keys: Option<u64>,
    /// Keys stored before a learner joins a cluster [default: 100000; quick: 500].
    #[arg(long)]
    pub catchup_keys: Option<u64>,
    /// Run only these workloads (comma-separated names from the table).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Skip `etcdctl check perf` and `check datascale`.
    #[arg(long)]
    pub skip_checks: bool,
    /// Run the workloads only: no restart, maintenance, checks, failover
    /// or catch-up figures (for repeating a few rows quickly).
    #[arg(long)]
    pub workloads_only: bool,
    /// Serve clients over mutual TLS on both (certificates made for the
    /// run); one member only.
    #[arg(long)]
    pub tls: bool,
}

/// Everything `compare` measured, for `--json`.
#[derive(Debug, Serialize)]
pub struct Report {
    pub members: Vec<usize>,
    pub skipped: Vec<String>,
    pub rows: Vec<Row>,
    pub restart: Option<Restart>,
    pub maintenance: Option<Maintenance>,
    pub cluster: Vec<ClusterFigures>,
    pub checks: Vec<Check>,
}

/// What a workload runs against: one server, or the members of a cluster.
trait Target {
    fn name(&self) -> &'static str;
    /// Where clients connect: spread over all of them.
    fn client_urls(&self) -> Vec<String>;
    /// Resident memory, summed over the members of a cluster.
    fn rss_bytes(&self) -> Option<u64>;
    /// An error with the end of the log if a process died.
    fn check_alive(&mut self) -> anyhow::Result<()>;
}

pub async fn run(common: &Common, args: &CompareArgs) -> anyhow::Result<()> {
    let ferrocd_bin = args.ferrocd_bin.clone().unwrap_or_else(default_ferrocd_bin);
    if !ferrocd_bin.exists() {
        bail!(
            "{} not found: build it (cargo build --release --bin ferrocd) or pass --ferrocd-bin",
            ferrocd_bin.display()
        );
    }
    if args.members.contains(&0) {
        bail!("--members: a cluster has at least one member");
    }
    if args.tls && args.members != [1] {
        bail!("--tls compares one member: pass --members 1");
    }
    let clusters = args.members.iter().any(|&n| n > 1);
    if clusters && args.etcd_bin != Path::new("etcd") {
        bail!("clusters start `etcd` from PATH: put yours first on PATH, or pass --members 1");
    }
    let etcd_version = version(&args.etcd_bin).with_context(|| {
        format!(
            "{} not found: install Debian's etcd-server (etcd 3.4)",
            args.etcd_bin.display()
        )
    })?;
    version(&args.etcdctl_bin).with_context(|| {
        format!(
            "{} not found: install Debian's etcd-client (etcdctl 3.4)",
            args.etcdctl_bin.display()
        )
    })?;
    if clusters {
        // The e2e harness, which starts the clusters, finds ferrocd there.
        // Set before any cluster process or thread of ours reads the
        // environment.
        std::env::set_var("FERROCD_BIN", &ferrocd_bin);
    }
    let text = !common.json;
    let say = |s: &str| {
        if text {
            println!("{s}");
        }
    };
    let sizes: Vec<String> = args.members.iter().map(|n| n.to_string()).collect();
    say(&format!(
        "ferrocd-bench compare{}{}: ferrocd {} vs {} on {} cores; members {} each, fsync on, \
         fresh data dirs, loopback; clusters: heartbeat 100 ms, election timeout 1000 ms on both, \
         clients spread over every voting member (`N leader` rows: on the leader only), \
         RSS summed over the members",
        if args.quick { " --quick" } else { "" },
        if args.tls {
            " --tls (clients over mutual TLS)"
        } else {
            ""
        },
        ferrocd_bin.display(),
        etcd_version,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        sizes.join(","),
    ));

    let mut report = Report {
        members: args.members.clone(),
        skipped: Vec::new(),
        rows: Vec::new(),
        restart: None,
        maintenance: None,
        cluster: Vec::new(),
        checks: Vec::new(),
    };
    let cases: Vec<Case> = cases::all(args.quick, args.put_keys)
        .into_iter()
        .filter(|c| args.only.is_empty() || args.only.iter().any(|o| o == c.name))
        .collect();
    for &n in &args.members {
        if n == 1 {
            one_member(common, args, &ferrocd_bin, &cases, &mut report).await?;
        } else {
            cluster(common, args, n, &cases, &mut report).await?;
        }
    }

    if text {
        println!();
        print!("{}", table::render(&report.rows));
        if let Some(r) = &report.restart {
            println!();
            print!("{}", table::render_restart(r));
        }
        if let Some(m) = &report.maintenance {
            println!();
            print!("{}", maintenance::render(m));
        }
        if !report.cluster.is_empty() {
            println!();
            print!("{}", table::render_cluster(&report.cluster));
        }
        println!();
        print!("{}", checks::render(&report.checks));
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

/// One member each: the workloads, then restart times, maintenance and
/// etcdctl checks.
async fn one_member(
    common: &Common,
    args: &CompareArgs,
    ferrocd_bin: &Path,
    cases: &[Case],
    report: &mut Report,
) -> anyhow::Result<()> {
    let text = !common.json;
    // Kept until both servers are gone: their certificate files.
    let mut pki = args.tls.then(|| ferrocd_e2e::pki::Pki::new("bench-ca"));
    let (tls_flags, etcdctl_tls) = match &mut pki {
        Some(pki) => {
            let server = pki.issue("server", "server");
            let client = pki.client("bench");
            crate::conn::use_tls(&client.ca, &client.cert, &client.key)?;
            let server_flags = vec![
                format!("--cert-file={}", server.cert.display()),
                format!("--key-file={}", server.key.display()),
                format!("--trusted-ca-file={}", pki.ca().display()),
                "--client-cert-auth=true".to_string(),
            ];
            let etcdctl_flags = vec![
                format!("--cacert={}", client.ca.display()),
                format!("--cert={}", client.cert.display()),
                format!("--key={}", client.key.display()),
            ];
            (server_flags, etcdctl_flags)
        }
        None => (Vec::new(), Vec::new()),
    };
    let mut ferrocd = Server::start(Kind::Ferrocd, ferrocd_bin, &tls_flags).await?;
    let mut etcd = Server::start(Kind::Etcd, &args.etcd_bin, &tls_flags).await?;
    for case in cases {
        let row = run_row(case, "1", false, &mut ferrocd, &mut etcd, common).await?;
        report.rows.push(row);
    }
    if args.workloads_only {
        return Ok(());
    }

    let pool = Pool::connect(std::slice::from_ref(&ferrocd.client_url), 1, false).await?;
    let keys = count_keys(&pool).await?;
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

    let tools = maintenance::Tools {
        etcdctl: &args.etcdctl_bin,
        etcdctl_tls,
        server_tls: &tls_flags,
    };
    let put_keys = cases::put_keys(args.quick, args.put_keys);
    let plan = maintenance::Plan::new(
        args.quick,
        put_keys,
        common.timeout,
        text,
        !common.no_progress,
    );
    let f = maintenance::measure(&mut ferrocd, &tools, &plan).await?;
    let e = maintenance::measure(&mut etcd, &tools, &plan).await?;
    report.maintenance = Some(Maintenance {
        writers: plan.writers,
        baseline_secs: plan.baseline.as_secs_f64(),
        overwritten_keys: put_keys,
        ferrocd: f,
        etcd: e,
    });

    if args.skip_checks || args.tls {
        if text {
            println!("etcdctl checks: skipped (--skip-checks or --tls)");
        }
        return Ok(());
    }
    let mut checks = vec![("datascale", "s")];
    if args.quick {
        let why = "etcdctl check perf: skipped in --quick (it runs 60 s per server)";
        if text {
            println!("{why}");
        }
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
    Ok(())
}

/// `n` members each: the workloads with clients on every member, some on
/// the leader only, then learner catch-up and failover.
async fn cluster(
    common: &Common,
    args: &CompareArgs,
    n: usize,
    cases: &[Case],
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut ferrocd = Members::start(Kind::Ferrocd, n).await;
    let mut etcd = Members::start(Kind::Etcd, n).await;
    let (spread, leader) = (n.to_string(), format!("{n} leader"));
    for case in cases {
        let row = run_row(case, &spread, false, &mut ferrocd, &mut etcd, common).await?;
        report.rows.push(row);
        if LEADER_VARIANTS.contains(&case.name) {
            let row = run_row(case, &leader, true, &mut ferrocd, &mut etcd, common).await?;
            report.rows.push(row);
        }
    }
    if args.workloads_only {
        return Ok(());
    }

    let keys = args
        .catchup_keys
        .unwrap_or(if args.quick { 500 } else { 100_000 });
    let limit = Duration::from_secs(120);
    let mut times = Vec::new();
    for members in [&mut ferrocd, &mut etcd] {
        let catch_up = members.catch_up(keys, limit).await?;
        let failover = members.failover(Duration::from_secs(60)).await?;
        let secs = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
        times.push(ClusterTimes {
            failover_secs: secs(failover),
            catchup_keys: catch_up.keys,
            catchup_applied_secs: secs(catch_up.applied),
            catchup_read_secs: secs(catch_up.read),
        });
    }
    let etcd_times = times.pop().expect("etcd's figures");
    let ferrocd_times = times.pop().expect("ferrocd's figures");
    report.cluster.push(ClusterFigures {
        members: n,
        ferrocd: ferrocd_times,
        etcd: etcd_times,
    });
    Ok(())
}

/// `case` on ferrocd, then on etcd, with each one's RSS right after.
async fn run_row<F: Target, E: Target>(
    case: &Case,
    cluster: &str,
    target_leader: bool,
    ferrocd: &mut F,
    etcd: &mut E,
    common: &Common,
) -> anyhow::Result<Row> {
    let f = run_case(case, cluster, target_leader, ferrocd, common).await?;
    let ferrocd_rss_bytes = ferrocd.rss_bytes();
    let e = run_case(case, cluster, target_leader, etcd, common).await?;
    let etcd_rss_bytes = etcd.rss_bytes();
    if !common.json {
        print!("{}{}", f.to_text(), e.to_text());
    }
    Ok(Row {
        workload: case.name.to_string(),
        cluster: cluster.to_string(),
        ferrocd: f,
        etcd: e,
        ferrocd_rss_bytes,
        etcd_rss_bytes,
    })
}

async fn run_case<T: Target>(
    case: &Case,
    cluster: &str,
    target_leader: bool,
    target: &mut T,
    common: &Common,
) -> anyhow::Result<crate::report::Summary> {
    let opts = RunOpts {
        clients: case.clients,
        until: Until::Total(case.total),
        rate: None,
        timeout: common.timeout,
        progress: !common.no_progress && !common.json,
    };
    let label = format!("{} {} [{cluster}]", target.name(), case.name);
    let pool = Pool::connect(&target.client_urls(), case.conns, target_leader).await?;
    let result = case.workload.run(&label, &opts, &pool).await;
    target
        .check_alive()
        .with_context(|| format!("during {label}"))?;
    let mut summary = result.with_context(|| format!("{label} failed"))?;
    summary.workload = label;
    Ok(summary)
}

/// Keys in the whole key space.
async fn count_keys(pool: &Pool) -> anyhow::Result<i64> {
    let all = RangeRequest {
        key: vec![0],
        range_end: vec![0],
        count_only: true,
        ..Default::default()
    };
    Ok(pool.kv(0).range(all).await?.into_inner().count)
}

impl Target for Server {
    fn name(&self) -> &'static str {
        self.kind.name()
    }

    fn client_urls(&self) -> Vec<String> {
        vec![self.client_url.clone()]
    }

    fn rss_bytes(&self) -> Option<u64> {
        Server::rss_bytes(self)
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        if !self.alive() {
            bail!("{} died; log:\n{}", self.kind.name(), self.log_tail());
        }
        Ok(())
    }
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
