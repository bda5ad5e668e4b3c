//! Drives a workload: `clients` concurrent request loops, each issuing the
//! next operation until `--total` operations were issued or `--duration`
//! passed (or, with [`run_while`], something else finished), paced by
//! `--rate`, with a progress bar on stderr.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::limiter::TokenBucket;
use crate::report::{Recorder, Summary};

/// When a run stops.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Until {
    /// After this many operations (successful or not).
    Total(u64),
    /// After this much time.
    Duration(Duration),
}

/// How a run is driven, from the common flags.
#[derive(Clone, Debug)]
pub struct RunOpts {
    pub clients: usize,
    pub until: Until,
    /// Operations per second over all clients; `None` = as fast as possible.
    pub rate: Option<f64>,
    /// A call with no answer after this long counts as a `ClientTimeout` error.
    pub timeout: Duration,
    pub progress: bool,
}

/// One client's request loop body. `call` runs one operation (which may be
/// a fixed sequence of requests, like grant + keep-alive).
pub trait ClientOp: Send + 'static {
    /// Runs operation number `seq` of the whole run.
    fn call(&mut self, seq: u64) -> impl Future<Output = Result<(), tonic::Status>> + Send;

    /// Workload-specific counts to add to the summary.
    fn counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}

/// What a run measured.
#[derive(Debug)]
pub struct Run {
    pub recorder: Recorder,
    pub elapsed: Duration,
    pub counters: BTreeMap<String, u64>,
}

impl Run {
    pub fn summary(&self, workload: &str) -> Summary {
        let mut s = self.recorder.summary(workload, self.elapsed);
        s.counters = self.counters.clone();
        s
    }
}

struct Shared {
    next: AtomicU64,
    /// Set when the run ends before `until` (see [`run_while`]).
    stopped: AtomicBool,
    done: AtomicU64,
    limiter: Option<TokenBucket>,
    start: Instant,
    until: Until,
    timeout: Duration,
}

impl Shared {
    /// The next operation number, or `None` when the run is over.
    fn next(&self) -> Option<u64> {
        if self.stopped.load(Ordering::Relaxed) {
            return None;
        }
        if let Until::Duration(d) = self.until {
            if self.start.elapsed() >= d {
                return None;
            }
        }
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        match self.until {
            Until::Total(total) if seq >= total => None,
            _ => Some(seq),
        }
    }
}

/// Runs `clients` (one request loop each) to the end and merges what they measured.
pub async fn run<C: ClientOp>(label: &str, opts: &RunOpts, clients: Vec<C>) -> Run {
    Running::start(label, opts, clients).finish().await
}

/// Runs `clients` while `during` runs: they start together, and the clients
/// issue no new operation once `during` has finished (or `opts.until` was
/// reached, whichever comes first; `during` always runs to its end).
/// Operations in flight when `during` finishes complete and are measured.
pub async fn run_while<C: ClientOp, F: Future>(
    label: &str,
    opts: &RunOpts,
    clients: Vec<C>,
    during: F,
) -> (Run, F::Output) {
    let running = Running::start(label, opts, clients);
    let out = during.await;
    running.shared.stopped.store(true, Ordering::Relaxed);
    (running.finish().await, out)
}

