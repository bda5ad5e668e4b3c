//! Reading PEM files, and keeping what is built from them current: etcd
//! reads its certificate files on every handshake, so a rotated certificate
//! is served without a restart. Here every handshake looks at the files'
//! metadata (a few `stat`s) and rebuilds only when one changed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use tracing::{info, warn};

use super::TlsError;

/// A file's identity and version as far as rotation goes: replaced by a
/// rename (new inode) or rewritten in place (new mtime or length).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode: meta.ino(),
    })
}

/// How long a set of files that did not build is left alone before it is
/// read again: a broken set is not re-read at every handshake, and one
/// that failed on something passing (a file half written with the same
/// length and time, a read refused for want of file descriptors) is read
/// again even if nothing on disk changes after it.
const RETRY_BROKEN: Duration = Duration::from_secs(1);

/// Something built from files, built again when they change.
pub struct Reloading<T> {
    side: &'static str,
    files: Vec<PathBuf>,
    build: Box<dyn Fn() -> Result<T, TlsError> + Send + Sync>,
    retry: Duration,
    current: Mutex<Current<T>>,
}

/// The value served, the files' stamps it was built from, and the last
/// set of stamps that failed to build, with when.
struct Current<T> {
    stamps: Vec<Option<Stamp>>,
    value: Arc<T>,
    failed: Option<(Vec<Option<Stamp>>, Instant)>,
}

impl<T> Reloading<T> {
    /// Builds once; an error here is a startup error.
    pub fn new(
        side: &'static str,
        files: Vec<PathBuf>,
        build: impl Fn() -> Result<T, TlsError> + Send + Sync + 'static,
    ) -> Result<Self, TlsError> {
        let stamps = files.iter().map(|f| stamp(f)).collect();
        let value = build()?;
        Ok(Reloading {
            side,
            files,
            build: Box::new(build),
            retry: RETRY_BROKEN,
            current: Mutex::new(Current {
                stamps,
                value: Arc::new(value),
                failed: None,
            }),
        })
    }

    /// The value built from the files as they are now. When a file changed
    /// and the new set does not build (a certificate written before its
    /// key, say), the last good value is kept and the failure logged; the
    /// set is tried again as soon as a file changes once more, and at the
    /// latest [`RETRY_BROKEN`] after the failure.
    pub fn get(&self) -> Arc<T> {
        let stamps: Vec<Option<Stamp>> = self.files.iter().map(|f| stamp(f)).collect();
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.stamps == stamps {
            return current.value.clone();
        }
        if let Some((failed, at)) = &current.failed {
            if *failed == stamps && at.elapsed() < self.retry {
                return current.value.clone();
            }
        }
        match (self.build)() {
            Ok(value) => {
                info!(
                    side = self.side,
                    "TLS files changed on disk; serving the new ones"
                );
                *current = Current {
                    stamps,
                    value: Arc::new(value),
                    failed: None,
                };
            }
            Err(e) => {
                warn!("{e}; keeping the previous certificates until the files are complete");
                current.failed = Some((stamps, Instant::now()));
            }
        }
        current.value.clone()
    }
}

fn read_err(side: &'static str, path: &Path, e: rustls_pki_types::pem::Error) -> TlsError {
    match e {
        rustls_pki_types::pem::Error::Io(source) => TlsError::Read {
            side,
            path: path.to_path_buf(),
            source,
        },
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::Pem {
            side,
            path: path.to_path_buf(),
            what: "no PEM block of the expected kind found".into(),
        },
        other => TlsError::Pem {
            side,
            path: path.to_path_buf(),
            what: format!("malformed PEM: {other:?}"),
        },
    }
}

