use proptest::prelude::*;

use super::super::fixtures::*;
use super::*;

/// What the server reads when the client sends `input`, the same whether
/// the bytes arrive at once or a few at a time.
fn repair(input: &[u8]) -> Result<Vec<u8>, Malformed> {
    let whole = repair_in_chunks(input, input.len().max(1));
    for chunk in [1, 2, 9, 10, 4096] {
        let chunked = repair_in_chunks(input, chunk);
        assert_eq!(
            chunked.as_ref().ok(),
            whole.as_ref().ok(),
            "in chunks of {chunk}"
        );
    }
    whole
}

fn repair_in_chunks(input: &[u8], chunk: usize) -> Result<Vec<u8>, Malformed> {
    let mut inbound = Inbound::new();
    let mut out = Vec::new();
    for piece in input.chunks(chunk) {
        inbound.feed(piece, &mut out)?;
    }
    inbound.finish(&mut out);
    Ok(out)
}

fn headers(flags: u8, stream: u32, block: &[u8]) -> Vec<u8> {
    frame(HEADERS, flags | END_HEADERS, stream, block)
}

fn authorities(seen: &[Seen]) -> Vec<&str> {
    header_lists(seen)
        .into_iter()
        .map(|fields| value(fields, ":authority").unwrap_or(""))
        .collect()
}

#[test]
fn http1_requests_pass_untouched() {
    let request = b"GET /health HTTP/1.1\r\nHost: http://127.0.0.1:2379\r\n\r\n";
    assert_eq!(repair(request).unwrap(), request);
}

#[test]
fn a_connection_whose_first_authority_is_acceptable_passes_untouched() {
    let mut input = client_start();
    input.extend(headers(0, 1, &request_block("127.0.0.1:2379", "/a")));
    input.extend(frame(DATA, END_STREAM, 1, b"\0\0\0\0\0"));
    // Later blocks are not even looked at.
    input.extend(headers(END_STREAM, 3, &[0x80 | 99]));
    assert_eq!(repair(&input).unwrap(), input);
}

#[test]
fn a_connection_without_authority_passes_untouched() {
    let mut input = client_start();
    input.extend(headers(0, 1, &[0x83, 0x86, 0x84]));
    input.extend(headers(0, 3, &request_block("http://h:1", "/a")));
    assert_eq!(repair(&input).unwrap(), input);
}

#[test]
fn etcdctl_endpoint_status_reaches_the_server_with_host_and_port() {
    let input = hex(ETCDCTL_STATUS);
    let mut client = ClientContext::new();
    let sent = client.decode(&input[51..51 + 0x77]).unwrap();
    assert_eq!(
        value(&sent, ":authority"),
        Some("http://127.0.0.1:23791"),
        "the fixture's Huffman-coded, indexed authority"
    );

    let seen = server_view(&repair(&input).unwrap());

    let mut expected = sent.clone();
    for (name, value) in &mut expected {
        if name == b":authority" {
            *value = b"127.0.0.1:23791".to_vec();
        }
    }
    assert_eq!(header_lists(&seen), vec![expected.as_slice()]);
}

#[test]
fn frames_other_than_header_blocks_keep_their_bytes() {
    let input = hex(ETCDCTL_STATUS);
    let others = |seen: Vec<Seen>| -> Vec<Vec<u8>> {
        seen.into_iter()
            .filter_map(|s| match s {
                Seen::Other(raw) => Some(raw),
                Seen::Headers { .. } => None,
            })
            .collect()
    };
    assert_eq!(
        others(server_view(&repair(&input).unwrap())),
        others(server_view(&input))
    );
}

#[test]
fn later_requests_naming_the_url_by_its_table_index_are_repaired_too() {
    let mut input = client_start();
    input.extend(headers(0, 1, &request_block("http://127.0.0.1:2379", "/a")));
    // :method, :scheme, then the client's dynamic table: content-type at
    // 62, :path at 63, :authority at 64.
    input.extend(headers(END_STREAM, 3, &[0x83, 0x86, 0x80 | 64, 0x80 | 63]));
    input.extend(headers(0, 5, &[0x83, 0x86, 0x80 | 64, 0x80 | 62]));

    let seen = server_view(&repair(&input).unwrap());

    assert_eq!(authorities(&seen), ["127.0.0.1:2379"; 3]);
    let lists = header_lists(&seen);
    assert_eq!(value(lists[1], ":path"), Some("/a"));
    assert_eq!(value(lists[2], "content-type"), Some("application/grpc"));
    assert!(matches!(
        seen[2],
        Seen::Headers {
            end_stream: true,
            stream: 3,
            ..
        }
    ));
}

#[test]
fn repaired_blocks_need_no_table_on_the_server() {
    let mut input = client_start();
    input.extend(headers(0, 1, &request_block("http://127.0.0.1:2379", "/a")));
    input.extend(headers(0, 3, &[0x83, 0x86, 0x80 | 64, 0x80 | 63]));
    let out = repair(&input).unwrap();
    // Each block decodes alone, with a fresh decoder.
    let start = client_start().len();
    let mut rest = &out[start..];
    while !rest.is_empty() {
        let len = usize::from(rest[1]) << 8 | usize::from(rest[2]);
        let fields = loona_hpack::Decoder::new()
            .decode(&rest[9..9 + len])
            .expect("decodes alone");
        assert_eq!(value(&fields, ":authority"), Some("127.0.0.1:2379"));
        rest = &rest[9 + len..];
    }
}

