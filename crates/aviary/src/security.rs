//! The security state of a running server, in one place for the management side:
//! authentication ([`AuthService`]: users, device identities) and the live authorization
//! policies ([`PolicyStore`]). Every registry here is safe to change while clients are
//! connected; changes apply to open connections.

use std::sync::Arc;

use anyhow::Context as _;

use crate::auth::{AuthService, PolicyStore};
use crate::config::SecurityConfig;
use crate::tls::{CaOptions, CertificateRegistry, TlsAcceptorHandle};

/// Everything security-related a management API needs.
#[derive(Debug)]
pub struct Security {
    /// Authenticates CONNECTs; holds users and device identities.
    pub auth: Arc<AuthService>,
    /// The authorization policies the broker consults.
    pub policies: Arc<PolicyStore>,
    /// CAs, CRLs and device certificates (TLS listeners with client certificates).
    pub certificates: Arc<CertificateRegistry>,
    /// The TLS listener's acceptor (replace the server certificate at runtime), if any.
    pub tls: Option<Arc<TlsAcceptorHandle>>,
}

impl Security {
    /// Builds the registries and loads the users and policies of the configuration.
    pub fn from_config(config: &SecurityConfig) -> anyhow::Result<Self> {
        let auth = Arc::new(AuthService::new(config.auth.clone())?);
        for (username, secret) in &config.users {
            auth.users
                .create(username, secret.clone(), true)
                .with_context(|| format!("auth.users: user {username:?}"))?;
        }
        let policies = Arc::new(PolicyStore::new(config.default_effect));
        for doc in &config.policies {
            policies
                .create(doc.clone())
                .with_context(|| format!("authorization.policies: {:?}", doc.id))?;
        }
        let certificates = Arc::new(CertificateRegistry::default());
        let tls = match &config.tls_listener {
            None => None,
            Some(tls) => {
                for path in &tls.ca {
                    let pem = std::fs::read(path).with_context(|| {
                        format!("tls_listener.ca: cannot read {}", path.display())
                    })?;
                    certificates
                        .register_ca_trusted(&pem, CaOptions::default())
                        .with_context(|| format!("tls_listener.ca: {}", path.display()))?;
                }
                let cert = std::fs::read(&tls.cert).with_context(|| {
                    format!("tls_listener.cert: cannot read {}", tls.cert.display())
                })?;
                let key = std::fs::read(&tls.key).with_context(|| {
                    format!("tls_listener.key: cannot read {}", tls.key.display())
                })?;
                Some(Arc::new(
                    TlsAcceptorHandle::new(tls.mode, &cert, &key, certificates.clone())
                        .context("tls_listener")?,
                ))
            }
        };
        Ok(Self {
            auth,
            policies,
            certificates,
            tls,
        })
    }
}
