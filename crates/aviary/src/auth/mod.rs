//! Authentication in the shell, and the live authorization policies.
//!
//! The connection task decodes a CONNECT, asks [`AuthService::authenticate`] (which may
//! wait: argon2 on the blocking pool, an HTTP call, a slowed-down retry), and hands the
//! CONNECT together with the [`Authentication`] outcome to the broker task, which calls
//! `Broker::handle_connect_authenticated`. The core never waits and never does I/O; the
//! refusal codes (0x86/0x87/0x88, 3.x 4/5/3) are decided by the core from the outcome.
//!
//! Authenticators are tried in the configured order. Each one either claims the CONNECT
//! (accepts or refuses it) or skips it (not its kind of credentials: an unknown username,
//! a client id that is no device). When every one skips, anonymous access decides. The
//! order, anonymous access, JWT and HTTP settings can be replaced at runtime
//! ([`AuthService::replace`]): the chain is swapped whole and the next CONNECT uses it.
//!
//! * `users` — built-in users (argon2id);
//! * `devices` — device identities and their HMAC access tokens;
//! * `failures` — slowing down repeated failures per address and client id;
//! * `policies` — the authorization policy set, swapped atomically on every change.

pub mod devices;
mod failures;
pub mod http;
pub mod jwt;
pub mod policies;
pub mod users;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use aviary_codec::Connect;
use aviary_core::authz::{AuthRefusal, Authentication, Principal};
use bytes::Bytes;
use tracing::debug;

pub use devices::{DeviceIdentity, DeviceRegistry, DeviceSpec};

/// Why new authenticator settings were not installed.
#[derive(Debug)]
pub(crate) enum SettingsChangeError {
    /// The settings do not build (e.g. an unusable JWT key).
    Invalid(anyhow::Error),
    /// They could not be stored (nothing changed).
    Store(String),
}
pub use failures::FailureTracker;
pub use http::{HttpAuthenticator, HttpMethod, HttpSettings};
pub use jwt::{JwtAuthenticator, JwtKeys, JwtSettings, TokenField};
pub use policies::PolicyStore;
pub use users::{Secret, User, UserRegistry};

/// What authentication looks at: the CONNECT's credentials and the transport's facts.
#[derive(Clone)]
pub struct AuthRequest {
    /// As in CONNECT (may be empty: the broker then assigns one).
    pub client_id: String,
    pub username: Option<String>,
    /// Never logged (see the `Debug` impl).
    pub password: Option<Bytes>,
    /// The client's address.
    pub peer: SocketAddr,
    /// The verified client certificate (TLS listeners with client certificates).
    pub certificate: Option<Arc<PeerCertificate>>,
}

impl std::fmt::Debug for AuthRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthRequest")
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("peer", &self.peer)
            .field("certificate", &self.certificate)
            .finish()
    }
}

/// A client certificate that passed the TLS verifier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerCertificate {
    /// The subject's common name.
    pub common_name: Option<String>,
    /// Serial number, lower-case hex without separators.
    pub serial: String,
    /// The client id the certificate is bound to (its CN unless mapped explicitly);
    /// `None` in plain mutual TLS, where any client id may be used.
    pub bound_client_id: Option<String>,
}

/// One authenticator's answer.
#[derive(Debug)]
pub enum Verdict {
    /// Accepted: this is who the connection is.
    Accept(Principal),
    /// Claimed and refused.
    Refuse(AuthRefusal),
    /// Not this authenticator's kind of credentials: try the next.
    Skip,
}

/// The authenticators, in the order they can be configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum AuthenticatorKind {
    /// Built-in users.
    Users,
    /// Device identities (access tokens).
    Devices,
    /// JWT (when `[auth.jwt]` is configured).
    Jwt,
    /// The HTTP authentication service (when `[auth.http]` is configured).
    Http,
}

/// When clients without credentials any authenticator claims may connect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Anonymous {
    /// Allowed only while no user, device or other authenticator exists (the default:
    /// a fresh `aviary` accepts everybody; the first user switches anonymous access off).
    Auto,
    Allow,
    Deny,
}

/// Validated `[auth]` settings.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuthSettings {
    pub anonymous: Anonymous,
    /// Authenticators tried in this order (a client certificate always comes first).
    pub order: Vec<AuthenticatorKind>,
    /// `[auth.jwt]`, if configured.
    pub jwt: Option<JwtSettings>,
    /// `[auth.http]`, if configured.
    pub http: Option<HttpSettings>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            anonymous: Anonymous::Auto,
            order: vec![
                AuthenticatorKind::Devices,
                AuthenticatorKind::Users,
                AuthenticatorKind::Jwt,
                AuthenticatorKind::Http,
            ],
            jwt: None,
            http: None,
        }
    }
}

/// An HTTP client builder using rustls with ring (reqwest is built without a provider of
/// its own, so the ring provider is installed as the process default once).
pub fn http_client_builder() -> reqwest::ClientBuilder {
    install_crypto_provider();
    reqwest::Client::builder()
}

