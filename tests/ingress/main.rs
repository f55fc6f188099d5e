//! Ingress (SPEC §4) end to end over real sockets: emulator + echo backend + sidecar.

#[path = "../common/mod.rs"]
mod common;

mod admin;
mod drain;
mod forwarding;
mod headers;
mod host;
mod http_layer;
mod public_paths;
mod token;
mod upstream;
mod websocket;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::harness::{TENANT, USER};
use common::proxy::{Proxy, get, raw, send};
use http::Request;
use http_body_util::Full;
use jtl_auth_sidecar::emulator::Failure;
use serde_json::json;

const SPOOFED: &str = "00000000-0000-4000-8000-000000000666";

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}
