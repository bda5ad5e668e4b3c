//! Maintenance on a loaded member, ferrocd's next to etcd's, with the data
//! the one-member workloads left: `etcdctl snapshot save` (time, size,
//! throughput), restoring each one's own snapshot into a new data directory
//! (`etcdctl snapshot restore` for etcd, `ferrocd snapshot restore` for
//! ferrocd) and starting a member on it, then put latencies of a few
//! clients writing continuously while `etcdctl defrag` runs, and while
//! `etcdctl compaction --physical` runs after every key of the `put`
//! workload was written again (so that the compaction frees as much), and
//! for as long again right after it (work a server left for later shows
//! there), next to the same clients' latencies with no maintenance running.
//!
//! Each maintenance command is timed from the start of its process to its
//! exit (a few ms of process start included), and the writers' window is
//! the same: they start with the process and issue no new put once it has
//! exited; puts in flight then still count.

mod table;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ferrocd_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use ferrocd_proto::etcdserverpb::{RangeRequest, StatusRequest};

use super::server::{self, Kind, Server};
use super::Target;
use crate::conn::Pool;
use crate::report::Summary;
use crate::runner::{self, RunOpts, Until};
use crate::workload::{self, put};
pub use table::{render, Figures, Maintenance};

/// The longest any one maintenance command may take.
const COMMAND_LIMIT: Duration = Duration::from_secs(30 * 60);

const MIB: f64 = 1024.0 * 1024.0;

/// Sizes of the maintenance runs.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Clients putting continuously during each measurement.
    pub writers: usize,
    /// How long the writers run with no maintenance, for the baseline, and
    /// right after the compaction.
    pub baseline: Duration,
    /// Keys of the `put` workload written again before the compaction.
    pub overwrite_keys: u64,
    /// A put with no answer after this long counts as an error.
    pub timeout: Duration,
    pub progress: bool,
    pub text: bool,
}

impl Plan {
    /// `--quick`: a fraction of a second each; otherwise 8 writers and a
    /// 3 s baseline.
    pub fn new(quick: bool, put_keys: u64, timeout: Duration, text: bool, progress: bool) -> Plan {
        Plan {
            writers: if quick { 4 } else { 8 },
            baseline: Duration::from_millis(if quick { 300 } else { 3000 }),
            overwrite_keys: put_keys,
            timeout,
            progress: progress && text,
            text,
        }
    }
}

/// etcdctl, with its client TLS flags when the servers want TLS, and the
/// servers' own TLS flags for the restored members.
pub struct Tools<'a> {
    pub etcdctl: &'a Path,
    /// `--cacert=...`, `--cert=...`, `--key=...` or nothing.
    pub etcdctl_tls: Vec<String>,
    pub server_tls: &'a [String],
}

/// Measures everything on `server`. A maintenance command that fails is
/// recorded in [`Figures::failures`] and the rest still runs; a server
/// that dies ends it with an error holding the end of its log.
pub async fn measure(
    server: &mut Server,
    tools: &Tools<'_>,
    plan: &Plan,
) -> anyhow::Result<Figures> {
    let mut f = Figures::default();
    let pool = Pool::connect(std::slice::from_ref(&server.client_url), 1, false).await?;
    f.keys = super::count_keys(&pool).await?;
    snapshot(server, tools, &mut f).await?;
    let label = format!("{} puts, no maintenance", server.kind.name());
    f.baseline = Some(writes(&label, &pool, plan).await);
    server.check_alive().context("during the baseline puts")?;
    defrag(server, &pool, tools, plan, &mut f).await?;
    compaction(server, &pool, tools, plan, &mut f).await?;

    if plan.text {
        let phases = [
            &f.baseline,
            &f.during_defrag,
            &f.during_compaction,
            &f.after_compaction,
        ];
        for s in phases.into_iter().flatten() {
            print!("{}", s.to_text());
        }
        for failure in &f.failures {
            println!("{} maintenance: {failure}", server.kind.name());
        }
    }
    Ok(f)
}

