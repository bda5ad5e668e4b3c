//! Retention in the destination: after a successful scheduled backup, the
//! Job deletes the older snapshot files of the same schedule
//! (`<cluster>-YYYYMMDD-hhmmss.db` beside the new one) that the retention
//! lets go. Other files are never touched, nor the files of the backups
//! the cluster's members restore from (`spec.restore.backupName`, a
//! rebuild's backup): a member started later needs them.

use std::path::Path;

use k8s_openapi::jiff::Timestamp;

use super::s3::S3Client;
use super::schedule::{expired, scheduled_time};
use super::{BackupError, Target};
use crate::crd::Retention;

/// Deletes the expired snapshots of `cluster`'s schedule next to `target`,
/// except those of the backups named in `keep`; returns their names.
pub async fn prune(
    target: &Target,
    cluster: &str,
    retention: &Retention,
    keep: &[String],
    now: Timestamp,
) -> Result<Vec<String>, BackupError> {
    match target {
        Target::File(path) => prune_dir(
            path.parent().unwrap_or(Path::new(".")),
            cluster,
            retention,
            keep,
            now,
        ),
        Target::S3 { config, key } => {
            let client = S3Client::new(config)?;
            let dir = key.rsplit_once('/').map_or("", |(dir, _)| dir);
            let prefix = if dir.is_empty() {
                format!("{cluster}-")
            } else {
                format!("{dir}/{cluster}-")
            };
            let objects = client.list(&prefix).await?;
            let snapshots: Vec<(String, Timestamp)> = objects
                .iter()
                .filter_map(|o| {
                    let file = o.key.rsplit('/').next()?;
                    Some((o.key.clone(), scheduled_time(cluster, file)?))
                })
                .collect();
            let doomed = unkept(expired(&snapshots, retention, now)?, keep);
            for key in &doomed {
                client.delete(key).await?;
            }
            Ok(doomed)
        }
    }
}

/// `doomed` (file names or object keys) less the files of the backups in
/// `keep`.
fn unkept(mut doomed: Vec<String>, keep: &[String]) -> Vec<String> {
    doomed.retain(|path| {
        let file = path.rsplit('/').next().unwrap_or(path);
        !keep
            .iter()
            .any(|backup| file == super::job::file_name(backup))
    });
    doomed
}

fn prune_dir(
    dir: &Path,
    cluster: &str,
    retention: &Retention,
    keep: &[String],
    now: Timestamp,
) -> Result<Vec<String>, BackupError> {
    let io = |source| BackupError::File {
        path: dir.to_path_buf(),
        source,
    };
    let mut snapshots = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let name = entry
            .map_err(io)?
            .file_name()
            .to_string_lossy()
            .into_owned();
        if let Some(at) = scheduled_time(cluster, &name).filter(|_| name.ends_with(".db")) {
            snapshots.push((name, at));
        }
    }
    let doomed = unkept(expired(&snapshots, retention, now)?, keep);
    for name in &doomed {
        let path = dir.join(name);
        std::fs::remove_file(&path).map_err(|source| BackupError::File { path, source })?;
    }
    Ok(doomed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_schedules_expired_files_go() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "demo-20261206-100000.db",
            "demo-20261206-110000.db",
            "demo-20261206-120000.db",
            "demo-manual.db",
            "other-20261206-090000.db",
            "demo-20261206-080000.db.part",
        ] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let retention = Retention {
            max_count: Some(2),
            max_age: None,
        };
        let pruned = prune_dir(dir.path(), "demo", &retention, &[], Timestamp::now()).unwrap();
        assert_eq!(pruned, ["demo-20261206-100000.db"]);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "demo-20261206-080000.db.part",
                "demo-20261206-110000.db",
                "demo-20261206-120000.db",
                "demo-manual.db",
                "other-20261206-090000.db",
            ]
        );
    }

    #[test]
    fn the_files_members_restore_from_stay() {
        let dir = tempfile::tempdir().unwrap();
        for hour in 10..15 {
            std::fs::write(
                dir.path().join(format!("demo-20261206-{hour}0000.db")),
                b"x",
            )
            .unwrap();
        }
        let retention = Retention {
            max_count: Some(2),
            max_age: None,
        };
        let keep = ["demo-20261206-110000".to_string()];
        let pruned = prune_dir(dir.path(), "demo", &retention, &keep, Timestamp::now()).unwrap();
        assert_eq!(
            pruned,
            ["demo-20261206-120000.db", "demo-20261206-100000.db"]
        );
        assert!(dir.path().join("demo-20261206-110000.db").exists());
        // Object keys: the file is the last part.
        assert_eq!(
            unkept(
                vec!["scheduled/demo-1.db".into(), "scheduled/demo-2.db".into()],
                &["demo-2".into()]
            ),
            ["scheduled/demo-1.db"]
        );
    }
}
