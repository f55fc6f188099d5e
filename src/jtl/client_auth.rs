//! HTTP Basic client authentication at a token endpoint as RFC 6749 §2.3.1 defines it
//! (SPEC §6): the client id and the secret are each `application/x-www-form-urlencoded`
//! before they are joined with `:` and base64-encoded. Zitadel (JTL's identity provider)
//! requires it. For an alphanumeric secret nothing changes; a secret holding `+`, `/`, `%`,
//! `:` or `=` only works encoded (a raw `+` would be read as a space, a raw `%` as the start
//! of an escape).
//!
//! One place builds these credentials (the access-token manager, and through it `check
//! --online`) and one place reads them (the emulator's token endpoints), so the two cannot
//! drift apart.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// `base64(form_urlencode(client_id) ":" form_urlencode(secret))`: the credentials of an
/// `Authorization: Basic` header, without the scheme.
pub fn basic_credentials(client_id: &str, secret: &str) -> String {
    let mut joined = form_urlencode(client_id);
    joined.push(':');
    joined.push_str(&form_urlencode(secret));
    STANDARD.encode(joined)
}

/// The whole `Authorization` value: `Basic <credentials>`.
pub fn basic_authorization(client_id: &str, secret: &str) -> String {
    format!("Basic {}", basic_credentials(client_id, secret))
}

/// The client id and the secret of an `Authorization` value, read as RFC 6749 §2.3.1 says:
/// scheme `Basic` (any case), base64, split at the first `:`, each half
/// form-urldecoded (`+` is a space, `%XX` a byte, the result UTF-8). `None` for anything
/// else.
pub fn decode_basic_authorization(value: &str) -> Option<(String, String)> {
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((form_urldecode(id)?, form_urldecode(secret)?))
}

/// `application/x-www-form-urlencoded` serialisation of one value: alphanumerics and
/// `*-._` as they are, a space as `+`, every other byte as `%XX`.
fn form_urlencode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// The reverse of [`form_urlencode`]; `None` when the bytes are not UTF-8.
fn form_urldecode(value: &str) -> Option<String> {
    let spaced = value.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .ok()
        .map(|decoded| decoded.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(credentials: &str) -> String {
        String::from_utf8(STANDARD.decode(credentials).unwrap()).unwrap()
    }

    #[test]
    fn an_alphanumeric_secret_is_joined_as_it_is() {
        assert_eq!(
            basic_credentials("client", "s3cret"),
            STANDARD.encode("client:s3cret")
        );
        assert_eq!(
            basic_authorization("emulated-client", "emulated-secret"),
            format!(
                "Basic {}",
                STANDARD.encode("emulated-client:emulated-secret")
            )
        );
    }

    #[test]
    fn the_id_and_the_secret_are_each_form_urlencoded_before_the_join() {
        assert_eq!(
            joined(&basic_credentials("id:1 x", "a+b/c%d:e=f")),
            "id%3A1+x:a%2Bb%2Fc%25d%3Ae%3Df"
        );
        assert_eq!(joined(&basic_credentials("ä", "&?#")), "%C3%A4:%26%3F%23");
    }

    #[test]
    fn decoding_reverses_encoding() {
        for (id, secret) in [
            ("client", "s3cret"),
            ("id:1 x", "a+b/c%d:e=f"),
            ("ä", "&?# ~!'()*"),
            ("", ""),
        ] {
            assert_eq!(
                decode_basic_authorization(&basic_authorization(id, secret)),
                Some((id.to_owned(), secret.to_owned())),
                "{id:?} {secret:?}"
            );
        }
    }

    #[test]
    fn decoding_reads_plus_as_a_space_and_splits_at_the_first_colon() {
        let raw = format!("Basic {}", STANDARD.encode("id:a+b/c%d:e=f"));
        // An un-encoded secret does not come back as it was sent.
        assert_eq!(
            decode_basic_authorization(&raw),
            Some(("id".to_owned(), "a b/c%d:e=f".to_owned()))
        );
        let lower = format!("basic {}", STANDARD.encode("a%3Ab:c"));
        assert_eq!(
            decode_basic_authorization(&lower),
            Some(("a:b".to_owned(), "c".to_owned()))
        );
    }

    #[test]
    fn anything_else_is_not_basic_credentials() {
        for value in [
            "Bearer abc".to_owned(),
            "Basic".to_owned(),
            "Basic !!!".to_owned(),
            format!("Basic {}", STANDARD.encode("no-colon")),
            format!("Basic {}", STANDARD.encode([0xff, b':', b'x'])),
            format!("Basic {}", STANDARD.encode("id:%ff")),
        ] {
            assert_eq!(decode_basic_authorization(&value), None, "{value}");
        }
    }
}
