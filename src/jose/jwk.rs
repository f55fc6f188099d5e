//! Ed25519 public keys from JWKs (RFC 8037), and the key set a token is checked against:
//! Ed25519 keys for session tokens, RSA keys (`rsa.rs`) for app tokens.

use std::sync::Arc;

use curve25519_dalek::edwards::CompressedEdwardsY;
use ring::digest;
use ring::signature::{ED25519, UnparsedPublicKey};
use serde_json::{Map, Value};

use super::base64url;
use super::error::{JwkError, JwksParseError};
use super::json;
use super::kind::Algorithm;
use super::rsa::RsaKey;

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
    pub fn from_public_bytes(kid: Option<String>, bytes: &[u8]) -> Result<Self, JwkError> {
        let public: [u8; 32] = bytes
            .try_into()
            .map_err(|_| JwkError::XLength(bytes.len()))?;
        let point = CompressedEdwardsY(public)
            .decompress()
            .ok_or(JwkError::NotOnCurve)?;
        if point.compress().to_bytes() != public {
            return Err(JwkError::NonCanonical);
        }
        if point.is_small_order() {
            return Err(JwkError::SmallOrder);
        }
        if !point.is_torsion_free() {
            return Err(JwkError::MixedOrder);
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
    pub fn from_jwk(jwk: &Value) -> Result<Self, JwkError> {
        let jwk = jwk.as_object().ok_or(JwkError::NotAnObject)?;
        if jwk.get("kty").and_then(Value::as_str) != Some("OKP") {
            return Err(JwkError::WrongKeyType);
        }
        if jwk.get("crv").and_then(Value::as_str) != Some("Ed25519") {
            return Err(JwkError::WrongCurve);
        }
        if let Some(key_use) = jwk.get("use")
            && key_use.as_str() != Some("sig")
        {
            return Err(JwkError::NotForSignatures);
        }
        if let Some(alg) = jwk.get("alg")
            && alg.as_str() != Some("EdDSA")
        {
            return Err(JwkError::WrongAlgorithm);
        }
        if jwk.contains_key("d") {
            return Err(JwkError::PrivateKeyMaterial);
        }
        let kid = match jwk.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.clone()),
            Some(_) => return Err(JwkError::KidNotString),
        };
        let x = jwk
            .get("x")
            .and_then(Value::as_str)
            .ok_or(JwkError::MissingX)?;
        let bytes = base64url::decode(x.as_bytes()).ok_or(JwkError::XNotBase64)?;
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

/// Which keys of a JWKS document a flow uses: every other key is skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyKind {
    /// `OKP` / `Ed25519`, `EdDSA`: the session-token flow (JTL's authenticated JWKS).
    #[default]
    Ed25519,
    /// `RSA`, `RS256`: the app-token flow (JTL's Zitadel, which also publishes EC and OKP
    /// keys beside them).
    Rsa,
}

impl std::fmt::Display for KeyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyKind::Ed25519 => "Ed25519",
            KeyKind::Rsa => "RS256 (RSA, 2048 bits or more)",
        })
    }
}

/// A verification key of either flow. A set only ever holds one kind (its [`KeyKind`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyingKey {
    Ed25519(Ed25519Key),
    Rsa(RsaKey),
}

impl VerifyingKey {
    pub fn from_jwk(jwk: &Value, kind: KeyKind) -> Result<Self, JwkError> {
        match kind {
            KeyKind::Ed25519 => Ed25519Key::from_jwk(jwk).map(VerifyingKey::Ed25519),
            KeyKind::Rsa => RsaKey::from_jwk(jwk).map(VerifyingKey::Rsa),
        }
    }

    pub fn kid(&self) -> Option<&str> {
        match self {
            VerifyingKey::Ed25519(key) => key.kid(),
            VerifyingKey::Rsa(key) => key.kid(),
        }
    }

    pub fn thumbprint(&self) -> &str {
        match self {
            VerifyingKey::Ed25519(key) => key.thumbprint(),
            VerifyingKey::Rsa(key) => key.thumbprint(),
        }
    }

    pub fn shared_ids(&self) -> (Option<Arc<str>>, Arc<str>) {
        match self {
            VerifyingKey::Ed25519(key) => key.shared_ids(),
            VerifyingKey::Rsa(key) => key.shared_ids(),
        }
    }

