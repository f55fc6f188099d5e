//! Strict compact-JWS parsing (RFC 7515 §7.1), the same for both flows; only the one
//! accepted `alg` (EdDSA or RS256) and the signature length differ.

use serde_json::{Map, Value};

use super::base64url;
use super::error::{JoseError, Malformed, Part};
use super::json;
use super::jwk::{JwkSet, VerifyingKey};
use super::kind::{Algorithm, TokenKind};

/// Keys tried for a token without a header `kid`, so a token cannot make the verifier
/// run an unbounded number of signature checks.
pub const MAX_KEYS_TRIED: usize = 8;

/// A token whose structure has been checked but whose signature has not.
#[derive(Debug)]
pub struct CompactJws<'t> {
    signing_input: &'t [u8],
    algorithm: Algorithm,
    kid: Option<String>,
    payload: Map<String, Value>,
    /// The decoded header, payload and signature, one after the other (one allocation).
    decoded: Vec<u8>,
    /// Where the signature starts in `decoded`.
    signature_at: usize,
}

impl<'t> CompactJws<'t> {
    /// Parses an EdDSA session token; see [`CompactJws::parse_as`].
    pub fn parse(token: &'t str, max_bytes: usize) -> Result<Self, JoseError> {
        Self::parse_as(token, max_bytes, Algorithm::EdDSA)
    }

    /// Parses `token` for the one flow whose algorithm is `algorithm`; see
    /// [`CompactJws::parse_accepting`].
    pub fn parse_as(
        token: &'t str,
        max_bytes: usize,
        algorithm: Algorithm,
    ) -> Result<Self, JoseError> {
        Self::parse_accepting(token, max_bytes, &[algorithm])
    }

