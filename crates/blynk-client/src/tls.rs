//! The rustls client configuration: ring, the system's root certificates and an optional extra
//! CA file.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use crate::Error;

/// A connector trusting the system's root certificates and `ca`, if given.
pub(crate) fn connector(ca: Option<&Path>) -> Result<TlsConnector, Error> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(ca) = ca {
        let certificates = CertificateDer::pem_file_iter(ca)
            .map_err(|error| {
                Error::Tls(format!("cannot read the CA file {}: {error}", ca.display()))
            })?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| {
                Error::Tls(format!(
                    "CA file {} is not valid PEM: {error}",
                    ca.display()
                ))
            })?;
        if certificates.is_empty() {
            return Err(Error::Tls(format!(
                "CA file {} holds no certificate",
                ca.display()
            )));
        }
        for certificate in certificates {
            roots
                .add(certificate)
                .map_err(|error| Error::Tls(format!("CA file {}: {error}", ca.display())))?;
        }
    }
    if roots.is_empty() {
        return Err(Error::Tls(
            "no trusted root certificates: the system has none; give a CA file".to_owned(),
        ));
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| Error::Tls(format!("TLS setup: {error}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}