/// What one client loop measured, and its counters.
type ClientResult = (Recorder, Vec<(&'static str, u64)>);

/// Client loops under way.
struct Running {
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<ClientResult>>,
    bar: ProgressBar,
    ticker: tokio::task::JoinHandle<()>,
}

impl Running {
    fn start<C: ClientOp>(label: &str, opts: &RunOpts, clients: Vec<C>) -> Running {
        let shared = Arc::new(Shared {
            next: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
            done: AtomicU64::new(0),
            limiter: opts.rate.map(|r| TokenBucket::new(r, (r / 100.0).max(1.0))),
            start: Instant::now(),
            until: opts.until,
            timeout: opts.timeout,
        });
        let bar = progress_bar(label, opts);
        let ticker = {
            let (shared, bar) = (shared.clone(), bar.clone());
            tokio::spawn(async move {
                loop {
                    bar.set_position(shared.done.load(Ordering::Relaxed));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        };
        let tasks = clients
            .into_iter()
            .map(|c| tokio::spawn(client_loop(c, shared.clone())))
            .collect();
        Running {
            shared,
            tasks,
            bar,
            ticker,
        }
    }

    /// Waits for every client loop to end and merges what they measured.
    async fn finish(self) -> Run {
        let mut recorder = Recorder::default();
        let mut counters = BTreeMap::new();
        for t in self.tasks {
            let (r, cs) = t.await.expect("client task panicked");
            recorder.merge(&r);
            for (name, n) in cs {
                *counters.entry(name.to_string()).or_default() += n;
            }
        }
        let elapsed = self.shared.start.elapsed();
        self.ticker.abort();
        self.bar.finish_and_clear();
        Run {
            recorder,
            elapsed,
            counters,
        }
    }
}

async fn client_loop<C: ClientOp>(mut client: C, shared: Arc<Shared>) -> ClientResult {
    let mut rec = Recorder::default();
    while let Some(seq) = shared.next() {
        if let Some(l) = &shared.limiter {
            l.acquire().await;
        }
        let t0 = Instant::now();
        match tokio::time::timeout(shared.timeout, client.call(seq)).await {
            Ok(Ok(())) => rec.record(t0.elapsed()),
            Ok(Err(status)) => rec.status(&status),
            Err(_) => rec.error(
                "ClientTimeout",
                &format!("no answer within {:?}", shared.timeout),
            ),
        }
        shared.done.fetch_add(1, Ordering::Relaxed);
    }
    (rec, client.counters())
}

fn progress_bar(label: &str, opts: &RunOpts) -> ProgressBar {
    if !opts.progress {
        return ProgressBar::hidden();
    }
    let (len, template) = match opts.until {
        Until::Total(n) => (
            Some(n),
            "{prefix:>14} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec})",
        ),
        Until::Duration(_) => (
            None,
            "{prefix:>14} [{elapsed_precise}] {spinner} {pos} ops ({per_sec})",
        ),
    };
    let bar = ProgressBar::with_draw_target(len, ProgressDrawTarget::stderr());
    bar.set_style(ProgressStyle::with_template(template).expect("valid progress template"));
    bar.set_prefix(label.to_string());
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counting {
        calls: u64,
        fail_every: u64,
    }

    impl ClientOp for Counting {
        async fn call(&mut self, seq: u64) -> Result<(), tonic::Status> {
            self.calls += 1;
            if self.fail_every > 0 && seq.is_multiple_of(self.fail_every) {
                return Err(tonic::Status::unavailable("down"));
            }
            Ok(())
        }

        fn counters(&self) -> Vec<(&'static str, u64)> {
            vec![("calls", self.calls)]
        }
    }

    fn opts(clients: usize, until: Until) -> RunOpts {
        RunOpts {
            clients,
            until,
            rate: None,
            timeout: Duration::from_secs(5),
            progress: false,
        }
    }

    #[tokio::test]
    async fn a_total_is_split_over_the_clients_exactly() {
        let clients = (0..7)
            .map(|_| Counting {
                calls: 0,
                fail_every: 10,
            })
            .collect();
        let run = run("t", &opts(7, Until::Total(100)), clients).await;
        assert_eq!(run.counters["calls"], 100);
        assert_eq!(run.recorder.ops(), 90);
        assert_eq!(run.recorder.errors(), 10);
    }

    #[tokio::test]
    async fn a_duration_run_stops_after_the_duration() {
        struct Slow;
        impl ClientOp for Slow {
            async fn call(&mut self, _: u64) -> Result<(), tonic::Status> {
                tokio::time::sleep(Duration::from_millis(5)).await;
                Ok(())
            }
        }
        let run = run(
            "t",
            &opts(2, Until::Duration(Duration::from_millis(100))),
            vec![Slow, Slow],
        )
        .await;
        assert!(run.elapsed >= Duration::from_millis(100));
        assert!(run.elapsed < Duration::from_secs(2));
        assert!(run.recorder.ops() > 0);
    }

    #[tokio::test]
    async fn run_while_stops_issuing_when_the_other_future_ends() {
        struct Slow;
        impl ClientOp for Slow {
            async fn call(&mut self, _: u64) -> Result<(), tonic::Status> {
                tokio::time::sleep(Duration::from_millis(5)).await;
                Ok(())
            }
        }
        let o = opts(2, Until::Duration(Duration::from_secs(60)));
        let during = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            7
        };
        let (run, out) = run_while("t", &o, vec![Slow, Slow], during).await;
        assert_eq!(out, 7);
        assert!(run.elapsed >= Duration::from_millis(100));
        assert!(run.elapsed < Duration::from_secs(5), "{:?}", run.elapsed);
        assert!(run.recorder.ops() > 0);
    }

    #[tokio::test]
    async fn run_while_waits_for_the_other_future_after_the_total() {
        let o = opts(1, Until::Total(3));
        let clients = vec![Counting {
            calls: 0,
            fail_every: 0,
        }];
        let during = tokio::time::sleep(Duration::from_millis(50));
        let t0 = Instant::now();
        let (run, ()) = run_while("t", &o, clients, during).await;
        assert_eq!(run.counters["calls"], 3);
        assert!(t0.elapsed() >= Duration::from_millis(50));
    }

    #[tokio::test]
    async fn a_rate_limit_paces_the_run() {
        let mut o = opts(4, Until::Total(21));
        o.rate = Some(100.0);
        let clients = (0..4)
            .map(|_| Counting {
                calls: 0,
                fail_every: 0,
            })
            .collect();
        let run = run("t", &o, clients).await;
        // 20 intervals of 10 ms after the first token.
        assert!(
            run.elapsed >= Duration::from_millis(190),
            "{:?}",
            run.elapsed
        );
    }

    #[tokio::test]
    async fn a_call_without_answer_counts_as_a_client_timeout() {
        struct Stuck;
        impl ClientOp for Stuck {
            async fn call(&mut self, _: u64) -> Result<(), tonic::Status> {
                std::future::pending().await
            }
        }
        let mut o = opts(1, Until::Total(2));
        o.timeout = Duration::from_millis(10);
        let run = run("t", &o, vec![Stuck]).await;
        assert_eq!(run.summary("t").errors_by_code["ClientTimeout"], 2);
    }
}
