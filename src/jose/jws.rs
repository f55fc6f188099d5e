//! Strict compact-JWS parsing (RFC 7515 §7.1) for EdDSA session tokens.

use serde_json::{Map, Value};

use super::base64url;
use super::error::{JoseError, Malformed, Part};
use super::json;
use super::jwk::{Ed25519Key, JwkSet};

/// Keys tried for a token without a header `kid`, so a token cannot make the verifier
/// run an unbounded number of signature checks.
pub const MAX_KEYS_TRIED: usize = 8;

/// A token whose structure has been checked but whose signature has not.
#[derive(Debug)]
pub struct CompactJws<'t> {
    signing_input: &'t [u8],
    kid: Option<String>,
    payload: Map<String, Value>,
    signature: [u8; 64],
}

impl<'t> CompactJws<'t> {
    /// Parses `token`: at most `max_bytes`, three segments of unpadded base64url, a header
    /// that is a strict JSON object with `alg` exactly `EdDSA` and no `crit`, a payload
    /// that is a strict JSON object, and a 64-byte signature. `jku`, `x5u`, `jwk` and `x5c`
    /// are ignored: keys only ever come from the configured key set.
    pub fn parse(token: &'t str, max_bytes: usize) -> Result<Self, JoseError> {
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
        if header.get("alg").and_then(Value::as_str) != Some("EdDSA") {
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

        let signature = base64url::decode(signature_b64)
            .ok_or(Malformed::Base64(Part::Signature))?
            .try_into()
            .map_err(|_| Malformed::SignatureLength)?;

        Ok(CompactJws {
            signing_input: &bytes[..dots[1]],
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

    pub fn signature(&self) -> &[u8; 64] {
        &self.signature
    }

    pub fn is_signed_by(&self, key: &Ed25519Key) -> bool {
        key.verify(self.signing_input, &self.signature)
    }

    /// Finds the key of `keys` that signed this token: the one its header `kid` names, or,
    /// without a `kid`, the first of at most [`MAX_KEYS_TRIED`] keys whose check passes.
    pub fn find_signer<'k>(&self, keys: &'k JwkSet) -> Result<&'k Ed25519Key, JoseError> {
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
