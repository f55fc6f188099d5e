//! Base64url without padding, and nothing else (RFC 7515 §2): the decoder refuses `=`,
//! the standard alphabet's `+` and `/`, whitespace, and non-zero trailing bits, so every
//! byte string has exactly one accepted encoding.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

pub fn decode(text: &[u8]) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

pub fn encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for len in 0..70 {
            let bytes: Vec<u8> = (0..len as u8).map(|b| b.wrapping_mul(37)).collect();
            assert_eq!(decode(encode(&bytes).as_bytes()), Some(bytes));
        }
    }

    #[test]
    fn refuses_padding_standard_alphabet_whitespace_and_trailing_bits() {
        assert_eq!(decode(b"YQ"), Some(b"a".to_vec()));
        assert_eq!(decode(b"YQ=="), None);
        assert_eq!(decode(b"+/8"), None);
        assert_eq!(decode(b"-_8"), Some(vec![0xfb, 0xff]));
        assert_eq!(decode(b"Y Q"), None);
        assert_eq!(decode(b"YR"), None, "non-zero trailing bits");
        assert_eq!(decode(b"Y"), None, "impossible length");
    }
}
