//! The client-to-server bytes of one connection, repaired as they arrive:
//! HTTP/2 frames pass as they are, except header blocks once the first one
//! has shown a `:authority` h2 would refuse. Pure: bytes in, bytes out.

use super::header_block::{self, ClientContext};

/// What every HTTP/2 client sends first (RFC 9113 3.4).
pub(super) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;

pub(super) const HEADERS: u8 = 0x1;
pub(super) const CONTINUATION: u8 = 0x9;
pub(super) const END_STREAM: u8 = 0x1;
pub(super) const END_HEADERS: u8 = 0x4;
pub(super) const PADDED: u8 = 0x8;
pub(super) const PRIORITY: u8 = 0x20;
/// Stream dependency and weight, after the pad length.
const PRIORITY_FIELDS: usize = 5;

/// The frame size every HTTP/2 server accepts (SETTINGS_MAX_FRAME_SIZE
/// cannot go below it), so re-encoded blocks are cut at it.
const MAX_FRAME: usize = 16_384;

/// Most bytes of one header block held while it is gathered. h2 refuses
/// header lists far smaller (16 KiB by default); past this the block is
/// not ours to judge.
const MAX_BLOCK: usize = 1 << 20;

/// The repair state of one connection's inbound bytes.
pub(super) struct Inbound {
    phase: Phase,
    /// Whether header blocks are re-encoded (decided on the first block).
    rewriting: bool,
    /// The frames of the header block being gathered, as they came.
    block_frames: Vec<u8>,
    /// The header block being gathered.
    block: Option<Block>,
    /// The frame (or preface) being read, as it came.
    frame: Vec<u8>,
    context: ClientContext,
}

