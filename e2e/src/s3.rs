//! A real S3 server for tests: `s3s-fs` (`cargo install s3s-fs@0.14.1
//! --locked --features binary`), serving buckets as directories of a temp
//! dir, with SigV4 credentials. Killed when dropped.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, require_tool};

/// Access key of every test server.
pub const ACCESS_KEY: &str = "ferrocd-test";
/// Secret key of every test server.
pub const SECRET_KEY: &str = "ferrocd-test-secret";

/// A running `s3s-fs`.
pub struct S3Server {
    /// Base URL as seen from this host, e.g. `http://127.0.0.1:20123`.
    pub endpoint: String,
    /// The port it listens on.
    pub port: u16,
    /// The directory holding the buckets: bucket `b`'s object `k` is `root/b/k`.
    pub root: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl S3Server {
    /// Starts `s3s-fs` listening on `host` (`127.0.0.1`, or `0.0.0.0` for
    /// pods to reach it). `None` when it is not installed outside CI; in CI
    /// a missing `s3s-fs` fails the test.
    pub fn start(host: &str) -> Option<S3Server> {
        if !require_tool("s3s-fs") {
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).expect("s3 root");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("s3s-fs.log")).expect("log file");
        let child = Command::new("s3s-fs")
            .args(["--host", host, "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(&root)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting s3s-fs");
        let server = S3Server {
            endpoint: format!("http://127.0.0.1:{port}"),
            port,
            root,
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "s3s-fs did not listen on port {port} within 10 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(server)
    }

    /// The file holding `bucket/key`.
    pub fn object_path(&self, bucket: &str, key: &str) -> PathBuf {
        self.root.join(bucket).join(key)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
