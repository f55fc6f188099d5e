//! The credential of `POST /drain`: a random token the sidecar writes at start to
//! `admin.drain_token_file`, on a volume only the pod's own containers mount. Whoever can
//! read the file may drain; reaching the admin port is not enough.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// Random bytes in a token (written as hex, so 64 characters).
const TOKEN_BYTES: usize = 32;

/// Owner reads and writes, the group reads: a second container of the pod sharing the
/// volume through the pod's `fsGroup` can read it, nobody else.
pub const TOKEN_FILE_MODE: u32 = 0o640;

#[derive(Debug, thiserror::Error)]
pub enum DrainTokenError {
    #[error("admin.drain_token_file: cannot write the drain token to {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("admin.drain_token_file: the system's random number generator failed")]
    Random,
}

/// What the sidecar keeps of the token: an HMAC of it under a random key, never the token.
/// A presented token is checked with `hmac::verify`, which compares in constant time, so
/// neither the time taken nor the token's length tells a caller how close it came.
pub struct DrainToken {
    key: hmac::Key,
    tag: hmac::Tag,
}

impl fmt::Debug for DrainToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DrainToken(<redacted>)")
    }
}

impl DrainToken {
    /// A fresh token for this start, written to `path` (replacing any earlier one); the
    /// start fails when it cannot be written.
    pub fn create(path: &Path) -> Result<DrainToken, DrainTokenError> {
        let random = SystemRandom::new();
        let mut bytes = [0u8; TOKEN_BYTES];
        random
            .fill(&mut bytes)
            .map_err(|_| DrainTokenError::Random)?;
        let token = hex(&bytes);
        write_atomically(path, token.as_bytes(), &random).map_err(|source| {
            DrainTokenError::Write {
                path: path.to_owned(),
                source,
            }
        })?;
        let key =
            hmac::Key::generate(hmac::HMAC_SHA256, &random).map_err(|_| DrainTokenError::Random)?;
        let tag = hmac::sign(&key, token.as_bytes());
        Ok(DrainToken { key, tag })
    }

    /// Whether `presented` is the token, compared in constant time.
    pub fn matches(&self, presented: &[u8]) -> bool {
        hmac::verify(&self.key, presented, self.tag.as_ref()).is_ok()
    }
}

/// Writes a temporary file beside `path` and renames it over `path`, so a reader sees the
/// old token or the new one, never part of one.
fn write_atomically(path: &Path, contents: &[u8], random: &SystemRandom) -> std::io::Result<()> {
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let mut suffix = [0u8; 8];
    random
        .fill(&mut suffix)
        .map_err(|_| std::io::Error::other("the random number generator failed"))?;
    let temporary = directory.join(format!(".{name}.{}.tmp", hex(&suffix)));
    let written = write_new(&temporary, contents).and_then(|()| std::fs::rename(&temporary, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

/// Creates `path` with [`TOKEN_FILE_MODE`] and writes `contents` to disk.
fn write_new(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    // create_new: never follow a link someone placed at the temporary name.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(TOKEN_FILE_MODE)
        .open(path)?;
    // The umask may have taken bits away at creation; the mode is set as meant.
    file.set_permissions(std::fs::Permissions::from_mode(TOKEN_FILE_MODE))?;
    file.write_all(contents)?;
    file.sync_all()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_written_token_matches_and_nothing_else_does() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("drain-token");
        let token = DrainToken::create(&path).unwrap();
        let written = std::fs::read_to_string(&path).unwrap();
        assert_eq!(written.len(), 2 * TOKEN_BYTES);
        assert!(written.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(token.matches(written.as_bytes()));
        assert!(!token.matches(&written.as_bytes()[1..]));
        assert!(!token.matches(b""));
        assert!(!token.matches(written.to_uppercase().as_bytes()));
        assert_eq!(format!("{token:?}"), "DrainToken(<redacted>)");
        // Only the token file is left in the directory.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_directory_that_does_not_exist_is_an_error_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("drain-token");
        let error = DrainToken::create(&path).unwrap_err().to_string();
        assert!(
            error.starts_with("admin.drain_token_file: cannot write the drain token to "),
            "{error}"
        );
    }
}
