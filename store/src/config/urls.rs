//! Validators for the URL flags: where to listen, what to advertise, and
//! the initial cluster this member must find itself in.

use std::net::SocketAddr;

use url::Url;

use super::{ConfigError, Flags, InitialMember, Listen};
use crate::ids;
use crate::tls::flags::TlsSettings;

/// The listener and advertised URLs.
#[derive(Debug, Clone)]
pub struct Listeners {
    pub listen_client: Vec<Listen>,
    pub listen_metrics: Vec<Listen>,
    pub advertise_client_urls: Vec<String>,
    pub listen_peer: Vec<Listen>,
    pub peer_urls: Vec<String>,
}

/// `--listen-*-urls`, `--advertise-client-urls`, `--initial-advertise-peer-urls`.
/// An `https://` listener needs that side's certificate; an `http://` one
/// is served in plain text even when there is one (etcd warns, and so does
/// ferrocd: a note is added).
pub fn listeners(
    f: &Flags,
    tls: &TlsSettings,
    notes: &mut Vec<String>,
) -> Result<Listeners, ConfigError> {
    let client = tls.client.is_some();
    Ok(Listeners {
        listen_client: listen("listen-client-urls", &f.listen_client_urls, client, notes)?,
        listen_metrics: match &f.listen_metrics_urls {
            Some(urls) => listen("listen-metrics-urls", urls, client, notes)?,
            None => Vec::new(),
        },
        advertise_client_urls: url_strings(parse_urls(
            "advertise-client-urls",
            &f.advertise_client_urls,
        )?),
        listen_peer: listen(
            "listen-peer-urls",
            &f.listen_peer_urls,
            tls.peer.is_some(),
            notes,
        )?,
        peer_urls: url_strings(parse_urls(
            "initial-advertise-peer-urls",
            &f.initial_advertise_peer_urls,
        )?),
    })
}

fn listen(
    flag: &'static str,
    list: &str,
    have_tls: bool,
    notes: &mut Vec<String>,
) -> Result<Vec<Listen>, ConfigError> {
    let (files, side) = if flag == "listen-peer-urls" {
        ("--peer-cert-file, --peer-key-file", "peer")
    } else {
        ("--cert-file, --key-file", "client")
    };
    parse_urls(flag, list)?
        .iter()
        .map(|u| {
            let tls = u.scheme() == "https";
            let url = u.as_str().trim_end_matches('/').to_string();
            if tls && !have_tls {
                return Err(ConfigError::HttpsWithoutCert { files, side, url });
            }
            if !tls && have_tls && flag != "listen-metrics-urls" {
                notes.push(format!(
                    "--{flag}: {url} is HTTP while key and cert files are present; serving it without TLS"
                ));
            }
            Ok(Listen {
                addr: socket_addr(flag, u)?,
                tls,
            })
        })
        .collect()
}

/// Members reached at `https://` peer URLs need this member's peer
/// certificate.
pub fn peer_tls_for_https(
    tls: &TlsSettings,
    members: &[InitialMember],
    peer_urls: &[String],
) -> Result<(), ConfigError> {
    if tls.peer.is_some() {
        return Ok(());
    }
    let https = members
        .iter()
        .flat_map(|m| m.peer_urls.iter())
        .chain(peer_urls)
        .find(|u| u.starts_with("https://"));
    match https {
        Some(url) => Err(ConfigError::HttpsWithoutCert {
            files: "--peer-cert-file, --peer-key-file",
            side: "peer",
            url: url.clone(),
        }),
        None => Ok(()),
    }
}

/// `--initial-cluster` (default: this member alone at its advertised peer
/// URLs), which must name this member with exactly those URLs. Returns
/// the members and this member's id.
pub fn initial_cluster(
    f: &Flags,
    peer_urls: &[String],
) -> Result<(Vec<InitialMember>, u64), ConfigError> {
    let initial = match &f.initial_cluster {
        Some(s) => s.clone(),
        None => peer_urls
            .iter()
            .map(|u| format!("{}={u}", f.name))
            .collect::<Vec<_>>()
            .join(","),
    };
    cluster_members(&initial, &f.initial_cluster_token, &f.name, peer_urls)
}

