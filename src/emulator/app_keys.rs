//! The keys the emulated Zitadel publishes and signs with: the fixed test-only RSA keys
//! embedded from `keys/` (ring cannot generate RSA keys; the 1024-bit one only published,
//! as ring will not sign with it), and each published key's material.

use std::sync::OnceLock;

use ring::signature::{RsaKeyPair, RsaPublicKeyComponents};
use serde_json::{Value, json};

use super::EmulatorError;
use crate::jose::base64url_encode;

const RSA2048: [&[u8]; 3] = [
    include_bytes!("keys/rsa2048-1.pk8"),
    include_bytes!("keys/rsa2048-2.pk8"),
    include_bytes!("keys/rsa2048-3.pk8"),
];
const RSA1024: &[u8] = include_bytes!("keys/rsa1024.pk8");
const RSA4096: &[u8] = include_bytes!("keys/rsa4096.pk8");

/// One fixed RSA key: a ring key pair when ring accepts it for signing (2048 to 4096
/// bits), and its public half as base64url `n` / `e`.
pub(super) struct FixedRsa {
    pub(super) pair: Option<RsaKeyPair>,
    n: String,
    e: String,
}

impl FixedRsa {
    pub(super) fn signing(pkcs8: &[u8], name: &str) -> Result<FixedRsa, String> {
        let pair = RsaKeyPair::from_pkcs8(pkcs8).map_err(|e| format!("{name}: {e}"))?;
        let public = RsaPublicKeyComponents::<Vec<u8>>::from(pair.public());
        Ok(FixedRsa {
            n: base64url_encode(&public.n),
            e: base64url_encode(&public.e),
            pair: Some(pair),
        })
    }

    /// A key ring refuses (1024 bits): only its public half, read from the DER.
    pub(super) fn public_only(pkcs8: &[u8], name: &str) -> Result<FixedRsa, String> {
        let (n, e) = pkcs8_rsa_public(pkcs8).ok_or_else(|| format!("{name}: not PKCS#8 RSA"))?;
        Ok(FixedRsa {
            pair: None,
            n: base64url_encode(n),
            e: base64url_encode(e),
        })
    }

    pub(super) fn jwk(&self, kid: &str) -> Value {
        json!({"use": "sig", "kty": "RSA", "kid": kid, "alg": "RS256", "n": self.n, "e": self.e})
    }
}

pub(super) struct FixedKeys {
    pub(super) rsa2048: Vec<FixedRsa>,
    pub(super) rsa1024: FixedRsa,
    pub(super) rsa4096: FixedRsa,
}

/// The embedded keys, parsed once per process.
pub(super) fn fixed_keys() -> Result<&'static FixedKeys, EmulatorError> {
    static KEYS: OnceLock<Result<FixedKeys, String>> = OnceLock::new();
    KEYS.get_or_init(|| {
        Ok(FixedKeys {
            rsa2048: RSA2048
                .iter()
                .enumerate()
                .map(|(i, der)| FixedRsa::signing(der, &format!("rsa2048-{}.pk8", i + 1)))
                .collect::<Result<_, _>>()?,
            rsa1024: FixedRsa::public_only(RSA1024, "rsa1024.pk8")?,
            rsa4096: FixedRsa::signing(RSA4096, "rsa4096.pk8")?,
        })
    })
    .as_ref()
    .map_err(|reason| EmulatorError::Keys(reason.clone()))
}

/// `n` and `e` (big-endian, without leading zeros) of a PKCS#8 `PrivateKeyInfo` holding
/// an `RSAPrivateKey` (RFC 5958, RFC 8017 A.1.2): just enough DER for the embedded
/// 1024-bit key, which ring will not load.
fn pkcs8_rsa_public(der: &[u8]) -> Option<(&[u8], &[u8])> {
    /// One TLV: (tag, contents, rest).
    fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = input.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let count = usize::from(first & 0x7f);
            if count == 0 || count > 4 || rest.len() < count {
                return None;
            }
            let (bytes, rest) = rest.split_at(count);
            (
                bytes
                    .iter()
                    .fold(0usize, |acc, &b| (acc << 8) | usize::from(b)),
                rest,
            )
        };
        if rest.len() < len {
            return None;
        }
        let (contents, rest) = rest.split_at(len);
        Some((tag, contents, rest))
    }
    fn expect(input: &[u8], want: u8) -> Option<(&[u8], &[u8])> {
        let (tag, contents, rest) = tlv(input)?;
        (tag == want).then_some((contents, rest))
    }
    fn unsigned(integer: &[u8]) -> &[u8] {
        let start = integer
            .iter()
            .position(|&b| b != 0)
            .unwrap_or(integer.len());
        &integer[start..]
    }
    const SEQUENCE: u8 = 0x30;
    const INTEGER: u8 = 0x02;
    const OCTET_STRING: u8 = 0x04;
    let (info, _) = expect(der, SEQUENCE)?;
    let (_version, rest) = expect(info, INTEGER)?;
    let (_algorithm, rest) = expect(rest, SEQUENCE)?;
    let (private_key, _) = expect(rest, OCTET_STRING)?;
    let (rsa, _) = expect(private_key, SEQUENCE)?;
    let (_version, rest) = expect(rsa, INTEGER)?;
    let (n, rest) = expect(rest, INTEGER)?;
    let (e, _) = expect(rest, INTEGER)?;
    Some((unsigned(n), unsigned(e)))
}

pub(super) enum Material {
    /// A fixed RSA key (signs when ring accepts it).
    Rsa(&'static FixedRsa),
    /// Published as it is (the EC and OKP keys, or any JWK a test publishes); never signs.
    Jwk(Value),
}

pub(super) struct AppKey {
    pub(super) kid: String,
    pub(super) material: Material,
    pub(super) published: bool,
}

impl AppKey {
    pub(super) fn jwk(&self) -> Value {
        match &self.material {
            Material::Rsa(rsa) => rsa.jwk(&self.kid),
            Material::Jwk(jwk) => jwk.clone(),
        }
    }

    pub(super) fn signer(&self) -> Option<&'static RsaKeyPair> {
        match self.material {
            Material::Rsa(rsa) => rsa.pair.as_ref(),
            Material::Jwk(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hand_parser_reads_the_same_public_half_as_ring() {
        for (der, name) in RSA2048
            .iter()
            .zip(["rsa2048-1", "rsa2048-2", "rsa2048-3"])
            .chain([(&RSA4096, "rsa4096")])
        {
            let ring = FixedRsa::signing(der, name).unwrap();
            let hand = FixedRsa::public_only(der, name).unwrap();
            assert_eq!((&ring.n, &ring.e), (&hand.n, &hand.e), "{name}");
            assert_eq!(ring.e, "AQAB");
        }
        let (n, e) = pkcs8_rsa_public(RSA1024).unwrap();
        assert_eq!((n.len() * 8, e), (1024, &[1u8, 0, 1][..]));
        assert!(
            RsaKeyPair::from_pkcs8(RSA1024).is_err(),
            "ring refuses 1024 bits"
        );
    }

    #[test]
    fn the_hand_parser_refuses_what_it_does_not_understand() {
        assert!(pkcs8_rsa_public(b"").is_none());
        assert!(pkcs8_rsa_public(&RSA1024[..40]).is_none());
        assert!(pkcs8_rsa_public(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_none());
    }
}
