//! The space quota on the member that receives a write (etcd's quota
//! alarmer): a write that would take the database past the quota is
//! refused with NOSPACE, after this member raised the NOSPACE alarm
//! through raft so that every member refuses growth from then on. And on
//! every member, a watch on its own database: one that outgrew the quota
//! through writes received elsewhere raises the alarm too, as etcd's apply
//! does.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use ferrocd_proto::etcdserverpb::alarm_request::AlarmAction;
use ferrocd_proto::etcdserverpb::{AlarmRequest, AlarmType};
use ferrocd_proto::ferrocdpb::internal_request::Request as Internal;
use tokio::sync::watch;
use tonic::Status;

use super::{Context, EtcdError, Sender};
use crate::quota::Quota;

/// How long a reading of the database's size serves quota checks: reading
/// it walks the database's files, too slow to do for every write.
pub(super) const SIZE_REFRESH: Duration = Duration::from_millis(50);

/// How often each member compares its database with the quota.
const SPACE_CHECK: Duration = Duration::from_millis(500);

/// The database's size as last read, and when.
#[derive(Default)]
pub(super) struct SizeProbe {
    last: Mutex<Option<(Instant, i64)>>,
}

impl SizeProbe {
    /// The size last read if recent, otherwise `read()`'s.
    fn get(&self, read: impl FnOnce() -> i64) -> i64 {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, size)) = *last {
            if at.elapsed() < SIZE_REFRESH {
                return size;
            }
        }
        let size = read();
        *last = Some((Instant::now(), size));
        size
    }
}

impl Context {
    /// Refuses a write estimated to add `cost` bytes when the database
    /// would not fit in the quota: raises the NOSPACE alarm for this
    /// member through raft first (and waits for it), then answers etcd's
    /// "database space exceeded".
    pub(super) async fn check_quota(&self, cost: i64) -> Result<(), Status> {
        self.reject_learner()?;
        let quota = self.inner.config.quota;
        let size = self.inner.db_size.get(|| self.db_size());
        if quota.allows(size, cost) {
            return Ok(());
        }
        // The write is refused whether or not the alarm could be raised
        // (no leader, say), as in etcd; a later write tries again.
        self.raise_nospace().await;
        Err(EtcdError::NoSpace.into())
    }

    /// Raises NOSPACE for this member through raft and waits until it is
    /// applied; a failure is only logged.
    async fn raise_nospace(&self) {
        let raise = AlarmRequest {
            action: AlarmAction::Activate as i32,
            member_id: self.inner.config.member_id,
            alarm: AlarmType::Nospace as i32,
        };
        if let Err(e) = self.propose(Sender::Member, Internal::Alarm(raise)).await {
            tracing::warn!(error = %e.message(), "raising the NOSPACE alarm failed");
        }
    }
}

/// Raises NOSPACE when this member applied writes that can grow the store
/// while its database is at the quota and no member has raised it yet,
/// until `stop`: writes received by other members grow this database too,
/// and in etcd each member's apply notices. Without such writes nothing is
/// raised, so a cleared alarm stays off until the next one, as in etcd.
pub async fn watch_space(ctx: Context, mut stop: watch::Receiver<bool>) {
    let Quota::Bytes(limit) = ctx.config().quota else {
        return;
    };
    let mut tick = tokio::time::interval(SPACE_CHECK);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let full = ctx.alarms().take_growth() && ctx.db_size() >= limit;
        if full && !ctx.alarms().is_active(AlarmType::Nospace) && !ctx.is_learner() {
            tracing::warn!(
                limit,
                "the database has reached the space quota; raising NOSPACE"
            );
            ctx.raise_nospace().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recent_size_is_reused_and_an_old_one_read_again() {
        let probe = SizeProbe::default();
        assert_eq!(probe.get(|| 10), 10);
        assert_eq!(probe.get(|| 20), 10);
        std::thread::sleep(SIZE_REFRESH + Duration::from_millis(5));
        assert_eq!(probe.get(|| 30), 30);
    }
}
