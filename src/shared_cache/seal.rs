//! The shared entry at rest (SPEC §12): the access token sealed with AES-256-GCM under a
//! key derived from the client secret, so a reader of Redis without the secret holds no
//! usable token, and a replica with another secret sees no entry.
//!
//! Value: `VERSION` (1 byte) ‖ nonce (12 random bytes) ‖ AES-256-GCM ciphertext and tag of
//! the plaintext `expires_at_ms` (i64, big-endian) ‖ `obtained_at_ms` (i64, big-endian) ‖
//! lifetime source (1 byte) ‖ the token (UTF-8). The additional authenticated data is the
//! Redis key, so an entry copied under another key does not open.
//!
//! Key: HKDF-SHA256 over the client secret's bytes (the secret file's content byte for
//! byte), with [`HKDF_SALT`] and [`HKDF_INFO`] naming the purpose.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, hkdf};

/// The first byte of every sealed value; a value with another is no entry.
pub const VERSION: u8 = 1;

/// HKDF salt: names this sidecar and the format version.
pub const HKDF_SALT: &[u8] = b"jtl-auth-sidecar shared-cache v1";
/// HKDF info: names what the key is for.
pub const HKDF_INFO: &[u8] = b"access-token entry AES-256-GCM key";

const HEADER_LEN: usize = 1 + NONCE_LEN;
const FIXED_PLAINTEXT_LEN: usize = 8 + 8 + 1;

/// What a shared entry holds, once opened.
#[derive(Clone, PartialEq, Eq)]
pub struct Entry {
    pub token: String,
    /// Absolute, wall-clock milliseconds since the epoch, unlike this replica's own
    /// deadlines (monotonic): the entry is shared by replicas whose only common clock is
    /// the wall clock. A reader turns it into its own monotonic deadline on receipt.
    pub expires_at_ms: i64,
    /// When the writer obtained it: with the expiry, the token's lifetime, from which every
    /// replica computes the same refresh time.
    pub obtained_at_ms: i64,
    /// How the writer learnt the lifetime (`crate::jtl::LifetimeSource` as a byte).
    pub lifetime_source: u8,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("token", &crate::secrets::fingerprint(&self.token))
            .field("expires_at_ms", &self.expires_at_ms)
            .field("obtained_at_ms", &self.obtained_at_ms)
            .finish()
    }
}

/// The AES-256-GCM key derived from one client secret.
pub struct SealingKey(LessSafeKey);

impl SealingKey {
    pub fn derive(client_secret: &[u8]) -> SealingKey {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT).extract(client_secret);
        // The output length is AES-256-GCM's key length, which HKDF-SHA256 can always give.
        let okm = prk
            .expand(&[HKDF_INFO], &AES_256_GCM)
            .unwrap_or_else(|_| unreachable!("32 bytes are within HKDF-SHA256's limit"));
        SealingKey(LessSafeKey::new(UnboundKey::from(okm)))
    }

    /// Seals `entry` for `redis_key`. `None` only if the system's random source fails.
    pub fn seal(&self, redis_key: &str, entry: &Entry) -> Option<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).ok()?;
        let mut sealed = Vec::with_capacity(
            HEADER_LEN + FIXED_PLAINTEXT_LEN + entry.token.len() + AES_256_GCM.tag_len(),
        );
        sealed.push(VERSION);
        sealed.extend_from_slice(&nonce);
        let mut body = Vec::with_capacity(FIXED_PLAINTEXT_LEN + entry.token.len());
        body.extend_from_slice(&entry.expires_at_ms.to_be_bytes());
        body.extend_from_slice(&entry.obtained_at_ms.to_be_bytes());
        body.push(entry.lifetime_source);
        body.extend_from_slice(entry.token.as_bytes());
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(redis_key.as_bytes()),
                &mut body,
            )
            .ok()?;
        sealed.extend_from_slice(&body);
        Some(sealed)
    }

    /// Opens a value read under `redis_key`; `None` when it does not open (another
    /// secret, another key, tampered with, another version, not UTF-8).
    pub fn open(&self, redis_key: &str, sealed: &[u8]) -> Option<Entry> {
        if sealed.len() < HEADER_LEN + FIXED_PLAINTEXT_LEN + AES_256_GCM.tag_len()
            || sealed[0] != VERSION
        {
            return None;
        }
        let nonce = Nonce::try_assume_unique_for_key(&sealed[1..HEADER_LEN]).ok()?;
        let mut body = sealed[HEADER_LEN..].to_vec();
        let plain = self
            .0
            .open_in_place(nonce, Aad::from(redis_key.as_bytes()), &mut body)
            .ok()?;
        let (expires, rest) = plain.split_at(8);
        let (obtained, rest) = rest.split_at(8);
        let (source, token) = rest.split_at(1);
        let token = std::str::from_utf8(token).ok()?;
        if token.is_empty() {
            return None;
        }
        Some(Entry {
            token: token.to_owned(),
            expires_at_ms: i64::from_be_bytes(expires.try_into().ok()?),
            obtained_at_ms: i64::from_be_bytes(obtained.try_into().ok()?),
            lifetime_source: source[0],
        })
    }
}

