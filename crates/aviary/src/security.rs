//! The security state of a running server, in one place for the management side:
//! authentication ([`AuthService`]: users, device identities) and the live authorization
//! policies ([`PolicyStore`]). Every registry here is safe to change while clients are
//! connected; changes apply to open connections.

use std::sync::Arc;

use anyhow::Context as _;

use crate::auth::{AuthService, PolicyStore};
use crate::config::SecurityConfig;

/// Everything security-related a management API needs.
#[derive(Debug)]
pub struct Security {
    /// Authenticates CONNECTs; holds users and device identities.
    pub auth: Arc<AuthService>,
    /// The authorization policies the broker consults.
    pub policies: Arc<PolicyStore>,
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
        Ok(Self { auth, policies })
    }
}
