//! Where a backup's bytes go: a file written beside its final name and
//! renamed into place once complete and synced (a reader never sees half a
//! snapshot under the final name), or an S3 upload.

use std::path::PathBuf;

use tokio::io::AsyncWriteExt;

use super::s3::{S3Client, Upload};
use super::{BackupError, Target};

/// An open destination.
pub enum Sink {
    /// A file being written.
    File {
        /// Final path.
        path: PathBuf,
        /// Path written to until complete.
        partial: PathBuf,
        /// The open partial file.
        file: tokio::fs::File,
    },
    /// An S3 upload under way.
    S3 {
        /// The upload.
        upload: Box<Upload>,
        /// `s3://bucket/key`.
        location: String,
    },
}

impl Sink {
    /// Opens `target` for writing.
    pub async fn open(target: &Target, part_size: usize) -> Result<Sink, BackupError> {
        match target {
            Target::File(path) => {
                let io = |source| BackupError::File {
                    path: path.clone(),
                    source,
                };
                if let Some(dir) = path.parent() {
                    tokio::fs::create_dir_all(dir).await.map_err(io)?;
                }
                let mut partial = path.clone().into_os_string();
                partial.push(".part");
                let partial = PathBuf::from(partial);
                let file = tokio::fs::File::create(&partial).await.map_err(io)?;
                Ok(Sink::File {
                    path: path.clone(),
                    partial,
                    file,
                })
            }
            Target::S3 { config, key } => {
                let client = S3Client::new(config)?;
                Ok(Sink::S3 {
                    upload: Box::new(client.upload(key, part_size)),
                    location: client.location(key),
                })
            }
        }
    }

    /// Writes the next bytes.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), BackupError> {
        match self {
            Sink::File { file, partial, .. } => {
                file.write_all(chunk)
                    .await
                    .map_err(|source| BackupError::File {
                        path: partial.clone(),
                        source,
                    })
            }
            Sink::S3 { upload, .. } => Ok(upload.write(chunk).await?),
        }
    }

    /// Completes the destination; returns its location.
    pub async fn finish(self) -> Result<String, BackupError> {
        match self {
            Sink::File {
                path,
                partial,
                mut file,
            } => {
                let io = |source| BackupError::File {
                    path: path.clone(),
                    source,
                };
                let synced = async {
                    file.flush().await?;
                    file.sync_all().await?;
                    drop(file);
                    tokio::fs::rename(&partial, &path).await
                }
                .await;
                if let Err(source) = synced {
                    let _ = tokio::fs::remove_file(&partial).await;
                    return Err(io(source));
                }
                // The rename is durable once the directory is synced.
                if let Some(dir) = path.parent() {
                    if let Ok(dir) = tokio::fs::File::open(dir).await {
                        dir.sync_all().await.map_err(io)?;
                    }
                }
                Ok(path.display().to_string())
            }
            Sink::S3 { upload, location } => {
                upload.finish().await?;
                Ok(location)
            }
        }
    }

    /// Gives up: removes the partial file or aborts the upload.
    pub async fn abort(self) {
        match self {
            Sink::File { partial, file, .. } => {
                drop(file);
                let _ = tokio::fs::remove_file(&partial).await;
            }
            Sink::S3 { mut upload, .. } => upload.abort().await,
        }
    }
}