/// Installs rustls' ring provider as the process default (once; `start` calls it, so any
/// HTTP client built after a server started works, as does one built here).
pub fn install_crypto_provider() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        // Fails only if another provider was installed first, which then serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Authentication for every listener of a server.
#[derive(Debug)]
pub struct AuthService {
    /// The order, anonymous access and external authenticators; replaced whole.
    chain: ArcSwap<Chain>,
    /// Bumped on every [`Self::replace`] (the JWKS task refreshes at once).
    changes: tokio::sync::watch::Sender<u64>,
    pub users: Arc<UserRegistry>,
    pub devices: Arc<DeviceRegistry>,
    failures: FailureTracker,
    /// The principal of an anonymous connection without a username, shared by all of them
    /// (each would otherwise hold its own copy for its whole life).
    anonymous: Arc<Principal>,
}

/// The settings and the authenticators built from them.
#[derive(Debug)]
struct Chain {
    settings: AuthSettings,
    /// JWT, if configured.
    jwt: Option<Arc<JwtAuthenticator>>,
    /// The HTTP service, if configured.
    http: Option<Arc<HttpAuthenticator>>,
}

impl Chain {
    fn new(settings: AuthSettings) -> anyhow::Result<Self> {
        let jwt = settings
            .jwt
            .clone()
            .map(JwtAuthenticator::new)
            .transpose()?
            .map(Arc::new);
        let http = settings
            .http
            .clone()
            .map(HttpAuthenticator::new)
            .transpose()?
            .map(Arc::new);
        Ok(Self {
            settings,
            jwt,
            http,
        })
    }
}

impl AuthService {
    pub fn new(settings: AuthSettings) -> anyhow::Result<Self> {
        Ok(Self {
            chain: ArcSwap::from_pointee(Chain::new(settings)?),
            changes: tokio::sync::watch::Sender::new(0),
            users: Arc::default(),
            devices: Arc::default(),
            failures: FailureTracker::default(),
            anonymous: Arc::new(Principal {
                authenticator: "anonymous".into(),
                ..Principal::default()
            }),
        })
    }

    /// Replaces the order, anonymous access and JWT/HTTP settings; the next CONNECT uses
    /// them (one already being authenticated finishes with the old ones).
    pub fn replace(&self, settings: AuthSettings) -> anyhow::Result<()> {
        self.chain.store(Arc::new(Chain::new(settings)?));
        self.changes.send_modify(|n| *n += 1);
        Ok(())
    }

    /// [`Self::replace`], stored by `persist` in between: the new chain is built (so
    /// invalid settings are refused before anything is stored), then stored, then
    /// installed; a failed write changes nothing.
    pub(crate) fn replace_stored(
        &self,
        settings: AuthSettings,
        persist: crate::records::Persist<'_, AuthSettings>,
    ) -> Result<(), SettingsChangeError> {
        let chain = Chain::new(settings.clone()).map_err(SettingsChangeError::Invalid)?;
        persist(Some(&settings)).map_err(SettingsChangeError::Store)?;
        self.chain.store(Arc::new(chain));
        self.changes.send_modify(|n| *n += 1);
        Ok(())
    }

    /// The current settings.
    pub fn settings(&self) -> AuthSettings {
        self.chain.load().settings.clone()
    }

    /// The JWT authenticator, if configured now.
    pub fn jwt(&self) -> Option<Arc<JwtAuthenticator>> {
        self.chain.load().jwt.clone()
    }

    /// The HTTP authentication service, if configured now.
    pub fn http(&self) -> Option<Arc<HttpAuthenticator>> {
        self.chain.load().http.clone()
    }

