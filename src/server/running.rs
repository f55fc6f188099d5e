//! Running a built server: the background tasks, one ingress worker thread per core,
//! the egress and admin listeners on the main runtime, and the graceful shutdown.
//!
//! The drain waits on [`TaskTracker`]s, the same as connections and tunnels use: one
//! for the accept loops still accepting, one for the listeners whose connections are
//! still open; each worker and the egress hold a token of each until that part of them
//! is over.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use futures_util::FutureExt;
use hyper::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;

use super::Server;
use super::admission::CoarseClock;
use super::connection::{Connections, Draining, Serving, accept_loop};
use crate::proxy::ingress::Ingress;
use crate::proxy::{Peer, ProxyBody};

const HTTP2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);
const HTTP2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the shutdown waits for tenant records in flight (a store query, bounded by
/// the store's own timeouts); one dropped is recorded on the tenant's next request.
const TENANT_RECORDS_DRAIN: Duration = Duration::from_secs(5);

/// What the traffic listeners (ingress workers and egress) report to the shutdown.
#[derive(Clone)]
struct Drain {
    /// Cancelled when the traffic listeners are to stop accepting.
    stop_accepting: CancellationToken,
    /// A token per accept loop still accepting (its socket still open).
    accepting: TaskTracker,
    /// A token per listener whose connections are still open.
    serving: TaskTracker,
    /// Cancelled when the drain is over (done or out of grace): the workers' runtimes,
    /// which relay their upgraded connections, may end.
    over: CancellationToken,
}

impl Drain {
    fn new() -> Drain {
        Drain {
            stop_accepting: CancellationToken::new(),
            accepting: TaskTracker::new(),
            serving: TaskTracker::new(),
            over: CancellationToken::new(),
        }
    }

    /// A traffic listener joins the drain (before its thread or task starts, so that a
    /// shutdown coming first still waits for it).
    fn enter(&self) -> Entered {
        Entered {
            accepting: self.accepting.token(),
            open: self.serving.token(),
            drain: self.clone(),
        }
    }
}

/// One traffic listener's place in the drain.
struct Entered {
    accepting: TaskTrackerToken,
    open: TaskTrackerToken,
    drain: Drain,
}

impl Entered {
    /// Runs the listener's accept loop until the stop, then waits until its connections
    /// have finished (or the drain is over).
    async fn serve<F, Fut>(self, listener: TcpListener, serving: Serving, handler: F)
    where
        F: Fn(Request<Incoming>, Peer) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<http::Response<ProxyBody>, Infallible>> + Send + 'static,
    {
        let Entered {
            accepting,
            open,
            drain,
        } = self;
        let connections: Connections =
            accept_loop(listener, serving, drain.stop_accepting.clone(), handler).await;
        drop(accepting);
        tokio::select! {
            _ = connections.shutdown() => {}
            _ = drain.over.cancelled() => {}
        }
        drop(open);
    }
}

impl Server {
    /// Serves until `shutdown` completes, then drains.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let background = CancellationToken::new();
        self.spawn_background(&background);
        let serving = self.serving();
        let drain = Drain::new();
        let [ingress_budget, egress_budget, admin_budget] = &self.budgets;
        let workers = spawn_ingress_workers(
            self.ingress_listeners,
            &self.ingress,
            &serving.with_budget(ingress_budget),
            &drain,
        );
        let egress_loop = self.egress_listener.map(|listener| {
            let egress = Arc::clone(&self.egress);
            let serving = serving.with_budget(egress_budget);
            let entered = drain.enter();
            // Egress: the same accept loop and the same stop as the ingress, drained with
            // the same grace, on this runtime.
            tokio::spawn(
                entered.serve(listener, serving, move |request, _peer: Peer| {
                    Arc::clone(&egress).handle(request).map(Ok::<_, Infallible>)
                }),
            )
        });
        // The admin listener keeps answering during the drain, so `/readyz` can say 503;
        // its connections are not drained: they are cut when the process exits.
        let stop_admin = CancellationToken::new();
        let admin_loop = tokio::spawn({
            let admin = Arc::clone(&self.admin);
            let serving = serving.with_budget(admin_budget);
            accept_loop(
                self.admin_listener,
                serving,
                stop_admin.clone(),
                move |request: Request<Incoming>, peer: Peer| {
                    std::future::ready(Ok::<_, Infallible>(admin.handle(&request, peer.addr)))
                },
            )
        });
        tracing::info!(
            ingress = %self.addresses.ingress,
            egress = self.addresses.egress.map(|addr| addr.to_string()),
            admin = %self.addresses.admin,
            upstream = %self.config.ingress.upstream,
            "jtl-auth-sidecar is listening"
        );

        shutdown.await;
        self.admin.readiness.begin_shutdown();
        let delay = self.config.server.shutdown_delay;
        if !delay.is_zero() {
            // Balancers see readiness fail and stop sending new connections meanwhile;
            // clients on keep-alive connections are told to close after their answer,
            // so none is cut between two requests.
            tracing::info!(
                delay_s = delay.as_secs(),
                "shutting down: readiness fails, the listeners accept for the shutdown delay"
            );
            tokio::time::sleep(delay).await;
        }
        tracing::info!(
            grace_s = self.config.server.shutdown_grace.as_secs(),
            "shutting down: listeners closed, draining in-flight requests"
        );
        drain.stop_accepting.cancel();
        // Every accept loop has ended (and dropped its socket) once no token is left.
        drain.accepting.close();
        drain.accepting.wait().await;
        let tunnels = self.ingress.tunnels().clone();
        tunnels.close();
        drain.serving.close();
        // WebSockets and other upgraded connections get the same grace.
        let finished = async { tokio::join!(drain.serving.wait(), tunnels.wait()) };
        if tokio::time::timeout(self.config.server.shutdown_grace, finished)
            .await
            .is_err()
        {
            tracing::warn!("shutdown grace period over; closing the connections still open");
        }
        drain.over.cancel();
        if let Some(egress_loop) = egress_loop {
            egress_loop.abort();
        }
        for thread in workers {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        stop_admin.cancel();
        let _ = admin_loop.await;
        background.cancel();
        if let Some(recorder) = &self.tenant_recorder {
            recorder.close(TENANT_RECORDS_DRAIN).await;
        }
        if let Some(store) = &self.tenant_store {
            store.close().await;
        }
        // The spans still queued leave now (the exporter's deadline bounds it); the
        // shutdown blocks, so off the runtime's threads.
        if self.traces.exports() {
            let traces = self.traces.clone();
            let _ = tokio::task::spawn_blocking(move || traces.shutdown()).await;
        }
        tracing::info!("stopped");
    }

    /// The refreshers of the access token and key sets, the store's health check, and
    /// the budgets' clock, all until `stop`.
    fn spawn_background(&self, stop: &CancellationToken) {
        tokio::spawn(
            self.jtl
                .tokens
                .clone()
                .run_refresher(stop.clone().cancelled_owned()),
        );
        for keys in &self.jtl.key_sets {
            tokio::spawn(keys.clone().run_refresher(stop.clone().cancelled_owned()));
        }
        if let Some(store) = &self.tenant_store {
            tokio::spawn(Arc::clone(store).run_health_check(stop.clone().cancelled_owned()));
        }
        // The budgets' coarse clock: when an answer last moved, without a clock read per
        // request.
        tokio::spawn({
            let clock = Arc::clone(&self.budget_clock);
            let stop = stop.clone();
            async move {
                let mut ticks = tokio::time::interval(CoarseClock::TICK);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = ticks.tick() => clock.tick(),
                    }
                }
            }
        });
    }

    /// How every listener serves its connections (the ingress budget; the others take
    /// their own with [`Serving::with_budget`]).
    fn serving(&self) -> Serving {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.config.server.header_read_timeout);
        // HTTP/2 clients that stop answering pings are dropped rather than held forever.
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(HTTP2_KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(HTTP2_KEEP_ALIVE_TIMEOUT);
        let [ingress_budget, ..] = &self.budgets;
        Serving {
            budget: Arc::clone(ingress_budget),
            // From SIGTERM or `POST /drain` on: HTTP/1 responses carry `Connection: close`.
            draining: Draining(Arc::clone(&self.admin.readiness)),
            builder: Arc::new(builder),
            first_request_deadline: self.config.server.header_read_timeout,
            http2_idle_timeout: self.config.server.http2_idle_timeout,
            close_grace: self.config.server.shutdown_grace,
        }
    }
}

