//! Why a session token or a key was refused. The messages are the human sentences the
//! proxy puts in `error_description`; none of them ever contains the token.

use std::fmt;

use super::json::JsonError;

/// The part of a compact JWS a problem was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Header,
    Payload,
    Signature,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Part::Header => "header",
            Part::Payload => "payload",
            Part::Signature => "signature",
        })
    }
}

/// The ways a token can fail to be a well-formed compact JWS.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("it is empty")]
    Empty,
    #[error("it is longer than {max} bytes")]
    TooLarge { max: usize },
    #[error("it uses base64 padding ('='), which compact JWS does not allow")]
    Padding,
    #[error("it contains a character that is not unpadded base64url")]
    InvalidCharacter,
    #[error("it does not have exactly three dot-separated parts")]
    SegmentCount,
    #[error("its {0} is not canonical base64url")]
    Base64(Part),
    #[error("its {0} is not valid JSON")]
    Json(Part),
    #[error("its {0} is not a JSON object")]
    NotAnObject(Part),
    #[error("its {0} repeats a JSON key")]
    DuplicateKey(Part),
    #[error("its {0} is nested too deeply")]
    TooDeep(Part),
    #[error("its header kid is not a string")]
    KidNotString,
    #[error("its signature does not have the length of its algorithm (64 bytes for EdDSA, 256 to 1024 for RS256)")]
    SignatureLength,
}

impl Malformed {
    pub(crate) fn from_json(part: Part, error: JsonError) -> Self {
        match error {
            JsonError::Syntax => Malformed::Json(part),
            JsonError::NotAnObject => Malformed::NotAnObject(part),
            JsonError::DuplicateKey => Malformed::DuplicateKey(part),
            JsonError::TooDeep => Malformed::TooDeep(part),
        }
    }
}

/// Every reason a session token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoseError {
    #[error("The session token is malformed: {0}.")]
    Malformed(Malformed),
    #[error("The session token is not signed with the one algorithm accepted (EdDSA; RS256 for app tokens).")]
    UnsupportedAlgorithm,
    #[error("The app token names no key (kid), which every app token must.")]
    MissingKid,
    #[error("The session token has critical header parameters (crit), which are not supported.")]
    CriticalHeader,
    #[error("The session token was signed by an unknown key{}.", DisplayKid(kid))]
    UnknownKey { kid: String },
    #[error("The session token's signature does not match its key.")]
    BadSignature,
    #[error("The session token's signature does not match any of the {tried} known keys.")]
    NoKeyMatches { tried: usize },
    #[error("No signing keys are available to verify the session token.")]
    NoKeys,
    #[error("The session token has expired.")]
    Expired,
    #[error("The session token is not valid yet (nbf is in the future).")]
    NotYetValid,
    #[error("The session token was issued in the future (iat).")]
    IssuedInFuture,
    #[error("The session token has no {0} claim.")]
    MissingClaim(&'static str),
    #[error("The session token's {claim} claim {reason}.")]
    InvalidClaim {
        claim: &'static str,
        reason: &'static str,
    },
    #[error("The session token was issued by an unexpected issuer.")]
    WrongIssuer,
    #[error("The session token is meant for another audience.")]
    WrongAudience,
    #[error("The app token was issued for another app (urn:jtl:app_id).")]
    WrongAppId,
}

impl From<Malformed> for JoseError {
    fn from(malformed: Malformed) -> Self {
        JoseError::Malformed(malformed)
    }
}

/// Shows a `kid` only when it is short, printable ASCII and harmless inside a quoted
/// header value: the `kid` comes from the token, so it is attacker-controlled.
struct DisplayKid<'a>(&'a str);

impl fmt::Display for DisplayKid<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = !self.0.is_empty()
            && self.0.len() <= 64
            && self
                .0
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\' && b != b'`');
        if shown {
            write!(f, " `{}`", self.0)
        } else {
            Ok(())
        }
    }
}

/// Why a JWK was not accepted into the key set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the key is not a JSON object")]
    NotAnObject,
    #[error("kty is not the flow's key type (\"OKP\" for session tokens, \"RSA\" for app tokens)")]
    WrongKeyType,
    #[error("crv is not \"Ed25519\"")]
    WrongCurve,
    #[error("use is not \"sig\"")]
    NotForSignatures,
    #[error(
        "alg is not the flow's algorithm (\"EdDSA\" for session tokens, \"RS256\" for app tokens)"
    )]
    WrongAlgorithm,
    #[error("kid is not a string")]
    KidNotString,
    #[error("the key carries private key material (d)")]
    PrivateKeyMaterial,
    #[error("x is missing or not a string")]
    MissingX,
    #[error("x is not canonical unpadded base64url")]
    XNotBase64,
    #[error("x is {0} bytes long, not 32")]
    XLength(usize),
    #[error("x is not a point on Ed25519")]
    NotOnCurve,
    #[error("x is not the canonical encoding of its point")]
    NonCanonical,
    #[error("x is a small-order point, with which forged signatures verify")]
    SmallOrder,
    #[error("x is a mixed-order point (it has a torsion component)")]
    MixedOrder,
    #[error("another key earlier in the set has the same kid")]
    DuplicateKid,
    #[error("{0} is missing or not a string")]
    MissingMember(&'static str),
    #[error("{0} is not canonical unpadded base64url")]
    NotBase64(&'static str),
    #[error("the RSA modulus has {bits} bits, fewer than the 2048 required")]
    ModulusTooSmall { bits: usize },
    #[error("the RSA modulus has {bits} bits, more than the 8192 supported")]
    ModulusTooLarge { bits: usize },
    #[error("the RSA modulus is even")]
    EvenModulus,
    #[error("the RSA exponent e is not an odd number from 3 to 2^33 - 1")]
    BadExponent,
}

/// Why a JWK set document could not be read at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    #[error("the key set is not a strict JSON object ({0:?})")]
    Json(JsonError),
    #[error("the key set has no \"keys\" array")]
    NoKeysArray,
}
