//! Strict compact-JWS parsing (RFC 7515 §7.1), the same for both flows; only the one
//! accepted `alg` (EdDSA or RS256) and the signature length differ.

use serde_json::{Map, Value};

use super::base64url;
use super::error::{JoseError, Malformed, Part};
use super::json;
use super::jwk::{JwkSet, KeyKind, VerifyingKey};

/// Keys tried for a token without a header `kid`, so a token cannot make the verifier
/// run an unbounded number of signature checks.
pub const MAX_KEYS_TRIED: usize = 8;

/// The one signature algorithm a flow accepts (SPEC §5, §11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Algorithm {
    /// Ed25519 session tokens (the legacy flow).
    #[default]
    EdDSA,
    /// RSA PKCS#1 v1.5 SHA-256 app tokens from JTL's Zitadel.
    RS256,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::EdDSA => "EdDSA",
            Algorithm::RS256 => "RS256",
        }
    }

    /// The keys of a key set this algorithm verifies with.
    pub fn key_kind(self) -> KeyKind {
        match self {
            Algorithm::EdDSA => KeyKind::Ed25519,
            Algorithm::RS256 => KeyKind::Rsa,
        }
    }

    fn accepts_signature_length(self, length: usize) -> bool {
        match self {
            Algorithm::EdDSA => length == 64,
            // 2048- to 8192-bit moduli; ring checks the exact length against the key.
            Algorithm::RS256 => (256..=1024).contains(&length),
        }
    }
}

/// A token whose structure has been checked but whose signature has not.
#[derive(Debug)]
pub struct CompactJws<'t> {
    signing_input: &'t [u8],
    algorithm: Algorithm,
    kid: Option<String>,
    payload: Map<String, Value>,
    signature: Vec<u8>,
}

impl<'t> CompactJws<'t> {
    /// Parses an EdDSA session token; see [`CompactJws::parse_as`].
    pub fn parse(token: &'t str, max_bytes: usize) -> Result<Self, JoseError> {
        Self::parse_as(token, max_bytes, Algorithm::EdDSA)
    }

    /// Parses `token`: at most `max_bytes`, three segments of unpadded base64url, a header
    /// that is a strict JSON object with `alg` exactly `algorithm` and no `crit`, a payload
    /// that is a strict JSON object, and a signature of the algorithm's length. `jku`,
    /// `x5u`, `jwk` and `x5c` are ignored: keys only ever come from the configured key set.
    pub fn parse_as(
        token: &'t str,
        max_bytes: usize,
        algorithm: Algorithm,
    ) -> Result<Self, JoseError> {
        let bytes = token.as_bytes();
        if bytes.is_empty() {
            return Err(Malformed::Empty.into());
        }
        if bytes.len() > max_bytes {
            return Err(Malformed::TooLarge { max: max_bytes }.into());
        }
        let mut dots = [0usize; 2];
        let mut dot_count = 0;
        for (at, &byte) in bytes.iter().enumerate() {
            match byte {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => {}
                b'.' => {
                    if dot_count == 2 {
                        return Err(Malformed::SegmentCount.into());
                    }
                    dots[dot_count] = at;
                    dot_count += 1;
                }
                b'=' => return Err(Malformed::Padding.into()),
                _ => return Err(Malformed::InvalidCharacter.into()),
            }
        }
        if dot_count != 2 {
            return Err(Malformed::SegmentCount.into());
        }
        let header_b64 = &bytes[..dots[0]];
        let payload_b64 = &bytes[dots[0] + 1..dots[1]];
        let signature_b64 = &bytes[dots[1] + 1..];

        let header = decode_object(header_b64, Part::Header)?;
        if header.get("alg").and_then(Value::as_str) != Some(algorithm.name()) {
            return Err(JoseError::UnsupportedAlgorithm);
        }
        if header.contains_key("crit") {
            return Err(JoseError::CriticalHeader);
        }
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.clone()),
            Some(_) => return Err(Malformed::KidNotString.into()),
        };

        let payload = decode_object(payload_b64, Part::Payload)?;

        let signature =
            base64url::decode(signature_b64).ok_or(Malformed::Base64(Part::Signature))?;
        if !algorithm.accepts_signature_length(signature.len()) {
            return Err(Malformed::SignatureLength.into());
        }

        Ok(CompactJws {
            signing_input: &bytes[..dots[1]],
            algorithm,
            kid,
            payload,
            signature,
        })
    }

    /// The header `kid`, when the token names its key. (The payload `kid` is a customer
    /// id, never a key selector.)
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    pub fn payload(&self) -> &Map<String, Value> {
        &self.payload
    }

    pub fn into_payload(self) -> Map<String, Value> {
        self.payload
    }

    /// The ASCII bytes `header "." payload` that the signature covers.
    pub fn signing_input(&self) -> &[u8] {
        self.signing_input
    }

    pub fn signature(&self) -> &[u8] {
        &self.signature
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub fn is_signed_by(&self, key: &VerifyingKey) -> bool {
        key.verify(self.signing_input, &self.signature)
    }

    /// Finds the key of `keys` that signed this token: the one its header `kid` names, or,
    /// without a `kid`, the first of at most [`MAX_KEYS_TRIED`] keys whose check passes.
    /// An RS256 app token must name its key: there is no trying every key in that flow.
    pub fn find_signer<'k>(&self, keys: &'k JwkSet) -> Result<&'k VerifyingKey, JoseError> {
        match self.kid() {
            Some(kid) => {
                let key = keys.get(kid).ok_or_else(|| JoseError::UnknownKey {
                    kid: kid.to_owned(),
                })?;
                if self.is_signed_by(key) {
                    Ok(key)
                } else {
                    Err(JoseError::BadSignature)
                }
            }
            None if self.algorithm == Algorithm::RS256 => Err(JoseError::MissingKid),
            None => {
                if keys.is_empty() {
                    return Err(JoseError::NoKeys);
                }
                let candidates = &keys.keys()[..keys.len().min(MAX_KEYS_TRIED)];
                candidates.iter().find(|key| self.is_signed_by(key)).ok_or(
                    JoseError::NoKeyMatches {
                        tried: candidates.len(),
                    },
                )
            }
        }
    }
}

fn decode_object(segment: &[u8], part: Part) -> Result<Map<String, Value>, Malformed> {
    let bytes = base64url::decode(segment).ok_or(Malformed::Base64(part))?;
    json::parse_object(&bytes).map_err(|error| Malformed::from_json(part, error))
}