/// `etcdctl snapshot save`, then the restore of that snapshot.
async fn snapshot(server: &mut Server, tools: &Tools<'_>, f: &mut Figures) -> anyhow::Result<()> {
    let work = tempfile::Builder::new()
        .prefix(&format!(
            "ferrocd-bench-maintenance-{}-",
            server.kind.name()
        ))
        .tempdir()?;
    let file = work.path().join("snapshot.db");
    let save = ["snapshot", "save", &file.display().to_string()];
    match etcdctl(tools, &server.client_url, &save).await {
        Ok(took) => {
            let bytes = std::fs::metadata(&file)?.len();
            f.snapshot_save_secs = Some(took.as_secs_f64());
            f.snapshot_bytes = Some(bytes);
            f.snapshot_save_mib_per_sec = Some(bytes as f64 / MIB / took.as_secs_f64());
        }
        Err(e) => f.failures.push(format!("snapshot save: {e:#}")),
    }
    server.check_alive().context("during snapshot save")?;
    if f.snapshot_bytes.is_some() {
        restore(server, &file, tools, f).await?;
    }
    Ok(())
}

/// `etcdctl defrag` with the writers running.
async fn defrag(
    server: &mut Server,
    pool: &Pool,
    tools: &Tools<'_>,
    plan: &Plan,
    f: &mut Figures,
) -> anyhow::Result<()> {
    f.db_bytes_before_defrag = db_size(pool).await.ok();
    let label = format!("{} puts during defrag", server.kind.name());
    let defrag = etcdctl(tools, &server.client_url, &["defrag"]);
    let (during, took) = writes_while(&label, pool, plan, defrag).await;
    f.during_defrag = Some(during);
    match took {
        Ok(t) => f.defrag_secs = Some(t.as_secs_f64()),
        Err(e) => f.failures.push(format!("defrag: {e:#}")),
    }
    server.check_alive().context("during defrag")?;
    f.db_bytes_after_defrag = db_size(pool).await.ok();
    Ok(())
}

/// Every key of the `put` workload written again, then `etcdctl compaction
/// --physical` at the revision after that with the writers running, then
/// the writers alone again.
async fn compaction(
    server: &mut Server,
    pool: &Pool,
    tools: &Tools<'_>,
    plan: &Plan,
    f: &mut Figures,
) -> anyhow::Result<()> {
    let name = server.kind.name();
    let fill = Pool::connect(std::slice::from_ref(&server.client_url), 10, false).await?;
    let overwrite = RunOpts {
        clients: 100,
        until: Until::Total(plan.overwrite_keys),
        rate: None,
        timeout: plan.timeout,
        progress: plan.progress,
    };
    let rewritten =
        workload::preload(&fill, &overwrite, "put/", plan.overwrite_keys, 64, 256).await;
    server
        .check_alive()
        .context("rewriting the put workload's keys")?;
    if let Err(e) = rewritten {
        // Past the quota (rewriting 1.8M keys takes ferrocd's store over
        // etcd's default 2 GiB) writes are refused: said in the table,
        // and the figures taken so far are kept.
        f.failures
            .push(format!("rewriting the put workload's keys: {e:#}"));
        return Ok(());
    }

    let revision = current_revision(pool).await?;
    f.compaction_revision = Some(revision);
    let label = format!("{name} puts during compaction");
    let args = ["compaction", "--physical", &revision.to_string()];
    let compact = etcdctl(tools, &server.client_url, &args);
    let (during, took) = writes_while(&label, pool, plan, compact).await;
    f.during_compaction = Some(during);
    match took {
        Ok(t) => f.compaction_secs = Some(t.as_secs_f64()),
        Err(e) => f.failures.push(format!("compaction: {e:#}")),
    }
    server.check_alive().context("during compaction")?;

    let label = format!("{name} puts after compaction");
    f.after_compaction = Some(writes(&label, pool, plan).await);
    server.check_alive().context("after compaction")
}

