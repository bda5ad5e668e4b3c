//! The KV service.

use ferrocd_proto::etcdserverpb::kv_server::Kv;
use ferrocd_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use ferrocd_proto::ferrocdpb::internal_request::Request as Internal;
use tonic::{Request, Response, Status};

use super::{invalid_status, kv_status, Context};
use crate::auth::perms::{self, Access, Kind};
use crate::kv::{self, validate, KvError, NoLeases};
use crate::metrics::StoreOps;
use crate::mvcc::MvccError;
use crate::quota;
use crate::raft::Response as Applied;

/// etcd's KV service.
pub struct KvService {
    ctx: Context,
}

impl KvService {
    pub fn new(ctx: Context) -> Self {
        KvService { ctx }
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        let who = self.ctx.caller(&request).await?;
        let r = request.into_inner();
        validate::range(&r).map_err(invalid_status)?;
        if !r.serializable {
            self.ctx.linearizable().await?;
        }
        let needs = [Access {
            kind: Kind::Read,
            key: r.key.clone(),
            range_end: r.range_end.clone(),
        }];
        self.ctx.check(who.as_ref(), &needs)?;
        let mut resp = self
            .ctx
            .mvcc()
            .read_pinned(|view| kv::range(view, &r), store_changed)
            .map_err(kv_status)?;
        StoreOps {
            ranges: 1,
            ..StoreOps::default()
        }
        .record();
        self.ctx.recheck_revision(who.as_ref())?;
        self.ctx.fill(&mut resp.header);
        Ok(Response::new(resp))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        // The quota comes first, before credentials and validation, as in etcd.
        self.ctx
            .check_quota(quota::put_cost(request.get_ref()))
            .await?;
        let who = self.ctx.caller(&request).await?;
        let r = request.into_inner();
        validate::put(&r).map_err(invalid_status)?;
        self.ctx
            .write(who.as_ref(), Internal::Put(r), |a| match a {
                Applied::Put(resp) => Ok(resp),
                other => Err(other),
            })
            .await
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let who = self.ctx.caller(&request).await?;
        let r = request.into_inner();
        validate::delete_range(&r).map_err(invalid_status)?;
        self.ctx
            .write(who.as_ref(), Internal::DeleteRange(r), |a| match a {
                Applied::DeleteRange(resp) => Ok(resp),
                other => Err(other),
            })
            .await
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        self.ctx
            .check_quota(quota::txn_cost(request.get_ref()))
            .await?;
        let who = self.ctx.caller(&request).await?;
        let r = request.into_inner();
        validate::txn(&r, self.ctx.config().max_txn_ops).map_err(invalid_status)?;
        if kv::txn_is_read_only(&r) {
            // Read-only txns are served like reads, without a log entry.
            self.ctx.linearizable().await?;
            self.ctx.check(who.as_ref(), &perms::txn(&r))?;
            let mut resp = self
                .ctx
                .mvcc()
                .read_pinned(|view| kv::txn(view, &r, &NoLeases), store_changed)
                .map_err(kv_status)?;
            // Compares and ops ran in one view, at one revision.
            let mut ops = StoreOps::of_txn(&resp);
            ops.ranges += r.compare.len() as u64;
            ops.record();
            self.ctx.recheck_revision(who.as_ref())?;
            self.ctx.fill(&mut resp.header);
            return Ok(Response::new(resp));
        }
        self.ctx
            .write(who.as_ref(), Internal::Txn(r), |a| match a {
                Applied::Txn(resp) => Ok(resp),
                other => Err(other),
            })
            .await
    }

    async fn compact(
        &self,
        request: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        // etcd lets any caller compact (its auth has no rule for it).
        let who = self.ctx.caller(&request).await?;
        let r = request.into_inner();
        let physical = r.physical;
        let response = self
            .ctx
            .write(who.as_ref(), Internal::Compaction(r), |a| match a {
                Applied::Compaction(resp) => Ok(resp),
                other => Err(other),
            })
            .await?;
        if physical {
            // The freed records are deleted after the compaction is applied
            // (mvcc::reclaim); `physical` answers once they are, as etcd
            // answers once its backend has removed them.
            let ctx = self.ctx.clone();
            tokio::task::spawn_blocking(move || ctx.mvcc().wait_reclaimed())
                .await
                .map_err(|e| Status::internal(format!("compaction: {e}")))?;
        }
        Ok(response)
    }
}

/// Whether a read failed because a compaction or an installed snapshot took
/// away what it read; it starts over in a new view then.
fn store_changed(e: &KvError) -> bool {
    matches!(e, KvError::Mvcc(MvccError::Changed))
}
