//! The Watch service: one bidirectional stream carries many watchers.

use std::pin::Pin;
use std::sync::Arc;

use ferrocd_proto::etcdserverpb::watch_request::RequestUnion;
use ferrocd_proto::etcdserverpb::WatchRequest;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::caller::Credentials;
use super::{Context, EtcdError};
use crate::auth::perms::{Access, Kind};
use crate::watch::{self, Outgoing, StreamHandle, WatchHub};

/// Responses queued per client stream before slow watchers are demoted to
/// catching up from history.
const STREAM_QUEUE: usize = 128;

/// etcd's Watch service, served by [`super::WatchServer`].
pub struct WatchService {
    ctx: Context,
    hub: Arc<WatchHub>,
}

impl WatchService {
    pub fn new(ctx: Context, hub: Arc<WatchHub>) -> Self {
        WatchService { ctx, hub }
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<Outgoing, Status>> + Send + 'static>>;

impl WatchService {
    /// One bidirectional stream: creates, cancels and progress requests in,
    /// the responses of all its watchers out.
    pub async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<WatchStream>, Status> {
        self.ctx.reject_learner()?;
        // kube-apiserver asks, through this metadata, to be refused rather
        // than wait when the cluster has no leader.
        let wants_leader = request
            .metadata()
            .get("hasleader")
            .is_some_and(|v| v.to_str().is_ok_and(|v| v == "true"));
        if wants_leader && self.ctx.raft().metrics().borrow().current_leader.is_none() {
            return Err(EtcdError::NoLeader.into());
        }
        // Credentials are checked at each create, as etcd does (a token
        // may lapse while the stream lives).
        let credentials = Credentials::of(&request);
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let stream = self.hub.open_stream(tx.clone());
        let auth_ctx = self.ctx.clone();
        tokio::spawn(async move {
            while let Ok(Some(req)) = inbound.message().await {
                if let Some(refusal) = refuse(&auth_ctx, &credentials, &req, &stream).await {
                    if tx.send(refusal).await.is_err() {
                        break;
                    }
                    continue;
                }
                if !handle(&stream, &tx, req).await {
                    break;
                }
            }
            // Dropping the handle removes this stream's watchers.
            drop(stream);
        });
        let ctx = self.ctx.clone();
        let fragment_bytes = self.hub.fragment_bytes();
        let out = ReceiverStream::new(rx).flat_map(move |mut out: Outgoing| {
            let revision = out.resp.header.map(|h| h.revision).unwrap_or(0);
            out.resp.header = Some(ctx.header_exact(revision));
            // Split with the full header counted, as etcd's send loop does.
            futures::stream::iter(watch::fragments(out, fragment_bytes).into_iter().map(Ok))
        });
        Ok(Response::new(Box::pin(out)))
    }
}

/// etcd's answer to a watch the caller may not read: created and canceled
/// at once, watch id -1, with the error as Go prints a gRPC status.
async fn refuse(
    ctx: &Context,
    credentials: &Credentials,
    req: &WatchRequest,
    stream: &StreamHandle,
) -> Option<Outgoing> {
    let Some(RequestUnion::CreateRequest(create)) = &req.request_union else {
        return None;
    };
    if !ctx.auth().enabled() {
        return None;
    }
    let key = if create.key.is_empty() {
        vec![0]
    } else {
        create.key.clone()
    };
    let needs = [Access {
        kind: Kind::Read,
        key,
        range_end: create.range_end.clone(),
    }];
    let checked = match ctx.resolve(credentials).await {
        Ok(who) => ctx.check(who.as_ref(), &needs),
        Err(e) => Err(e),
    };
    let status = checked.err()?;
    let reason = format!(
        "rpc error: code = {:?} desc = {}",
        status.code(),
        status.message()
    );
    Some(watch::created(-1, stream.notified(), Some(reason)))
}

/// Handles one client request; false when the client is gone.
async fn handle(stream: &StreamHandle, tx: &mpsc::Sender<Outgoing>, req: WatchRequest) -> bool {
    match req.request_union {
        Some(RequestUnion::CreateRequest(create)) => match stream.create(&create) {
            Ok((id, revision)) => {
                if tx.send(watch::created(id, revision, None)).await.is_err() {
                    return false;
                }
                stream.activate(id);
            }
            Err((id, reason)) => {
                let revision = stream.notified();
                return tx
                    .send(watch::created(id, revision, Some(reason.to_string())))
                    .await
                    .is_ok();
            }
        },
        Some(RequestUnion::CancelRequest(cancel)) if stream.cancel(cancel.watch_id) => {
            let resp = watch::canceled(cancel.watch_id, stream.notified());
            return tx.send(resp).await.is_ok();
        }
        Some(RequestUnion::ProgressRequest(_)) => stream.request_progress(),
        Some(RequestUnion::CancelRequest(_)) | None => {}
    }
    true
}
