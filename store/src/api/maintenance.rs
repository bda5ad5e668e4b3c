//! The Maintenance service: Status (what `etcdctl endpoint status` and
//! kube-apiserver's version check read), alarms and defragmentation.

use ferrocd_proto::etcdserverpb::maintenance_server::Maintenance;
use ferrocd_proto::etcdserverpb::*;
use tonic::{Request, Response, Status};

use super::unsupported::not_yet_rpcs;
use super::{not_yet, Context};
use crate::config::ETCD_VERSION;

type BoxStream<T> =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send + 'static>>;

/// etcd's Maintenance service.
pub struct MaintenanceService {
    ctx: Context,
}

impl MaintenanceService {
    pub fn new(ctx: Context) -> Self {
        MaintenanceService { ctx }
    }
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    type SnapshotStream = BoxStream<SnapshotResponse>;

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let m = self.ctx.raft().metrics().borrow().clone();
        let db_size = self.ctx.db_size();
        Ok(Response::new(StatusResponse {
            header: Some(self.ctx.header(0)),
            version: ETCD_VERSION.to_string(),
            db_size,
            leader: m.current_leader.unwrap_or(0),
            raft_index: m.last_log_index.unwrap_or(0),
            raft_term: self.ctx.raft_term(),
            raft_applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
            errors: Vec::new(),
            db_size_in_use: db_size,
            is_learner: false,
            storage_version: ETCD_VERSION
                .rsplit_once('.')
                .map(|(v, _)| format!("{v}.0"))
                .unwrap_or_default(),
            db_size_quota: 0,
            downgrade_info: None,
        }))
    }

    async fn alarm(
        &self,
        request: Request<AlarmRequest>,
    ) -> Result<Response<AlarmResponse>, Status> {
        // No alarm is ever raised yet (no space quota, no corruption check),
        // so listing and disarming both answer with an empty list.
        let r = request.into_inner();
        if r.action == alarm_request::AlarmAction::Activate as i32 {
            return Err(not_yet("raising alarms"));
        }
        Ok(Response::new(AlarmResponse {
            header: Some(self.ctx.header(0)),
            alarms: Vec::new(),
        }))
    }

    async fn defragment(
        &self,
        _: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        // sled reclaims space by itself; there is nothing to rewrite.
        Ok(Response::new(DefragmentResponse {
            header: Some(self.ctx.header(0)),
        }))
    }

    not_yet_rpcs! { "this Maintenance RPC";
        hash(HashRequest) -> HashResponse;
        hash_kv(HashKvRequest) -> HashKvResponse;
        move_leader(MoveLeaderRequest) -> MoveLeaderResponse;
        downgrade(DowngradeRequest) -> DowngradeResponse;
    }

    async fn snapshot(
        &self,
        _: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        Err(not_yet("Maintenance.Snapshot"))
    }
}
