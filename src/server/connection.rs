//! Serving accepted connections: the accept loop of every listener, and the life of one
//! connection within its listener's budget (`admission`): a deadline for its first
//! request, closed when shed or when the server stops, `GOAWAY` for an HTTP/2
//! connection idle past the idle timeout, and `Connection: close` once draining.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::admission::{Budget, Slot};
use super::connection_counts::Shed;
use super::preface::PrefaceGuard;
use crate::admin::Readiness;
use crate::proxy::{BoxError, Peer, ProxyBody};

/// How long a connection asked to make room may take to close by itself (an HTTP/2
/// client reading its `GOAWAY`) before it is dropped, when it is still idle then.
const SHED_GRACE: Duration = Duration::from_secs(1);

/// What every accept loop serves its connections with.
#[derive(Clone)]
pub(super) struct Serving {
    /// The listener's own connection budget.
    pub budget: Arc<Budget>,
    pub draining: Draining,
    pub builder: Arc<auto::Builder<TokioExecutor>>,
    /// `server.header_read_timeout`, which also bounds the wait for a first request.
    pub first_request_deadline: Duration,
    /// `server.http2_idle_timeout`: an HTTP/2 connection without a request this long
    /// is sent `GOAWAY`.
    pub http2_idle_timeout: Duration,
    /// `server.shutdown_grace`: how long a shed connection may take to finish.
    pub close_grace: Duration,
}

impl Serving {
    /// The same serving for another listener's budget.
    pub fn with_budget(&self, budget: &Arc<Budget>) -> Serving {
        Serving {
            budget: Arc::clone(budget),
            ..self.clone()
        }
    }
}

/// The connections an accept loop served, still open.
pub(super) struct Connections {
    tracker: TaskTracker,
    /// The parent of every connection's close signal.
    stop: CancellationToken,
}

