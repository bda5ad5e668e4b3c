//! Bytes from outside (peer messages, raft log segments, snapshot files)
//! decoded whatever they hold: an error, never a panic.

use ferrocd::raft::{LogStore, Request, TypeConfig};
use ferrocd::snapshot::SnapshotReader;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// What the peer service decodes from a `RaftMessage` payload.
    #[test]
    fn peer_payloads_never_panic(payload in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = bincode::deserialize::<AppendEntriesRequest<TypeConfig>>(&payload);
        let _ = bincode::deserialize::<VoteRequest<u64>>(&payload);
        let _ = bincode::deserialize::<InstallSnapshotRequest<TypeConfig>>(&payload);
        let _ = bincode::deserialize::<Request>(&payload);
    }

    /// A huge length prefix must not make the decoder allocate it.
    #[test]
    fn length_prefixes_are_not_trusted(len in any::<u64>(), rest in prop::collection::vec(any::<u8>(), 0..64)) {
        let mut payload = len.to_le_bytes().to_vec();
        payload.extend(rest);
        let _ = bincode::deserialize::<AppendEntriesRequest<TypeConfig>>(&payload);
        let _ = bincode::deserialize::<Request>(&payload);
    }

    #[test]
    fn snapshot_files_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..1024)) {
        if let Ok(reader) = SnapshotReader::new(bytes.as_slice()) {
            for entry in reader.take(10_000) {
                if entry.is_err() {
                    break;
                }
            }
        }
    }

    /// A raft log segment of arbitrary bytes: the log opens (a torn tail
    /// is cut) or refuses with an error.
    #[test]
    fn log_segments_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let dir = tempfile::tempdir().unwrap();
        let wal = dir.path().join("wal");
        std::fs::create_dir_all(&wal).unwrap();
        std::fs::write(wal.join(format!("{:020}.seg", 1)), &bytes).unwrap();
        let meta = sled::Config::new().temporary(true).open().unwrap();
        // Opening starts the log's sync task.
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let _inside = runtime.enter();
        let _ = LogStore::open(&meta, &wal);
    }
}