/// [`cluster_members`] from flag values as given (`snapshot restore`
/// takes etcd's `--initial-*` flags too).
pub fn cluster_members_from_flags(
    initial: &str,
    token: &str,
    name: &str,
    advertise_peer_urls: &str,
) -> Result<(Vec<InitialMember>, u64), ConfigError> {
    let urls = url_strings(parse_urls(
        "initial-advertise-peer-urls",
        advertise_peer_urls,
    )?);
    cluster_members(initial, token, name, &urls)
}

/// The members of `--initial-cluster` (`initial`, with ids from `token`)
/// and the id of member `name`, which must be listed with exactly the
/// peer URLs it advertises.
fn cluster_members(
    initial: &str,
    token: &str,
    name: &str,
    peer_urls: &[String],
) -> Result<(Vec<InitialMember>, u64), ConfigError> {
    let members = parse_initial_cluster(initial, token)?;
    let me =
        members
            .iter()
            .find(|m| m.name == name)
            .ok_or_else(|| ConfigError::NameNotInCluster {
                name: name.to_string(),
            })?;
    let mut mine = me.peer_urls.clone();
    let mut advertised = peer_urls.to_vec();
    mine.sort();
    advertised.sort();
    if mine != advertised {
        return Err(ConfigError::PeerUrlMismatch {
            name: name.to_string(),
            cluster_urls: me.peer_urls.join(","),
            advertised: peer_urls.join(","),
        });
    }
    let id = me.id;
    Ok((members, id))
}

fn parse_urls(flag: &'static str, list: &str) -> Result<Vec<Url>, ConfigError> {
    let urls = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            let u = Url::parse(s).map_err(|source| ConfigError::InvalidUrl {
                flag,
                url: s.to_string(),
                source,
            })?;
            match u.scheme() {
                "http" | "https" => Ok(u),
                "unix" | "unixs" => Err(ConfigError::UnixSocket {
                    flag,
                    url: s.to_string(),
                }),
                other => Err(ConfigError::UrlScheme {
                    flag,
                    url: s.to_string(),
                    scheme: other.to_string(),
                }),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    if urls.is_empty() {
        return Err(ConfigError::Empty { flag });
    }
    if let Some(u) = urls.iter().find(|u| u.port().is_none()) {
        return Err(ConfigError::MissingPort {
            flag,
            url: u.to_string(),
        });
    }
    Ok(urls)
}

/// URLs as etcd prints them: scheme://host:port without a trailing slash.
fn url_strings(urls: Vec<Url>) -> Vec<String> {
    urls.iter()
        .map(|u| {
            let s = u.as_str();
            s.strip_suffix('/').unwrap_or(s).to_string()
        })
        .collect()
}

fn socket_addr(flag: &'static str, u: &Url) -> Result<SocketAddr, ConfigError> {
    let host = u.host_str().unwrap_or("");
    let port = u.port().unwrap_or(0);
    let host = if host == "localhost" {
        "127.0.0.1"
    } else {
        host
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    format!("{host}:{port}")
        .parse::<SocketAddr>()
        .or_else(|_| format!("[{host}]:{port}").parse())
        .map_err(|_| ConfigError::NotListenable {
            flag,
            url: u.to_string(),
        })
}

fn parse_initial_cluster(s: &str, token: &str) -> Result<Vec<InitialMember>, ConfigError> {
    let mut members: Vec<InitialMember> = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, url) = part
            .split_once('=')
            .ok_or_else(|| ConfigError::NotNameUrl {
                part: part.to_string(),
            })?;
        let url = url_strings(parse_urls("initial-cluster", url)?).remove(0);
        match members.iter_mut().find(|m| m.name == name) {
            Some(m) => m.peer_urls.push(url),
            None => members.push(InitialMember {
                name: name.to_string(),
                peer_urls: vec![url],
                id: 0,
            }),
        }
    }
    if members.is_empty() {
        return Err(ConfigError::Empty {
            flag: "initial-cluster",
        });
    }
    for m in &mut members {
        m.id = ids::member_id(&m.peer_urls, token);
    }
    Ok(members)
}
