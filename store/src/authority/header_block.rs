//! One HTTP/2 header block: decoded with a copy of the client's HPACK
//! context, and re-encoded for the server without any.

use std::borrow::Cow;

use http::uri::Authority;
use loona_hpack::decoder::DecoderError;
use loona_hpack::encoder::encode_integer_into;
use loona_hpack::Decoder;

/// The largest dynamic table a client may use. h2's server never
/// advertises SETTINGS_HEADER_TABLE_SIZE, so the protocol's default holds.
const CLIENT_TABLE_SIZE: usize = 4096;

/// Where a Unix socket's peer is: the value a `unix://` or `unixs://`
/// authority becomes (gRPC-Go sends the socket path there).
const UNIX_AUTHORITY: &[u8] = b"localhost";

/// A header field as the client meant it: name, value.
pub(super) type Field = (Vec<u8>, Vec<u8>);

/// The client's HPACK encoder as seen from the server: every block the
/// client sends must pass through [`ClientContext::decode`], in order, so
/// that the client's references to its dynamic table keep resolving.
pub(super) struct ClientContext {
    decoder: Decoder<'static>,
}

impl ClientContext {
    pub(super) fn new() -> ClientContext {
        let mut decoder = Decoder::new();
        decoder.set_max_allowed_table_size(CLIENT_TABLE_SIZE);
        ClientContext { decoder }
    }

    /// The fields of one whole header block (HEADERS and CONTINUATION
    /// fragments joined).
    pub(super) fn decode(&mut self, block: &[u8]) -> Result<Vec<Field>, DecoderError> {
        let mut fields = Vec::new();
        self.decoder.decode_with_cb(block, |name, value| {
            fields.push((name.into_owned(), value.into_owned()))
        })?;
        Ok(fields)
    }
}

/// The `:authority` of a block, if it has one.
pub(super) fn authority(fields: &[Field]) -> Option<&[u8]> {
    fields
        .iter()
        .find(|(name, _)| name == b":authority")
        .map(|(_, value)| value.as_slice())
}

/// An `:authority` h2 would refuse, made one it accepts: gRPC-Go clients
/// dialling through the passthrough resolver send the whole endpoint URL
/// (`http://127.0.0.1:2379`), which Go's HTTP/2 server tolerates and h2
/// resets as malformed. `None` when the value is acceptable already, or
/// when nothing acceptable can be derived from it.
pub(super) fn repaired(value: &[u8]) -> Option<Vec<u8>> {
    if Authority::try_from(value).is_ok() {
        return None;
    }
    let text = std::str::from_utf8(value).ok()?;
    let (scheme, rest) = text.split_once("://")?;
    if scheme.eq_ignore_ascii_case("unix") || scheme.eq_ignore_ascii_case("unixs") {
        return Some(UNIX_AUTHORITY.to_vec());
    }
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    Authority::try_from(host)
        .ok()
        .map(|_| host.as_bytes().to_vec())
}

/// Encodes `fields` so that the server's decoder needs no state: every
/// field a literal without indexing, so its dynamic table stays empty
/// whatever the client's encoder did. The `:authority` is [`repaired`].
///
/// A field the client sent as never-indexed is re-sent as merely not
/// indexed: the mark tells intermediaries not to index, and the server is
/// the last hop.
pub(super) fn encode_for_server(fields: &[Field]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        let value = match name.as_slice() {
            b":authority" => repaired(value).map_or(Cow::Borrowed(value), Cow::Owned),
            _ => Cow::Borrowed(value),
        };
        // Literal without indexing, new name (RFC 7541 6.2.2).
        out.push(0x00);
        string_literal(name, &mut out);
        string_literal(&value, &mut out);
    }
    out
}

/// A string literal without Huffman coding (RFC 7541 5.2).
fn string_literal(s: &[u8], out: &mut Vec<u8>) {
    // Writing to a Vec cannot fail.
    let _ = encode_integer_into(s.len(), 7, 0x00, out);
    out.extend_from_slice(s);
}

#[cfg(test)]
mod tests {
    use super::super::fixtures;
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Vec<Field> {
        pairs
            .iter()
            .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn an_endpoint_url_becomes_its_host_and_port() {
        assert_eq!(
            repaired(b"http://127.0.0.1:2379").as_deref(),
            Some(&b"127.0.0.1:2379"[..])
        );
        assert_eq!(
            repaired(b"https://etcd-0.etcd:2379/").as_deref(),
            Some(&b"etcd-0.etcd:2379"[..])
        );
        assert_eq!(
            repaired(b"HTTP://[::1]:2379/some/path?x#y").as_deref(),
            Some(&b"[::1]:2379"[..])
        );
    }

    #[test]
    fn a_unix_socket_url_becomes_localhost() {
        assert_eq!(
            repaired(b"unix:///run/etcd.sock").as_deref(),
            Some(UNIX_AUTHORITY)
        );
        assert_eq!(
            repaired(b"unixs://localhost:1234").as_deref(),
            Some(UNIX_AUTHORITY)
        );
    }

    #[test]
    fn an_acceptable_or_hopeless_authority_is_left_alone() {
        for value in [
            &b"127.0.0.1:2379"[..],
            b"localhost",
            b"[::1]:2379",
            b"http://",
            b"http://a b",
            b"not a url",
            b"\xff\xfe",
        ] {
            assert_eq!(repaired(value), None, "{value:?}");
        }
    }

    #[test]
    fn the_server_decodes_the_same_fields_with_a_repaired_authority() {
        let sent = fields(&[
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/etcdserverpb.Maintenance/Status"),
            (":authority", "http://127.0.0.1:2379"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]);
        let encoded = encode_for_server(&sent);
        let mut server = Decoder::new();
        let seen = server.decode(&encoded).expect("decodes");
        let mut expected = sent.clone();
        expected[3].1 = b"127.0.0.1:2379".to_vec();
        assert_eq!(seen, expected);
    }

    #[test]
    fn re_encoding_leaves_the_server_table_empty() {
        let sent = fields(&[(":authority", "http://h:1"), ("x-custom", "v")]);
        let mut server = Decoder::new();
        server.decode(&encode_for_server(&sent)).expect("decodes");
        // Index 62 would be the newest entry of the server's table.
        assert_eq!(
            server.decode(&[0x80 | 62]),
            Err(DecoderError::HeaderIndexOutOfBounds)
        );
    }

    #[test]
    fn the_client_context_follows_dynamic_table_references() {
        let request = fields(&[(":authority", "http://127.0.0.1:2379"), (":path", "/a")]);
        let mut first = fixtures::with_indexing(":authority", "http://127.0.0.1:2379");
        first.extend(fixtures::with_indexing(":path", "/a"));
        // The newest entry is at 62, the one before at 63.
        let second = [0x80 | 63, 0x80 | 62];
        let mut context = ClientContext::new();
        assert_eq!(context.decode(&first).unwrap(), request);
        assert_eq!(context.decode(&second).unwrap(), request);
    }
}