    /// Keeps the JWKS keys of the current JWT settings fresh until `stop` (the server's
    /// shutdown): fetches at once and every refresh period, and again at once when the
    /// settings are replaced. Idle while no JWKS is configured.
    pub async fn jwks_loop(
        self: Arc<Self>,
        client: reqwest::Client,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let mut changes = self.changes.subscribe();
        loop {
            let jwt = self.jwt();
            let period = jwt.as_ref().and_then(|j| j.jwks().map(|(_, p)| p));
            if let (Some(jwt), Some(_)) = (&jwt, period) {
                tokio::select! {
                    () = stop.cancelled() => return,
                    result = jwt.refresh(&client) => match result {
                        Ok(n) => debug!(keys = n, "JWKS refreshed"),
                        Err(e) => tracing::warn!(error = %e, "JWKS refresh failed; keeping the previous keys"),
                    },
                }
            }
            // No JWKS: wait for new settings only (a day at a time, to stay bounded).
            let wait = period.unwrap_or(std::time::Duration::from_secs(86_400));
            tokio::select! {
                () = stop.cancelled() => return,
                changed = changes.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// The request for a decoded CONNECT.
    pub fn request(
        connect: &Connect,
        peer: SocketAddr,
        certificate: Option<Arc<PeerCertificate>>,
    ) -> AuthRequest {
        AuthRequest {
            client_id: connect.client_id.clone(),
            username: connect.username.clone(),
            password: connect.password.clone(),
            peer,
            certificate,
        }
    }

    /// Authenticates one CONNECT; may wait (slowed-down retries, argon2, HTTP).
    pub async fn authenticate(&self, request: &AuthRequest) -> Authentication {
        let delay = self.failures.delay(request.peer.ip(), &request.client_id);
        if !delay.is_zero() {
            debug!(peer = %request.peer, ?delay, "slowing down a client after failures");
            tokio::time::sleep(delay).await;
        }
        match self.decide(request).await {
            Ok(principal) => {
                self.failures.success(&request.client_id);
                if principal == *self.anonymous {
                    return Authentication::Accepted(Arc::clone(&self.anonymous));
                }
                Authentication::Accepted(Arc::new(principal))
            }
            Err(refusal) => {
                if refusal != AuthRefusal::ServerUnavailable {
                    self.failures.failure(request.peer.ip(), &request.client_id);
                }
                debug!(client_id = %request.client_id, peer = %request.peer, ?refusal, "authentication refused");
                Authentication::Refused(refusal)
            }
        }
    }

    /// The chain: certificate, then the configured order, then anonymous access.
    async fn decide(&self, request: &AuthRequest) -> Result<Principal, AuthRefusal> {
        if let Some(cert) = &request.certificate {
            // A verified certificate bound to a client id authenticates that client id
            // only: a device cannot connect as another one.
            if let Some(bound) = &cert.bound_client_id {
                if *bound != request.client_id {
                    return Err(AuthRefusal::NotAuthorized);
                }
            }
            // Choice: a verified certificate is the credential, so users, device tokens and
            // JWTs are not consulted; an HTTP service in the chain still is (it sees
            // `${cert_cn}`), so a back end can allow, refuse or grant per device. Its
            // "ignore" leaves the certificate's word standing.
            let chain = self.chain.load_full();
            if let Some(http) = chain
                .http
                .as_ref()
                .filter(|_| chain.settings.order.contains(&AuthenticatorKind::Http))
            {
                match http.authenticate(request).await {
                    Verdict::Accept(principal) => return Ok(principal),
                    Verdict::Refuse(refusal) => return Err(refusal),
                    Verdict::Skip => {}
                }
            }
            return Ok(Principal {
                username: request.username.as_deref().map(Into::into),
                certificate_cn: cert.common_name.as_deref().map(Into::into),
                authenticator: "certificate".into(),
                ..Principal::default()
            });
        }
        let chain = self.chain.load_full();
        for kind in &chain.settings.order {
            let verdict = match kind {
                AuthenticatorKind::Users => self.users.authenticate(request).await,
                AuthenticatorKind::Devices => self.devices.authenticate(request, SystemTime::now()),
                AuthenticatorKind::Jwt => match &chain.jwt {
                    Some(jwt) => jwt.authenticate(request),
                    None => Verdict::Skip,
                },
                AuthenticatorKind::Http => match &chain.http {
                    Some(http) => http.authenticate(request).await,
                    None => Verdict::Skip,
                },
            };
            match verdict {
                Verdict::Accept(principal) => return Ok(principal),
                Verdict::Refuse(refusal) => return Err(refusal),
                Verdict::Skip => {}
            }
        }
        if self.anonymous_allowed() {
            return Ok(Principal {
                username: request.username.as_deref().map(Into::into),
                authenticator: "anonymous".into(),
                ..Principal::default()
            });
        }
        // Credentials nobody recognised are bad credentials; none at all is not authorized.
        if request.username.is_some() || request.password.is_some() {
            Err(AuthRefusal::BadCredentials)
        } else {
            Err(AuthRefusal::NotAuthorized)
        }
    }

    /// The configured order of authenticators.
    pub fn order(&self) -> Vec<AuthenticatorKind> {
        self.chain.load().settings.order.clone()
    }

    /// Whether clients no authenticator claims may connect, now.
    pub fn anonymous_allowed(&self) -> bool {
        let chain = self.chain.load();
        match chain.settings.anonymous {
            Anonymous::Allow => true,
            Anonymous::Deny => false,
            Anonymous::Auto => {
                self.users.is_empty()
                    && self.devices.is_empty()
                    && chain.jwt.is_none()
                    && chain.http.is_none()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_that_cannot_be_stored_are_not_installed() {
        let auth = AuthService::new(AuthSettings::default()).unwrap();
        let before = auth.settings();
        let mut changed = before.clone();
        changed.order.reverse();
        changed.order.pop();
        let refused = auth.replace_stored(changed.clone(), &|_| Err("disk full".into()));
        assert!(matches!(refused, Err(SettingsChangeError::Store(_))));
        assert_eq!(auth.settings().order, before.order);
        auth.replace_stored(changed.clone(), &|_| Ok(())).unwrap();
        assert_eq!(auth.settings().order, changed.order);
    }
}
