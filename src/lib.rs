//! jtl-auth-sidecar: a reverse proxy that does all JTL Cloud App authentication for a
//! backend written in any language. See README.md for what it does and how to run it.
//!
//! Dependencies point one way, down this list: a module uses only the modules on its own
//! line and below (modules on one line may use each other, file by file without circles).
//! `tests/layout.rs` reads this list and holds the code to it.
//!
//! - `dev`: the emulator and a sidecar in one process (`dev` and `emulator` only with the
//!   `emulator` cargo feature, a default one)
//! - `server`, `check`: wire and run everything; check a config, online too
//! - `admin`: /healthz, /readyz, /metrics, /drain
//! - `proxy`, `tenants`: ingress and egress; connect-tenant and the tenant store
//! - `verify`, `emulator`: token verification with its cache; a local JTL
//! - `jtl`: everything that talks to JTL (access token, key sets)
//! - `shared_cache`: tokens shared across replicas in Redis
//! - `telemetry`: logs, and the metrics registry each module above registers its
//!   collectors with
//! - `config`, `diagnose`: the settings; plain-language diagnoses of token failures
//! - `jose`, `clock`, `secrets`, `sharded`, `tls`, `background`: JOSE, time, secret
//!   values, sharded counters, TLS roots, work run on the main runtime; they know nothing
//!   of the product

pub mod admin;
pub mod background;
pub mod check;
pub mod clock;
pub mod config;
#[cfg(feature = "emulator")]
pub mod dev;
pub mod diagnose;
#[cfg(feature = "emulator")]
pub mod emulator;
pub mod jose;
pub mod jtl;
pub mod proxy;
pub mod secrets;
pub mod server;
pub mod sharded;
pub mod shared_cache;
pub mod telemetry;
pub mod tenants;
pub mod tls;
pub mod verify;