impl Connections {
    /// Asks every connection to finish what it is answering and close, and waits until
    /// they have. (Dropped instead, the connections live on until the process exits.)
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// Accepts connections until `stop`, serving each with HTTP/1.1 (upgrades included) or
/// HTTP/2, within the listener's budget. Returns the connections still open, for a drain
/// to wait on, or to drop. The listener is dropped on return, so new connections fail at
/// once.
pub(super) async fn accept_loop<F, Fut>(
    listener: TcpListener,
    serving: Serving,
    stop: CancellationToken,
    handler: F,
) -> Connections
where
    F: Fn(Request<Incoming>, Peer) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<http::Response<ProxyBody>, Infallible>> + Send + 'static,
{
    let Serving {
        budget,
        draining,
        builder,
        first_request_deadline,
        http2_idle_timeout,
        close_grace,
    } = serving;
    // This loop's own handle, cloned per request: a clone of the shared one would put a
    // reference count written by every worker on the hot path.
    let draining = Arc::new(draining);
    let connections = Connections {
        tracker: TaskTracker::new(),
        stop: CancellationToken::new(),
    };
    let mut accept_errors = AcceptErrors::default();
    loop {
        let (stream, peer_addr) = tokio::select! {
            _ = stop.cancelled() => return connections,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => {
                    accept_errors.reset();
                    accepted
                }
                Err(error) => {
                    // Out of descriptors (EMFILE/ENFILE) or another transient failure:
                    // make room and back off instead of spinning on a ready listener.
                    if is_out_of_descriptors(&error) {
                        budget.shed_one();
                    }
                    let pause = accept_errors.next_pause();
                    if accept_errors.should_log() {
                        tracing::warn!(
                            pause_ms = pause.as_millis() as u64,
                            "accept failed: {error}"
                        );
                    }
                    tokio::select! {
                        _ = stop.cancelled() => return connections,
                        _ = tokio::time::sleep(pause) => {}
                    }
                    continue;
                }
            },
        };
        let Some(slot) = budget.admit(&connections.stop) else {
            tracing::debug!(
                listener = budget.listener().as_str(),
                "refused a connection from {peer_addr}: at the connection limit, every held connection busy"
            );
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let peer = Peer::with_marks(peer_addr, Arc::clone(slot.marks()));
        let service = service_fn({
            let slot = Arc::clone(&slot);
            let draining = Arc::clone(&draining);
            move |request: Request<Incoming>| {
                let http1 = request.version() <= http::Version::HTTP_11;
                slot.request_started(!http1);
                let draining = Arc::clone(&draining);
                // A future of its own, not an async block around the handler's future:
                // such a block holds that future twice (captured, and again where it is
                // awaited), each layer doubling what hyper reserves per connection for
                // its request (measured: 17.3 KB against 4.3 KB for the ingress).
                Answer {
                    answer: handler(request, peer.clone()),
                    http1,
                    draining,
                    in_flight: Some(InFlight {
                        slot: Arc::clone(&slot),
                        waiting: true,
                    }),
                }
            }
        });
        let stream = PrefaceGuard::new(stream);
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let budget = Arc::clone(&budget);
        connections.tracker.spawn(async move {
            let slot = &slot;
            let ended = serve(
                connection,
                |connection| connection.graceful_shutdown(),
                slot,
                Timeouts {
                    first_request: first_request_deadline,
                    http2_idle: http2_idle_timeout,
                    close_grace,
                },
            );
            match ended.await {
                Ended::Done(Ok(())) => {}
                Ended::Done(Err(error)) => {
                    tracing::debug!("connection from {peer_addr} ended: {error}")
                }
                Ended::Deadline => tracing::debug!(
                    "closed a connection from {peer_addr}: no request within the header read timeout"
                ),
                Ended::Closed => match slot.shed_as() {
                    Some(why) => {
                        budget.count_closed(why);
                        tracing::debug!(
                            reason = why.as_str(),
                            "closed a connection from {peer_addr}: room was needed"
                        );
                    }
                    None => tracing::debug!("closed a connection from {peer_addr}: stopping"),
                },
                Ended::IdleTimeout => {
                    budget.count_closed(Shed::Http2IdleTimeout);
                    tracing::debug!(
                        "closed an HTTP/2 connection from {peer_addr}: idle past the idle timeout"
                    );
                }
            }
        });
    }
}

/// How a connection's life ended.
enum Ended {
    Done(Result<(), BoxError>),
    /// No request head within the header read timeout.
    Deadline,
    /// Asked to close (shed, or the server stopped) and gone.
    Closed,
    /// HTTP/2, no stream for the idle timeout: sent `GOAWAY` and gone.
    IdleTimeout,
}

/// The deadlines of one connection.
#[derive(Clone, Copy)]
struct Timeouts {
    /// For the first request head.
    first_request: Duration,
    /// HTTP/2 without a request this long: `GOAWAY`.
    http2_idle: Duration,
    /// Asked to close, it is dropped after this long whatever it is still doing.
    close_grace: Duration,
}

/// Serves one connection to its end. `graceful` asks the connection to finish what it is
/// answering and close.
async fn serve<C>(
    connection: C,
    graceful: impl Fn(Pin<&mut C>),
    slot: &Arc<Slot>,
    timeouts: Timeouts,
) -> Ended
where
    C: Future<Output = Result<(), BoxError>>,
{
    tokio::pin!(connection);
    let close = slot.close_signal();
    // Until the first request head: a client must complete it within the header read
    // timeout, whatever the protocol (hyper's own timeout covers HTTP/1 heads only, not
    // the silence before the first byte or a slow HTTP/2 preface), and a connection
    // asked to close meanwhile is dropped: it has nothing to finish.
    let started = std::future::poll_fn(|_| match slot.started() {
        true => Poll::Ready(()),
        // Looked at again whenever the connection's task wakes, after the connection
        // itself was polled: a request head is read there.
        false => Poll::Pending,
    });
    tokio::select! {
        biased;
        result = connection.as_mut() => return Ended::Done(result),
        () = started => {}
        () = tokio::time::sleep(timeouts.first_request) => return Ended::Deadline,
        () = close.cancelled() => return Ended::Closed,
    }

    // Serving: asked to close (shed or stopping), the connection finishes what it is
    // answering and closes (HTTP/1: after the response; HTTP/2: GOAWAY, open streams
    // end). An HTTP/2 connection without requests for the idle timeout is sent GOAWAY.
    let mut idle_clock = slot.http2().then(|| {
        tokio::time::interval_at(
            tokio::time::Instant::now() + timeouts.http2_idle,
            timeouts.http2_idle,
        )
    });
    let mut closing: Option<Ended> = None;
    let mut shed_grace: Option<Pin<Box<tokio::time::Sleep>>> = None;
    let mut hard_stop: Option<Pin<Box<tokio::time::Sleep>>> = None;
    loop {
        tokio::select! {
            biased;
            result = connection.as_mut() => {
                // Asked to close, it is counted as such even when the peer then
                // resets the connection rather than closing it cleanly.
                return closing.unwrap_or(Ended::Done(result));
            }
            () = close.cancelled(), if closing.is_none() => {
                // Its client does not read: nothing would reach it, so it goes now.
                if slot.shed_as() == Some(Shed::Stalled) {
                    return Ended::Closed;
                }
                graceful(connection.as_mut());
                if slot.shed_as().is_some() {
                    shed_grace = Some(Box::pin(tokio::time::sleep(SHED_GRACE)));
                    hard_stop = Some(Box::pin(tokio::time::sleep(timeouts.close_grace)));
                }
                closing = Some(Ended::Closed);
            }
            _ = tick(&mut idle_clock), if closing.is_none() => {
                if slot.idle_since_last_look() {
                    graceful(connection.as_mut());
                    closing = Some(Ended::IdleTimeout);
                }
            }
            () = wait(&mut shed_grace), if shed_grace.is_some() => {
                // A peer that ignores GOAWAY still holds the place: drop it while it
                // is idle or leaves its answers unread; a request that came in
                // meanwhile and is being answered gets the close grace.
                if slot.in_flight() == 0 || slot.stalled() {
                    return Ended::Closed;
                }
                shed_grace = None;
            }
            () = wait(&mut hard_stop), if hard_stop.is_some() => return Ended::Closed,
        }
    }
}

async fn tick(clock: &mut Option<tokio::time::Interval>) {
    match clock {
        Some(clock) => {
            clock.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn wait(sleep: &mut Option<Pin<Box<tokio::time::Sleep>>>) {
    match sleep {
        Some(sleep) => sleep.as_mut().await,
        None => std::future::pending().await,
    }
}

/// Whether shutdown has begun (readiness failing), for the listeners of every worker.
#[derive(Clone)]
pub(super) struct Draining(pub Arc<Readiness>);

impl Draining {
    fn is_on(&self) -> bool {
        self.0.is_shutting_down()
    }

    /// `Connection: close` on an HTTP/1 response: hyper closes the connection once it
    /// is written, and the client knows not to send another request on it. A `101`
    /// keeps its `Connection: upgrade`.
    fn close_after<B>(&self, response: &mut http::Response<B>) {
        if response.status() != http::StatusCode::SWITCHING_PROTOCOLS {
            response.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
        }
    }
}

/// A request in flight on its connection, until its response is sent or dropped.
struct InFlight {
    slot: Arc<Slot>,
    /// Its answer is being worked on (not ready yet, or a body waiting on its source),
    /// rather than waiting on the client.
    waiting: bool,
}

impl InFlight {
    fn moved(&mut self, waiting: bool) {
        self.slot.answer_moved(&mut self.waiting, waiting);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.slot.request_ended(self.waiting);
    }
}

pin_project_lite::pin_project! {
    /// A handler's answer, with `Connection: close` on HTTP/1 once draining has begun,
    /// and the request counted in flight until the answer's body is sent.
    struct Answer<F> {
        #[pin]
        answer: F,
        http1: bool,
        draining: Arc<Draining>,
        in_flight: Option<InFlight>,
    }
}

impl<F> Future for Answer<F>
where
    F: Future<Output = Result<http::Response<ProxyBody>, Infallible>>,
{
    type Output = Result<http::Response<AnswerBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(mut response) = std::task::ready!(this.answer.poll(cx));
        if *this.http1 && this.draining.is_on() {
            this.draining.close_after(&mut response);
        }
        let mut in_flight = this.in_flight.take();
        if let Some(in_flight) = &mut in_flight {
            in_flight.moved(false);
        }
        Poll::Ready(Ok(response.map(|body| AnswerBody { body, in_flight })))
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request counted in flight until it is dropped
    /// (sent in full, or the connection gone): a connection streaming a response is not
    /// idle. No allocation: the boxed body moves in as it is.
    pub(super) struct AnswerBody {
        #[pin]
        body: ProxyBody,
        in_flight: Option<InFlight>,
    }
}

impl http_body::Body for AnswerBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let polled = this.body.poll_frame(cx);
        if let Some(in_flight) = this.in_flight {
            in_flight.moved(polled.is_pending());
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

fn is_out_of_descriptors(error: &std::io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMFILE) | Some(libc::ENFILE)
    )
}

/// Back-off between failing accepts (10 ms doubling to 1 s), and a warning at most
/// every 10 s, so a full descriptor table neither spins a core nor floods the log.
#[derive(Default)]
struct AcceptErrors {
    consecutive: u32,
    last_logged: Option<std::time::Instant>,
}

impl AcceptErrors {
    const FIRST_PAUSE: Duration = Duration::from_millis(10);
    const MAX_PAUSE: Duration = Duration::from_secs(1);
    const LOG_EVERY: Duration = Duration::from_secs(10);

    fn reset(&mut self) {
        self.consecutive = 0;
    }

    fn next_pause(&mut self) -> Duration {
        let pause = Self::FIRST_PAUSE.saturating_mul(1 << self.consecutive.min(7));
        self.consecutive = self.consecutive.saturating_add(1);
        pause.min(Self::MAX_PAUSE)
    }

    fn should_log(&mut self) -> bool {
        let now = std::time::Instant::now();
        let due = self
            .last_logged
            .is_none_or(|last| now.duration_since(last) >= Self::LOG_EVERY);
        if due {
            self.last_logged = Some(now);
        }
        due
    }
}