/// `{key_prefix}:access-token:` and the hex SHA-256 of token URL, client id and scope,
/// each preceded by its length (8 bytes, big-endian) so no two triples collide.
pub fn entry_key(
    key_prefix: &str,
    token_url: &str,
    client_id: &str,
    scope: Option<&str>,
) -> String {
    let mut input = length_prefixed(&[token_url, client_id, scope.unwrap_or("")]);
    // A scope of "" is never configured (it means none), but keep the two apart anyway.
    input.push(u8::from(scope.is_some()));
    format!("{key_prefix}:access-token:{}", hex_sha256(&input))
}

/// `{key_prefix}:{kind}:` and the hex SHA-256 of `fields`, each preceded by its length,
/// so no two lists collide and no field stands in clear.
pub fn digest_key(key_prefix: &str, kind: &str, fields: &[&str]) -> String {
    format!(
        "{key_prefix}:{kind}:{}",
        hex_sha256(&length_prefixed(fields))
    )
}

/// Each field preceded by its length (8 bytes, big-endian).
fn length_prefixed(fields: &[&str]) -> Vec<u8> {
    let mut input = Vec::new();
    for field in fields {
        input.extend_from_slice(&(field.len() as u64).to_be_bytes());
        input.extend_from_slice(field.as_bytes());
    }
    input
}

fn hex_sha256(input: &[u8]) -> String {
    digest::digest(&digest::SHA256, input)
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The lock beside an entry.
pub fn lock_key(entry_key: &str) -> String {
    format!("{entry_key}:lock")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            token: "eyJhbGciOi.payload.sig".into(),
            expires_at_ms: 1_790_003_600_000,
            obtained_at_ms: 1_790_000_000_000,
            lifetime_source: 0,
        }
    }

    #[test]
    fn a_sealed_entry_opens_with_the_same_secret_and_key_only() {
        let key = SealingKey::derive(b"secret");
        let sealed = key.seal("p:access-token:ab", &entry()).unwrap();
        assert_eq!(sealed[0], VERSION);
        assert_eq!(key.open("p:access-token:ab", &sealed), Some(entry()));
        assert!(
            !sealed
                .windows(entry().token.len())
                .any(|w| w == entry().token.as_bytes())
        );
        // Another secret, another Redis key, another version, a flipped bit: no entry.
        assert_eq!(
            SealingKey::derive(b"secret\n").open("p:access-token:ab", &sealed),
            None
        );
        assert_eq!(key.open("q:access-token:ab", &sealed), None);
        let mut other_version = sealed.clone();
        other_version[0] = 2;
        assert_eq!(key.open("p:access-token:ab", &other_version), None);
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(key.open("p:access-token:ab", &flipped), None);
        assert_eq!(key.open("p:access-token:ab", &sealed[..20]), None);
        assert_eq!(key.open("p:access-token:ab", b""), None);
    }

    #[test]
    fn two_seals_of_one_entry_differ() {
        let key = SealingKey::derive(b"secret");
        assert_ne!(key.seal("k", &entry()), key.seal("k", &entry()));
    }

    #[test]
    fn entry_keys_tell_apps_apart_unambiguously() {
        let a = entry_key("p", "https://a/token", "id", None);
        assert!(a.starts_with("p:access-token:"), "{a}");
        assert_eq!(a.len(), "p:access-token:".len() + 64);
        assert_eq!(a, entry_key("p", "https://a/token", "id", None));
        assert_ne!(a, entry_key("p", "https://a/token", "id2", None));
        assert_ne!(a, entry_key("p", "https://a/token", "id", Some("openid")));
        assert_ne!(a, entry_key("q", "https://a/token", "id", None));
        // Moving a character from one field to the next changes the digest.
        assert_ne!(
            entry_key("p", "ab", "c", None),
            entry_key("p", "a", "bc", None)
        );
        assert_ne!(
            entry_key("p", "a", "b", Some("")),
            entry_key("p", "a", "b", None)
        );
        assert_eq!(lock_key(&a), format!("{a}:lock"));
    }
}