/// Every certificate in a PEM file (a chain or a CA bundle); at least one.
pub fn certs(side: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| read_err(side, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_err(side, path, e))?;
    if certs.is_empty() {
        return Err(read_err(
            side,
            path,
            rustls_pki_types::pem::Error::NoItemsFound,
        ));
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn key(side: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| read_err(side, path, e))
}

/// Every revocation list in a PEM file.
pub fn crls(
    side: &'static str,
    path: &Path,
) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    CertificateRevocationListDer::pem_file_iter(path)
        .map_err(|e| read_err(side, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_err(side, path, e))
}

/// A root store of the CA certificates in `path`.
pub fn roots(side: &'static str, path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs(side, path)? {
        roots.add(cert).map_err(|e| TlsError::Pem {
            side,
            path: path.to_path_buf(),
            what: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn rebuilds_only_when_a_file_changes_and_keeps_the_last_good_value() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cert.pem");
        std::fs::write(&file, "one").unwrap();
        let builds = Arc::new(AtomicUsize::new(0));
        let (f, b) = (file.clone(), builds.clone());
        let reloading = Reloading::new("client", vec![file.clone()], move || {
            b.fetch_add(1, Ordering::SeqCst);
            let text = std::fs::read_to_string(&f).unwrap();
            if text == "broken" {
                return Err(TlsError::Pem {
                    side: "client",
                    path: f.clone(),
                    what: "broken".into(),
                });
            }
            Ok(text)
        })
        .unwrap();
        assert_eq!(*reloading.get(), "one");
        assert_eq!(*reloading.get(), "one");
        assert_eq!(
            builds.load(Ordering::SeqCst),
            1,
            "unchanged files are not read again"
        );

        // Replaced by a rename, as rotation tools do.
        let tmp = dir.path().join("tmp");
        std::fs::write(&tmp, "two!").unwrap();
        std::fs::rename(&tmp, &file).unwrap();
        assert_eq!(*reloading.get(), "two!");

        std::fs::write(&tmp, "broken").unwrap();
        std::fs::rename(&tmp, &file).unwrap();
        assert_eq!(
            *reloading.get(),
            "two!",
            "a broken set keeps the last good one"
        );
        let after_broken = builds.load(Ordering::SeqCst);
        assert_eq!(*reloading.get(), "two!");
        assert_eq!(
            builds.load(Ordering::SeqCst),
            after_broken,
            "a broken set is not read again at every call"
        );
    }

    #[test]
    fn a_set_that_failed_to_build_is_tried_again_even_if_nothing_changes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cert.pem");
        std::fs::write(&file, "one").unwrap();
        // The second build fails once, as a read refused for want of file
        // descriptors would; the file itself is fine.
        let builds = Arc::new(AtomicUsize::new(0));
        let (f, b) = (file.clone(), builds.clone());
        let mut reloading = Reloading::new("server", vec![file.clone()], move || {
            if b.fetch_add(1, Ordering::SeqCst) == 1 {
                return Err(TlsError::Pem {
                    side: "server",
                    path: f.clone(),
                    what: "passing failure".into(),
                });
            }
            Ok(std::fs::read_to_string(&f).unwrap())
        })
        .unwrap();
        reloading.retry = Duration::from_millis(50);

        let tmp = dir.path().join("tmp");
        std::fs::write(&tmp, "two!").unwrap();
        std::fs::rename(&tmp, &file).unwrap();
        assert_eq!(
            *reloading.get(),
            "one",
            "the failed build keeps the old value"
        );
        assert_eq!(*reloading.get(), "one", "and is not retried at once");
        assert_eq!(builds.load(Ordering::SeqCst), 2);

        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(
            *reloading.get(),
            "two!",
            "the unchanged files are read again after the retry delay"
        );
        assert_eq!(*reloading.get(), "two!");
        assert_eq!(builds.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_missing_or_empty_pem_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = certs("client", &missing).unwrap_err().to_string();
        assert!(e.contains("missing.pem"), "{e}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not pem at all").unwrap();
        let e = certs("client", &empty).unwrap_err().to_string();
        assert!(e.contains("no PEM block"), "{e}");
        let e = key("peer", &empty).unwrap_err().to_string();
        assert!(e.starts_with("peer TLS"), "{e}");
    }
}
