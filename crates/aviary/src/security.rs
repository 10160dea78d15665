//! The security state of a running server, in one place for the management side:
//! authentication ([`AuthService`]: users, device identities) and the live authorization
//! policies ([`PolicyStore`]). Every registry here is safe to change while clients are
//! connected; changes apply to open connections.

use std::sync::Arc;

use anyhow::Context as _;

use crate::auth::policies::PolicyDoc;
use crate::auth::{AuthService, AuthSettings, PolicyStore};
use crate::auth::{DeviceIdentity, DeviceSpec, Secret, User};
use crate::config::SecurityConfig;
use crate::records::{self, RecordKind, Records};
use crate::tls::{CaOptions, CertificateRegistry, RegistryError};

/// Everything security-related a management API needs.
#[derive(Debug)]
pub struct Security {
    /// Authenticates CONNECTs; holds users and device identities.
    pub auth: Arc<AuthService>,
    /// The authorization policies the broker consults.
    pub policies: Arc<PolicyStore>,
    /// CAs, CRLs and device certificates (TLS listeners with client certificates).
    pub certificates: Arc<CertificateRegistry>,
}

impl Security {
    /// Builds the registries from the stored records (what the API created), then adds
    /// the users and policies of the configuration that are not stored already.
    pub(crate) fn load(config: &SecurityConfig, store: &Arc<dyn Records>) -> anyhow::Result<Self> {
        let records: &dyn Records = &**store;
        let auth = Arc::new(AuthService::new(config.auth.clone())?);
        // Settings replaced through the API override the file's `[auth]`.
        let stored_settings: Vec<(String, AuthSettings)> =
            records::list(records, RecordKind::Authenticator)
                .context("cannot load the authenticator settings")?;
        for (_, settings) in stored_settings {
            auth.replace(settings)
                .context("the stored authenticator settings are unusable")?;
        }
        let stored_users: Vec<(String, User)> =
            records::list(records, RecordKind::User).context("cannot load the users")?;
        for (_, user) in stored_users {
            auth.users
                .create(
                    &user.username,
                    Secret::Hash(user.password_hash),
                    user.enabled,
                )
                .with_context(|| format!("stored user {:?}", user.username))?;
        }
        for (username, secret) in &config.users {
            if auth.users.get(username).is_none() {
                auth.users
                    .create(username, secret.clone(), true)
                    .with_context(|| format!("auth.users: user {username:?}"))?;
            }
        }
        let stored_devices: Vec<(String, DeviceIdentity)> =
            records::list(records, RecordKind::DeviceIdentity)
                .context("cannot load the device identities")?;
        for (_, device) in stored_devices {
            let spec = DeviceSpec {
                enabled: Some(device.enabled),
                primary_key: Some(device.primary_key),
                secondary_key: Some(device.secondary_key),
                properties: Some(device.properties),
            };
            auth.devices
                .create(&device.device_id, spec)
                .with_context(|| format!("stored device {:?}", device.device_id))?;
        }
        let policies = Arc::new(PolicyStore::new(config.default_effect));
        let stored_policies: Vec<(String, PolicyDoc)> =
            records::list(records, RecordKind::AuthorizationPolicy)
                .context("cannot load the authorization policies")?;
        for (_, doc) in stored_policies {
            policies
                .create(doc.clone())
                .with_context(|| format!("stored policy {:?}", doc.id))?;
        }
        for doc in &config.policies {
            if policies.get(&doc.id).is_none() {
                policies
                    .create(doc.clone())
                    .with_context(|| format!("authorization.policies: {:?}", doc.id))?;
            }
        }
        let certificates = Arc::new(CertificateRegistry::with_records(Arc::clone(store)));
        certificates
            .restore()
            .context("cannot load the CA and device certificates")?;
        // The `[tls_listener]` itself is started by the listener registry.
        for path in config.tls_listener.iter().flat_map(|tls| &tls.ca) {
            let pem = std::fs::read(path)
                .with_context(|| format!("tls_listener.ca: cannot read {}", path.display()))?;
            match certificates.register_ca_trusted(&pem, CaOptions::default()) {
                // Stored already (the API changed it): the stored settings win.
                Ok(_) | Err(RegistryError::CaExists(_)) => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("tls_listener.ca: {}", path.display()))
                }
            }
        }
        Ok(Self {
            auth,
            policies,
            certificates,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::MemoryRecords;

    #[test]
    fn stored_users_devices_and_policies_come_back() {
        let store: Arc<dyn Records> = Arc::new(MemoryRecords::default());
        let records = &*store;
        let first = Security::load(&SecurityConfig::default(), &store).unwrap();
        let user = first
            .auth
            .users
            .create("alice", Secret::Password("pw".into()), false)
            .unwrap();
        records::put(records, RecordKind::User, "alice", &user).unwrap();
        let device = first
            .auth
            .devices
            .create("d1", DeviceSpec::default())
            .unwrap();
        records::put(records, RecordKind::DeviceIdentity, "d1", &device).unwrap();
        let doc = PolicyDoc {
            id: "p".into(),
            priority: 3,
            effect: "deny".into(),
            actions: vec!["publish".into()],
            resources: vec!["x/#".into()],
            client_ids: vec![],
            usernames: vec![],
            source_cidrs: vec![],
            qos: vec![],
            retain: None,
        };
        records::put(records, RecordKind::AuthorizationPolicy, "p", &doc).unwrap();

        let again = Security::load(&SecurityConfig::default(), &store).unwrap();
        assert_eq!(again.auth.users.get("alice"), Some(user));
        assert_eq!(again.auth.devices.get("d1"), Some(device));
        assert_eq!(again.policies.get("p"), Some(doc));
    }
}
