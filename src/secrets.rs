//! Secrets and tokens: a wrapper that never prints, and fingerprints that name a token in
//! logs without revealing it (SPEC §6: the first 8 hex digits of its SHA-256).

use std::fmt;

use ring::digest;

/// Shown in place of a secret.
pub const REDACTED: &str = "<redacted>";

/// A string that must not appear in logs or debug output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// The first 8 hex digits of the SHA-256 of `value`.
pub fn fingerprint(value: &str) -> String {
    let digest = digest::digest(&digest::SHA256, value.as_bytes());
    digest.as_ref()[..4]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_the_sha256_prefix() {
        // SHA-256("abc") = ba7816bf...
        assert_eq!(fingerprint("abc"), "ba7816bf");
    }

    #[test]
    fn secrets_do_not_debug_print() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "<redacted>");
    }
}