/// Thread per core for the ingress, like nginx's worker processes: each thread runs its
/// own single-threaded runtime, accepts on its own SO_REUSEPORT socket and keeps its own
/// upstream pool, so a request never hops between threads (measured: see
/// docs/benchmarks.md).
fn spawn_ingress_workers(
    listeners: Vec<std::net::TcpListener>,
    ingress: &Ingress,
    serving: &Serving,
    drain: &Drain,
) -> Vec<JoinHandle<()>> {
    let mut threads = Vec::new();
    for (index, listener) in listeners.into_iter().enumerate() {
        let ingress = Arc::new(ingress.for_worker());
        let serving = serving.clone();
        let entered = drain.enter();
        let over = drain.over.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("ingress-{index}"))
            .spawn(move || {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    tracing::error!("cannot start ingress worker {index}");
                    return;
                };
                runtime.block_on(async move {
                    match TcpListener::from_std(listener) {
                        Ok(listener) => {
                            entered
                                .serve(listener, serving, move |request, peer: Peer| {
                                    Arc::clone(&ingress)
                                        .handle(request, peer)
                                        .map(Ok::<_, Infallible>)
                                })
                                .await;
                        }
                        Err(error) => {
                            drop(entered);
                            tracing::error!("ingress worker {index}: {error}");
                        }
                    }
                    // Upgraded connections accepted here are relayed by this runtime:
                    // keep it running until the drain is over.
                    over.cancelled().await;
                });
            });
        match spawned {
            Ok(handle) => threads.push(handle),
            Err(error) => tracing::error!("cannot start ingress worker {index}: {error}"),
        }
    }
    threads
}
