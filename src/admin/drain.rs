//! `POST /drain`: who may take the pod out of service. A backend's preStop hook calls it
//! (the native sidecar gets SIGTERM only after the backend has exited), so it must be
//! reachable from the pod's own containers and from nothing else.
//!
//! Three conditions, all needed:
//! - the request names this machine and is no browser's (the egress rule, in
//!   [`crate::proxy::local_caller`]): a page using DNS rebinding is refused;
//! - it carries `Authorization: Bearer <token>` with the token written at start to
//!   `admin.drain_token_file` (see [`DrainToken`]): reaching loopback alone is no proof,
//!   relays, meshes and browsers reach it too;
//! - it comes from a loopback peer. This costs the Kubernetes use nothing (every container
//!   that mounts the token's volume shares the pod's network namespace), and keeps a token
//!   that leaked out of the pod (a log, a crash dump) useless from outside it.

use std::net::SocketAddr;

use http::header::AUTHORIZATION;
use http::{Request, Response};

use super::drain_token::{DrainToken, DrainTokenError};
use crate::config::Config;
use crate::proxy::ProxyBody;
use crate::proxy::errors::{ErrorCode, error_response};
use crate::proxy::headers::bearer_token;
use crate::proxy::local_caller::{Refusal, refuse_foreign_caller};

/// The drain's gate: the credential (when configured) and the hosts it answers for.
#[derive(Debug)]
pub struct Drain {
    /// `None` when `admin.drain_token_file` is empty: every drain is refused.
    token: Option<DrainToken>,
    /// `egress.allowed_hosts`: the same host rule as egress.
    allowed_hosts: Vec<String>,
}

/// Why a drain was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainRefusal {
    /// Not from a program on this machine (`400`, `421` or `403`).
    NotLocal(Refusal),
    /// `admin.drain_token_file` is not set (`403`).
    Disabled,
    /// The peer is not on loopback (`403`).
    NotLoopback,
    /// No `Authorization: Bearer`, or another token (`403`).
    BadCredential,
}

impl DrainRefusal {
    /// The sentence of the answer and of the warning in the log.
    pub fn reason(self) -> &'static str {
        match self {
            DrainRefusal::NotLocal(refusal) => refusal.reason(),
            DrainRefusal::Disabled => {
                "POST /drain is disabled: set admin.drain_token_file, and send the token it holds as Authorization: Bearer <token>."
            }
            DrainRefusal::NotLoopback => {
                "POST /drain is answered on loopback only (the pod's own containers)."
            }
            DrainRefusal::BadCredential => {
                "POST /drain needs Authorization: Bearer <token>, the token in admin.drain_token_file."
            }
        }
    }

    pub fn response(self) -> Response<ProxyBody> {
        match self {
            DrainRefusal::NotLocal(refusal) => refusal.response(),
            _ => error_response(ErrorCode::Forbidden, self.reason()),
        }
    }
}

impl Drain {
    /// With `admin.drain_token_file` set, writes this start's token there.
    pub fn from_config(config: &Config) -> Result<Drain, DrainTokenError> {
        let token = match &config.admin.drain_token_file {
            Some(path) => {
                let token = DrainToken::create(path)?;
                tracing::info!(
                    path = %path.display(),
                    "drain token written: POST /drain on the admin port needs it as a Bearer token"
                );
                Some(token)
            }
            None => None,
        };
        Ok(Drain {
            token,
            allowed_hosts: config.egress.allowed_hosts.clone(),
        })
    }

    /// `Ok` when this request may drain the pod.
    pub fn authorize<B>(&self, request: &Request<B>, peer: SocketAddr) -> Result<(), DrainRefusal> {
        refuse_foreign_caller(
            request.version(),
            request.headers(),
            request.uri(),
            &self.allowed_hosts,
        )
        .map_err(DrainRefusal::NotLocal)?;
        let Some(token) = &self.token else {
            return Err(DrainRefusal::Disabled);
        };
        // A dual-stack listener (`[::]:9090`) reports an IPv4 peer as `::ffff:127.0.0.1`,
        // which is no IPv6 loopback address: compare the IPv4 address it stands for.
        if !peer.ip().to_canonical().is_loopback() {
            return Err(DrainRefusal::NotLoopback);
        }
        let mut values = request.headers().get_all(AUTHORIZATION).iter();
        let presented = match (values.next(), values.next()) {
            (Some(value), None) => value.to_str().ok().and_then(bearer_token),
            _ => None,
        };
        match presented {
            Some(presented) if token.matches(presented.as_bytes()) => Ok(()),
            _ => Err(DrainRefusal::BadCredential),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A drain gate with a token written to a temporary directory, and that token.
    fn drain() -> (Drain, String, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("drain-token");
        let token = DrainToken::create(&path).unwrap();
        let written = std::fs::read_to_string(&path).unwrap();
        let drain = Drain {
            token: Some(token),
            allowed_hosts: Vec::new(),
        };
        (drain, written, dir)
    }

    fn request(token: &str) -> Request<()> {
        Request::post("/drain")
            .header("host", "127.0.0.1:9090")
            .header("authorization", format!("Bearer {token}"))
            .body(())
            .unwrap()
    }

    #[test]
    fn an_ipv4_loopback_peer_on_a_dual_stack_listener_may_drain() {
        let (drain, token, _dir) = drain();
        for peer in ["127.0.0.1:5000", "[::1]:5000", "[::ffff:127.0.0.1]:5000"] {
            let peer: SocketAddr = peer.parse().unwrap();
            assert_eq!(drain.authorize(&request(&token), peer), Ok(()), "{peer}");
        }
    }

    #[test]
    fn a_peer_off_loopback_may_not_drain_however_its_address_is_written() {
        let (drain, token, _dir) = drain();
        for peer in [
            "10.0.0.1:5000",
            "[::ffff:10.0.0.1]:5000",
            "[fd00::1]:5000",
            "[::127.0.0.1]:5000",
        ] {
            let peer: SocketAddr = peer.parse().unwrap();
            assert_eq!(
                drain.authorize(&request(&token), peer),
                Err(DrainRefusal::NotLoopback),
                "{peer}"
            );
        }
    }
}
