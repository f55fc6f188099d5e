//! Shared helpers for the integration tests: signing keys and token minting.
#![allow(dead_code)]

use jtl_auth_sidecar::jose::{Ed25519Key, base64url_encode};
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{Value, json};

pub const TENANT_ID: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";
pub const USER_ID: &str = "2f1b8d2c-5c1e-4a7e-9b3f-1d2e3f4a5b6c";
pub const NOW: i64 = 1_790_000_000;

/// An Ed25519 key pair for minting tokens, with the `kid` it is published under.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    pub kid: Option<String>,
}

impl SigningKey {
    pub fn from_seed(seed_byte: u8, kid: Option<&str>) -> Self {
        let pair = Ed25519KeyPair::from_seed_unchecked(&[seed_byte; 32]).expect("32-byte seed");
        SigningKey {
            pair,
            kid: kid.map(str::to_owned),
        }
    }

    pub fn public_bytes(&self) -> [u8; 32] {
        self.pair
            .public_key()
            .as_ref()
            .try_into()
            .expect("32 bytes")
    }

    /// The key as the verifier would load it from a JWKS.
    pub fn public_key(&self) -> Ed25519Key {
        Ed25519Key::from_public_bytes(self.kid.clone(), &self.public_bytes()).expect("valid key")
    }

    pub fn jwk(&self) -> Value {
        let mut jwk = json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "use": "sig",
            "alg": "EdDSA",
            "x": base64url_encode(&self.public_bytes()),
        });
        if let Some(kid) = &self.kid {
            jwk["kid"] = json!(kid);
        }
        jwk
    }

    /// Signs exactly the given header and payload text, so tests can mint tokens that a
    /// JSON serializer would never produce (duplicate keys, odd nesting).
    pub fn sign_raw(&self, header: &str, payload: &str) -> String {
        let signing_input = format!(
            "{}.{}",
            base64url_encode(header.as_bytes()),
            base64url_encode(payload.as_bytes())
        );
        let signature = self.pair.sign(signing_input.as_bytes());
        format!("{signing_input}.{}", base64url_encode(signature.as_ref()))
    }

    /// A token with JTL's documented header (plus this key's `kid`, when it has one).
    pub fn mint(&self, payload: &Value) -> String {
        let header = match &self.kid {
            Some(kid) => json!({"alg": "EdDSA", "typ": "JWT", "kid": kid}),
            None => json!({"alg": "EdDSA", "typ": "JWT"}),
        };
        self.sign_raw(&header.to_string(), &payload.to_string())
    }
}

/// A realistic session-token payload, valid at [`NOW`] for five minutes. The payload
/// `kid` is JTL's customer id, not a key id.
pub fn session_claims() -> Value {
    json!({
        "exp": NOW + 300,
        "iat": NOW - 5,
        "userId": USER_ID,
        "tenantId": TENANT_ID,
        "tenantSlug": "acme-gmbh",
        "kid": "customer-4711",
    })
}

/// Why `node` cannot be used for a test that drives Node.js, or `None` when it runs.
pub fn node_unusable(node: &std::path::Path) -> Option<String> {
    let runs = std::process::Command::new(node)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    (!runs).then(|| {
        format!(
            "Node.js ({} --version does not run; set NODE to its path)",
            node.display()
        )
    })
}

pub mod calls;
pub mod harness;
pub mod logs;
pub mod proxy;
pub mod redis;
pub mod services;
