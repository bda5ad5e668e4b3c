//! A writer for tests that change a running cluster (a restart, a
//! rollout, TLS turned on, a quorum rebuilt): it puts keys with `etcdctl`
//! one after another, each with short timeouts, through the first of its
//! [`Route`]s that acknowledges, and reports which writes were
//! acknowledged and the longest time without an acknowledgement.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One way to reach the cluster: etcdctl flags (TLS files) and endpoints.
#[derive(Clone, Debug)]
pub struct Route {
    flags: Vec<String>,
    endpoints: String,
    /// Files that must exist before the route is tried (a client
    /// certificate the test writes later).
    needs: Vec<PathBuf>,
}

impl Route {
    /// Plain text to `endpoints` (comma-separated `host:port`).
    pub fn plain(endpoints: &str) -> Route {
        Route::with_flags(endpoints, Vec::new())
    }

    /// To `endpoints` with etcdctl `flags` first.
    pub fn with_flags(endpoints: &str, flags: Vec<String>) -> Route {
        Route {
            flags,
            endpoints: endpoints.to_string(),
            needs: Vec::new(),
        }
    }

    /// Tried only once every file in `files` exists.
    pub fn once_present(mut self, files: Vec<PathBuf>) -> Route {
        self.needs = files;
        self
    }

    fn usable(&self) -> bool {
        self.needs.iter().all(|f| f.exists())
    }
}

/// What a writer did.
#[derive(Debug, Default)]
pub struct Report {
    pub ok: usize,
    /// Attempts that no route acknowledged.
    pub failed: usize,
    /// Longest time from one acknowledgement to the next (or to the last
    /// attempt), whether the attempts in it failed or were slow.
    pub longest_outage: Duration,
    /// Acknowledged writes in a row at the end.
    pub settled: usize,
    /// The keys acknowledged; each key's value is the key itself.
    pub acknowledged: Vec<String>,
    /// The first failures' etcdctl output.
    pub errors: Vec<String>,
}

const RUNNING: u8 = 0;
const STOP: u8 = 1;
const STOP_WHEN_SETTLED: u8 = 2;

/// A thread putting `<prefix><n>` keys until stopped.
pub struct Writer {
    state: Arc<AtomicU8>,
    thread: JoinHandle<Report>,
}

impl Writer {
    /// Acknowledged writes in a row that [`Writer::stop_when_settled`] waits for.
    pub const SETTLED: usize = 10;
    /// How long [`Writer::stop_when_settled`] waits for them at most.
    pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

    /// Starts putting keys `<prefix>00000`, `<prefix>00001`, ... with a
    /// pause of `every` after each attempt, trying `routes` in turn.
    pub fn start(routes: Vec<Route>, prefix: &str, every: Duration) -> Writer {
        assert!(!routes.is_empty(), "a writer needs a route");
        let state = Arc::new(AtomicU8::new(RUNNING));
        let seen = state.clone();
        let prefix = prefix.to_string();
        let thread = std::thread::spawn(move || {
            let mut report = Report::default();
            let mut last_ok = Instant::now();
            let mut stop_seen: Option<Instant> = None;
            for i in 0.. {
                match seen.load(Ordering::Relaxed) {
                    RUNNING => {}
                    STOP_WHEN_SETTLED => {
                        let since = *stop_seen.get_or_insert_with(Instant::now);
                        if report.settled >= Self::SETTLED || since.elapsed() > Self::SETTLE_TIMEOUT
                        {
                            break;
                        }
                    }
                    _ => break,
                }
                let key = format!("{prefix}{i:05}");
                let mut error = None;
                let acknowledged = routes.iter().filter(|r| r.usable()).any(|route| {
                    let out = put(route, &key);
                    if !out.status.success() && error.is_none() {
                        error = Some(format!(
                            "{}{}",
                            String::from_utf8_lossy(&out.stdout),
                            String::from_utf8_lossy(&out.stderr)
                        ));
                    }
                    out.status.success()
                });
                let now = Instant::now();
                report.longest_outage = report.longest_outage.max(now - last_ok);
                if acknowledged {
                    report.ok += 1;
                    report.settled += 1;
                    report.acknowledged.push(key);
                    last_ok = now;
                } else {
                    report.failed += 1;
                    report.settled = 0;
                    if report.errors.len() < 5 {
                        let error = error.unwrap_or_else(|| "no route usable yet".to_string());
                        report.errors.push(error.trim().to_string());
                    }
                }
                std::thread::sleep(every);
            }
            report
        });
        Writer { state, thread }
    }

    /// Stops after the attempt under way.
    pub fn stop(self) -> Report {
        self.finish(STOP)
    }

    /// Goes on until [`Writer::SETTLED`] writes in a row were acknowledged
    /// (or [`Writer::SETTLE_TIMEOUT`] passed), then stops.
    pub fn stop_when_settled(self) -> Report {
        self.finish(STOP_WHEN_SETTLED)
    }

    fn finish(self, how: u8) -> Report {
        self.state.store(how, Ordering::Relaxed);
        self.thread.join().expect("writer thread")
    }
}

/// `etcdctl put key key` through `route`, with 1 s to connect and 2 s for
/// the request.
fn put(route: &Route, key: &str) -> std::process::Output {
    Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(&route.flags)
        .args([
            &format!("--endpoints={}", route.endpoints),
            "--dial-timeout=1s",
            "--command-timeout=2s",
            "put",
            key,
            key,
        ])
        .output()
        .expect("etcdctl")
}
