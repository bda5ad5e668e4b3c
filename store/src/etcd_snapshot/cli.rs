//! `ferrocd snapshot save|status|restore`: etcdctl's and etcdutl's
//! snapshot commands, for snapshots of ferrocd or etcd.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use ferrocd_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use ferrocd_proto::etcdserverpb::SnapshotRequest;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use indicatif::{ProgressBar, ProgressStyle};

use super::{status, RestoreOptions, SnapshotError, TRAILER_LEN};

#[derive(Parser, Debug)]
#[command(
    name = "ferrocd snapshot",
    about = "Save and inspect snapshots in etcd's format"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Stores a snapshot of the member at ENDPOINT (host:port or URL) in FILE.
    Save {
        endpoint: String,
        file: PathBuf,
        #[command(flatten)]
        tls: ClientTls,
    },
    /// Builds a new member's data directory from a snapshot of etcd or
    /// ferrocd, as a member of a new cluster (etcdutl's flags).
    Restore {
        file: PathBuf,
        /// Where to write the member's data; must not exist.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The member's name, as in --initial-cluster.
        #[arg(long, default_value = "default")]
        name: String,
        /// The new cluster's members, name=peer-URL, comma-separated.
        #[arg(long, default_value = "default=http://localhost:2380")]
        initial_cluster: String,
        /// The new cluster's token (member and cluster ids derive from it).
        #[arg(long, default_value = "etcd-cluster")]
        initial_cluster_token: String,
        /// This member's peer URLs, as listed in --initial-cluster.
        #[arg(long, default_value = "http://localhost:2380")]
        initial_advertise_peer_urls: String,
        /// Accept a file without etcd's sha256 trailer (a copied db file),
        /// and do not check the trailer of one with it.
        #[arg(long, default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
        skip_hash_check: bool,
    },
    /// Prints a snapshot's hash, revision, total keys and total size.
    Status {
        file: PathBuf,
        /// Output format.
        #[arg(short = 'w', long = "write-out", value_enum, default_value_t = Format::Simple)]
        write_out: Format,
    },
}

/// etcdctl's client TLS flags, for `https://` endpoints.
#[derive(clap::Args, Debug, Default)]
struct ClientTls {
    /// CA bundle to verify the server's certificate with.
    #[arg(long)]
    cacert: Option<PathBuf>,
    /// Client certificate (with --key), for servers that require one.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// The client certificate's key.
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
}

impl ClientTls {
    fn config(&self) -> Result<Option<ClientTlsConfig>, SnapshotError> {
        let Some(ca) = &self.cacert else {
            return Ok(None);
        };
        let mut config =
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(std::fs::read(ca)?));
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            config = config.identity(Identity::from_pem(
                std::fs::read(cert)?,
                std::fs::read(key)?,
            ));
        }
        Ok(Some(config))
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Format {
    Simple,
    Table,
    Json,
}