    /// The signature check of the key's algorithm (ring's Ed25519, or RSA PKCS#1 v1.5
    /// SHA-256).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match self {
            VerifyingKey::Ed25519(key) => key.verify(message, signature),
            VerifyingKey::Rsa(key) => key.verify(message, signature),
        }
    }
}

impl From<Ed25519Key> for VerifyingKey {
    fn from(key: Ed25519Key) -> Self {
        VerifyingKey::Ed25519(key)
    }
}

impl From<RsaKey> for VerifyingKey {
    fn from(key: RsaKey) -> Self {
        VerifyingKey::Rsa(key)
    }
}

/// A key that was in the document but not taken, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedKey {
    pub index: usize,
    pub kid: Option<String>,
    pub reason: JwkError,
}

impl SkippedKey {
    /// Whether the key is of a type the flow does not use (`kty` is not the flow's: the
    /// EC and OKP keys Zitadel publishes beside its RSA keys). Skipping such a key is
    /// expected, not a problem; a key of the flow's type that is unusable is one.
    pub fn is_of_another_type(&self) -> bool {
        self.reason == JwkError::WrongKeyType
    }
}

/// The usable keys of a JWK set, in document order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JwkSet {
    keys: Vec<VerifyingKey>,
}

impl JwkSet {
    /// Builds a set from keys already checked; a later key with a `kid` already taken is
    /// dropped, since a `kid` must name one key.
    pub fn from_keys<K: Into<VerifyingKey>>(keys: impl IntoIterator<Item = K>) -> Self {
        let mut set = JwkSet::default();
        for key in keys {
            let _ = set.push(key.into());
        }
        set
    }

    fn push(&mut self, key: VerifyingKey) -> Result<(), VerifyingKey> {
        if let Some(kid) = key.kid()
            && self.get(kid).is_some()
        {
            return Err(key);
        }
        self.keys.push(key);
        Ok(())
    }

    /// Parses a JWKS document (`{"keys":[...]}`) of the session-token flow strictly. Keys
    /// that are not usable Ed25519 signing keys are returned beside the set, so the
    /// caller can warn.
    pub fn from_json(document: &[u8]) -> Result<(JwkSet, Vec<SkippedKey>), JwksParseError> {
        Self::from_json_of(document, KeyKind::Ed25519)
    }

    /// As [`JwkSet::from_json`], keeping the keys of `kind`.
    pub fn from_json_of(
        document: &[u8],
        kind: KeyKind,
    ) -> Result<(JwkSet, Vec<SkippedKey>), JwksParseError> {
        let document = json::parse_object(document).map_err(JwksParseError::Json)?;
        Self::from_document(&document, kind)
    }

    fn from_document(
        document: &Map<String, Value>,
        kind: KeyKind,
    ) -> Result<(JwkSet, Vec<SkippedKey>), JwksParseError> {
        let entries = document
            .get("keys")
            .and_then(Value::as_array)
            .ok_or(JwksParseError::NoKeysArray)?;
        let mut set = JwkSet::default();
        let mut skipped = Vec::new();
        for (index, entry) in entries.iter().enumerate() {
            let kid = entry.get("kid").and_then(Value::as_str).map(str::to_owned);
            match VerifyingKey::from_jwk(entry, kind) {
                Ok(key) => {
                    if set.push(key).is_err() {
                        skipped.push(SkippedKey {
                            index,
                            kid,
                            reason: JwkError::DuplicateKid,
                        });
                    }
                }
                Err(reason) => skipped.push(SkippedKey { index, kid, reason }),
            }
        }
        Ok((set, skipped))
    }

    pub fn get(&self, kid: &str) -> Option<&VerifyingKey> {
        self.keys.iter().find(|key| key.kid() == Some(kid))
    }

    pub fn contains_thumbprint(&self, thumbprint: &str) -> bool {
        self.keys.iter().any(|key| key.thumbprint() == thumbprint)
    }

    pub fn keys(&self) -> &[VerifyingKey] {
        &self.keys
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl Algorithm {
    /// The keys of a key set this algorithm verifies with.
    pub fn key_kind(self) -> KeyKind {
        match self {
            Algorithm::EdDSA => KeyKind::Ed25519,
            Algorithm::RS256 => KeyKind::Rsa,
        }
    }
}
