//! Automatic compaction (`--auto-compaction-mode`/`-retention`), with
//! etcd's schedules: the leader proposes a compaction like a client's, so
//! every member compacts the same history.
//!
//! * periodic: the store's revision is sampled every tenth of the period
//!   (of an hour at most); after the first full period, and then every
//!   period (an hour at most), history is compacted up to the revision
//!   sampled a period ago.
//! * revision: every 5 minutes, history is compacted up to the current
//!   revision minus the retention.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use ferrocd_proto::etcdserverpb::CompactionRequest;
use ferrocd_proto::ferrocdpb::internal_request::Request as Internal;
use tokio::sync::watch;

use super::{Context, Sender};
use crate::config::AutoCompaction;

/// How often revision mode looks (etcd's `revInterval`).
const REVISION_CHECK: Duration = Duration::from_secs(5 * 60);

/// The longest interval between compactions in periodic mode.
const HOUR: Duration = Duration::from_secs(3600);

/// When to compact, and to which revision.
#[derive(Debug)]
pub enum Schedule {
    Periodic {
        period: Duration,
        /// Revisions sampled every `tick`, oldest first; the first is the
        /// revision of a period ago.
        samples: VecDeque<i64>,
        last_compaction: Instant,
        /// The wait before the next compaction: a whole period at first.
        wait: Duration,
    },
    Revision {
        retention: i64,
        last: i64,
    },
}

impl Schedule {
    pub fn new(mode: AutoCompaction, now: Instant) -> Schedule {
        match mode {
            AutoCompaction::Periodic(period) => Schedule::Periodic {
                period,
                samples: VecDeque::new(),
                last_compaction: now,
                wait: period,
            },
            AutoCompaction::Revision(retention) => Schedule::Revision { retention, last: 0 },
        }
    }

    /// How often [`Schedule::tick`] is to be called.
    pub fn tick_every(&self) -> Duration {
        match self {
            Schedule::Periodic { period, .. } => periodic_tick(*period),
            Schedule::Revision { .. } => REVISION_CHECK,
        }
    }

    /// One tick at `now` with the store at `current`: the revision to
    /// compact up to, if it is time.
    pub fn tick(&mut self, now: Instant, current: i64) -> Option<i64> {
        match self {
            Schedule::Periodic {
                period,
                samples,
                last_compaction,
                wait,
            } => {
                samples.push_back(current);
                let keep =
                    (period.as_nanos() / periodic_tick(*period).as_nanos().max(1)) as usize + 1;
                while samples.len() > keep {
                    samples.pop_front();
                }
                if now.duration_since(*last_compaction) < *wait {
                    return None;
                }
                *wait = (*period).min(HOUR);
                *last_compaction = now;
                samples.front().copied().filter(|&rev| rev > 1)
            }
            Schedule::Revision { retention, last } => {
                let rev = current - *retention;
                if rev <= 0 || rev == *last {
                    return None;
                }
                *last = rev;
                Some(rev)
            }
        }
    }
}

/// Periodic mode samples every tenth of the period, of an hour at most.
fn periodic_tick(period: Duration) -> Duration {
    period.min(HOUR) / 10
}

/// Runs `mode` until `stop`: compacts on the leader, samples everywhere
/// (a member that becomes leader knows the history of the last period).
pub async fn run(ctx: Context, mode: AutoCompaction, mut stop: watch::Receiver<bool>) {
    let mut schedule = Schedule::new(mode, Instant::now());
    let mut tick = tokio::time::interval(schedule.tick_every());
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let Some(rev) = schedule.tick(Instant::now(), ctx.mvcc().current_revision()) else {
            continue;
        };
        if !ctx.is_leader() || rev <= ctx.mvcc().compacted_revision() {
            continue;
        }
        let compact = Internal::Compaction(CompactionRequest {
            revision: rev,
            physical: false,
        });
        match ctx.propose(Sender::Member, compact).await {
            Ok(_) => tracing::info!(revision = rev, "compacted history automatically"),
            Err(e) => tracing::warn!(
                revision = rev,
                "automatic compaction failed: {}",
                e.message()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periodic_waits_a_period_then_compacts_to_the_revision_of_a_period_ago() {
        let t0 = Instant::now();
        let period = Duration::from_secs(100);
        let mut s = Schedule::new(AutoCompaction::Periodic(period), t0);
        assert_eq!(s.tick_every(), Duration::from_secs(10));
        let mut compactions = Vec::new();
        // The store gains 10 revisions per 10 s tick.
        for i in 1..=25u64 {
            let now = t0 + Duration::from_secs(10 * i);
            if let Some(rev) = s.tick(now, 10 * i as i64) {
                compactions.push((10 * i, rev));
            }
        }
        // First after 100 s, to the revision sampled 100 s earlier; then
        // every period.
        assert_eq!(compactions, vec![(100, 10), (200, 100)]);
    }

    #[test]
    fn periodic_compacts_at_least_hourly_for_long_periods() {
        let t0 = Instant::now();
        let mut s = Schedule::new(AutoCompaction::Periodic(Duration::from_secs(72 * 3600)), t0);
        assert_eq!(s.tick_every(), Duration::from_secs(360));
        let mut at = Vec::new();
        for i in 1..=(72 * 10 + 25) {
            let now = t0 + Duration::from_secs(360 * i);
            if s.tick(now, i as i64 + 1).is_some() {
                at.push(i);
            }
        }
        // After the first 72 h, every hour (10 ticks).
        assert_eq!(&at[..3], &[720, 730, 740]);
    }

    #[test]
    fn revision_mode_keeps_the_retention_and_never_repeats() {
        let t0 = Instant::now();
        let mut s = Schedule::new(AutoCompaction::Revision(100), t0);
        assert_eq!(s.tick(t0, 50), None);
        assert_eq!(s.tick(t0, 150), Some(50));
        assert_eq!(s.tick(t0, 150), None);
        assert_eq!(s.tick(t0, 400), Some(300));
    }
}
