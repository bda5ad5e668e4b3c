//! Client traffic for the tests, and the server's view of repaired bytes.

pub(super) use super::frames::{
    CONTINUATION, END_HEADERS, END_STREAM, HEADERS, PADDED, PREFACE, PRIORITY,
};
use super::header_block::Field;

pub const DATA: u8 = 0x0;
pub const SETTINGS: u8 = 0x4;

/// The first bytes etcdctl 3.4.23 sends for `endpoint status
/// --endpoints=http://127.0.0.1:23791` (captured in front of etcd 3.4):
/// preface, SETTINGS, SETTINGS ack, one HEADERS frame whose `:authority`
/// is the Huffman-coded URL inserted into the dynamic table (`41 90 ...`),
/// the request's DATA frame, a PING ack, WINDOW_UPDATE and a PING.
pub const ETCDCTL_STATUS: &str = "505249202a20485454502f322e300d0a0d0a534d0d0a0d0a\
    000000040000000000\
    000000040100000000\
    0000770104000000018386459760a924882d9dcb6571afa066a925a87510ac6e48d36a3f\
    41909d29aee30c044eae05c0b86e09975f0f5f8b1d75d0620d263d4c4d65647a8b9acac8\
    b4c7602bb2caecff40027465864d833505b11f40899acac8b24d494f6a7f8669f79c7df1\
    5b408d25062d495875996ee5b1063d5f03332e34\
    0000050001000000010000000000\
    00000806010000000002041010090e0707\
    0000040800000000000000003f\
    00000806000000000002041010090e0707";

pub fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

/// A literal header field with incremental indexing, new name: the
/// client's encoder adds it to its dynamic table (RFC 7541 6.2.1).
pub fn with_indexing(name: &str, value: &str) -> Vec<u8> {
    let mut out = vec![0x40];
    for s in [name, value] {
        loona_hpack::encoder::encode_integer_into(s.len(), 7, 0, &mut out).unwrap();
        out.extend_from_slice(s.as_bytes());
    }
    out
}

/// One frame.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The preface and an empty SETTINGS frame: how every HTTP/2 client starts.
pub fn client_start() -> Vec<u8> {
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    out
}

/// A gRPC request's header block, the authority indexed into the client's
/// dynamic table (newest entry, index 62, afterwards).
pub fn request_block(authority: &str, path: &str) -> Vec<u8> {
    let mut block = vec![0x83, 0x86]; // :method POST, :scheme http
    block.extend(with_indexing(":authority", authority));
    block.extend(with_indexing(":path", path));
    block.extend(with_indexing("content-type", "application/grpc"));
    block
}

/// What a server reading `bytes` gets: one entry per frame, header blocks
/// decoded with one decoder for the whole connection, as h2 does.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    Headers {
        stream: u32,
        end_stream: bool,
        priority: Option<Vec<u8>>,
        fields: Vec<Field>,
    },
    Other(Vec<u8>),
}

/// Reads `bytes` as an HTTP/2 server would, panicking on anything it
/// would refuse. Also checks what repaired blocks promise: no padding,
/// frames within the minimum maximum frame size.
pub fn server_view(bytes: &[u8]) -> Vec<Seen> {
    assert!(bytes.starts_with(PREFACE), "no preface");
    let mut rest = &bytes[PREFACE.len()..];
    let mut decoder = loona_hpack::Decoder::new();
    let mut seen = Vec::new();
    // The block being read: its HEADERS frame's fields, its fragments.
    let mut open: Option<(Seen, Vec<u8>)> = None;
    while !rest.is_empty() {
        assert!(rest.len() >= 9, "truncated frame header");
        let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
        let (kind, flags) = (rest[3], rest[4]);
        let stream = u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]);
        let (whole, after) = rest.split_at(9 + len);
        let payload = &whole[9..];
        rest = after;
        match kind {
            HEADERS => {
                assert!(open.is_none(), "HEADERS inside a block");
                assert_eq!(flags & PADDED, 0, "padding left in a repaired block");
                assert!(len <= 16_384, "frame of {len} bytes");
                let (priority, fragment) = if flags & PRIORITY != 0 {
                    (Some(payload[..5].to_vec()), &payload[5..])
                } else {
                    (None, payload)
                };
                let headers = Seen::Headers {
                    stream,
                    end_stream: flags & END_STREAM != 0,
                    priority,
                    fields: Vec::new(),
                };
                open = Some((headers, fragment.to_vec()));
            }
            CONTINUATION => {
                assert!(len <= 16_384, "frame of {len} bytes");
                let (headers, fragment) = open.as_mut().expect("CONTINUATION outside a block");
                assert!(
                    matches!(headers, Seen::Headers { stream: s, .. } if *s == stream),
                    "CONTINUATION of another stream"
                );
                fragment.extend_from_slice(payload);
            }
            _ => {
                assert!(open.is_none(), "a frame inside a header block");
                seen.push(Seen::Other(whole.to_vec()));
            }
        }
        if matches!(kind, HEADERS | CONTINUATION) && flags & END_HEADERS != 0 {
            let (mut headers, fragment) = open.take().unwrap();
            if let Seen::Headers { fields, .. } = &mut headers {
                *fields = decoder.decode(&fragment).expect("server decodes the block");
            }
            seen.push(headers);
        }
    }
    assert!(open.is_none(), "unfinished header block");
    seen
}

/// The fields of the header blocks in a server's view.
pub fn header_lists(seen: &[Seen]) -> Vec<&[Field]> {
    seen.iter()
        .filter_map(|s| match s {
            Seen::Headers { fields, .. } => Some(fields.as_slice()),
            Seen::Other(_) => None,
        })
        .collect()
}

/// The value of `name` in a header list.
pub fn value<'a>(fields: &'a [Field], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, _)| n == name.as_bytes())
        .map(|(_, v)| std::str::from_utf8(v).unwrap())
}

/// The type of each frame in `bytes` (which start with the preface).
pub fn frame_kinds(bytes: &[u8]) -> Vec<u8> {
    let mut rest = &bytes[PREFACE.len()..];
    let mut kinds = Vec::new();
    while rest.len() >= 9 {
        let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
        kinds.push(rest[3]);
        rest = &rest[(9 + len).min(rest.len())..];
    }
    kinds
}
