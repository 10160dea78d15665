//! The client certificate verifier: webpki checks the chain (and the imported CRLs) against
//! the active registered CAs, then the registry decides by status (and registers unknown
//! certificates just in time when their CA allows it). Synchronous, as rustls requires; the
//! registry lookup is a map access under a short lock.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, RootCertStore,
    SignatureScheme,
};
use rustls_pki_types::{CertificateDer, UnixTime};
use tracing::debug;

use super::registry::{Admission, CertificateRegistry};

#[derive(Debug)]
pub(super) struct DeviceVerifier {
    /// webpki over the active CAs; `None` when there is none (every certificate refused).
    inner: Option<Arc<dyn ClientCertVerifier>>,
    registry: Arc<CertificateRegistry>,
    /// One-certificate-per-device mode: registration and status are required.
    per_device: bool,
    provider: Arc<CryptoProvider>,
}

impl DeviceVerifier {
    pub(super) fn new(
        registry: Arc<CertificateRegistry>,
        per_device: bool,
        provider: Arc<CryptoProvider>,
    ) -> Self {
        let (roots, crls) = registry.trust();
        let mut store = RootCertStore::empty();
        for root in roots {
            if let Err(e) = store.add(root) {
                debug!(error = %e, "CA certificate not usable as a trust anchor");
            }
        }
        let inner = if store.is_empty() {
            None
        } else {
            WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider.clone())
                .with_crls(crls)
                .only_check_end_entity_revocation()
                .allow_unknown_revocation_status()
                .build()
                .map_err(|e| debug!(error = %e, "cannot build the client verifier"))
                .ok()
        };
        Self {
            inner,
            registry,
            per_device,
            provider,
        }
    }
}

impl ClientCertVerifier for DeviceVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.as_ref().map_or(&[], |v| v.root_hint_subjects())
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let Some(inner) = &self.inner else {
            return Err(Error::InvalidCertificate(CertificateError::UnknownIssuer));
        };
        inner.verify_client_cert(end_entity, intermediates, now)?;
        match self.registry.admit(end_entity.as_ref(), self.per_device) {
            Admission::Allowed { .. } => Ok(ClientCertVerified::assertion()),
            Admission::Refused(reason) => {
                debug!(reason, "client certificate refused");
                Err(Error::InvalidCertificate(CertificateError::Revoked))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
