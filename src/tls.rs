//! The rustls client configuration of every outbound TLS connection (JTL, a `https://`
//! backend, `rediss://`): ring, the webpki roots, and the certificates of `jtl.ca_file`.

use std::path::Path;
use std::sync::Arc;

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
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        for certificate in read_pem_certificates(path)? {
            roots
                .add(certificate)
                .map_err(|e| TlsSetupError::Tls(format!("jtl.ca_file {}: {e}", path.display())))?;
        }
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
    use rustls::pki_types::pem::PemObject;
    let shown = path.display().to_string();
    let unreadable = |e: rustls::pki_types::pem::Error| TlsSetupError::CaFile {
        path: shown.clone(),
        reason: e.to_string(),
    };
    // rustls-pki-types' own PEM reader (rustls-pemfile is unmaintained, RUSTSEC-2025-0134).
    let certificates: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter(path)
        .map_err(unreadable)?
        .collect::<Result<_, _>>()
        .map_err(unreadable)?;
    if certificates.is_empty() {
        return Err(TlsSetupError::CaFileEmpty { path: shown });
    }
    Ok(certificates)
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
}
