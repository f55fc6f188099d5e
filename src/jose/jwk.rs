//! Ed25519 public keys from JWKs (RFC 8037), and the key set a token is checked against.

use std::sync::Arc;

use curve25519_dalek::edwards::CompressedEdwardsY;
use ring::digest;
use ring::signature::{UnparsedPublicKey, ED25519};
use serde_json::{Map, Value};

use super::base64url;
use super::error::{JwksError, KeyError};
use super::json;

/// A verified-good Ed25519 public key: on the curve, canonically encoded, and in the
/// prime-order subgroup (neither small-order nor mixed-order).
#[derive(Clone, PartialEq, Eq)]
pub struct Ed25519Key {
    /// Shared, so that cached verifications can name their key without copying.
    kid: Option<Arc<str>>,
    public: [u8; 32],
    thumbprint: Arc<str>,
}

impl std::fmt::Debug for Ed25519Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ed25519Key")
            .field("kid", &self.kid)
            .field("thumbprint", &self.thumbprint)
            .finish()
    }
}

impl Ed25519Key {
    /// Checks the 32-byte encoding of a public key.
    ///
    /// ring verifies against any point it can decode, so a small-order key would accept a
    /// forged signature for every message; such keys, and encodings that are not canonical,
    /// are refused here, once, when the key set is loaded. Mixed-order keys (a prime-order
    /// point plus a torsion component) are refused too: honest key generation never
    /// produces them, and they are where cofactored and cofactorless verifiers disagree.
    pub fn from_public_bytes(kid: Option<String>, bytes: &[u8]) -> Result<Self, KeyError> {
        let public: [u8; 32] = bytes
            .try_into()
            .map_err(|_| KeyError::XLength(bytes.len()))?;
        let point = CompressedEdwardsY(public)
            .decompress()
            .ok_or(KeyError::NotOnCurve)?;
        if point.compress().to_bytes() != public {
            return Err(KeyError::NonCanonical);
        }
        if point.is_small_order() {
            return Err(KeyError::SmallOrder);
        }
        if !point.is_torsion_free() {
            return Err(KeyError::MixedOrder);
        }
        let thumbprint = thumbprint_of(&public).into();
        Ok(Ed25519Key {
            kid: kid.map(Arc::from),
            public,
            thumbprint,
        })
    }

    /// Reads one JWK: `kty` `OKP`, `crv` `Ed25519`, `x` of 32 bytes; `use`, when present,
    /// `sig`; `alg`, when present, `EdDSA`.
    pub fn from_jwk(jwk: &Value) -> Result<Self, KeyError> {
        let jwk = jwk.as_object().ok_or(KeyError::NotAnObject)?;
        if jwk.get("kty").and_then(Value::as_str) != Some("OKP") {
            return Err(KeyError::WrongKeyType);
        }
        if jwk.get("crv").and_then(Value::as_str) != Some("Ed25519") {
            return Err(KeyError::WrongCurve);
        }
        if let Some(key_use) = jwk.get("use") {
            if key_use.as_str() != Some("sig") {
                return Err(KeyError::NotForSignatures);
            }
        }
        if let Some(alg) = jwk.get("alg") {
            if alg.as_str() != Some("EdDSA") {
                return Err(KeyError::WrongAlgorithm);
            }
        }
        if jwk.contains_key("d") {
            return Err(KeyError::PrivateKeyMaterial);
        }
        let kid = match jwk.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.clone()),
            Some(_) => return Err(KeyError::KidNotString),
        };
        let x = jwk
            .get("x")
            .and_then(Value::as_str)
            .ok_or(KeyError::MissingX)?;
        let bytes = base64url::decode(x.as_bytes()).ok_or(KeyError::XNotBase64)?;
        Self::from_public_bytes(kid, &bytes)
    }

    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    pub fn public_bytes(&self) -> &[u8; 32] {
        &self.public
    }

    /// The RFC 7638 JWK thumbprint: names the key material itself, whatever its `kid`.
    pub fn thumbprint(&self) -> &str {
        &self.thumbprint
    }

    /// The `kid` and thumbprint as shared strings (cheap to keep per cached token).
    pub fn shared_ids(&self) -> (Option<Arc<str>>, Arc<str>) {
        (self.kid.clone(), Arc::clone(&self.thumbprint))
    }

    /// Ed25519 verification with ring. `signature` must be exactly 64 bytes.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        signature.len() == 64
            && UnparsedPublicKey::new(&ED25519, &self.public)
                .verify(message, signature)
                .is_ok()
    }
}

fn thumbprint_of(public: &[u8; 32]) -> String {
    // RFC 7638 §3.2: the required members in lexicographic order, no whitespace.
    let canonical = format!(
        r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
        base64url::encode(public)
    );
    base64url::encode(digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref())
}

/// A key that was in the document but not taken, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedKey {
    pub index: usize,
    pub kid: Option<String>,
    pub reason: KeyError,
}

/// The usable keys of a JWK set, in document order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JwkSet {
    keys: Vec<Ed25519Key>,
}

impl JwkSet {
    /// Builds a set from keys already checked; a later key with a `kid` already taken is
    /// dropped, since a `kid` must name one key.
    pub fn from_keys(keys: impl IntoIterator<Item = Ed25519Key>) -> Self {
        let mut set = JwkSet::default();
        for key in keys {
            let _ = set.push(key);
        }
        set
    }

    fn push(&mut self, key: Ed25519Key) -> Result<(), Ed25519Key> {
        if let Some(kid) = key.kid() {
            if self.get(kid).is_some() {
                return Err(key);
            }
        }
        self.keys.push(key);
        Ok(())
    }

    /// Parses a JWKS document (`{"keys":[...]}`) strictly. Keys that are not usable
    /// Ed25519 signing keys are returned beside the set, so the caller can warn.
    pub fn from_json(document: &[u8]) -> Result<(JwkSet, Vec<SkippedKey>), JwksError> {
        let document = json::parse_object(document).map_err(JwksError::Json)?;
        Self::from_document(&document)
    }

    fn from_document(
        document: &Map<String, Value>,
    ) -> Result<(JwkSet, Vec<SkippedKey>), JwksError> {
        let entries = document
            .get("keys")
            .and_then(Value::as_array)
            .ok_or(JwksError::NoKeysArray)?;
        let mut set = JwkSet::default();
        let mut skipped = Vec::new();
        for (index, entry) in entries.iter().enumerate() {
            let kid = entry.get("kid").and_then(Value::as_str).map(str::to_owned);
            match Ed25519Key::from_jwk(entry) {
                Ok(key) => {
                    if set.push(key).is_err() {
                        skipped.push(SkippedKey {
                            index,
                            kid,
                            reason: KeyError::DuplicateKid,
                        });
                    }
                }
                Err(reason) => skipped.push(SkippedKey { index, kid, reason }),
            }
        }
        Ok((set, skipped))
    }

    pub fn get(&self, kid: &str) -> Option<&Ed25519Key> {
        self.keys.iter().find(|key| key.kid() == Some(kid))
    }

    pub fn contains_thumbprint(&self, thumbprint: &str) -> bool {
        self.keys.iter().any(|key| key.thumbprint() == thumbprint)
    }

    pub fn keys(&self) -> &[Ed25519Key] {
        &self.keys
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}
