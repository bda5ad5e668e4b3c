//! gRPC channels to the endpoints under test: `--conns` channels spread
//! round-robin over the endpoints (or over the leader only with
//! `--target-leader`); clients share them.

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{bail, Context};
use ferrocd_proto::etcdserverpb::kv_client::KvClient;
use ferrocd_proto::etcdserverpb::lease_client::LeaseClient;
use ferrocd_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use ferrocd_proto::etcdserverpb::watch_client::WatchClient;
use ferrocd_proto::etcdserverpb::StatusRequest;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// The CA and client certificate for `https://` endpoints, set once per
/// process (`--cacert`, `--cert`, `--key`), as etcd's benchmark tool takes
/// them.
static TLS: OnceLock<ClientTlsConfig> = OnceLock::new();

/// Talk TLS to `https://` endpoints with these files.
pub fn use_tls(ca: &Path, cert: &Path, key: &Path) -> anyhow::Result<()> {
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(ca)?))
        .identity(Identity::from_pem(read(cert)?, read(key)?));
    if TLS.set(config).is_err() {
        bail!("TLS files were already given");
    }
    Ok(())
}

/// Open channels, one per `--conns`.
#[derive(Clone, Debug)]
pub struct Pool {
    channels: Vec<Channel>,
}

impl Pool {
    /// Connects `conns` channels to `endpoints` (`host:port` or URLs).
    pub async fn connect(
        endpoints: &[String],
        conns: usize,
        target_leader: bool,
    ) -> anyhow::Result<Pool> {
        if endpoints.is_empty() {
            bail!("no endpoints given");
        }
        let mut urls: Vec<String> = endpoints.iter().map(|e| to_url(e)).collect();
        if target_leader {
            urls = vec![leader(&urls).await?];
        }
        let mut channels = Vec::with_capacity(conns.max(1));
        for i in 0..conns.max(1) {
            channels.push(channel(&urls[i % urls.len()]).await?);
        }
        Ok(Pool { channels })
    }

    /// The channel client number `i` uses.
    pub fn channel(&self, i: usize) -> Channel {
        self.channels[i % self.channels.len()].clone()
    }

    pub fn kv(&self, i: usize) -> KvClient<Channel> {
        KvClient::new(self.channel(i))
    }

    pub fn watch(&self, i: usize) -> WatchClient<Channel> {
        WatchClient::new(self.channel(i))
    }

    pub fn lease(&self, i: usize) -> LeaseClient<Channel> {
        LeaseClient::new(self.channel(i))
    }
}

/// `127.0.0.1:2379` -> `http://127.0.0.1:2379`; URLs are kept.
pub fn to_url(endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    }
}

async fn channel(url: &str) -> anyhow::Result<Channel> {
    let mut endpoint =
        Endpoint::from_shared(url.to_string()).with_context(|| format!("bad endpoint {url}"))?;
    if url.starts_with("https://") {
        let tls = TLS
            .get()
            .with_context(|| format!("{url}: give --cacert, --cert and --key for https"))?;
        endpoint = endpoint.tls_config(tls.clone())?;
    }
    endpoint
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("connecting to {url}"))
}

/// The endpoint whose member is the leader, by Maintenance.Status.
async fn leader(urls: &[String]) -> anyhow::Result<String> {
    let mut seen = Vec::new();
    for url in urls {
        let status = match channel(url).await {
            Ok(ch) => MaintenanceClient::new(ch).status(StatusRequest {}).await,
            Err(e) => {
                seen.push(format!("{url}: {e:#}"));
                continue;
            }
        };
        match status {
            Ok(s) => {
                let s = s.into_inner();
                let member = s.header.as_ref().map_or(0, |h| h.member_id);
                if s.leader != 0 && s.leader == member {
                    return Ok(url.clone());
                }
                seen.push(format!("{url}: member {member:x}, leader {:x}", s.leader));
            }
            Err(e) => seen.push(format!("{url}: {}", e.message())),
        }
    }
    bail!("no endpoint is the leader ({})", seen.join("; "))
}

/// Waits until `url` answers Maintenance.Status with a leader.
pub async fn wait_ready(url: &str, timeout: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Ok(ch) = channel(url).await {
            if let Ok(s) = MaintenanceClient::new(ch).status(StatusRequest {}).await {
                if s.get_ref().leader != 0 {
                    return Ok(());
                }
            }
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("{url} did not answer Status with a leader within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_endpoints_become_http_urls() {
        assert_eq!(to_url("127.0.0.1:2379"), "http://127.0.0.1:2379");
        assert_eq!(to_url("https://h:1"), "https://h:1");
    }
}
