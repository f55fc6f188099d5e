//! Building a server from its config: the listeners bound (a port that is taken fails
//! the start before a store is opened), and every part made and connected: the JTL
//! client, the verifier, the tenant store and recorder, the ingress, egress and admin,
//! the connection budgets, and the metrics each of them registers.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use super::admission::{Budget, CoarseClock, Limits};
use super::connection_counts::{ConnectionCounts, ConnectionListener};
use super::{Addresses, Server, StartError};
use crate::admin::{Admin, Readiness};
use crate::clock::Clock;
use crate::config::Config;
use crate::jtl::otlp_client::OtlpClient;
use crate::jtl::{self, Jtl};
use crate::proxy::egress::Egress;
use crate::proxy::ingress::Ingress;
use crate::proxy::rate_limits::RateLimits;
use crate::shared_cache::SharedTokenStore;
use crate::telemetry::Metrics;
use crate::telemetry::trace::{TraceSetupError, Tracing};
use crate::tenants::{ConnectTenant, TenantRecorder, TenantRecords, TenantStore};
use crate::verify::TokenVerifier;

async fn bind(key: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { key, addr, source })
}

impl Server {
    /// Binds the listeners and builds every part; nothing is served until [`Server::run`].
    pub async fn bind(config: Config, clock: Clock) -> Result<Server, StartError> {
        // This runs on the main runtime: connections to JTL and Redis are opened and
        // driven there even when an ingress worker's request is the first to need one,
        // so that no background I/O lives on (and dies with) an ingress worker.
        let main_runtime = tokio::runtime::Handle::current();
        // One holder of `jtl.ca_file`'s roots for JTL, egress and `rediss://`: a changed
        // file is read (and logged) once, and every new connection after uses it.
        let jtl_roots = crate::tls::TlsRoots::new(config.jtl.ca_file.as_deref())
            .map_err(jtl::JtlSetupError::Http)?;
        // With `[shared_cache]`, the replicas share one access token through Redis.
        let shared = SharedTokenStore::from_config(
            &config,
            Arc::clone(&jtl_roots),
            clock.clone(),
            main_runtime.clone(),
        )?;
        let jtl = Jtl::from_config_with_roots(
            &config,
            clock.clone(),
            shared,
            Arc::clone(&jtl_roots),
            main_runtime,
        )?;
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
                clock.clone(),
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
        // Spans leave through a client like JTL's (its roots, its deadline), on a runtime
        // of its own (see jtl::otlp_client).
        let traces = match &config.tracing.otlp_endpoint {
            Some(_) => {
                let client = OtlpClient::start(config.jtl.timeout, Arc::clone(&jtl_roots))
                    .map_err(|e| TraceSetupError::new(format!("its runtime: {e}")))?;
                Tracing::start(&config.tracing, client, &metrics)?
            }
            None => Tracing::propagate_only(config.tracing.sample_ratio),
        };
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
        let ingress = Arc::new(
            Ingress::new(
                config.ingress.clone(),
                verifier,
                jtl.tokens.clone(),
                connect_tenant,
                tenant_recorder.clone(),
                upstream_tls,
                Arc::clone(&metrics),
            )
            .with_traces(traces.clone()),
        );
        let egress = Egress::new(
            &config.egress,
            &config.jtl.api_base_url,
            config.jtl.timeout,
            config.server.header_read_timeout,
            jtl_roots,
            &jtl,
            Arc::clone(&metrics),
        )
        .with_traces(traces.clone());
        let rate_limits = RateLimits::new(&config.egress, clock, &metrics);
        let egress = Arc::new(egress.with_rate_limits(rate_limits));
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
            traces,
        })
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
