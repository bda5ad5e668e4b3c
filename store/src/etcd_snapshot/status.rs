//! What `etcdctl snapshot status` reports about a snapshot file, computed
//! the same way: after bbolt's consistency check, a CRC-32C over every
//! top-level bucket's name followed by its keys and values in order; the
//! main revision of the `key` bucket's last key; the number of keys in all
//! buckets; and the database size (high-water mark times page size).

use std::path::Path;

use super::layout::{Crc32c, KEY};
use super::SnapshotError;
use crate::bbolt::{BoltError, DbReader};

/// A snapshot's summary, as `etcdctl snapshot status` prints it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SnapshotStatus {
    pub hash: u32,
    pub revision: i64,
    #[serde(rename = "totalKey")]
    pub total_key: u64,
    #[serde(rename = "totalSize")]
    pub total_size: u64,
}

/// Reads the snapshot (or backend database) at `path`.
pub fn status(path: &Path) -> Result<SnapshotStatus, SnapshotError> {
    let db = DbReader::open(path)?;
    db.check()?;
    let mut hash = Crc32c::default();
    let mut revision = 0;
    let mut total_key = 0;
    for name in db.buckets()? {
        hash.update(&name);
        let is_key = name == KEY;
        db.for_each(&name, |k, v| {
            hash.update(k);
            hash.update(v.unwrap_or_default());
            if is_key {
                if let Some(main) = k.get(..8) {
                    revision = i64::from_be_bytes(main.try_into().expect("8 bytes"));
                }
            }
            total_key += 1;
            Ok::<_, BoltError>(())
        })?;
    }
    Ok(SnapshotStatus {
        hash: hash.finish(),
        revision,
        total_key,
        total_size: db.size(),
    })
}

impl SnapshotStatus {
    /// `-w json`: one line, as etcdctl prints it.
    pub fn json(&self) -> String {
        serde_json::to_string(self).expect("a status serializes")
    }

    /// `-w table`: etcdctl's table, headers centred, values right-aligned.
    pub fn table(&self) -> String {
        let headers = ["HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"];
        let values = [
            format!("{:x}", self.hash),
            self.revision.to_string(),
            self.total_key.to_string(),
            human_bytes(self.total_size),
        ];
        let widths: Vec<usize> = headers
            .iter()
            .zip(&values)
            .map(|(h, v)| h.len().max(v.len()))
            .collect();
        let rule: String = widths.iter().fold("+".into(), |mut s, w| {
            s.push_str(&"-".repeat(w + 2));
            s.push('+');
            s
        });
        let mut header = String::from("|");
        let mut row = String::from("|");
        for ((h, v), w) in headers.iter().zip(&values).zip(&widths) {
            let gap = w - h.len();
            let left = gap / 2;
            header.push_str(&format!(
                " {}{h}{} |",
                " ".repeat(left),
                " ".repeat(gap - left)
            ));
            row.push_str(&format!(" {v:>w$} |"));
        }
        format!("{rule}\n{header}\n{rule}\n{row}\n{rule}\n")
    }
}

/// Sizes as etcdctl prints them (go-humanize's `Bytes`): powers of 1000,
/// one decimal below 10.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    if n < 10 {
        return format!("{n} B");
    }
    let exp = ((n as f64).ln() / 1000f64.ln()).floor() as usize;
    let exp = exp.min(UNITS.len() - 1);
    let value = (n as f64 / 1000f64.powi(exp as i32) * 10.0 + 0.5).floor() / 10.0;
    if value < 10.0 {
        format!("{value:.1} {}", UNITS[exp])
    } else {
        format!("{value:.0} {}", UNITS[exp])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_as_etcdctl_prints_them() {
        assert_eq!(human_bytes(32768), "33 kB");
        assert_eq!(human_bytes(5), "5 B");
        assert_eq!(human_bytes(4096), "4.1 kB");
        assert_eq!(human_bytes(20_480_000), "20 MB");
    }

    #[test]
    fn the_table_is_etcdctls() {
        let status = SnapshotStatus {
            hash: 0x94a2_2330,
            revision: 7,
            total_key: 12,
            total_size: 32768,
        };
        // As etcdctl 3.4.23 printed it for that file.
        let expected = "\
+----------+----------+------------+------------+
|   HASH   | REVISION | TOTAL KEYS | TOTAL SIZE |
+----------+----------+------------+------------+
| 94a22330 |        7 |         12 |      33 kB |
+----------+----------+------------+------------+
";
        assert_eq!(status.table(), expected);
        assert_eq!(
            status.json(),
            r#"{"hash":2493653808,"revision":7,"totalKey":12,"totalSize":32768}"#
        );
    }
}
