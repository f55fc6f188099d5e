//! jtl-auth-sidecar: a reverse proxy that does all JTL Cloud App authentication for a
//! backend written in any language. See README.md for what it does and how to run it.
//!
//! Dependencies point one way: `jose` knows nothing; `jtl` knows `jose`; `verify` knows
//! both; `jtl`'s access token may be shared through `shared_cache` (which borrows only `jtl`'s
//! TLS roots);
//! `proxy` and `tenants` use `verify`; `emulator` stands in for JTL in `dev` mode and in the tests;
//! `background` (running connections on the main runtime) knows nothing of the others.

pub mod admin;
pub mod background;
pub mod check;
pub mod clock;
pub mod config;
pub mod dev;
pub mod diagnose;
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