#[test]
fn padding_is_dropped_and_priority_kept() {
    let block = request_block("https://10.0.0.1:2379/", "/a");
    let mut payload = vec![3];
    payload.extend([0x80, 0, 0, 0, 41]); // exclusive on stream 0, weight 42
    payload.extend(&block);
    payload.extend([0; 3]);
    let mut input = client_start();
    input.extend(headers(PADDED | PRIORITY | END_STREAM, 1, &payload));

    let seen = server_view(&repair(&input).unwrap());

    assert_eq!(
        seen[1],
        Seen::Headers {
            stream: 1,
            end_stream: true,
            priority: Some(vec![0x80, 0, 0, 0, 41]),
            fields: ClientContext::new()
                .decode(&request_block("10.0.0.1:2379", "/a"))
                .unwrap(),
        }
    );
}

#[test]
fn continuation_frames_are_joined() {
    let block = request_block("http://127.0.0.1:2379", "/etcdserverpb.KV/Range");
    let mut input = client_start();
    input.extend(frame(HEADERS, 0, 1, &block[..5]));
    input.extend(frame(CONTINUATION, 0, 1, &block[5..30]));
    input.extend(frame(CONTINUATION, END_HEADERS, 1, &block[30..]));

    let seen = server_view(&repair(&input).unwrap());

    assert_eq!(seen.len(), 2, "SETTINGS and one HEADERS frame: {seen:?}");
    assert_eq!(authorities(&seen), ["127.0.0.1:2379"]);
}

#[test]
fn a_block_larger_than_a_frame_is_split_into_continuations() {
    let mut block = request_block("http://127.0.0.1:2379", "/a");
    let big = "x".repeat(40_000);
    block.extend(with_indexing("x-big", &big));
    let mut input = client_start();
    input.extend(frame(HEADERS, 0, 1, &block[..16_000]));
    input.extend(frame(CONTINUATION, 0, 1, &block[16_000..32_000]));
    input.extend(frame(CONTINUATION, END_HEADERS, 1, &block[32_000..]));

    let out = repair(&input).unwrap();

    // server_view checks every frame's size and the CONTINUATION sequence.
    let seen = server_view(&out);
    assert_eq!(value(header_lists(&seen)[0], "x-big"), Some(big.as_str()));
    assert_eq!(
        frame_kinds(&out),
        [SETTINGS, HEADERS, CONTINUATION, CONTINUATION]
    );
}

#[test]
fn an_undecodable_first_block_reaches_the_server_as_it_came() {
    let mut input = client_start();
    input.extend(headers(0, 1, &[0x80 | 70])); // no such table entry
    input.extend(frame(DATA, 0, 1, b"x"));
    assert_eq!(repair(&input).unwrap(), input);
}

#[test]
fn a_frame_inside_the_first_block_reaches_the_server_as_it_came() {
    let block = request_block("http://127.0.0.1:2379", "/a");
    let mut input = client_start();
    input.extend(frame(HEADERS, 0, 1, &block[..5]));
    input.extend(frame(DATA, 0, 1, b"x"));
    input.extend(frame(CONTINUATION, END_HEADERS, 1, &block[5..]));
    assert_eq!(repair(&input).unwrap(), input);
}

#[test]
fn a_broken_block_after_rewriting_began_fails_the_connection() {
    let mut input = client_start();
    input.extend(headers(0, 1, &request_block("http://127.0.0.1:2379", "/a")));
    input.extend(headers(0, 3, &[0x80 | 99]));
    assert!(repair_in_chunks(&input, 7).is_err());
}

#[test]
fn a_client_closing_mid_preface_gets_its_bytes_through() {
    assert_eq!(repair(b"PRI * HTTP/2").unwrap(), b"PRI * HTTP/2");
}

proptest! {
    #[test]
    fn any_bytes_after_the_preface_are_handled_without_panic(
        tail in proptest::collection::vec(any::<u8>(), 0..600),
        chunk in 1usize..64,
    ) {
        let mut input = client_start();
        input.extend(&tail);
        let _ = repair_in_chunks(&input, chunk);
    }

    #[test]
    fn any_header_block_is_handled_without_panic(
        flags in any::<u8>(),
        block in proptest::collection::vec(any::<u8>(), 0..300),
        rewriting in any::<bool>(),
    ) {
        let mut input = client_start();
        if rewriting {
            input.extend(headers(0, 1, &request_block("http://h:1", "/a")));
        }
        input.extend(frame(HEADERS, flags, 3, &block));
        input.extend(frame(CONTINUATION, END_HEADERS, 3, &block));
        let _ = repair_in_chunks(&input, 5);
    }

    #[test]
    fn untouched_connections_come_out_byte_for_byte(
        tail in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        let mut input = client_start();
        input.extend(headers(0, 1, &request_block("127.0.0.1:2379", "/a")));
        input.extend(&tail);
        prop_assert_eq!(repair_in_chunks(&input, 3).unwrap(), input);
    }
}
