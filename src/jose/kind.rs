//! JTL's two kinds of token and their signature algorithms: the seam between the flows.

/// The one signature algorithm a flow accepts (SPEC §5, §11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Algorithm {
    /// Ed25519 session tokens (the legacy flow).
    #[default]
    EdDSA,
    /// RSA PKCS#1 v1.5 SHA-256 app tokens from JTL's Zitadel.
    RS256,
}

impl Algorithm {
    /// Every algorithm of JTL's tokens, in the order of [`Algorithm::NAMES`].
    pub const ALL: [Algorithm; 2] = [Algorithm::EdDSA, Algorithm::RS256];
    pub(super) const NAMES: [&'static str; 2] = ["EdDSA", "RS256"];

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::EdDSA => "EdDSA",
            Algorithm::RS256 => "RS256",
        }
    }

    pub(super) fn accepts_signature_length(self, length: usize) -> bool {
        match self {
            Algorithm::EdDSA => length == 64,
            // 2048- to 8192-bit moduli; ring checks the exact length against the key.
            Algorithm::RS256 => (256..=1024).contains(&length),
        }
    }
}

/// Which of JTL's two tokens is verified: the seam between the flows is the algorithm
/// and the claim mapping; everything else is shared. The sidecar's `session.flow`
/// accepts one kind, or both during a move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum TokenKind {
    /// AppBridge session tokens (EdDSA; `tenantId`, `userId`, `tenantSlug`).
    #[default]
    SessionToken,
    /// App tokens from JTL's Zitadel (RS256; `urn:jtl:tenant_id`, `sub`, `aud`,
    /// `urn:jtl:app_id`).
    AppToken,
}

impl TokenKind {
    pub fn algorithm(self) -> Algorithm {
        match self {
            TokenKind::SessionToken => Algorithm::EdDSA,
            TokenKind::AppToken => Algorithm::RS256,
        }
    }

    /// The kind whose tokens are signed with `algorithm`.
    pub fn of(algorithm: Algorithm) -> TokenKind {
        match algorithm {
            Algorithm::EdDSA => TokenKind::SessionToken,
            Algorithm::RS256 => TokenKind::AppToken,
        }
    }

    /// The token's name in messages and logs: "app token", "session token".
    pub fn name(self) -> &'static str {
        match self {
            TokenKind::SessionToken => "session token",
            TokenKind::AppToken => "app token",
        }
    }

    /// "an" or "a", for "an app token" and "a session token".
    pub fn article(self) -> &'static str {
        match self {
            TokenKind::SessionToken => "a",
            TokenKind::AppToken => "an",
        }
    }

    /// The flow's name in the config and in metric labels: "app-token", "session-token".
    pub fn label(self) -> &'static str {
        match self {
            TokenKind::SessionToken => "session-token",
            TokenKind::AppToken => "app-token",
        }
    }

    /// The App Shell call that gives the frontend this token.
    pub fn getter(self) -> &'static str {
        match self {
            TokenKind::SessionToken => "getSessionToken",
            TokenKind::AppToken => "getAppToken",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The header parser reports `alg` as an index into `NAMES`; `ALL` must be in the same
    /// order, or a token would be dispatched to the wrong kind.
    #[test]
    fn the_names_are_those_of_all_in_the_same_order() {
        assert_eq!(Algorithm::NAMES, Algorithm::ALL.map(Algorithm::name));
        for algorithm in Algorithm::ALL {
            assert_eq!(TokenKind::of(algorithm).algorithm(), algorithm);
        }
    }
}
