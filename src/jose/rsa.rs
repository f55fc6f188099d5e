//! RSA public keys from JWKs (RFC 7518 §6.3) for RS256 app tokens from JTL's Zitadel,
//! verified with ring's RSA PKCS#1 v1.5 SHA-256.

use std::sync::Arc;

use ring::digest;
use ring::signature::{RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents};
use serde_json::Value;

use super::base64url;
use super::error::JwkError;

/// Smallest modulus accepted (SPEC §11): smaller keys are skipped with a warning.
pub const MIN_MODULUS_BITS: usize = 2048;
/// Largest modulus ring verifies with `RSA_PKCS1_2048_8192_SHA256`.
pub const MAX_MODULUS_BITS: usize = 8192;

/// A usable RS256 verification key: a 2048–8192-bit modulus and an odd public exponent
/// of at least 3, as ring will accept them.
#[derive(Clone, PartialEq, Eq)]
pub struct RsaKey {
    kid: Option<Arc<str>>,
    /// Big-endian, without leading zero bytes.
    modulus: Box<[u8]>,
    exponent: Box<[u8]>,
    thumbprint: Arc<str>,
}

impl std::fmt::Debug for RsaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RsaKey")
            .field("kid", &self.kid)
            .field("bits", &self.modulus_bits())
            .field("thumbprint", &self.thumbprint)
            .finish()
    }
}

impl RsaKey {
    /// Reads one JWK: `kty` `RSA`; `use`, when present, `sig`; `alg`, when present,
    /// `RS256`; `n` of 2048 to 8192 bits; `e` odd and at least 3; no private members.
    pub fn from_jwk(jwk: &Value) -> Result<Self, JwkError> {
        let jwk = jwk.as_object().ok_or(JwkError::NotAnObject)?;
        if jwk.get("kty").and_then(Value::as_str) != Some("RSA") {
            return Err(JwkError::WrongKeyType);
        }
        if let Some(key_use) = jwk.get("use")
            && key_use.as_str() != Some("sig")
        {
            return Err(JwkError::NotForSignatures);
        }
        if let Some(alg) = jwk.get("alg")
            && alg.as_str() != Some("RS256")
        {
            return Err(JwkError::WrongAlgorithm);
        }
        if ["d", "p", "q", "dp", "dq", "qi"]
            .iter()
            .any(|member| jwk.contains_key(*member))
        {
            return Err(JwkError::PrivateKeyMaterial);
        }
        let kid = match jwk.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.clone()),
            Some(_) => return Err(JwkError::KidNotString),
        };
        let member = |name: &'static str| -> Result<Vec<u8>, JwkError> {
            let text = jwk
                .get(name)
                .and_then(Value::as_str)
                .ok_or(JwkError::MissingMember(name))?;
            base64url::decode(text.as_bytes()).ok_or(JwkError::NotBase64(name))
        };
        let modulus = member("n")?;
        let exponent = member("e")?;
        Self::from_components(kid, &modulus, &exponent)
    }

    /// Checks a modulus and exponent (big-endian; leading zero bytes are dropped).
    pub fn from_components(
        kid: Option<String>,
        modulus: &[u8],
        exponent: &[u8],
    ) -> Result<Self, JwkError> {
        let modulus = strip_leading_zeros(modulus);
        let exponent = strip_leading_zeros(exponent);
        let bits = bit_length(modulus);
        if bits < MIN_MODULUS_BITS {
            return Err(JwkError::ModulusTooSmall { bits });
        }
        if bits > MAX_MODULUS_BITS {
            return Err(JwkError::ModulusTooLarge { bits });
        }
        if modulus.last().is_some_and(|byte| byte & 1 == 0) {
            return Err(JwkError::EvenModulus);
        }
        // ring takes exponents from 3 to 2^33 - 1, odd.
        let odd = exponent.last().is_some_and(|byte| byte & 1 == 1);
        if !odd || exponent.len() > 5 || exponent == [1] || bit_length(exponent) > 33 {
            return Err(JwkError::BadExponent);
        }
        let thumbprint = thumbprint_of(modulus, exponent).into();
        Ok(RsaKey {
            kid: kid.map(Arc::from),
            modulus: modulus.into(),
            exponent: exponent.into(),
            thumbprint,
        })
    }

    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    pub fn modulus_bits(&self) -> usize {
        bit_length(&self.modulus)
    }

    /// The RFC 7638 JWK thumbprint of the key material.
    pub fn thumbprint(&self) -> &str {
        &self.thumbprint
    }

    pub fn shared_ids(&self) -> (Option<Arc<str>>, Arc<str>) {
        (self.kid.clone(), Arc::clone(&self.thumbprint))
    }

    /// RSASSA-PKCS1-v1_5 with SHA-256, by ring (which also checks that the signature is
    /// exactly as long as the modulus).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        RsaPublicKeyComponents {
            n: &self.modulus[..],
            e: &self.exponent[..],
        }
        .verify(&RSA_PKCS1_2048_8192_SHA256, message, signature)
        .is_ok()
    }
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

/// Bits of a big-endian number without leading zero bytes.
fn bit_length(bytes: &[u8]) -> usize {
    match bytes.first() {
        None => 0,
        Some(&first) => (bytes.len() - 1) * 8 + (8 - first.leading_zeros() as usize),
    }
}

fn thumbprint_of(modulus: &[u8], exponent: &[u8]) -> String {
    // RFC 7638 §3.2: e, kty, n in lexicographic order, no whitespace.
    let canonical = format!(
        r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
        base64url::encode(exponent),
        base64url::encode(modulus)
    );
    base64url::encode(digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn modulus(bits: usize) -> Vec<u8> {
        let mut n = vec![0xffu8; bits.div_ceil(8)];
        if !bits.is_multiple_of(8) {
            n[0] = (1u8 << (bits % 8)) - 1;
        }
        n
    }

    #[test]
    fn modulus_size_bounds_are_exact() {
        let e = [1, 0, 1];
        assert_eq!(
            RsaKey::from_components(None, &modulus(2047), &e).unwrap_err(),
            JwkError::ModulusTooSmall { bits: 2047 }
        );
        assert_eq!(
            RsaKey::from_components(None, &modulus(1024), &e).unwrap_err(),
            JwkError::ModulusTooSmall { bits: 1024 }
        );
        assert!(RsaKey::from_components(None, &modulus(2048), &e).is_ok());
        assert!(RsaKey::from_components(None, &modulus(8192), &e).is_ok());
        assert_eq!(
            RsaKey::from_components(None, &modulus(8193), &e).unwrap_err(),
            JwkError::ModulusTooLarge { bits: 8193 }
        );
        let mut padded = vec![0, 0];
        padded.extend(modulus(2048));
        assert_eq!(
            RsaKey::from_components(None, &padded, &e)
                .unwrap()
                .modulus_bits(),
            2048
        );
    }

    #[test]
    fn exponents_ring_would_refuse_are_refused_at_load() {
        let n = modulus(2048);
        for e in [&[][..], &[1], &[2], &[1, 0, 0], &[1, 0, 0, 0, 0, 1]] {
            assert_eq!(
                RsaKey::from_components(None, &n, e).unwrap_err(),
                JwkError::BadExponent,
                "{e:?}"
            );
        }
        assert!(RsaKey::from_components(None, &n, &[3]).is_ok());
    }

    #[test]
    fn an_even_modulus_is_refused() {
        let mut n = modulus(2048);
        *n.last_mut().unwrap() = 0xfe;
        assert_eq!(
            RsaKey::from_components(None, &n, &[1, 0, 1]).unwrap_err(),
            JwkError::EvenModulus
        );
    }
}
