//! The snapshot file format: every entry of the store, streamed in chunks and
//! checksummed, never held whole in memory.
//!
//! Layout: the magic bytes, then frames `[key len u32][key][value len u32][value]`
//! (big-endian lengths), then the end marker `0xFFFFFFFF` and a CRC-32 of
//! everything before it.

use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;

const MAGIC: &[u8] = b"FERROCD-SNAPSHOT\x01";
const END: u32 = u32::MAX;
/// Larger frames can only come from a corrupt file.
const MAX_FRAME: u32 = 256 * 1024 * 1024;

/// Writes a snapshot.
pub struct SnapshotWriter<W: Write> {
    out: BufWriter<W>,
    crc: crc32fast::Hasher,
    entries: u64,
}

impl<W: Write> SnapshotWriter<W> {
    pub fn new(out: W) -> io::Result<Self> {
        let mut w = SnapshotWriter {
            out: BufWriter::with_capacity(1 << 20, out),
            crc: crc32fast::Hasher::new(),
            entries: 0,
        };
        w.put(MAGIC)?;
        Ok(w)
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.crc.update(bytes);
        self.out.write_all(bytes)
    }

    /// Appends one entry.
    pub fn entry(&mut self, key: &[u8], value: &[u8]) -> io::Result<()> {
        for part in [key, value] {
            let len = u32::try_from(part.len())
                .ok()
                .filter(|l| *l < MAX_FRAME)
                .ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidInput, "snapshot entry too large")
                })?;
            self.put(&len.to_be_bytes())?;
            self.put(part)?;
        }
        self.entries += 1;
        Ok(())
    }

    /// Writes the trailer; returns the underlying writer and the entry count.
    pub fn finish(mut self) -> io::Result<(W, u64)> {
        self.put(&END.to_be_bytes())?;
        let crc = self.crc.clone().finalize();
        self.out.write_all(&crc.to_be_bytes())?;
        let out = self.out.into_inner().map_err(|e| e.into_error())?;
        Ok((out, self.entries))
    }
}

/// Reads a snapshot's entries in order. The last item is an error if the
/// checksum does not match: verify a file fully before applying it.
pub struct SnapshotReader<R: Read> {
    input: BufReader<R>,
    crc: crc32fast::Hasher,
    done: bool,
}

impl<R: Read> SnapshotReader<R> {
    pub fn new(input: R) -> io::Result<Self> {
        let mut r = SnapshotReader {
            input: BufReader::with_capacity(1 << 20, input),
            crc: crc32fast::Hasher::new(),
            done: false,
        };
        let mut magic = vec![0u8; MAGIC.len()];
        r.read_checked(&mut magic)?;
        if magic != MAGIC {
            return Err(corrupt("not a ferrocd snapshot"));
        }
        Ok(r)
    }

    fn read_checked(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.input.read_exact(buf)?;
        self.crc.update(buf);
        Ok(())
    }

    fn len(&mut self) -> io::Result<u32> {
        let mut b = [0u8; 4];
        self.read_checked(&mut b)?;
        Ok(u32::from_be_bytes(b))
    }

    fn frame(&mut self, len: u32) -> io::Result<Vec<u8>> {
        if len >= MAX_FRAME {
            return Err(corrupt("frame length out of range"));
        }
        let mut buf = vec![0u8; len as usize];
        self.read_checked(&mut buf)?;
        Ok(buf)
    }

    fn next_entry(&mut self) -> io::Result<Option<(Vec<u8>, Vec<u8>)>> {
        let klen = self.len()?;
        if klen == END {
            let want = self.crc.clone().finalize();
            let mut b = [0u8; 4];
            self.input.read_exact(&mut b)?;
            if u32::from_be_bytes(b) != want {
                return Err(corrupt("checksum mismatch"));
            }
            return Ok(None);
        }
        let key = self.frame(klen)?;
        let vlen = self.len()?;
        let value = self.frame(vlen)?;
        Ok(Some((key, value)))
    }
}

impl<R: Read> Iterator for SnapshotReader<R> {
    type Item = io::Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_entry() {
            Ok(Some(e)) => Some(Ok(e)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                let e = if e.kind() == io::ErrorKind::UnexpectedEof {
                    corrupt("truncated")
                } else {
                    e
                };
                Some(Err(e))
            }
        }
    }
}

/// Reads a whole snapshot file and checks its checksum; returns the entry count.
pub fn verify(path: &Path) -> io::Result<u64> {
    let mut n = 0;
    for entry in SnapshotReader::new(std::fs::File::open(path)?)? {
        entry?;
        n += 1;
    }
    Ok(n)
}

fn corrupt(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("corrupt snapshot: {what}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn write(entries: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
        let mut w = SnapshotWriter::new(Vec::new()).unwrap();
        for (k, v) in entries {
            w.entry(k, v).unwrap();
        }
        w.finish().unwrap().0
    }

    proptest! {
        #[test]
        fn entries_round_trip(entries in prop::collection::vec((prop::collection::vec(any::<u8>(), 0..40), prop::collection::vec(any::<u8>(), 0..200)), 0..50)) {
            let bytes = write(&entries);
            let back: Vec<_> = SnapshotReader::new(bytes.as_slice()).unwrap().collect::<io::Result<_>>().unwrap();
            prop_assert_eq!(back, entries);
        }
    }

    #[test]
    fn a_flipped_byte_is_detected() {
        let mut bytes = write(&[(b"key".to_vec(), b"value".to_vec())]);
        let at = MAGIC.len() + 6;
        bytes[at] ^= 0x01;
        let result: io::Result<Vec<_>> = SnapshotReader::new(bytes.as_slice()).unwrap().collect();
        assert!(result.is_err());
    }

    #[test]
    fn truncation_is_detected() {
        let bytes = write(&[(b"key".to_vec(), b"value".to_vec())]);
        let cut = &bytes[..bytes.len() - 3];
        let result: io::Result<Vec<_>> = SnapshotReader::new(cut).unwrap().collect();
        assert!(result.unwrap_err().to_string().contains("corrupt"));
    }

    #[test]
    fn other_files_are_refused() {
        assert!(SnapshotReader::new(&b"hello world, not a snapshot"[..]).is_err());
    }
}
