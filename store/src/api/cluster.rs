//! The Cluster service. Membership changes arrive with multi-member
//! clusters; listing the members works now.

use ferrocd_proto::etcdserverpb::cluster_server::Cluster;
use ferrocd_proto::etcdserverpb::*;
use tonic::{Request, Response, Status};

use super::unsupported::not_yet_rpcs;
use super::{not_yet, Context};

/// etcd's Cluster service.
pub struct ClusterService {
    ctx: Context,
}

impl ClusterService {
    pub fn new(ctx: Context) -> Self {
        ClusterService { ctx }
    }

    fn members(&self) -> Vec<Member> {
        let cfg = self.ctx.config();
        cfg.initial_cluster
            .iter()
            .map(|m| Member {
                id: m.id,
                name: m.name.clone(),
                peer_ur_ls: m.peer_urls.clone(),
                client_ur_ls: if m.id == cfg.member_id {
                    cfg.advertise_client_urls.clone()
                } else {
                    Vec::new()
                },
                is_learner: false,
            })
            .collect()
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_list(
        &self,
        _: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        Ok(Response::new(MemberListResponse {
            // etcd's Cluster service leaves the revision out of its headers.
            header: Some(self.ctx.header_exact(0)),
            members: self.members(),
        }))
    }

    not_yet_rpcs! { "membership change (multi-member clusters)";
        member_add(MemberAddRequest) -> MemberAddResponse;
        member_remove(MemberRemoveRequest) -> MemberRemoveResponse;
        member_update(MemberUpdateRequest) -> MemberUpdateResponse;
        member_promote(MemberPromoteRequest) -> MemberPromoteResponse;
    }
}
