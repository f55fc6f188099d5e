//! The server: [`wiring`] binds the listeners and builds every part from the config;
//! [`running`] serves them with the background tasks and shuts down gracefully
//! (readiness fails at once, the traffic listeners stop accepting after
//! `shutdown_delay_s`, in-flight requests get up to `shutdown_grace_s`, background
//! tasks stop).

use std::net::SocketAddr;
use std::sync::Arc;

use crate::admin::Admin;
use crate::config::Config;
use crate::jtl::{self, Jtl};
use crate::proxy::egress::Egress;
use crate::proxy::ingress::Ingress;
use crate::tenants::{StoreError, TenantRecorder, TenantStore};
use admission::{Budget, CoarseClock};

pub mod admission;
mod connection;
pub mod connection_counts;
mod preface;
mod running;
mod wiring;

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
    #[error(transparent)]
    Tracing(#[from] crate::telemetry::trace::TraceSetupError),
}

/// The addresses actually bound (ports chosen by the system when configured as 0).
#[derive(Debug, Clone, Copy)]
pub struct Addresses {
    pub ingress: SocketAddr,
    /// `None` when `egress.listen` is empty.
    pub egress: Option<SocketAddr>,
    pub admin: SocketAddr,
}

/// A server whose listeners are bound and whose parts are built ([`Server::bind`]), not
/// yet running ([`Server::run`]).
pub struct Server {
    config: Config,
    /// One socket per worker thread, all on the ingress address (SO_REUSEPORT), so the
    /// kernel spreads connections evenly over the workers.
    ingress_listeners: Vec<std::net::TcpListener>,
    admin_listener: tokio::net::TcpListener,
    /// Served on the main runtime: the backend's calls to JTL are few next to ingress.
    egress_listener: Option<tokio::net::TcpListener>,
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
    /// Flushed at the end of the shutdown.
    traces: crate::telemetry::trace::Tracing,
}

impl Server {
    pub fn addresses(&self) -> Addresses {
        self.addresses
    }
}
