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
/// slashes or backslashes, raw backslashes.
pub fn is_unambiguous(path: &str) -> bool {
    if path.contains('\\') {
        return false;
    }
    let lower = path.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") {
        return false;
    }
    lower.split('/').all(|segment| {
        let decoded = segment.replace("%2e", ".");
        let name = decoded.split(';').next().unwrap_or_default();
        name != "." && name != ".."
    })
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
    fn dots_inside_names_are_fine() {
        assert!(is_public("/public/app.min.js", &patterns()));
        assert!(is_public("/public/...", &patterns()));
    }
}