/// Runs `ferrocd snapshot ...`; `args` starts with `snapshot`.
pub fn run(args: Vec<OsString>) -> ExitCode {
    let args = Args::parse_from(args);
    let result = match args.command {
        Command::Save {
            endpoint,
            file,
            tls,
        } => save(&endpoint, &file, &tls),
        Command::Status { file, write_out } => print_status(&file, write_out),
        Command::Restore {
            file,
            data_dir,
            name,
            initial_cluster,
            initial_cluster_token,
            initial_advertise_peer_urls,
            skip_hash_check,
        } => restore(&RestoreOptions {
            snapshot: file,
            // etcdutl's default: NAME.etcd in the working directory.
            data_dir: data_dir.unwrap_or_else(|| PathBuf::from(format!("{name}.etcd"))),
            name,
            initial_cluster,
            initial_cluster_token,
            initial_advertise_peer_urls,
            skip_hash_check,
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn print_status(file: &Path, format: Format) -> Result<(), SnapshotError> {
    let s = status(file)?;
    match format {
        Format::Simple => println!(
            "{:x}, {}, {}, {}",
            s.hash,
            s.revision,
            s.total_key,
            super::human_bytes(s.total_size)
        ),
        Format::Table => print!("{}", s.table()),
        Format::Json => println!("{}", s.json()),
    }
    Ok(())
}

fn restore(opts: &RestoreOptions) -> Result<(), SnapshotError> {
    eprintln!(
        "restoring snapshot {} into {} as member {}",
        opts.snapshot.display(),
        opts.data_dir.display(),
        opts.name
    );
    // Drawn only when stderr is a terminal.
    let bar = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("{spinner} {pos} changes restored ({elapsed})")
            .expect("a valid template"),
    );
    let restored = super::restore(opts, &|n| bar.set_position(n));
    bar.finish_and_clear();
    let r = restored?;
    eprintln!(
        "restored snapshot {}: revision {}, {} changes kept{}, {} leases, {} auth records; member {:x} of cluster {:x}",
        opts.snapshot.display(),
        r.revision,
        r.revisions,
        r.compacted
            .map(|c| format!(" (compacted at {c})"))
            .unwrap_or_default(),
        r.leases,
        r.auth_records,
        r.member_id,
        r.cluster_id
    );
    Ok(())
}

/// Streams a snapshot into `FILE.part`, checks the digest that follows
/// the database, and renames it to `FILE` (trailer kept, as etcdctl does,
/// so `etcdctl snapshot restore` can check it again).
fn save(endpoint: &str, file: &Path, tls: &ClientTls) -> Result<(), SnapshotError> {
    let tls = tls.config()?;
    let url = if endpoint.contains("://") {
        endpoint.to_string()
    } else if tls.is_some() {
        format!("https://{endpoint}")
    } else {
        format!("http://{endpoint}")
    };
    if url.starts_with("https://") && tls.is_none() {
        return Err(SnapshotError::Integrity(format!(
            "{url}: an https endpoint needs --cacert"
        )));
    }
    let mut part = file.as_os_str().to_owned();
    part.push(".part");
    let part = PathBuf::from(part);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(fetch(&url, tls, &part));
    if result.is_err() {
        let _ = std::fs::remove_file(&part);
    }
    let size = result?;
    std::fs::rename(&part, file)?;
    eprintln!("{url}: fetched snapshot, {size} bytes");
    println!("Snapshot saved at {}", file.display());
    Ok(())
}

/// Writes the stream from `url` into `part`; returns the database size.
async fn fetch(url: &str, tls: Option<ClientTlsConfig>, part: &Path) -> Result<u64, SnapshotError> {
    let failed = |e: &dyn std::fmt::Display| SnapshotError::Integrity(format!("{url}: {e}"));
    let mut endpoint = Endpoint::from_shared(url.to_string()).map_err(|e| failed(&e))?;
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).map_err(|e| failed(&e))?;
    }
    let channel = endpoint.connect().await.map_err(|e| failed(&e))?;
    let mut client = MaintenanceClient::new(channel).max_decoding_message_size(64 << 20);
    let mut stream = client
        .snapshot(SnapshotRequest {})
        .await
        .map_err(|e| failed(&e.message()))?
        .into_inner();
    let mut out = std::io::BufWriter::new(std::fs::File::create(part)?);
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    let mut size = 0u64;
    let mut data_done = false;
    let mut trailer = Vec::new();
    // Drawn only when stderr is a terminal.
    let bar = ProgressBar::no_length().with_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} ({bytes_per_sec})")
            .expect("a valid template"),
    );
    while let Some(msg) = stream.message().await.map_err(|e| failed(&e.message()))? {
        if !data_done {
            bar.set_length(size + msg.blob.len() as u64 + msg.remaining_bytes);
            bar.inc(msg.blob.len() as u64);
        }
        out.write_all(&msg.blob)?;
        if data_done {
            trailer.extend_from_slice(&msg.blob);
        } else {
            digest.update(&msg.blob);
            size += msg.blob.len() as u64;
            data_done = msg.remaining_bytes == 0;
        }
    }
    bar.finish_and_clear();
    if !data_done || trailer.len() != TRAILER_LEN {
        return Err(failed(&"the snapshot stream ended early"));
    }
    if digest.finish().as_ref() != trailer.as_slice() {
        return Err(failed(&"the snapshot's sha256 does not match its data"));
    }
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(size)
}
