//! Strict JOSE for JTL's two tokens: compact-JWS parsing, JWK parsing, verification with
//! ring (Ed25519 for session tokens, RSA PKCS#1 v1.5 SHA-256 for app tokens), and the
//! claim checks of each flow.
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
    hyphenated_uuid, Session, TokenPolicy, APP_TOKEN_APP_ID_CLAIM, APP_TOKEN_TENANT_CLAIM,
};
pub use error::{JoseError, JwksError, KeyError, Malformed, Part, Worded};
pub use json::{parse_object as parse_strict_json_object, JsonError, MAX_DEPTH};
pub use jwk::{Ed25519Key, JwkSet, KeyKind, SkippedKey, VerifyingKey};
pub use jws::{CompactJws, MAX_KEYS_TRIED};
pub use kind::{Algorithm, TokenKind};
pub use rsa::{RsaKey, MAX_MODULUS_BITS, MIN_MODULUS_BITS};

/// A token (of the policy's kind) that passed every check, and the key that signed it.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedToken {
    pub session: Session,
    /// RFC 7638 thumbprint of the signing key, so a cached verification can be dropped
    /// when that key leaves the key set.
    pub key_thumbprint: String,
}

/// Full verification of a token of `policy`'s kind against a key set at time `now` (Unix
/// seconds): structure, signature, then claims.
pub fn verify_token(
    token: &str,
    keys: &JwkSet,
    policy: &TokenPolicy,
    now: i64,
) -> Result<VerifiedToken, JoseError> {
    let jws = CompactJws::parse_as(token, policy.max_token_bytes, policy.algorithm())?;
    let key_thumbprint = jws.find_signer(keys)?.thumbprint().to_owned();
    let session = policy.session_from(jws.into_payload(), now)?;
    Ok(VerifiedToken {
        session,
        key_thumbprint,
    })
}

/// Encodes bytes as unpadded base64url (for building JWKs and tokens in tests, the
/// emulator and tools).
pub fn base64url_encode(bytes: &[u8]) -> String {
    base64url::encode(bytes)
}
