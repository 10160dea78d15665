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

    /// Records whose writes fail (a full disk).
    struct FailingRecords;

    impl Records for FailingRecords {
        fn put_bytes(
            &self,
            _: RecordKind,
            _: &str,
            _: Vec<u8>,
        ) -> Result<(), records::RecordError> {
            Err(records::RecordError::Backend("disk full".into()))
        }
        fn list_bytes(
            &self,
            _: RecordKind,
        ) -> Result<Vec<(String, Vec<u8>)>, records::RecordError> {
            Ok(Vec::new())
        }
        fn delete(&self, _: RecordKind, _: &str) -> Result<bool, records::RecordError> {
            Err(records::RecordError::Backend("disk full".into()))
        }
    }

    /// A persist function over `records` for `kind`/`id`, as the API passes.
    fn persist_to<T: serde::Serialize>(
        records: &dyn Records,
        kind: RecordKind,
        id: &str,
        value: Option<&T>,
    ) -> Result<(), String> {
        match value {
            Some(v) => records::put(records, kind, id, v),
            None => records.delete(kind, id).map(drop),
        }
        .map_err(|e| e.to_string())
    }

    #[test]
    fn changes_that_cannot_be_stored_are_not_made_but_withdrawals_are() {
        use crate::auth::devices::DeviceError;
        use crate::auth::devices::DeviceSpec;
        use crate::auth::policies::PolicyDoc;
        use crate::auth::users::UserError;
        use crate::auth::Secret;
        let store: Arc<dyn Records> = Arc::new(MemoryRecords::default());
        let security = Security::load(&SecurityConfig::default(), &store).unwrap();
        let (users, devices) = (&security.auth.users, &security.auth.devices);
        users
            .create("alice", Secret::Password("pw-1".into()), true)
            .unwrap();
        devices.create("d1", DeviceSpec::default()).unwrap();
        let failing = FailingRecords;
        let user_persist =
            |u: Option<&crate::auth::users::User>| persist_to(&failing, RecordKind::User, "x", u);
        let device_persist = |d: Option<&crate::auth::DeviceIdentity>| {
            persist_to(&failing, RecordKind::DeviceIdentity, "x", d)
        };
        let policy_persist =
            |p: Option<&PolicyDoc>| persist_to(&failing, RecordKind::AuthorizationPolicy, "x", p);

        // Users: nothing created, changed or deleted.
        let hash = users.get("alice").unwrap().password_hash;
        assert!(matches!(
            users.create_stored("bob", Secret::Password("pw".into()), true, &user_persist),
            Err(UserError::Store(_))
        ));
        assert!(users.get("bob").is_none());
        assert!(users
            .update_stored(
                "alice",
                Some(Secret::Password("pw-2".into())),
                None,
                &user_persist
            )
            .is_err());
        assert_eq!(users.get("alice").unwrap().password_hash, hash);
        assert!(users.delete_stored("alice", &user_persist).is_err());
        assert!(users.get("alice").is_some());
        // Disabling is a withdrawal: it applies although the write fails.
        assert!(users
            .update_stored("alice", None, Some(false), &user_persist)
            .is_err());
        assert!(!users.get("alice").unwrap().enabled);

        // Devices.
        let key = devices.get("d1").unwrap().primary_key;
        assert!(matches!(
            devices.create_stored("d2", DeviceSpec::default(), &device_persist),
            Err(DeviceError::Store(_))
        ));
        assert!(devices.get("d2").is_none());
        let rotate = DeviceSpec {
            primary_key: Some(String::new()),
            ..DeviceSpec::default()
        };
        assert!(devices
            .update_stored("d1", rotate, &device_persist)
            .is_err());
        assert_eq!(devices.get("d1").unwrap().primary_key, key);
        assert!(devices.delete_stored("d1", &device_persist).is_err());
        let disable = DeviceSpec {
            enabled: Some(false),
            ..DeviceSpec::default()
        };
        assert!(devices
            .update_stored("d1", disable, &device_persist)
            .is_err());
        assert!(!devices.get("d1").unwrap().enabled);

        // Policies.
        let doc: PolicyDoc = serde_json::from_value(serde_json::json!({
            "id": "p", "effect": "deny", "actions": ["publish"], "resources": ["a/#"]
        }))
        .unwrap();
        assert!(security
            .policies
            .create_stored(doc.clone(), &policy_persist)
            .is_err());
        assert!(security.policies.get("p").is_none());
        security.policies.create(doc.clone()).unwrap();
        let mut changed = doc;
        changed.effect = "allow".into();
        assert!(security
            .policies
            .replace_stored(changed, &policy_persist)
            .is_err());
        assert_eq!(security.policies.get("p").unwrap().effect, "deny");
        assert!(security
            .policies
            .delete_stored("p", &policy_persist)
            .is_err());
        assert!(security.policies.get("p").is_some());
    }
}
