use std::time::Duration;

use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::fixtures::*;
use super::*;

/// A client whose bytes arrive one at a time, each after a `Pending`.
struct Trickle {
    bytes: Vec<u8>,
    at: usize,
    pending: bool,
}

impl AsyncRead for Trickle {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if std::mem::take(&mut self.pending) {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.pending = true;
        if let Some(&b) = self.bytes.get(self.at) {
            buf.put_slice(&[b]);
            self.at += 1;
        }
        Poll::Ready(Ok(()))
    }
}

async fn read_all(io: impl AsyncRead + Unpin) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    Connection::new(io).read_to_end(&mut out).await?;
    Ok(out)
}

/// The first request h2's server accepts on `io`.
async fn first_request(
    io: impl AsyncRead + AsyncWrite + Unpin,
) -> Option<http::Request<h2::RecvStream>> {
    let mut conn = h2::server::handshake(io).await.ok()?;
    let (request, _respond) = conn.accept().await?.ok()?;
    Some(request)
}

/// The error code of the first RST_STREAM a client reads on `stream`.
async fn reset_code(client: &mut (impl AsyncRead + Unpin), stream: u32) -> u32 {
    loop {
        let mut header = [0; 9];
        client.read_exact(&mut header).await.unwrap();
        let len = usize::from(header[1]) << 8 | usize::from(header[2]);
        let mut payload = vec![0; len];
        client.read_exact(&mut payload).await.unwrap();
        let on = u32::from_be_bytes([header[5], header[6], header[7], header[8]]);
        if header[3] == 0x3 && on == stream {
            return u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
        }
    }
}

#[tokio::test]
async fn h2_alone_resets_the_request_etcdctl_sends() {
    // The premise: should h2 ever accept it, this module can go.
    let (mut client, server) = tokio::io::duplex(1 << 16);
    client.write_all(&hex(ETCDCTL_STATUS)).await.unwrap();
    let server = tokio::spawn(first_request(server));
    let code = tokio::time::timeout(Duration::from_secs(5), reset_code(&mut client, 1))
        .await
        .expect("a RST_STREAM within 5 s");
    const PROTOCOL_ERROR: u32 = 0x1;
    assert_eq!(code, PROTOCOL_ERROR);
    server.abort();
}

#[tokio::test]
async fn h2_accepts_the_request_etcdctl_sends_once_repaired() {
    let (mut client, server) = tokio::io::duplex(1 << 16);
    client.write_all(&hex(ETCDCTL_STATUS)).await.unwrap();
    let request = tokio::time::timeout(
        Duration::from_secs(5),
        first_request(Connection::new(server)),
    )
    .await
    .expect("h2 answered within 5 s")
    .expect("a request");
    assert_eq!(
        request.uri().to_string(),
        "http://127.0.0.1:23791/etcdserverpb.Maintenance/Status"
    );
    assert_eq!(request.headers()["content-type"], "application/grpc");
}

#[tokio::test]
async fn bytes_arriving_one_at_a_time_are_repaired_alike() {
    let bytes = hex(ETCDCTL_STATUS);
    let whole = read_all(bytes.as_slice()).await.unwrap();
    let trickled = Trickle {
        bytes,
        at: 0,
        pending: false,
    };
    assert_eq!(read_all(trickled).await.unwrap(), whole);
    let seen = server_view(&whole);
    assert_eq!(
        value(header_lists(&seen)[0], ":authority"),
        Some("127.0.0.1:23791")
    );
}

#[tokio::test]
async fn a_connection_with_an_acceptable_authority_reads_through() {
    let mut bytes = client_start();
    let block = request_block("127.0.0.1:2379", "/a");
    bytes.extend(frame(HEADERS, END_HEADERS, 1, &block));
    bytes.extend(frame(DATA, END_STREAM, 1, b"\0\0\0\0\0"));
    let (mut client, server) = tokio::io::duplex(1 << 16);
    let mut server = Connection::new(server);
    client.write_all(&bytes).await.unwrap();
    let mut got = vec![0; bytes.len()];
    server.read_exact(&mut got).await.unwrap();
    assert_eq!(got, bytes);
    assert!(server.inbound.is_none(), "still inspecting");
}

#[tokio::test]
async fn a_broken_block_mid_rewrite_ends_the_read_with_an_error() {
    let mut bytes = client_start();
    let block = request_block("http://127.0.0.1:2379", "/a");
    bytes.extend(frame(HEADERS, END_HEADERS, 1, &block));
    bytes.extend(frame(HEADERS, END_HEADERS, 3, &[0x80 | 99]));
    let err = read_all(bytes.as_slice()).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
}

#[tokio::test]
async fn writes_reach_the_client_untouched() {
    let (mut client, server) = tokio::io::duplex(1 << 16);
    let mut server = Connection::new(server);
    server.write_all(b"http://anything").await.unwrap();
    server.flush().await.unwrap();
    let mut got = [0; 15];
    client.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"http://anything");
}

#[tokio::test]
async fn the_client_address_is_the_inner_connections() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (accepted, _) = listener.accept().await.unwrap();
    let info = Connection::new(accepted).connect_info();
    assert_eq!(info.remote_addr(), Some(client.local_addr().unwrap()));
}

proptest! {
    #[test]
    fn any_bytes_read_to_an_end(
        tail in proptest::collection::vec(any::<u8>(), 0..400),
        preface in any::<bool>(),
    ) {
        let mut bytes = if preface { client_start() } else { Vec::new() };
        bytes.extend(&tail);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        // Data or an error, never a hang or a panic.
        let _ = rt.block_on(read_all(bytes.as_slice()));
    }
}
