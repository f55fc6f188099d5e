//! Strict JOSE for JTL's two tokens: compact-JWS parsing, JWK parsing, verification with
//! ring (Ed25519 for session tokens, RSA PKCS#1 v1.5 SHA-256 for app tokens), and the
//! claim checks of each flow. The steps are composed in one place, `verify::TokenVerifier`.
//!
//! Pure code: no I/O and no clock of its own (`now` is always passed in), so every rule
//! here is tested without sockets or sleeping.

mod base64url;
mod claims;
mod error;
mod json;
mod jwk;
mod jws;
mod kind;
mod rsa;

pub use claims::{
    APP_TOKEN_APP_ID_CLAIM, APP_TOKEN_TENANT_CLAIM, Session, TokenPolicy, hyphenated_uuid,
};
pub use error::{JoseError, JwkError, JwksParseError, Malformed, Part, Worded};
pub use json::{JsonError, MAX_DEPTH, parse_object as parse_strict_json_object};
pub use jwk::{Ed25519Key, JwkSet, KeyKind, SkippedKey, VerifyingKey};
pub use jws::{CompactJws, MAX_KEYS_TRIED};
pub use kind::{Algorithm, TokenKind};
pub use rsa::{MAX_MODULUS_BITS, MIN_MODULUS_BITS, RsaKey};

/// Encodes bytes as unpadded base64url (for building JWKs and tokens in tests, the
/// emulator and tools).
pub fn base64url_encode(bytes: &[u8]) -> String {
    base64url::encode(bytes)
}