    /// Parses `token`: at most `max_bytes`, three segments of unpadded base64url, a header
    /// that is a strict JSON object with `alg` exactly one of `accepted` and no `crit`, a
    /// payload that is a strict JSON object, and a signature of the algorithm's length.
    /// A token whose `alg` is that of JTL's other token kind is refused as
    /// [`JoseError::OtherKind`], any other `alg` as unsupported. `jku`, `x5u`, `jwk` and
    /// `x5c` are ignored: keys only ever come from the configured key set.
    pub fn parse_accepting(
        token: &'t str,
        max_bytes: usize,
        accepted: &[Algorithm],
    ) -> Result<Self, JoseError> {
        let bytes = token.as_bytes();
        if bytes.is_empty() {
            return Err(Malformed::Empty.into());
        }
        if bytes.len() > max_bytes {
            return Err(Malformed::TooLarge { max: max_bytes }.into());
        }
        // The two dots are found with memchr and the three segments decoded right away,
        // into one buffer: the decoder refuses every byte outside the alphabet ('.' and
        // '=' included), so a token whose segments all decode has exactly three of them
        // and nothing else. Only a token that fails there is scanned byte by byte, so
        // that it is refused for the first of its problems, as ever.
        let fewer_than_two_dots = || first_problem(bytes).unwrap_or(Malformed::SegmentCount);
        let Some(first_dot) = token.find('.') else {
            return Err(fewer_than_two_dots().into());
        };
        let Some(second_dot) = token[first_dot + 1..]
            .find('.')
            .map(|at| first_dot + 1 + at)
        else {
            return Err(fewer_than_two_dots().into());
        };
        let segments = [
            &bytes[..first_dot],
            &bytes[first_dot + 1..second_dot],
            &bytes[second_dot + 1..],
        ];
        let mut decoded = Vec::with_capacity(
            segments
                .iter()
                .map(|segment| base64url::decoded_len(segment.len()).unwrap_or(0))
                .sum(),
        );
        // Where each segment ends in `decoded`, for those that decoded: the first that
        // does not is refused at its turn below, the ones after it are not needed.
        let mut ends = [None; 3];
        for (end, segment) in ends.iter_mut().zip(segments) {
            if !base64url::decode_into(segment, &mut decoded) {
                break;
            }
            *end = Some(decoded.len());
        }
        if ends[2].is_none()
            && let Some(problem) = first_problem(bytes)
        {
            return Err(problem.into());
        }

        let header_end = ends[0].ok_or(Malformed::Base64(Part::Header))?;
        let header = json::parse_header(&decoded[..header_end], &Algorithm::NAMES)
            .map_err(|error| Malformed::from_json(Part::Header, error))?;
        let algorithm = match header
            .alg
            .and_then(|index| Algorithm::ALL.get(index).copied())
        {
            Some(algorithm) if accepted.contains(&algorithm) => algorithm,
            Some(other) => return Err(JoseError::OtherKind(TokenKind::of(other))),
            None => return Err(JoseError::UnsupportedAlgorithm),
        };
        if header.has_crit {
            return Err(JoseError::CriticalHeader);
        }
        let kid = match header.kid {
            None => None,
            Some(Value::String(kid)) => Some(kid),
            Some(_) => return Err(Malformed::KidNotString.into()),
        };

        let payload_end = ends[1].ok_or(Malformed::Base64(Part::Payload))?;
        let payload = json::parse_object(&decoded[header_end..payload_end])
            .map_err(|error| Malformed::from_json(Part::Payload, error))?;

        if ends[2].is_none() {
            return Err(Malformed::Base64(Part::Signature).into());
        }
        if !algorithm.accepts_signature_length(decoded.len() - payload_end) {
            return Err(Malformed::SignatureLength.into());
        }

        Ok(CompactJws {
            signing_input: &bytes[..second_dot],
            algorithm,
            kid,
            payload,
            decoded,
            signature_at: payload_end,
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
        &self.decoded[self.signature_at..]
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub fn is_signed_by(&self, key: &VerifyingKey) -> bool {
        key.verify(self.signing_input, self.signature())
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

/// The first problem of a token's characters, in order: a third dot, `=`, or a byte
/// outside the alphabet; then fewer than two dots. `None` for three segments of the
/// alphabet (which may still not decode).
fn first_problem(bytes: &[u8]) -> Option<Malformed> {
    let mut dots = 0;
    for &byte in bytes {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => {}
            b'.' => {
                if dots == 2 {
                    return Some(Malformed::SegmentCount);
                }
                dots += 1;
            }
            b'=' => return Some(Malformed::Padding),
            _ => return Some(Malformed::InvalidCharacter),
        }
    }
    (dots != 2).then_some(Malformed::SegmentCount)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(header: &str, payload: &str, signature: &str) -> String {
        format!(
            "{}.{}.{signature}",
            base64url::encode(header.as_bytes()),
            base64url::encode(payload.as_bytes())
        )
    }

    fn refusal(token: &str) -> JoseError {
        CompactJws::parse(token, 8192).unwrap_err()
    }

    /// 64 bytes of signature, in the 86 characters they take.
    const SIGNATURE: &str =
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

    #[test]
    fn a_well_formed_token_parses() {
        let token = token(r#"{"alg":"EdDSA","kid":"k"}"#, r#"{"a":1}"#, SIGNATURE);
        let jws = CompactJws::parse(&token, 8192).unwrap();
        assert_eq!(jws.kid(), Some("k"));
        assert_eq!(jws.payload()["a"], 1);
        assert_eq!(jws.signature(), [0u8; 64]);
    }

    /// A character problem anywhere is the refusal, before what the header or payload
    /// would be refused for, and the parts are then checked in order: header, payload,
    /// signature.
    #[test]
    fn the_first_problem_is_the_refusal() {
        let wrong_alg = r#"{"alg":"none"}"#;
        let good = r#"{"alg":"EdDSA"}"#;
        let bad_sig = format!("{}+", &SIGNATURE[1..]);
        assert_eq!(
            refusal(&token(wrong_alg, "{}", &bad_sig)),
            Malformed::InvalidCharacter.into()
        );
        assert_eq!(
            refusal(&format!("{}=", token(wrong_alg, "{", SIGNATURE))),
            Malformed::Padding.into()
        );
        assert_eq!(
            refusal(&format!("{}.x.=", token(wrong_alg, "{", SIGNATURE))),
            Malformed::SegmentCount.into()
        );
        assert_eq!(
            refusal(&format!("{}.x+", token(wrong_alg, "{", SIGNATURE))),
            Malformed::SegmentCount.into()
        );
        assert_eq!(refusal("e30=e30"), Malformed::Padding.into());
        assert_eq!(refusal("e30+"), Malformed::InvalidCharacter.into());
        assert_eq!(refusal("e30.e30"), Malformed::SegmentCount.into());
        // Spare bits set in the signature's last character ('B' for 'A'): not canonical,
        // but only found once header and payload have passed.
        let spare_bits = format!("{}B", &SIGNATURE[..85]);
        assert_eq!(
            refusal(&token(wrong_alg, "{}", &spare_bits)),
            JoseError::UnsupportedAlgorithm
        );
        assert_eq!(
            refusal(&token(good, "{", &spare_bits)),
            Malformed::Json(Part::Payload).into()
        );
        assert_eq!(
            refusal(&token(good, "{}", &spare_bits)),
            Malformed::Base64(Part::Signature).into()
        );
        // A header that does not decode is refused before anything else is looked at.
        let later_problems = token(good, "{", &spare_bits);
        let (_, rest) = later_problems.split_once('.').unwrap();
        assert_eq!(
            refusal(&format!("e31.{rest}")),
            Malformed::Base64(Part::Header).into()
        );
        assert_eq!(
            refusal(&token(good, "{}", "AAAA")),
            Malformed::SignatureLength.into()
        );
    }
}
