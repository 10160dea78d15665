//! The TLS side of a `tls` or `wss` listener: the server certificate and key (PEM file
//! paths on the broker's host) and the X.509 mode, and the acceptor made from them. A
//! problem with the files is an error naming the API field it came from (`cert`, `key`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::registry::ListenerError;
use crate::tls::{CertificateRegistry, TlsAcceptorHandle, TlsError, TlsMode};

/// The TLS side of a listener.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct TlsSettings {
    /// PEM file with the server certificate chain.
    pub(crate) cert: PathBuf,
    /// PEM file with the server private key.
    pub(crate) key: PathBuf,
    /// How client certificates are treated.
    pub(crate) x509_mode: TlsMode,
}

impl TlsSettings {
    /// Reads the files and makes an acceptor checking client certificates against
    /// `certificates`.
    pub(crate) fn acceptor(
        &self,
        certificates: &Arc<CertificateRegistry>,
    ) -> Result<Arc<TlsAcceptorHandle>, ListenerError> {
        let (cert, key) = read_identity(&self.cert, &self.key)?;
        TlsAcceptorHandle::new(self.x509_mode, &cert, &key, Arc::clone(certificates))
            .map(Arc::new)
            .map_err(identity_error)
    }

    /// Reads the files and gives `acceptor` this certificate and key for new handshakes.
    pub(crate) fn install(&self, acceptor: &TlsAcceptorHandle) -> Result<(), ListenerError> {
        let (cert, key) = read_identity(&self.cert, &self.key)?;
        acceptor
            .set_server_certificate(&cert, &key)
            .map_err(identity_error)
    }
}

/// A TLS settings problem about `field`.
pub(crate) fn tls_error(field: &'static str, message: impl Into<String>) -> ListenerError {
    ListenerError::Tls {
        field,
        message: message.into(),
    }
}

/// Reads the server certificate and key files.
fn read_identity(cert: &Path, key: &Path) -> Result<(Vec<u8>, Vec<u8>), ListenerError> {
    let read = |field, path: &Path| {
        std::fs::read(path)
            .map_err(|e| tls_error(field, format!("cannot read {}: {e}", path.display())))
    };
    Ok((read("cert", cert)?, read("key", key)?))
}

/// Names the field a certificate/key problem is about.
fn identity_error(e: TlsError) -> ListenerError {
    match e {
        TlsError::NoCertificate => tls_error("cert", "no PEM certificate in the file"),
        TlsError::Key(message) => tls_error("key", format!("no usable PEM private key: {message}")),
        other => tls_error("key", format!("does not fit the certificate: {other}")),
    }
}
