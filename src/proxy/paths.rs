//! Public-path matching (SPEC §4 step 3): the path only, and only paths that every
//! backend reads the same way.

use crate::config::PublicPath;

/// True when `path` (the raw request path, as received) matches a public pattern.
pub fn is_public(path: &str, patterns: &[PublicPath]) -> bool {
    !patterns.is_empty()
        && is_unambiguous(path)
        && patterns.iter().any(|pattern| match pattern {
            PublicPath::Exact(exact) => path == exact,
            PublicPath::Prefix(prefix) => path.starts_with(prefix.as_str()),
        })
}

/// A path a backend could read as another path never matches: dot segments (raw or
/// percent-encoded, also with a `;` parameter, raw or `%3B`, as servlet containers read
/// them), encoded slashes or backslashes, raw backslashes, an encoded percent sign (`%25`:
/// a backend or framework that decodes twice reads `%252e%252e` as `..`), a `%` without two
/// hex digits after it (`%u` escapes, which IIS reads as `%u002e` = `.`, and malformed
/// ones, which lenient decoders leave in place, so a second decoding reads `%2%65` as
/// `%2e`), `%00`, and the overlong UTF-8 lead bytes `%C0`/`%C1` (`%c0%ae` is `.` to a
/// decoder that does not check). Compared case-insensitively, without allocating.
pub fn is_unambiguous(path: &str) -> bool {
    !path.contains('\\') && !has_ambiguous_escape(path) && !path.split('/').any(is_dot_segment)
}

/// A `%` not followed by two hex digits, or `%2F`, `%5C`, `%25`, `%00`, `%C0`, `%C1`, any
/// case.
fn has_ambiguous_escape(path: &str) -> bool {
    let bytes = path.as_bytes();
    bytes.iter().enumerate().any(|(at, &byte)| {
        if byte != b'%' {
            return false;
        }
        let (Some(&high), Some(&low)) = (bytes.get(at + 1), bytes.get(at + 2)) else {
            return true;
        };
        if !high.is_ascii_hexdigit() || !low.is_ascii_hexdigit() {
            return true;
        }
        matches!(
            (high.to_ascii_lowercase(), low.to_ascii_lowercase()),
            (b'2', b'f') | (b'5', b'c') | (b'2', b'5') | (b'0', b'0') | (b'c', b'0' | b'1')
        )
    })
}

/// `.` or `..` before any `;` parameter (raw or `%3B`), each dot raw or `%2e` (any case).
fn is_dot_segment(segment: &str) -> bool {
    let mut rest = segment.as_bytes();
    let mut dots = 0;
    while !rest.is_empty() {
        if rest[0] == b';' || is_escape(rest, b'3', b'b') {
            break;
        }
        if rest[0] == b'.' {
            rest = &rest[1..];
        } else if is_escape(rest, b'2', b'e') {
            rest = &rest[3..];
        } else {
            return false;
        }
        dots += 1;
    }
    dots == 1 || dots == 2
}

/// Whether `bytes` starts with `%` and these two (lowercase) hex digits, any case.
fn is_escape(bytes: &[u8], high: u8, low: u8) -> bool {
    bytes.len() >= 3
        && bytes[0] == b'%'
        && bytes[1].to_ascii_lowercase() == high
        && bytes[2].to_ascii_lowercase() == low
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patterns() -> Vec<PublicPath> {
        vec![
            PublicPath::Exact("/health".into()),
            PublicPath::Prefix("/public/".into()),
        ]
    }

    #[test]
    fn exact_and_prefix_patterns_match() {
        assert!(is_public("/health", &patterns()));
        assert!(is_public("/public/app.js", &patterns()));
        assert!(is_public("/public/a/b", &patterns()));
    }

    #[test]
    fn near_misses_do_not_match() {
        for path in [
            "/health/",
            "/healthz",
            "/public",
            "/publicity",
            "/Health",
            "/x/public/a",
        ] {
            assert!(!is_public(path, &patterns()), "{path}");
        }
    }

    #[test]
    fn paths_that_could_be_read_differently_never_match() {
        for path in [
            "/public/../secret",
            "/public/./x",
            "/public/%2e%2e/secret",
            "/public/%2E%2e/secret",
            "/public/.%2e/secret",
            "/public/..;/secret",
            "/public/%2e",
            "/public/a%2Fb",
            "/public/a%2fb",
            "/public/a%5Cb",
            "/public/a\\b",
        ] {
            assert!(!is_public(path, &patterns()), "{path}");
        }
    }

    #[test]
    fn double_encoding_and_u_escapes_never_match() {
        for path in [
            "/public/%252e%252e/secret",
            "/public/%252E%252E/secret",
            "/public/..%2500",
            "/public/a%2500",
            "/public/%25",
            "/public/x%252fsecret",
            "/public/%u002e%u002e/secret",
            "/public/%U002E",
            "/public/%uff0e",
            "/public/a%u",
            "/health%25",
        ] {
            assert!(!is_public(path, &patterns()), "{path}");
        }
        // Other escapes are fine: a backend reads them one way.
        assert!(is_public("/public/a%20b", &patterns()));
        assert!(is_public("/public/%41pp.js", &patterns()));
    }

    #[test]
    fn malformed_escapes_nul_and_overlong_utf8_never_match() {
        for path in [
            // A lenient decoder leaves `%2%65` as `%2e`; a second decoding reads `.`.
            "/public/%2%65%2%65/secret",
            "/public/%%32%65%%32%65/secret",
            "/public/100%",
            "/public/a%",
            "/public/a%4",
            "/public/a%zz",
            "/public/a%4g",
            "/public/a%00",
            "/public/..%00/secret",
            "/public/%c0%ae%c0%ae/secret",
            "/public/%C0%AE",
            "/public/%c1%9c",
            "/public/%C1",
            "/health%",
        ] {
            assert!(!is_public(path, &patterns()), "{path}");
        }
        // Other multi-byte UTF-8 escapes are fine.
        assert!(is_public("/public/caf%C3%A9", &patterns()));
    }

    #[test]
    fn an_encoded_semicolon_ends_a_dot_segment_like_a_raw_one() {
        for path in [
            "/public/..%3B/secret",
            "/public/..%3b/secret",
            "/public/%2e%2e%3bjsessionid=x/secret",
            "/public/.%3B",
        ] {
            assert!(!is_public(path, &patterns()), "{path}");
        }
        assert!(is_public("/public/a%3Bb", &patterns()));
        assert!(is_public("/public/...%3B", &patterns()));
    }

    #[test]
    fn dots_inside_names_are_fine() {
        assert!(is_public("/public/app.min.js", &patterns()));
        assert!(is_public("/public/...", &patterns()));
    }
}