/// Why a connection being rewritten cannot go on.
#[derive(Debug, thiserror::Error)]
#[error("malformed HTTP/2 from the client: {0}")]
pub(super) struct Malformed(&'static str);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading the first bytes: the HTTP/2 preface, or anything else.
    Preface,
    /// Reading a frame's 9-byte header.
    FrameHeader,
    /// Copying what is left of a frame that holds no header block.
    Payload(usize),
    /// Reading a HEADERS or CONTINUATION frame whole.
    HeaderFrame(FrameHeader),
    /// Passing every byte as it is, for good.
    Passthrough,
    /// Refusing every byte: the client broke the protocol mid-rewrite.
    Failed,
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct FrameHeader {
    len: usize,
    kind: u8,
    flags: u8,
    stream: u32,
}

/// A header block: the HEADERS frame's own fields, and the fragments of
/// the HEADERS and CONTINUATION frames joined.
struct Block {
    stream: u32,
    end_stream: bool,
    priority: Option<[u8; PRIORITY_FIELDS]>,
    fragment: Vec<u8>,
}

impl Inbound {
    pub(super) fn new() -> Inbound {
        Inbound {
            phase: Phase::Preface,
            rewriting: false,
            block_frames: Vec::new(),
            block: None,
            frame: Vec::new(),
            context: ClientContext::new(),
        }
    }

    /// Whether every byte from now on passes untouched (the caller may
    /// stop feeding and read directly).
    pub(super) fn is_passthrough(&self) -> bool {
        self.phase == Phase::Passthrough
    }

    /// Takes the next bytes from the client; appends to `out` what the
    /// server may read so far.
    pub(super) fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), Malformed> {
        while !input.is_empty() {
            match self.phase {
                Phase::Passthrough => {
                    out.extend_from_slice(input);
                    return Ok(());
                }
                Phase::Failed => return Err(Malformed("the connection already failed")),
                Phase::Preface => {
                    input = self.fill(input, PREFACE.len());
                    if !PREFACE.starts_with(&self.frame) {
                        // HTTP/1 (/health, /metrics...): not ours to repair.
                        self.pass_the_rest(out);
                    } else if self.frame.len() == PREFACE.len() {
                        out.append(&mut self.frame);
                        self.phase = Phase::FrameHeader;
                    }
                }
                Phase::FrameHeader => {
                    input = self.fill(input, FRAME_HEADER);
                    if self.frame.len() == FRAME_HEADER {
                        self.on_frame_header(FrameHeader::parse(&self.frame), out)?;
                    }
                }
                Phase::Payload(left) => {
                    let n = left.min(input.len());
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    self.phase = match left - n {
                        0 => Phase::FrameHeader,
                        left => Phase::Payload(left),
                    };
                }
                Phase::HeaderFrame(header) => {
                    input = self.fill(input, FRAME_HEADER + header.len);
                    if self.frame.len() == FRAME_HEADER + header.len {
                        self.on_header_frame(header, out)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The client closed its side: hands over what was held back, unless
    /// header blocks were being rewritten (a partial frame of those means
    /// nothing to the server).
    pub(super) fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.rewriting {
            self.pass_the_rest(out);
        }
    }

    /// Moves bytes from `input` into the current frame until it holds
    /// `len`; returns the rest of `input`.
    fn fill<'a>(&mut self, input: &'a [u8], len: usize) -> &'a [u8] {
        let n = len.saturating_sub(self.frame.len()).min(input.len());
        self.frame.extend_from_slice(&input[..n]);
        &input[n..]
    }

    fn on_frame_header(&mut self, header: FrameHeader, out: &mut Vec<u8>) -> Result<(), Malformed> {
        let in_block = self.block.is_some();
        match header.kind {
            HEADERS | CONTINUATION => {
                let expected = match &self.block {
                    Some(block) => header.kind == CONTINUATION && header.stream == block.stream,
                    None => header.kind == HEADERS,
                };
                if !expected {
                    return self.malformed("header frames out of sequence", out);
                }
                if self.block_frames.len() + FRAME_HEADER + header.len > MAX_BLOCK {
                    return self.malformed("header block too large", out);
                }
                self.phase = Phase::HeaderFrame(header);
                if header.len == 0 {
                    self.on_header_frame(header, out)?;
                }
                Ok(())
            }
            _ if in_block => self.malformed("a frame inside a header block", out),
            _ => {
                out.append(&mut self.frame);
                self.phase = match header.len {
                    0 => Phase::FrameHeader,
                    len => Phase::Payload(len),
                };
                Ok(())
            }
        }
    }

    /// A whole HEADERS or CONTINUATION frame is in `self.frame`.
    fn on_header_frame(&mut self, header: FrameHeader, out: &mut Vec<u8>) -> Result<(), Malformed> {
        let payload = &self.frame[FRAME_HEADER..];
        match self.block.as_mut() {
            Some(block) => block.fragment.extend_from_slice(payload),
            None => match Block::open(header, payload) {
                Some(block) => self.block = Some(block),
                None => return self.malformed("bad padding or priority", out),
            },
        }
        self.block_frames.append(&mut self.frame);
        self.phase = Phase::FrameHeader;
        if header.flags & END_HEADERS != 0 {
            self.on_block(out)?;
        }
        Ok(())
    }

    /// A whole header block has been gathered.
    fn on_block(&mut self, out: &mut Vec<u8>) -> Result<(), Malformed> {
        let Some(block) = self.block.take() else {
            return Ok(());
        };
        let Ok(fields) = self.context.decode(&block.fragment) else {
            return self.malformed("undecodable header block", out);
        };
        if !self.rewriting {
            // The first block decides: gRPC keeps one authority per
            // connection, so a client that sends an acceptable one costs
            // nothing from here on.
            let needs_repair = header_block::authority(&fields)
                .is_some_and(|a| header_block::repaired(a).is_some());
            if !needs_repair {
                self.pass_the_rest(out);
                return Ok(());
            }
            self.rewriting = true;
        }
        // The server has only ever seen literals from this connection, so
        // its dynamic table is empty and no table size update is needed.
        block.write(&header_block::encode_for_server(&fields), out);
        self.block_frames.clear();
        Ok(())
    }

    /// Something the server must judge: before any rewrite, it gets the
    /// bytes as they came and answers with its own protocol error;
    /// mid-rewrite they would no longer mean what the client meant, so the
    /// connection fails.
    fn malformed(&mut self, why: &'static str, out: &mut Vec<u8>) -> Result<(), Malformed> {
        if self.rewriting {
            self.phase = Phase::Failed;
            return Err(Malformed(why));
        }
        self.pass_the_rest(out);
        Ok(())
    }

    /// Hands over everything held back and stops looking.
    fn pass_the_rest(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.block_frames);
        out.append(&mut self.frame);
        self.block = None;
        self.phase = Phase::Passthrough;
    }
}

impl FrameHeader {
    fn parse(b: &[u8]) -> FrameHeader {
        FrameHeader {
            len: usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        let len = (self.len as u32).to_be_bytes();
        out.extend_from_slice(&len[1..]);
        out.extend_from_slice(&[self.kind, self.flags]);
        out.extend_from_slice(&self.stream.to_be_bytes());
    }
}

impl Block {
    /// The block a HEADERS frame opens; `None` when its padding or
    /// priority fields do not fit in it.
    fn open(header: FrameHeader, payload: &[u8]) -> Option<Block> {
        let mut rest = payload;
        let mut padding = 0;
        if header.flags & PADDED != 0 {
            let (&len, after) = rest.split_first()?;
            padding = usize::from(len);
            rest = after;
        }
        let mut priority = None;
        if header.flags & PRIORITY != 0 {
            let (fields, after) = rest.split_first_chunk::<PRIORITY_FIELDS>()?;
            priority = Some(*fields);
            rest = after;
        }
        let fragment = rest.get(..rest.len().checked_sub(padding)?)?;
        Some(Block {
            stream: header.stream,
            end_stream: header.flags & END_STREAM != 0,
            priority,
            fragment: fragment.to_vec(),
        })
    }

    /// Frames `encoded` (this block re-encoded) as a HEADERS frame and as
    /// many CONTINUATION frames as it takes: padding dropped, priority kept.
    fn write(&self, encoded: &[u8], out: &mut Vec<u8>) {
        let mut flags = if self.end_stream { END_STREAM } else { 0 };
        let prefix: &[u8] = match &self.priority {
            Some(fields) => {
                flags |= PRIORITY;
                fields
            }
            None => &[],
        };
        let first = encoded.len().min(MAX_FRAME - prefix.len());
        let (head, mut rest) = encoded.split_at(first);
        let mut header = FrameHeader {
            len: prefix.len() + head.len(),
            kind: HEADERS,
            flags: if rest.is_empty() {
                flags | END_HEADERS
            } else {
                flags
            },
            stream: self.stream,
        };
        header.write(out);
        out.extend_from_slice(prefix);
        out.extend_from_slice(head);
        while !rest.is_empty() {
            let (chunk, after) = rest.split_at(rest.len().min(MAX_FRAME));
            rest = after;
            header = FrameHeader {
                len: chunk.len(),
                kind: CONTINUATION,
                flags: if rest.is_empty() { END_HEADERS } else { 0 },
                stream: self.stream,
            };
            header.write(out);
            out.extend_from_slice(chunk);
        }
    }
}

#[cfg(test)]
mod tests;
