//! The password a new Redis connection logs in with: the URL's, none, or that of
//! `shared_cache.redis_password_file`, read again at every connection attempt (rare: the
//! connection is kept open and reopened only when it broke), so a rotated Secret is used
//! by the next connection without a restart.

use std::path::PathBuf;
use std::sync::Mutex;

use super::{SharedCacheSetupError, read_password_file};
use crate::config::RedisPassword;
use crate::secrets::Secret;

pub enum Login {
    /// No password, or the URL's.
    Fixed(Option<Secret>),
    File(PasswordFile),
}

/// `shared_cache.redis_password_file` and the password last read from it.
pub struct PasswordFile {
    path: PathBuf,
    last: Mutex<Last>,
}

struct Last {
    password: Secret,
    /// A warning was logged since the last good read (one per failing stretch).
    warned: bool,
}

impl Login {
    /// Reads the password file now: one that cannot be read fails the start.
    pub fn of(password: Option<&RedisPassword>) -> Result<Login, SharedCacheSetupError> {
        Ok(match password {
            None => Login::Fixed(None),
            Some(RedisPassword::Inline(secret)) => Login::Fixed(Some(secret.clone())),
            Some(RedisPassword::File(path)) => Login::File(PasswordFile {
                path: path.clone(),
                last: Mutex::new(Last {
                    password: read_password_file(path)?,
                    warned: false,
                }),
            }),
        })
    }

    /// The password for a connection opened now: the file's content now when it can be
    /// read, else (warned about once) the one read before.
    pub fn password(&self) -> Option<Secret> {
        match self {
            Login::Fixed(password) => password.clone(),
            Login::File(file) => Some(file.current()),
        }
    }
}

impl PasswordFile {
    fn current(&self) -> Secret {
        // A small file, read on the (rare) way to a new connection: blocking is fine.
        let fresh = read_password_file(&self.path);
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match fresh {
            Ok(fresh) => {
                if fresh != last.password {
                    tracing::info!(
                        key = "shared_cache.redis_password_file",
                        file = %self.path.display(),
                        "shared_cache.redis_password_file changed: new Redis connections log in with it"
                    );
                    last.password = fresh;
                }
                last.warned = false;
            }
            Err(error) => {
                if !last.warned {
                    tracing::warn!(
                        "{error}; new Redis connections log in with the password read before"
                    );
                    last.warned = true;
                }
            }
        }
        last.password.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_connection_gets_the_files_password_or_the_last_one_read() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("redis-password");
        std::fs::write(&path, "first\n").expect("write");
        let login = Login::of(Some(&RedisPassword::File(path.clone()))).expect("readable");
        let password = || login.password().map(|p| p.expose().to_owned());
        assert_eq!(password().as_deref(), Some("first"));

        std::fs::write(&path, "second\n").expect("write");
        assert_eq!(password().as_deref(), Some("second"));

        // Gone (a Secret being replaced) or emptied: the last password read stays.
        std::fs::remove_file(&path).expect("remove");
        assert_eq!(password().as_deref(), Some("second"));
        std::fs::write(&path, "").expect("write");
        assert_eq!(password().as_deref(), Some("second"));

        std::fs::write(&path, "third").expect("write");
        assert_eq!(password().as_deref(), Some("third"));
    }

    #[test]
    fn a_missing_file_at_start_is_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = RedisPassword::File(dir.path().join("missing"));
        assert!(matches!(
            Login::of(Some(&missing)),
            Err(SharedCacheSetupError::PasswordFile { .. })
        ));
    }
}
