//! etcdctl side by side on a fresh ferrocd and a fresh etcd: starting the
//! pair, and normalising outputs so the two compare byte for byte once
//! what must differ between two independently started servers is masked
//! (member and cluster IDs, URLs, etcdctl's log timestamps).

use std::process::Output;

use ferrocd_proto::etcdserverpb::cluster_client::ClusterClient;
use ferrocd_proto::etcdserverpb::MemberListRequest;

use crate::{require_tool, Kind, Server};

/// One etcdctl run, normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Out {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// Normalises a raw run: `stdout` maps the whole standard output;
    /// standard error is split into lines, etcdctl's JSON log lines are
    /// reduced to what they say (see [`log_line`]), and `stderr_line` maps
    /// each line.
    pub fn normalize(
        out: &Output,
        stdout: impl FnOnce(&str) -> String,
        stderr_line: impl Fn(&str) -> String,
    ) -> Out {
        let stderr = String::from_utf8_lossy(&out.stderr)
            .lines()
            .map(|line| stderr_line(&log_line(line)))
            .collect::<Vec<_>>()
            .join("\n");
        Out {
            code: out.status.code(),
            stdout: stdout(&String::from_utf8_lossy(&out.stdout)),
            stderr,
        }
    }
}

/// etcdctl's client log (a JSON object with a `level`): keeps the level,
/// the message and the error, drops when and who. Other lines unchanged.
pub fn log_line(line: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(line) {
        Ok(serde_json::Value::Object(o)) if o.contains_key("level") => {
            let field = |k: &str| o.get(k).and_then(|v| v.as_str()).unwrap_or("");
            format!(
                "[{} log] {}: {}",
                field("level"),
                field("msg"),
                field("error")
            )
        }
        _ => line.to_string(),
    }
}

/// What identifies one server in etcdctl output, and the masks that hide
/// it.
pub struct Identity {
    /// `ferrocd` or `etcd`.
    pub name: &'static str,
    pub member_id: u64,
    pub cluster_id: u64,
    /// The raft term right after start.
    pub raft_term: u64,
    /// (text, placeholder), longest text first.
    masks: Vec<(String, String)>,
}

impl Identity {
    /// Reads the IDs and peer URLs of a running single-member `server`.
    pub async fn of(server: &Server) -> Identity {
        let status = server.status().await.expect("status");
        let header = status.header.expect("status header");
        let channel = server.channel().await.expect("connect");
        let members = ClusterClient::new(channel)
            .member_list(MemberListRequest {
                linearizable: false,
            })
            .await
            .expect("member list")
            .into_inner();
        let mut masks = vec![
            // Quoted so JSON output stays parseable after masking.
            (header.member_id.to_string(), "\"<MEMBER_ID>\"".to_string()),
            (format!("{:x}", header.member_id), "<MEMBER_ID>".to_string()),
            (
                header.cluster_id.to_string(),
                "\"<CLUSTER_ID>\"".to_string(),
            ),
            (
                format!("{:x}", header.cluster_id),
                "<CLUSTER_ID>".to_string(),
            ),
            (server.client_url.clone(), "<CLIENT_URL>".to_string()),
            (server.endpoint.clone(), "<ENDPOINT>".to_string()),
        ];
        for m in &members.members {
            for u in &m.peer_ur_ls {
                masks.push((u.clone(), "<PEER_URL>".to_string()));
            }
        }
        masks.sort_by_key(|(text, _)| std::cmp::Reverse(text.len()));
        Identity {
            name: match server.kind {
                Kind::Ferrocd => "ferrocd",
                Kind::Etcd => "etcd",
            },
            member_id: header.member_id,
            cluster_id: header.cluster_id,
            raft_term: header.raft_term,
            masks,
        }
    }

    /// `s` with the IDs, URLs and endpoint replaced by placeholders.
    pub fn mask(&self, s: &str) -> String {
        let mut s = s.to_string();
        for (text, placeholder) in &self.masks {
            s = s.replace(text.as_str(), placeholder);
        }
        s
    }
}

/// A fresh ferrocd and a fresh etcd, started at once, each with its
/// [`Identity`]: `(ferrocd, etcd)`. `None` (skip) when etcd or etcdctl is
/// missing outside CI.
pub async fn start_pair() -> Option<((Server, Identity), (Server, Identity))> {
    start_pair_with(&[]).await
}

/// [`start_pair`] with `extra` flags given to both servers.
pub async fn start_pair_with(extra: &[&str]) -> Option<((Server, Identity), (Server, Identity))> {
    if !require_tool("etcdctl") {
        return None;
    }
    let (ferrocd, etcd) = tokio::join!(Server::ferrocd(extra), Server::etcd(extra));
    let etcd = etcd?;
    let (f, e) = tokio::join!(Identity::of(&ferrocd), Identity::of(&etcd));
    // Both count terms alike: 2 on a fresh single member.
    assert_eq!(f.raft_term, e.raft_term, "raft term of a fresh member");
    Some(((ferrocd, f), (etcd, e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_keep_level_message_and_error_only() {
        let line = r#"{"level":"warn","ts":"2024-01-01T00:00:00Z","caller":"x","msg":"retrying","target":"endpoint://client-1/127.0.0.1:1","error":"rpc error"}"#;
        assert_eq!(log_line(line), "[warn log] retrying: rpc error");
        assert_eq!(log_line("Error: boom"), "Error: boom");
    }
}
