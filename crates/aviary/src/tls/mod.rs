//! TLS for MQTT listeners: rustls with the ring provider, TLS 1.2 and 1.3 only (older
//! versions are not implemented by rustls at all, and are refused with a handshake failure:
//! they are unsupported for security reasons).
//!
//! * [`TlsAcceptorHandle`] — what a listener calls for each accepted socket. It holds the
//!   current `ServerConfig` in an `ArcSwap`: replacing the server certificate, or a change
//!   of CAs/CRLs in the registry, builds a new config for new handshakes while existing
//!   connections keep theirs (nothing is dropped).
//! * `verifier` — the client certificate verifier: webpki's chain and CRL check against the
//!   active registered CAs, then the [`CertificateRegistry`] status (synchronous).
//! * `registry` — CAs, CRLs, device certificates and their statuses.
//! * `stream` — a TLS connection after its handshake as a transport for the connection
//!   driver. The listener registry (`crate::listener`) runs TLS and secure WebSocket
//!   listeners with an acceptor each.

pub mod registry;
pub(crate) mod stream;
mod verifier;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::NoClientAuth;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::auth::PeerCertificate;
pub use registry::{
    cert_id, Admission, CaInfo, CaOptions, CaStatus, CertFilter, CertStatus, CertificateRegistry,
    CrlInfo, DeviceCertInfo, RegistryError, SerialStatus,
};

/// How a TLS listener treats client certificates (its X.509 mode).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// Server certificate only; clients authenticate in CONNECT.
    OneWay,
    /// A client certificate chaining to a registered, active CA is required; it
    /// authenticates the connection, with any client id.
    Mutual,
    /// One certificate per device: the certificate must also be registered (or is
    /// registered just in time) and ACTIVE, and binds the client id.
    PerDevice,
}

/// Why TLS could not be set up or a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("no certificate in the server certificate PEM")]
    NoCertificate,
    #[error("cannot read the server private key: {0}")]
    Key(String),
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("handshake: {0}")]
    Handshake(#[from] std::io::Error),
    #[error("client certificate refused after the handshake: {0}")]
    Refused(&'static str),
}

/// A connection after a successful handshake.
pub struct Accepted {
    pub stream: TlsStream<TcpStream>,
    /// The verified client certificate (mutual and per-device modes).
    pub certificate: Option<Arc<PeerCertificate>>,
    /// Cancelled when the certificate is deactivated, revoked or deleted; the id is for
    /// [`TlsAcceptorHandle::release`] when the connection ends.
    pub revoked: Option<(u64, CancellationToken)>,
}

/// Accepts TLS on sockets with the current configuration.
pub struct TlsAcceptorHandle {
    mode: TlsMode,
    registry: Arc<CertificateRegistry>,
    /// Server chain and key (kept to rebuild the config when CAs change).
    identity: Mutex<(Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>)>,
    /// What new handshakes use.
    config: ArcSwap<ServerConfig>,
    /// The registry generation `config` was built for.
    built_for: AtomicU64,
}

impl std::fmt::Debug for TlsAcceptorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsAcceptorHandle")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Parses a PEM certificate chain and private key.
pub fn load_identity(
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| TlsError::NoCertificate)?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Key(e.to_string()))?;
    Ok((chain, key))
}

impl TlsAcceptorHandle {
    pub fn new(
        mode: TlsMode,
        cert_pem: &[u8],
        key_pem: &[u8],
        registry: Arc<CertificateRegistry>,
    ) -> Result<Self, TlsError> {
        let (chain, key) = load_identity(cert_pem, key_pem)?;
        let key = Arc::new(key);
        let generation = registry.generation();
        let config = build_config(mode, &registry, chain.clone(), &key)?;
        Ok(Self {
            mode,
            registry,
            identity: Mutex::new((chain, key)),
            config: ArcSwap::from_pointee(config),
            built_for: AtomicU64::new(generation),
        })
    }

    pub fn mode(&self) -> TlsMode {
        self.mode
    }

    pub fn registry(&self) -> &Arc<CertificateRegistry> {
        &self.registry
    }

    /// Replaces the server certificate and key for new handshakes; open connections keep
    /// the session they have.
    pub fn set_server_certificate(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<(), TlsError> {
        let (chain, key) = load_identity(cert_pem, key_pem)?;
        let key = Arc::new(key);
        let mut identity = self.identity.lock().unwrap_or_else(|e| e.into_inner());
        let config = build_config(self.mode, &self.registry, chain.clone(), &key)?;
        *identity = (chain, key);
        self.config.store(Arc::new(config));
        Ok(())
    }

    /// The config for a new handshake, rebuilt first if CAs or CRLs changed.
    fn current(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let generation = self.registry.generation();
        if self.built_for.load(Ordering::Acquire) != generation {
            let identity = self.identity.lock().unwrap_or_else(|e| e.into_inner());
            if self.built_for.load(Ordering::Acquire) != generation {
                let config =
                    build_config(self.mode, &self.registry, identity.0.clone(), &identity.1)?;
                self.config.store(Arc::new(config));
                self.built_for.store(generation, Ordering::Release);
            }
        }
        Ok(self.config.load_full())
    }

    /// Runs the handshake on `tcp` and reads the client certificate's facts.
    pub async fn accept(&self, tcp: TcpStream) -> Result<Accepted, TlsError> {
        let config = self.current()?;
        let stream = tokio_rustls::TlsAcceptor::from(config).accept(tcp).await?;
        if self.mode == TlsMode::OneWay {
            return Ok(Accepted {
                stream,
                certificate: None,
                revoked: None,
            });
        }
        let Some(end_entity) = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
        else {
            return Err(TlsError::Refused("no client certificate"));
        };
        // Admitted again after the handshake: the status may have changed meanwhile.
        let admission = self
            .registry
            .admit(end_entity.as_ref(), self.mode == TlsMode::PerDevice);
        let Admission::Allowed {
            serial,
            ca_id,
            client_id,
            common_name,
        } = admission
        else {
            let Admission::Refused(reason) = admission else {
                return Err(TlsError::Refused("refused"));
            };
            return Err(TlsError::Refused(reason));
        };
        let revoked = self.registry.watch(&serial, &ca_id);
        Ok(Accepted {
            stream,
            certificate: Some(Arc::new(PeerCertificate {
                common_name,
                serial,
                bound_client_id: client_id,
            })),
            revoked: Some(revoked),
        })
    }

    /// Forgets a connection's revocation watch when it ends.
    pub fn release(&self, watch_id: u64) {
        self.registry.unwatch(watch_id);
    }
}

/// A server config for `mode` with the registry's active CAs and CRLs.
fn build_config(
    mode: TlsMode,
    registry: &Arc<CertificateRegistry>,
    chain: Vec<CertificateDer<'static>>,
    key: &PrivateKeyDer<'static>,
) -> Result<ServerConfig, TlsError> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match mode {
        TlsMode::OneWay => builder.with_client_cert_verifier(Arc::new(NoClientAuth)),
        TlsMode::Mutual | TlsMode::PerDevice => builder.with_client_cert_verifier(Arc::new(
            verifier::DeviceVerifier::new(registry.clone(), mode == TlsMode::PerDevice, provider),
        )),
    };
    let mut config = builder.with_single_cert(chain, key.clone_key())?;
    config.alpn_protocols = vec![b"mqtt".to_vec()];
    Ok(config)
}
