//! The rustls client configuration of every outbound TLS connection (JTL, a `https://`
//! backend, `rediss://`): ring, the webpki roots, and the certificates of `jtl.ca_file`.
//! [`TlsRoots`] reads `jtl.ca_file` again when it changed, for the next new connection.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

/// Why the TLS client configuration (for JTL, the backend or Redis) could not be built:
/// `jtl.ca_file` unreadable or without a certificate, or rustls refusing the setup.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("jtl.ca_file: cannot read {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("jtl.ca_file: {path} holds no PEM certificate")]
    CaFileEmpty { path: String },
    #[error("TLS setup failed: {0}")]
    Tls(String),
}

/// rustls with ring, the webpki roots and the certificates of `ca_file`.
pub fn client_tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, TlsSetupError> {
    match ca_file {
        Some(path) => config_with(path, read_pem_certificates(path)?),
        None => config_with(Path::new(""), Vec::new()),
    }
}

/// The webpki roots plus `certificates` (read from `path`, named in errors).
fn config_with(
    path: &Path,
    certificates: Vec<rustls::pki_types::CertificateDer<'static>>,
) -> Result<rustls::ClientConfig, TlsSetupError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for certificate in certificates {
        roots
            .add(certificate)
            .map_err(|e| TlsSetupError::Tls(format!("jtl.ca_file {}: {e}", path.display())))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The certificates of a PEM file; a file without any is an error, not an empty set.
fn read_pem_certificates(
    path: &Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, TlsSetupError> {
    let bytes = std::fs::read(path).map_err(|e| TlsSetupError::CaFile {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    pem_certificates(path, &bytes)
}

/// The certificates of PEM text read from `path`; none is an error.
fn pem_certificates(
    path: &Path,
    bytes: &[u8],
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, TlsSetupError> {
    use rustls::pki_types::pem::PemObject;
    let shown = path.display().to_string();
    // rustls-pki-types' own PEM reader (rustls-pemfile is unmaintained, RUSTSEC-2025-0134).
    let certificates: Vec<_> = rustls::pki_types::CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsSetupError::CaFile {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
    if certificates.is_empty() {
        return Err(TlsSetupError::CaFileEmpty { path: shown });
    }
    Ok(certificates)
}

/// The client configuration of new connections to JTL (and `rediss://`), following
/// `jtl.ca_file`: each new connection asks [`TlsRoots::config`], which looks at the
/// file's identity (one `stat`: size, modification time, inode; Kubernetes' swap of the
/// `..data` link changes the inode) and reads it again only when that changed. A
/// connection already open keeps the roots it was made with; a request on a pooled
/// connection asks nothing. A changed file that cannot be read or holds no certificate
/// leaves the roots as they were, with one warning per change.
pub struct TlsRoots {
    ca_file: Option<PathBuf>,
    current: ArcSwap<rustls::ClientConfig>,
    seen: Mutex<Seen>,
}

/// What the last look at `jtl.ca_file` found.
struct Seen {
    /// `None`: the file could not be looked at.
    identity: Option<FileIdentity>,
    /// The bytes the roots in use were read from.
    in_use: Vec<u8>,
}

/// What tells a changed file from the same one without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileIdentity {
    len: u64,
    modified: Option<std::time::SystemTime>,
    inode: u64,
}

impl FileIdentity {
    fn of(path: &Path) -> Option<FileIdentity> {
        let metadata = std::fs::metadata(path).ok()?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&metadata);
        #[cfg(not(unix))]
        let inode = 0;
        Some(FileIdentity {
            len: metadata.len(),
            modified: metadata.modified().ok(),
            inode,
        })
    }
}

impl TlsRoots {
    /// The webpki roots plus the certificates of `ca_file`, read now: a file that cannot
    /// be read or holds no certificate is an error here (the start fails).
    pub fn new(ca_file: Option<&Path>) -> Result<Arc<TlsRoots>, TlsSetupError> {
        let Some(path) = ca_file else {
            return Ok(TlsRoots::fixed(client_tls_config(None)?));
        };
        let identity = FileIdentity::of(path);
        let bytes = std::fs::read(path).map_err(|e| TlsSetupError::CaFile {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let config = config_with(path, pem_certificates(path, &bytes)?)?;
        Ok(Arc::new(TlsRoots {
            ca_file: Some(path.to_owned()),
            current: ArcSwap::from_pointee(config),
            seen: Mutex::new(Seen {
                identity,
                in_use: bytes,
            }),
        }))
    }

    /// Always `config`: no file to follow (a `https://` backend).
    pub fn fixed(config: rustls::ClientConfig) -> Arc<TlsRoots> {
        Arc::new(TlsRoots {
            ca_file: None,
            current: ArcSwap::from_pointee(config),
            seen: Mutex::new(Seen {
                identity: None,
                in_use: Vec::new(),
            }),
        })
    }

    /// The configuration for a new connection: `jtl.ca_file` is read again first when it
    /// changed since the last look.
    pub fn config(&self) -> Arc<rustls::ClientConfig> {
        if let Some(path) = &self.ca_file {
            self.follow(path);
        }
        self.current.load_full()
    }

    /// The configuration in use, without looking at the file.
    pub fn current(&self) -> Arc<rustls::ClientConfig> {
        self.current.load_full()
    }

    fn follow(&self, path: &Path) {
        let identity = FileIdentity::of(path);
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if identity == seen.identity {
            return;
        }
        seen.identity = identity;
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::warn!(
                    key = "jtl.ca_file",
                    file = %path.display(),
                    "jtl.ca_file changed but cannot be read ({error}); new JTL connections keep the roots read before"
                );
                return;
            }
        };
        if bytes == seen.in_use {
            return;
        }
        match pem_certificates(path, &bytes)
            .and_then(|certificates| config_with(path, certificates))
        {
            Ok(config) => {
                self.current.store(Arc::new(config));
                seen.in_use = bytes;
                tracing::info!(
                    key = "jtl.ca_file",
                    file = %path.display(),
                    "jtl.ca_file changed: new JTL connections use its roots"
                );
            }
            Err(error) => tracing::warn!(
                key = "jtl.ca_file",
                file = %path.display(),
                "jtl.ca_file changed but is not usable ({error}); new JTL connections keep the roots read before"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &tempfile::TempDir, name: &str, content: &str) -> std::path::PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, content).expect("write");
        path
    }

    #[test]
    fn a_pem_file_gives_its_certificates_and_anything_else_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let one = rcgen::generate_simple_self_signed(vec!["jtl.example".into()])
            .expect("certificate")
            .cert
            .pem();
        let two = rcgen::generate_simple_self_signed(vec!["id.example".into()])
            .expect("certificate")
            .cert
            .pem();
        let both = write(&dir, "both.pem", &format!("{one}\n# a comment\n{two}"));
        assert_eq!(read_pem_certificates(&both).expect("certificates").len(), 2);

        let empty = write(&dir, "empty.pem", "");
        assert!(matches!(
            read_pem_certificates(&empty),
            Err(TlsSetupError::CaFileEmpty { .. })
        ));
        let missing = dir.path().join("missing.pem");
        let error = read_pem_certificates(&missing).expect_err("a missing file");
        assert!(
            error
                .to_string()
                .starts_with(&format!("jtl.ca_file: cannot read {}", missing.display())),
            "{error}"
        );
        let broken = write(
            &dir,
            "broken.pem",
            "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
        );
        assert!(matches!(
            read_pem_certificates(&broken),
            Err(TlsSetupError::CaFile { .. })
        ));
    }

    #[test]
    fn roots_follow_a_replaced_file_and_keep_the_old_ones_when_it_is_unusable() {
        let dir = tempfile::tempdir().expect("temp dir");
        let pem = |name: &str| {
            rcgen::generate_simple_self_signed(vec![name.into()])
                .expect("certificate")
                .cert
                .pem()
        };
        let first = pem("jtl.example");
        let path = write(&dir, "ca.pem", &first);
        // Replaced as a mounted Secret is: a new file (a new inode) in its place.
        let replace = |content: &str| {
            let staged = write(&dir, "staged.pem", content);
            std::fs::rename(staged, &path).expect("rename");
        };
        let roots = TlsRoots::new(Some(&path)).expect("roots");
        let start = roots.config();
        assert!(Arc::ptr_eq(&start, &roots.config()), "unchanged: the same");

        replace(&first);
        assert!(Arc::ptr_eq(&start, &roots.config()), "same bytes: the same");

        replace(&pem("proxy.example"));
        let second = roots.config();
        assert!(!Arc::ptr_eq(&start, &second), "new roots");

        replace("no certificate here\n");
        assert!(Arc::ptr_eq(&second, &roots.config()), "unusable: kept");
        std::fs::remove_file(&path).expect("remove");
        assert!(Arc::ptr_eq(&second, &roots.config()), "gone: kept");
        assert!(Arc::ptr_eq(&second, &roots.current()));
    }
}
