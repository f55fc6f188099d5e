//! Binds the listeners, runs them and the background tasks, and shuts down gracefully:
//! readiness fails at once, the traffic listeners stop accepting (after
//! `shutdown_delay_s`), in-flight requests get up to `shutdown_grace_s`, background tasks
//! stop.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::FutureExt;
use hyper::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::admin::{Admin, Readiness};
use crate::clock::Clock;
use crate::config::Config;
use crate::jtl::{self, Jtl};
use crate::proxy::Peer;
use crate::proxy::egress::Egress;
use crate::proxy::ingress::Ingress;
use crate::shared_cache::SharedTokenStore;
use crate::telemetry::Metrics;
use crate::tenants::{ConnectTenant, StoreError, TenantRecorder, TenantRecords, TenantStore};
use crate::verify::TokenVerifier;
use admission::{Budget, CoarseClock, Limits};
use connection::{Connections, Draining, Serving, accept_loop};
use connection_counts::{ConnectionCounts, ConnectionListener};

pub mod admission;
mod connection;
pub mod connection_counts;
mod preface;

const HTTP2_KEEP_ALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(20);
const HTTP2_KEEP_ALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long the shutdown waits for tenant records in flight (a store query, bounded by
/// the store's own timeouts); one dropped is recorded on the tenant's next request.
const TENANT_RECORDS_DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{key}: cannot listen on {addr}: {source}")]
    Bind {
        key: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Jtl(#[from] jtl::JtlSetupError),
    #[error(transparent)]
    TenantStore(#[from] StoreError),
    #[error(transparent)]
    SharedCache(#[from] crate::shared_cache::SharedCacheSetupError),
    #[error(transparent)]
    DrainToken(#[from] crate::admin::DrainTokenError),
}

/// The addresses actually bound (ports chosen by the system when configured as 0).
#[derive(Debug, Clone, Copy)]
pub struct Addresses {
    pub ingress: SocketAddr,
    /// `None` when `egress.listen` is empty.
    pub egress: Option<SocketAddr>,
    pub admin: SocketAddr,
}

/// A server whose listeners are bound and whose parts are built, not yet running.
pub struct Server {
    config: Config,
    /// One socket per worker thread, all on the ingress address (SO_REUSEPORT), so the
    /// kernel spreads connections evenly over the workers.
    ingress_listeners: Vec<std::net::TcpListener>,
    admin_listener: TcpListener,
    /// Served on the main runtime: the backend's calls to JTL are few next to ingress.
    egress_listener: Option<TcpListener>,
    addresses: Addresses,
    jtl: Jtl,
    ingress: Arc<Ingress>,
    egress: Arc<Egress>,
    admin: Arc<Admin>,
    /// `None` when connect-tenant is disabled.
    tenant_store: Option<Arc<TenantStore>>,
    /// `None` without a store or when `tenants.record_on_request` is off.
    tenant_recorder: Option<Arc<TenantRecorder>>,
    /// The connection budgets of the ingress, egress and admin listeners.
    budgets: [Arc<Budget>; 3],
    /// Their clock, moved by a background task.
    budget_clock: Arc<CoarseClock>,
}

async fn bind(key: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { key, addr, source })
}

impl Server {
    pub async fn bind(config: Config, clock: Clock) -> Result<Server, StartError> {
        // This runs on the main runtime: connections to JTL and Redis are opened and
        // driven there even when an ingress worker's request is the first to need one,
        // so that no background I/O lives on (and dies with) an ingress worker.
        let main_runtime = tokio::runtime::Handle::current();
        // With `[shared_cache]`, the replicas share one access token through Redis.
        let shared = SharedTokenStore::from_config(&config, clock.clone(), main_runtime.clone())?;
        let jtl = Jtl::from_config_with_shared_store(&config, clock.clone(), shared, main_runtime)?;
        // Ports first: a port that is taken fails the start before a store is opened.
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let (ingress_listeners, ingress_addr) = bind_ingress(config.ingress.listen, workers)?;
        let egress_listener = match config.egress.listen {
            Some(addr) => Some(bind("egress.listen", addr).await?),
            None => None,
        };
        let admin_listener = bind("admin.listen", config.admin.listen).await?;
        let forwarded_claims = config
            .ingress
            .claim_headers
            .iter()
            .map(|c| c.claim.clone())
            .collect();
        let verifier = Arc::new(
            TokenVerifier::new(
                config.session.flow,
                &config.session.profiles,
                &jtl.key_sets,
                clock,
                config.session.verified_cache_entries,
            )
            .keeping_claims(forwarded_claims),
        );
        // Each part registers the collector of its own counts.
        let metrics = Metrics::new();
        jtl.register_metrics(&metrics);
        verifier.register_metrics(&metrics);
        let tenant_records = TenantRecords::registered(&metrics);
        let connection_counts = ConnectionCounts::registered(&metrics);
        let upstream_tls = crate::tls::client_tls_config(None).map_err(jtl::JtlSetupError::Http)?;
        // The store is opened only when connect-tenant is enabled; tenants are recorded
        // on request only into that store (with `connect_path = ""` nothing is opened).
        let (tenant_store, tenant_recorder, connect_tenant) = match &config.tenants.connect_path {
            Some(path) => {
                let store =
                    Arc::new(TenantStore::open(config.tenants.database_url.expose()).await?);
                // Records run on this (the main) runtime, not on the ingress workers.
                let recorder = config.tenants.record_on_request.then(|| {
                    Arc::new(TenantRecorder::new(
                        Arc::clone(&store),
                        tenant_records,
                        tokio::runtime::Handle::current(),
                    ))
                });
                let connect_tenant = ConnectTenant::new(
                    path.clone(),
                    config.ingress.token_headers.clone(),
                    Arc::clone(&verifier),
                    Arc::clone(&store),
                    recorder.clone(),
                    Arc::clone(&metrics),
                    config.server.header_read_timeout,
                );
                (Some(store), recorder, Some(Arc::new(connect_tenant)))
            }
            None => (None, None, None),
        };
        let ingress = Arc::new(Ingress::new(
            config.ingress.clone(),
            verifier,
            jtl.tokens.clone(),
            connect_tenant,
            tenant_recorder.clone(),
            upstream_tls,
            Arc::clone(&metrics),
        ));
        let egress_tls = crate::tls::client_tls_config(config.jtl.ca_file.as_deref())
            .map_err(jtl::JtlSetupError::Http)?;
        let egress = Arc::new(Egress::new(
            &config.egress,
            &config.jtl.api_base_url,
            config.jtl.timeout,
            config.server.header_read_timeout,
            egress_tls,
            jtl.tokens.clone(),
            Arc::clone(&metrics),
        ));
        let limits = Limits::from_descriptors();
        let budget_clock = CoarseClock::new();
        tracing::info!(
            ingress = limits.ingress,
            egress = limits.egress,
            admin = limits.admin,
            descriptors = limits.descriptors,
            "client connections held at most, per listener (budgets from the descriptor limit)"
        );
        let budgets = [
            (ConnectionListener::Ingress, limits.ingress),
            (ConnectionListener::Egress, limits.egress),
            (ConnectionListener::Admin, limits.admin),
        ]
        .map(|(listener, limit)| {
            Budget::new(
                listener,
                limit,
                Arc::clone(&connection_counts),
                Arc::clone(&budget_clock),
            )
        });
        let admin = Arc::new(Admin {
            readiness: Readiness::new(jtl.clone(), tenant_store.clone()),
            metrics,
            drain: crate::admin::Drain::from_config(&config)?,
        });
        let addresses = Addresses {
            ingress: ingress_addr,
            egress: egress_listener
                .as_ref()
                .map(|listener| local_addr("egress.listen", listener))
                .transpose()?,
            admin: local_addr("admin.listen", &admin_listener)?,
        };
        Ok(Server {
            config,
            ingress_listeners,
            admin_listener,
            egress_listener,
            addresses,
            jtl,
            ingress,
            egress,
            admin,
            tenant_store,
            tenant_recorder,
            budgets,
            budget_clock,
        })
    }

    pub fn addresses(&self) -> Addresses {
        self.addresses
    }

    /// Serves until `shutdown` completes, then drains.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let background = CancellationToken::new();
        tokio::spawn(
            self.jtl
                .tokens
                .clone()
                .run_refresher(background.clone().cancelled_owned()),
        );
        for keys in &self.jtl.key_sets {
            tokio::spawn(
                keys.clone()
                    .run_refresher(background.clone().cancelled_owned()),
            );
        }
        if let Some(store) = &self.tenant_store {
            tokio::spawn(Arc::clone(store).run_health_check(background.clone().cancelled_owned()));
        }
        // The budgets' coarse clock: when an answer last moved, without a clock read per
        // request.
        tokio::spawn({
            let clock = Arc::clone(&self.budget_clock);
            let stop = background.clone();
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
        let builder = Arc::new(builder);
        let stop_traffic = CancellationToken::new();
        let stop_admin = CancellationToken::new();
        // From SIGTERM or `POST /drain` on: HTTP/1 responses carry `Connection: close`.
        let draining = Draining(Arc::clone(&self.admin.readiness));
        let [ingress_budget, egress_budget, admin_budget] = &self.budgets;
        let serving = Serving {
            budget: Arc::clone(ingress_budget),
            draining,
            builder,
            first_request_deadline: self.config.server.header_read_timeout,
            http2_idle_timeout: self.config.server.http2_idle_timeout,
            close_grace: self.config.server.shutdown_grace,
        };

        // Thread per core for the ingress, like nginx's worker processes: each thread runs
        // its own single-threaded runtime, accepts on the shared socket and keeps its own
        // upstream pool, so a request never hops between threads (measured: see docs/benchmarks.md).
        let workers = self.ingress_listeners.len();
        let (accepting_done, mut accept_loops_ended) = tokio::sync::mpsc::channel::<()>(workers);
        // Each worker drops its sender once its connections have finished.
        let (connections_done, mut workers_drained) = tokio::sync::mpsc::channel::<()>(1);
        let drained = CancellationToken::new();
        let mut worker_threads = Vec::new();
        for (index, listener) in self.ingress_listeners.into_iter().enumerate() {
            let ingress = Arc::new(self.ingress.for_worker());
            let serving = serving.clone();
            let connections_done = connections_done.clone();
            let stop = stop_traffic.clone();
            let drained = drained.clone();
            let accepting_done = accepting_done.clone();
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
                        let connections = match TcpListener::from_std(listener) {
                            Ok(listener) => {
                                let connections = accept_loop(
                                    listener,
                                    serving,
                                    stop,
                                    move |request: Request<Incoming>, peer: Peer| {
                                        Arc::clone(&ingress)
                                            .handle(request, peer)
                                            .map(Ok::<_, Infallible>)
                                    },
                                )
                                .await;
                                Some(connections)
                            }
                            Err(error) => {
                                tracing::error!("ingress worker {index}: {error}");
                                None
                            }
                        };
                        let _ = accepting_done.send(()).await;
                        drop(accepting_done);
                        let connections = async {
                            if let Some(connections) = connections {
                                connections.shutdown().await;
                            }
                        };
                        tokio::select! {
                            _ = connections => {}
                            _ = drained.cancelled() => {}
                        }
                        drop(connections_done);
                        // Upgraded connections accepted here are relayed by this runtime:
                        // keep it running until the drain is over.
                        drained.cancelled().await;
                    });
                });
            match spawned {
                Ok(handle) => worker_threads.push(handle),
                Err(error) => tracing::error!("cannot start ingress worker {index}: {error}"),
            }
        }
        drop(accepting_done);
        drop(connections_done);
        let admin = Arc::clone(&self.admin);
        // The admin listener keeps answering during the drain, so `/readyz` can say 503.
        let admin_listener = self.admin_listener;
        let admin_serving = serving.with_budget(admin_budget);
        let admin_stop = stop_admin.clone();
        // Admin connections are not drained: they are cut when the process exits.
        let admin_loop = tokio::spawn(async move {
            accept_loop(
                admin_listener,
                admin_serving,
                admin_stop,
                move |request: Request<Incoming>, peer: Peer| {
                    std::future::ready(Ok::<_, Infallible>(admin.handle(&request, peer.addr)))
                },
            )
            .await
        });
        // Egress: the same accept loop and the same stop, drained with the same grace.
        // It runs on this runtime; its connections finish when `egress_drained` closes.
        let (egress_done, mut egress_drained) = tokio::sync::mpsc::channel::<()>(1);
        let egress_loop = self.egress_listener.map(|listener| {
            let egress = Arc::clone(&self.egress);
            let serving = serving.with_budget(egress_budget);
            let stop = stop_traffic.clone();
            tokio::spawn(async move {
                let connections: Connections = accept_loop(
                    listener,
                    serving,
                    stop,
                    move |request: Request<Incoming>, _peer: Peer| {
                        Arc::clone(&egress).handle(request).map(Ok::<_, Infallible>)
                    },
                )
                .await;
                connections.shutdown().await;
                drop(egress_done);
            })
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
        stop_traffic.cancel();
        // Every accept loop has ended (and dropped its socket) when the channel closes.
        while accept_loops_ended.recv().await.is_some() {}
        let tunnels = self.ingress.tunnels().clone();
        tunnels.close();
        let drain = async {
            let ingress = async { while workers_drained.recv().await.is_some() {} };
            let egress = async { while egress_drained.recv().await.is_some() {} };
            // WebSockets and other upgraded connections get the same grace.
            tokio::join!(ingress, egress, tunnels.wait());
        };
        if tokio::time::timeout(self.config.server.shutdown_grace, drain)
            .await
            .is_err()
        {
            tracing::warn!("shutdown grace period over; closing the connections still open");
        }
        drained.cancel();
        if let Some(egress_loop) = egress_loop {
            egress_loop.abort();
        }
        for thread in worker_threads {
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
        tracing::info!("stopped");
    }
}

/// One SO_REUSEPORT socket per worker on the ingress address, and the address bound.
/// A plain bind comes first: it fails when anything, another sidecar with SO_REUSEPORT
/// included, holds the port, so two instances never share it by accident.
fn bind_ingress(
    addr: SocketAddr,
    workers: usize,
) -> Result<(Vec<std::net::TcpListener>, SocketAddr), StartError> {
    const KEY: &str = "ingress.listen";
    let error = |source| StartError::Bind {
        key: KEY,
        addr,
        source,
    };
    let probe = std::net::TcpListener::bind(addr).map_err(error)?;
    let bound = probe.local_addr().map_err(error)?;
    drop(probe);
    let listeners = (0..workers.max(1))
        .map(|_| bind_reuse_port(KEY, bound))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((listeners, bound))
}

/// A listening socket with SO_REUSEPORT (and SO_REUSEADDR), non-blocking, for one
/// worker's runtime.
fn bind_reuse_port(
    key: &'static str,
    addr: SocketAddr,
) -> Result<std::net::TcpListener, StartError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let error = |source| StartError::Bind { key, addr, source };
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(error)?;
    socket.set_reuse_address(true).map_err(error)?;
    socket.set_reuse_port(true).map_err(error)?;
    socket.set_nonblocking(true).map_err(error)?;
    socket.bind(&addr.into()).map_err(error)?;
    socket.listen(1024).map_err(error)?;
    Ok(socket.into())
}

fn local_addr(key: &'static str, listener: &TcpListener) -> Result<SocketAddr, StartError> {
    listener.local_addr().map_err(|source| StartError::Bind {
        key,
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        source,
    })
}
