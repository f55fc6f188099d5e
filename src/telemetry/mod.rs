//! Logs (tracing, JSON or pretty: [`log`], [`json`]) and the Prometheus metrics
//! registry ([`metrics`]). The registry knows no other module: each module that keeps
//! counts owns them and registers a collector of its own that reads them at scrape
//! time (`jtl`, `verify`, `tenants`, `server::admission`).

mod json;
mod log;
mod metrics;
pub mod trace;

/// For the unit tests of the log formats: a writer into a shared buffer, as a
/// subscriber's `MakeWriter`.
#[cfg(test)]
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

#[cfg(test)]
impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
impl Captured {
    /// Everything written so far.
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

pub use json::JsonLayer;
pub use log::{LogGuard, init_logging};
pub use metrics::{
    Collector, DescriptorEncoder, InFlight, Listener, Metrics, encode_counter, encode_counts,
    encode_gauge,
};
