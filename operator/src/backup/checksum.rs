//! The checksums of a snapshot file as it streams by: SHA-256 of the whole
//! file (what `sha256sum` prints, recorded in the backup's status), and the
//! check of etcd's trailer, the SHA-256 of everything before the last 32
//! bytes, so a truncated or corrupted stream is never recorded as a backup.

use ring::digest::{Context, SHA256, SHA256_OUTPUT_LEN};

/// Why the bytes are not a whole snapshot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChecksumError {
    /// Too short to hold even the trailer.
    #[error("snapshot of {0} bytes is too short for its sha256 trailer")]
    TooShort(u64),
    /// The trailer does not match the content.
    #[error("snapshot sha256 trailer {trailer} does not match its content {computed}")]
    TrailerMismatch {
        /// The trailer as sent.
        trailer: String,
        /// The SHA-256 of the content.
        computed: String,
    },
}

/// SHA-256 and size of a whole snapshot file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sum {
    /// Bytes in the file.
    pub size: u64,
    /// SHA-256 of the file, lower-case hex.
    pub sha256: String,
}

/// Hashes a snapshot chunk by chunk.
pub struct Checksum {
    whole: Context,
    content: Context,
    /// The last bytes seen, not yet known to be content rather than trailer.
    tail: Vec<u8>,
    size: u64,
}

impl Default for Checksum {
    fn default() -> Self {
        Self {
            whole: Context::new(&SHA256),
            content: Context::new(&SHA256),
            tail: Vec::with_capacity(2 * SHA256_OUTPUT_LEN),
            size: 0,
        }
    }
}

impl Checksum {
    /// Adds the next bytes of the file.
    pub fn update(&mut self, chunk: &[u8]) {
        self.whole.update(chunk);
        self.size += chunk.len() as u64;
        // Only the last 32 bytes are held back: everything before them is content.
        if chunk.len() >= SHA256_OUTPUT_LEN {
            let split = chunk.len() - SHA256_OUTPUT_LEN;
            self.content.update(&self.tail);
            self.content.update(&chunk[..split]);
            self.tail.clear();
            self.tail.extend_from_slice(&chunk[split..]);
        } else {
            self.tail.extend_from_slice(chunk);
            self.shift_tail();
        }
    }

    /// Checks the trailer and returns the file's size and SHA-256.
    pub fn finish(mut self) -> Result<Sum, ChecksumError> {
        self.shift_tail();
        if self.tail.len() < SHA256_OUTPUT_LEN {
            return Err(ChecksumError::TooShort(self.size));
        }
        let computed = self.content.finish();
        if computed.as_ref() != self.tail.as_slice() {
            return Err(ChecksumError::TrailerMismatch {
                trailer: hex(&self.tail),
                computed: hex(computed.as_ref()),
            });
        }
        Ok(Sum {
            size: self.size,
            sha256: hex(self.whole.finish().as_ref()),
        })
    }

    fn shift_tail(&mut self) {
        if self.tail.len() > SHA256_OUTPUT_LEN {
            let n = self.tail.len() - SHA256_OUTPUT_LEN;
            self.content.update(&self.tail[..n]);
            self.tail.drain(..n);
        }
    }
}

/// Lower-case hex, as `sha256sum` prints.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot_file(content: &[u8]) -> Vec<u8> {
        let mut file = content.to_vec();
        file.extend_from_slice(ring::digest::digest(&SHA256, content).as_ref());
        file
    }

    fn sum_in_chunks(file: &[u8], chunk: usize) -> Result<Sum, ChecksumError> {
        let mut checksum = Checksum::default();
        for piece in file.chunks(chunk) {
            checksum.update(piece);
        }
        checksum.finish()
    }

    #[test]
    fn whole_file_hash_matches_sha256sum_whatever_the_chunking() {
        let file = snapshot_file(&(0..5000u32).map(|i| i as u8).collect::<Vec<_>>());
        let expected = hex(ring::digest::digest(&SHA256, &file).as_ref());
        for chunk in [1, 7, 31, 32, 33, 1000, 10_000] {
            let sum = sum_in_chunks(&file, chunk).unwrap();
            assert_eq!(sum.sha256, expected, "chunk {chunk}");
            assert_eq!(sum.size, file.len() as u64);
        }
    }

    #[test]
    fn corrupted_content_fails_the_trailer_check() {
        let mut file = snapshot_file(b"bolt database pages");
        file[3] ^= 1;
        for chunk in [1, 5, 64] {
            assert!(matches!(
                sum_in_chunks(&file, chunk),
                Err(ChecksumError::TrailerMismatch { .. })
            ));
        }
    }

    #[test]
    fn truncated_stream_fails() {
        let file = snapshot_file(b"bolt database pages");
        assert!(matches!(
            sum_in_chunks(&file[..file.len() - 1], 4),
            Err(ChecksumError::TrailerMismatch { .. })
        ));
        assert_eq!(
            sum_in_chunks(&file[..20], 4),
            Err(ChecksumError::TooShort(20))
        );
    }
}
