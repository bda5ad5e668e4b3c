//! The AppendEntries stream against fake peers on loopback: one that
//! serves it (one stream carries many requests; a failed answer drops it
//! and the next request opens another) and one that predates it (it
//! answers Unimplemented, and single calls carry every request from then
//! on, the first included).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use openraft::error::Infallible;
use openraft::Vote;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::server::NamedService;

use super::*;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type Answers = Pin<Box<dyn Stream<Item = Result<RaftMessage, tonic::Status>> + Send>>;

/// What a fake peer was asked.
#[derive(Default)]
struct Seen {
    calls: AtomicUsize,
    streams: AtomicUsize,
    streamed: AtomicUsize,
}

/// How a fake peer treats its streams.
#[derive(Clone, Copy, PartialEq)]
enum Streams {
    /// It has none (a member from before them).
    None,
    /// It refuses the second request of each stream.
    RefuseSecond,
    /// It answers the first request of its first stream late, and with
    /// a conflict, so that answer cannot pass for another's.
    AnswerFirstLate,
}

/// A peer that accepts every append, by call and, unless `Streams::None`,
/// on streams (see [`Streams`]).
#[derive(Clone)]
struct FakePeer {
    streams: Streams,
    seen: Arc<Seen>,
}

impl NamedService for FakePeer {
    const NAME: &'static str = "ferrocdpb.Peer";
}

fn accepted() -> RaftMessage {
    answer(AppendEntriesResponse::Success)
}

fn answer(response: AppendEntriesResponse<u64>) -> RaftMessage {
    let answer: Result<AppendEntriesResponse<u64>, RaftError<u64, Infallible>> = Ok(response);
    RaftMessage {
        cluster_id: 0,
        payload: bincode::serialize(&answer).unwrap(),
        incarnation: 1,
    }
}

struct Call(Arc<Seen>);

impl tonic::server::UnaryService<RaftMessage> for Call {
    type Response = RaftMessage;
    type Future = BoxFuture<Result<tonic::Response<RaftMessage>, tonic::Status>>;

    fn call(&mut self, _: tonic::Request<RaftMessage>) -> Self::Future {
        self.0.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Ok(tonic::Response::new(accepted())) })
    }
}

struct Streamed(Arc<Seen>, Streams);

impl tonic::server::StreamingService<RaftMessage> for Streamed {
    type Response = RaftMessage;
    type ResponseStream = Answers;
    type Future = BoxFuture<Result<tonic::Response<Answers>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<tonic::Streaming<RaftMessage>>) -> Self::Future {
        let seen = self.0.clone();
        let mode = self.1;
        let first_stream = seen.streams.fetch_add(1, Ordering::SeqCst) == 0;
        let answers = request
            .into_inner()
            .take_while(|m| std::future::ready(m.is_ok()))
            .enumerate()
            .then(move |(i, _)| {
                seen.streamed.fetch_add(1, Ordering::SeqCst);
                async move {
                    match mode {
                        Streams::RefuseSecond if i == 1 => Err(tonic::Status::failed_precondition(
                            "the second one is refused",
                        )),
                        Streams::AnswerFirstLate if first_stream && i == 0 => {
                            tokio::time::sleep(Duration::from_millis(300)).await;
                            Ok(answer(AppendEntriesResponse::Conflict))
                        }
                        _ => Ok(accepted()),
                    }
                }
            });
        Box::pin(async move { Ok(tonic::Response::new(Box::pin(answers) as Answers)) })
    }
}

impl<B> tower::Service<http::Request<B>> for FakePeer
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let seen = self.seen.clone();
        let streams = self.streams;
        Box::pin(async move {
            let codec = tonic_prost::ProstCodec::<RaftMessage, RaftMessage>::default();
            let mut grpc = tonic::server::Grpc::new(codec);
            Ok(match req.uri().path() {
                "/ferrocdpb.Peer/AppendEntries" => grpc.unary(Call(seen), req).await,
                "/ferrocdpb.Peer/AppendEntriesStream" if streams != Streams::None => {
                    grpc.streaming(Streamed(seen, streams), req).await
                }
                // What a member without the method answers.
                _ => tonic::Status::unimplemented("").into_http(),
            })
        })
    }
}

/// A fake peer on loopback, and this member's connection to it.
async fn connect(streams: Streams) -> (Peer, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let fake = FakePeer {
        streams,
        seen: seen.clone(),
    };
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(fake)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let member = Member {
        name: "fake".into(),
        peer_urls: vec![url],
        client_urls: vec![],
    };
    let mut network = Network::new(PeerClients::new(7, None));
    (network.new_client(2, &member).await, seen)
}

fn heartbeat() -> AppendEntriesRequest<TypeConfig> {
    AppendEntriesRequest {
        vote: Vote::new_committed(1, 1),
        prev_log_id: None,
        entries: vec![],
        leader_commit: None,
    }
}

async fn append(peer: &mut Peer) -> bool {
    let answer = peer
        .append_entries(heartbeat(), RPCOption::new(Duration::from_secs(5)))
        .await;
    matches!(answer, Ok(AppendEntriesResponse::Success))
}

#[tokio::test]
async fn appends_share_one_stream_and_a_failed_answer_opens_another() {
    let (mut peer, seen) = connect(Streams::RefuseSecond).await;
    assert!(append(&mut peer).await, "first append accepted");
    assert!(
        !append(&mut peer).await,
        "the refusal reaches the caller as a failure"
    );
    assert!(
        append(&mut peer).await,
        "the next append goes on a new stream"
    );
    assert_eq!(seen.streams.load(Ordering::SeqCst), 2, "streams opened");
    assert_eq!(
        seen.streamed.load(Ordering::SeqCst),
        3,
        "requests on streams"
    );
    assert_eq!(seen.calls.load(Ordering::SeqCst), 0, "no single calls");
    assert!(!peer.calls_only);
}

#[tokio::test]
async fn a_peer_without_the_stream_gets_single_calls() {
    let (mut peer, seen) = connect(Streams::None).await;
    for _ in 0..3 {
        assert!(append(&mut peer).await);
    }
    assert_eq!(
        seen.calls.load(Ordering::SeqCst),
        3,
        "every append, the first included"
    );
    assert_eq!(seen.streams.load(Ordering::SeqCst), 0);
    assert!(peer.calls_only, "the stream is not asked for again");
}

/// openraft drops a call that outlives its own timeout: the answer to it
/// may still come on the stream, and must not be taken for the next.
#[tokio::test]
async fn a_call_given_up_midway_leaves_its_answer_behind() {
    let (mut peer, seen) = connect(Streams::AnswerFirstLate).await;
    let given_up = tokio::time::timeout(
        Duration::from_millis(50),
        peer.append_entries(heartbeat(), RPCOption::new(Duration::from_secs(5))),
    )
    .await;
    assert!(
        given_up.is_err(),
        "the first answer comes after 300 ms: {given_up:?}"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        append(&mut peer).await,
        "the next call gets its own answer, not the late conflict"
    );
    assert_eq!(
        seen.streams.load(Ordering::SeqCst),
        2,
        "a new stream for it"
    );
}
