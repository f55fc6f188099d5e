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
/// percent-encoded, also with a `;` parameter as servlet containers read them), encoded
/// slashes or backslashes, raw backslashes, an encoded percent sign (`%25`: a backend or
/// framework that decodes twice reads `%252e%252e` as `..`), and `%u` escapes (IIS and
/// some frameworks read `%u002e` as `.`). Compared case-insensitively, without
/// allocating.
pub fn is_unambiguous(path: &str) -> bool {
    if path.contains('\\') || has_ambiguous_escape(path) {
        return false;
    }
    path.split('/').all(|segment| {
        let name = segment.split(';').next().unwrap_or_default();
        !is_dot_segment(name)
    })
}

/// `%2F`, `%5C`, `%25` or `%u`, any case.
fn has_ambiguous_escape(path: &str) -> bool {
    let bytes = path.as_bytes();
    bytes.iter().enumerate().any(|(at, &byte)| {
        if byte != b'%' {
            return false;
        }
        let next = |n: usize| bytes.get(at + n).map_or(0, u8::to_ascii_lowercase);
        matches!(
            (next(1), next(2)),
            (b'u', _) | (b'2', b'f') | (b'5', b'c') | (b'2', b'5')
        )
    })
}

/// `.` or `..`, each dot raw or `%2e` (any case).
fn is_dot_segment(name: &str) -> bool {
    let mut rest = name.as_bytes();
    let mut dots = 0;
    while !rest.is_empty() {
        if rest[0] == b'.' {
            rest = &rest[1..];
        } else if rest.len() >= 3
            && rest[0] == b'%'
            && rest[1] == b'2'
            && rest[2].eq_ignore_ascii_case(&b'e')
        {
            rest = &rest[3..];
        } else {
            return false;
        }
        dots += 1;
    }
    dots == 1 || dots == 2
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
        assert!(is_public("/public/100%", &patterns()));
    }

    #[test]
    fn dots_inside_names_are_fine() {
        assert!(is_public("/public/app.min.js", &patterns()));
        assert!(is_public("/public/...", &patterns()));
    }
}