/// Restores `server`'s snapshot `file` into a new data directory with that
/// server's tool, starts a member of the same program on it and counts its
/// keys.
async fn restore(
    server: &Server,
    file: &Path,
    tools: &Tools<'_>,
    f: &mut Figures,
) -> anyhow::Result<()> {
    let kind = server.kind;
    let dir = server::scratch_dir(kind)?;
    let peer = server::free_port()?;
    let peer_url = server::peer_url(peer);
    let restore = [
        "snapshot".to_string(),
        "restore".to_string(),
        file.display().to_string(),
        format!("--data-dir={}", server::data_dir(dir.path()).display()),
        "--name=default".to_string(),
        format!("--initial-cluster=default={peer_url}"),
        format!("--initial-advertise-peer-urls={peer_url}"),
    ];
    let (tool, restored_by) = match kind {
        Kind::Etcd => (tools.etcdctl, "etcdctl snapshot restore"),
        Kind::Ferrocd => (server.program(), "ferrocd snapshot restore"),
    };
    match timed(tool, &restore).await {
        Ok(took) => f.restore_secs = Some(took.as_secs_f64()),
        Err(e) => {
            f.failures.push(format!("{restored_by}: {e:#}"));
            return Ok(());
        }
    }
    let t0 = Instant::now();
    let program = server.program();
    let restored = match Server::start_in(kind, program, tools.server_tls, dir, peer).await {
        Ok(s) => s,
        Err(e) => {
            f.failures
                .push(format!("starting the restored member: {e:#}"));
            return Ok(());
        }
    };
    f.restored_start_secs = Some(t0.elapsed().as_secs_f64());
    let pool = Pool::connect(std::slice::from_ref(&restored.client_url), 1, false).await?;
    match super::count_keys(&pool).await {
        Ok(n) => f.restored_keys = Some(n),
        Err(e) => f
            .failures
            .push(format!("counting the restored keys: {e:#}")),
    }
    Ok(())
}

/// The writers for the plan's baseline time.
async fn writes(label: &str, pool: &Pool, plan: &Plan) -> Summary {
    let opts = writer_opts(plan, Until::Duration(plan.baseline));
    let clients = put::putters(pool, plan.writers, &writer_keys());
    runner::run(label, &opts, clients).await.summary(label)
}

/// The writers while `command` runs, and what it returned.
async fn writes_while<F: std::future::Future>(
    label: &str,
    pool: &Pool,
    plan: &Plan,
    command: F,
) -> (Summary, F::Output) {
    let opts = writer_opts(plan, Until::Duration(COMMAND_LIMIT));
    let clients = put::putters(pool, plan.writers, &writer_keys());
    let (run, out) = runner::run_while(label, &opts, clients, command).await;
    (run.summary(label), out)
}

fn writer_opts(plan: &Plan, until: Until) -> RunOpts {
    RunOpts {
        clients: plan.writers,
        until,
        rate: None,
        timeout: plan.timeout,
        progress: plan.progress,
    }
}

/// What the writers put: random keys out of 1000, the sizes of the `put`
/// workload's.
fn writer_keys() -> put::PutArgs {
    put::PutArgs {
        key_size: 64,
        val_size: 256,
        sequential_keys: false,
        key_space_size: 1000,
        prefix: "maintenance/".to_string(),
    }
}

/// Runs `etcdctl ARGS` against `url` and returns how long it ran.
async fn etcdctl(tools: &Tools<'_>, url: &str, args: &[&str]) -> anyhow::Result<Duration> {
    let mut all = vec![
        format!("--endpoints={url}"),
        format!("--command-timeout={}s", COMMAND_LIMIT.as_secs()),
    ];
    all.extend(tools.etcdctl_tls.iter().cloned());
    all.extend(args.iter().map(|a| a.to_string()));
    timed(tools.etcdctl, &all).await
}

/// Runs `program ARGS` to its end; how long it ran, or an error with the
/// end of its output if it failed.
async fn timed(program: &Path, args: &[String]) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    let out = tokio::process::Command::new(program)
        .env("ETCDCTL_API", "3")
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(COMMAND_LIMIT, out)
        .await
        .with_context(|| format!("{} ran longer than {COMMAND_LIMIT:?}", program.display()))?
        .with_context(|| format!("could not run {}", program.display()))?;
    let took = t0.elapsed();
    if !out.status.success() {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        bail!(
            "{} exited with {}: {}",
            program.display(),
            out.status,
            lines[lines.len().saturating_sub(5)..].join(" / ")
        );
    }
    Ok(took)
}

/// The database size Maintenance.Status reports.
async fn db_size(pool: &Pool) -> anyhow::Result<i64> {
    let status = MaintenanceClient::new(pool.channel(0))
        .status(StatusRequest {})
        .await?;
    Ok(status.into_inner().db_size)
}

/// The store's current revision.
async fn current_revision(pool: &Pool) -> anyhow::Result<i64> {
    let req = RangeRequest {
        key: vec![0],
        count_only: true,
        ..Default::default()
    };
    let header = pool.kv(0).range(req).await?.into_inner().header;
    Ok(header
        .context("a range response without a header")?
        .revision)
}
