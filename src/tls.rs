//! The rustls client configuration of every outbound TLS connection (JTL, a `https://`
//! backend, `rediss://`): ring, the webpki roots, and the certificates of `jtl.ca_file`.

use std::path::Path;
use std::sync::Arc;

/// Why the TLS client configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("jtl.ca_file: cannot read {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("jtl.ca_file: {path} holds no PEM certificate")]
    CaFileEmpty { path: String },
    #[error("TLS setup failed: {0}")]
    Tls(String),
}

/// rustls with ring, the webpki roots and the certificates of `ca_file`.
pub fn client_tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, SetupError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        for certificate in read_pem_certificates(path)? {
            roots
                .add(certificate)
                .map_err(|e| SetupError::Tls(format!("jtl.ca_file {}: {e}", path.display())))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SetupError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The certificates of a PEM file; a file without any is an error, not an empty set.
fn read_pem_certificates(
    path: &Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, SetupError> {
    let shown = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|e| SetupError::CaFile {
        path: shown.clone(),
        reason: e.to_string(),
    })?;
    let certificates: Vec<_> = rustls_pemfile::certs(&mut std::io::BufReader::new(file))
        .collect::<Result<_, _>>()
        .map_err(|e| SetupError::CaFile {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
    if certificates.is_empty() {
        return Err(SetupError::CaFileEmpty { path: shown });
    }
    Ok(certificates)
}
