//! jtl-auth-sidecar: a reverse proxy that does all JTL Cloud App authentication for a
//! backend written in any language. See README.md for what it does and how to run it.

pub mod config;
pub mod jose;
