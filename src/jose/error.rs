//! Why a token or a key was refused. The messages are the human sentences the proxy puts
//! in `error_description`; none of them ever contains the token.

use std::fmt;

use super::json::JsonError;
use super::kind::TokenKind;

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
    #[error(
        "its signature does not have the length of its algorithm (64 bytes for EdDSA, 256 to 1024 for RS256)"
    )]
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

/// Every reason a token is refused. Its `Display` names it "the token"; [`Worded`]
/// names it by its flow ("The app token has expired."), which is what the proxy shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoseError {
    Malformed(Malformed),
    /// `alg` is none of the algorithms accepted (`none`, `HS256`, `ES256`, ...).
    UnsupportedAlgorithm,
    /// A well-formed token of the flow that is not accepted here (an EdDSA session token
    /// where only app tokens are, or the reverse): its `alg` says which kind it is.
    OtherKind(TokenKind),
    MissingKid,
    CriticalHeader,
    UnknownKey {
        kid: String,
    },
    BadSignature,
    NoKeyMatches {
        tried: usize,
    },
    NoKeys,
    Expired,
    NotYetValid,
    IssuedInFuture,
    MissingClaim(&'static str),
    InvalidClaim {
        claim: &'static str,
        reason: &'static str,
    },
    WrongIssuer,
    WrongAudience,
    WrongAppId,
}

impl std::error::Error for JoseError {}

impl fmt::Display for JoseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Worded {
            error: self,
            token: "token",
            algorithms: "EdDSA for session tokens, RS256 for app tokens",
        }
        .fmt(f)
    }
}

/// A refusal in words, naming the token as the flow it was checked in calls it.
pub struct Worded<'a> {
    pub error: &'a JoseError,
    /// "app token", "session token", or "token" where both are accepted.
    pub token: &'a str,
    /// The algorithms accepted, for a token signed with another: "RS256", ...
    pub algorithms: &'a str,
}

impl fmt::Display for Worded<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let token = self.token;
        match self.error {
            JoseError::Malformed(why) => write!(f, "The {token} is malformed: {why}."),
            JoseError::UnsupportedAlgorithm => write!(
                f,
                "The {token} is not signed with an algorithm accepted here ({}).",
                self.algorithms
            ),
            JoseError::OtherKind(kind) => write!(
                f,
                "This is {} {} ({}), which is not accepted here.",
                kind.article(),
                kind.name(),
                kind.getter()
            ),
            JoseError::MissingKid => write!(
                f,
                "The {token} names no key (kid), which every app token must."
            ),
            JoseError::CriticalHeader => write!(
                f,
                "The {token} has critical header parameters (crit), which are not supported."
            ),
            JoseError::UnknownKey { kid } => write!(
                f,
                "The {token} was signed by an unknown key{}.",
                DisplayKid(kid)
            ),
            JoseError::BadSignature => {
                write!(f, "The {token}'s signature does not match its key.")
            }
            JoseError::NoKeyMatches { tried } => write!(
                f,
                "The {token}'s signature does not match any of the {tried} known keys."
            ),
            JoseError::NoKeys => write!(f, "No signing keys are available to verify the {token}."),
            JoseError::Expired => write!(f, "The {token} has expired."),
            JoseError::NotYetValid => {
                write!(f, "The {token} is not valid yet (nbf is in the future).")
            }
            JoseError::IssuedInFuture => write!(f, "The {token} was issued in the future (iat)."),
            JoseError::MissingClaim(claim) => write!(f, "The {token} has no {claim} claim."),
            JoseError::InvalidClaim { claim, reason } => {
                write!(f, "The {token}'s {claim} claim {reason}.")
            }
            JoseError::WrongIssuer => {
                write!(f, "The {token} was issued by an unexpected issuer.")
            }
            JoseError::WrongAudience => write!(f, "The {token} is meant for another audience."),
            JoseError::WrongAppId => write!(
                f,
                "The {token} was issued for another app (urn:jtl:app_id)."
            ),
        }
    }
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

/// Why one JWK (one key of a key set, or a key built from its parts) was not accepted:
/// that key is skipped ([`SkippedKey`](super::SkippedKey)), the others of its set kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwkError {
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

/// Why a JWK set document could not be parsed at all (not one of its keys: that is a
/// [`JwkError`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksParseError {
    #[error("the key set is not a strict JSON object ({0:?})")]
    Json(JsonError),
    #[error("the key set has no \"keys\" array")]
    NoKeysArray,
}

impl TokenKind {
    /// Why a token of this kind was refused, in the words of its `401` ("The app token
    /// has expired.").
    pub fn refusal(self, error: &JoseError) -> String {
        Worded {
            error,
            token: self.name(),
            algorithms: self.algorithm().name(),
        }
        .to_string()
    }
}
