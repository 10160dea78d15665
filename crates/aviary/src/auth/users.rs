//! Built-in users: username and password, stored only as an argon2id hash (PHC string).
//! Verifying costs tens of milliseconds of CPU on purpose, so it runs on the blocking pool
//! with a bound on how many run at once; a success is remembered briefly (keyed by a
//! SHA-256 of the password, never the password) so reconnect storms do not pin the CPU.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use aviary_core::authz::{AuthRefusal, Principal};
use ring::rand::{SecureRandom, SystemRandom};
use tokio::sync::Semaphore;

use super::{AuthRequest, Verdict};
use crate::records::Persist;

/// How long a successful verification is remembered.
const SUCCESS_TTL: Duration = Duration::from_secs(60);
/// Most remembered successes; the cache is cleared when it would grow past this.
const SUCCESS_CACHE_MAX: usize = 10_000;
/// Password verifications running at once (each holds a blocking thread and ~19 MiB).
const MAX_CONCURRENT_VERIFIES: usize = 4;

/// Why a user operation failed (management API: 400/404/409).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UserError {
    #[error("username must be 1 to 256 characters")]
    BadUsername,
    #[error("password must be 1 to 1024 bytes")]
    BadPassword,
    #[error("user {0:?} already exists")]
    Exists(String),
    #[error("no user {0:?}")]
    NotFound(String),
    #[error("not an argon2 PHC hash string")]
    BadHash,
    /// The change could not be stored (it was not made, unless it disables a user: that
    /// applies anyway).
    #[error("{0}")]
    Store(String),
}

/// A user as stored (and listed by the API: no secret but the hash, which is never shown).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct User {
    /// The MQTT username.
    pub username: String,
    /// argon2id PHC string (`$argon2id$v=19$m=...`).
    pub password_hash: String,
    /// A disabled user is refused (0x87 / 3.x 5) even with the right password.
    pub enabled: bool,
}

/// The built-in users and the verification machinery.
#[derive(Debug)]
pub struct UserRegistry {
    /// Users by name. A plain mutex: held only to clone a hash or change the map.
    users: Mutex<HashMap<String, User>>,
    /// (username, SHA-256 of the password) → when the success expires; cleared for a user
    /// whenever that user changes.
    successes: Mutex<HashMap<(String, [u8; 32]), Instant>>,
    /// Bounds concurrent argon2 verifications.
    verifies: Arc<Semaphore>,
}

impl Default for UserRegistry {
    fn default() -> Self {
        Self {
            users: Mutex::default(),
            successes: Mutex::default(),
            verifies: Arc::new(Semaphore::new(MAX_CONCURRENT_VERIFIES)),
        }
    }
}

/// Hashes a password with argon2id and a random 16-byte salt.
pub fn hash_password(password: &str) -> Result<String, UserError> {
    if password.is_empty() || password.len() > 1024 {
        return Err(UserError::BadPassword);
    }
    let mut salt = [0u8; 16];
    SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| UserError::BadPassword)?;
    Argon2::default()
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|_| UserError::BadPassword)
}

impl UserRegistry {
    /// Whether any user exists (anonymous access defaults to off then).
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Adds a user with a plain password (hashed here) or a ready PHC hash.
    pub fn create(&self, username: &str, secret: Secret, enabled: bool) -> Result<User, UserError> {
        self.create_stored(username, secret, enabled, &|_| Ok(()))
    }

    /// [`Self::create`], stored by `persist` before the user exists.
    pub(crate) fn create_stored(
        &self,
        username: &str,
        secret: Secret,
        enabled: bool,
        persist: Persist<'_, User>,
    ) -> Result<User, UserError> {
        if username.is_empty() || username.len() > 256 {
            return Err(UserError::BadUsername);
        }
        let password_hash = secret.into_hash()?;
        let user = User {
            username: username.to_owned(),
            password_hash,
            enabled,
        };
        if self.lock().contains_key(username) {
            return Err(UserError::Exists(username.to_owned()));
        }
        persist(Some(&user)).map_err(UserError::Store)?;
        self.lock().insert(username.to_owned(), user.clone());
        Ok(user)
    }

    /// Changes a user's password and/or enabled flag.
    pub fn update(
        &self,
        username: &str,
        secret: Option<Secret>,
        enabled: Option<bool>,
    ) -> Result<User, UserError> {
        self.update_stored(username, secret, enabled, &|_| Ok(()))
    }

    /// [`Self::update`], stored by `persist` first; disabling applies first and is stored
    /// after (a withdrawal takes effect even if it cannot be stored).
    pub(crate) fn update_stored(
        &self,
        username: &str,
        secret: Option<Secret>,
        enabled: Option<bool>,
        persist: Persist<'_, User>,
    ) -> Result<User, UserError> {
        let hash = secret.map(Secret::into_hash).transpose()?;
        let mut user = self
            .get(username)
            .ok_or_else(|| UserError::NotFound(username.to_owned()))?;
        if let Some(hash) = hash {
            user.password_hash = hash;
        }
        if let Some(enabled) = enabled {
            user.enabled = enabled;
        }
        let withdrawal = enabled == Some(false);
        if !withdrawal {
            persist(Some(&user)).map_err(UserError::Store)?;
        }
        {
            let mut users = self.lock();
            let slot = users
                .get_mut(username)
                .ok_or_else(|| UserError::NotFound(username.to_owned()))?;
            *slot = user.clone();
        }
        self.forget_successes(username);
        if withdrawal {
            persist(Some(&user))
                .map_err(|e| UserError::Store(format!("{e} (applied until a restart)")))?;
        }
        Ok(user)
    }

    pub fn delete(&self, username: &str) -> Result<(), UserError> {
        self.delete_stored(username, &|_| Ok(()))
    }

    /// [`Self::delete`], the record deleted by `persist(None)` first.
    pub(crate) fn delete_stored(
        &self,
        username: &str,
        persist: Persist<'_, User>,
    ) -> Result<(), UserError> {
        if !self.lock().contains_key(username) {
            return Err(UserError::NotFound(username.to_owned()));
        }
        persist(None).map_err(UserError::Store)?;
        self.lock().remove(username);
        self.forget_successes(username);
        Ok(())
    }

    pub fn get(&self, username: &str) -> Option<User> {
        self.lock().get(username).cloned()
    }

    /// All users, sorted by name.
    pub fn list(&self) -> Vec<User> {
        let mut users: Vec<User> = self.lock().values().cloned().collect();
        users.sort_by(|a, b| a.username.cmp(&b.username));
        users
    }

    /// Checks a CONNECT's username and password. Not a known user: not ours
    /// ([`Verdict::Skip`]), so later authenticators may try.
    pub(super) async fn authenticate(&self, request: &AuthRequest) -> Verdict {
        let Some(username) = request.username.as_deref() else {
            return Verdict::Skip;
        };
        let Some(user) = self.get(username) else {
            return Verdict::Skip;
        };
        let Some(password) = request.password.as_deref() else {
            return Verdict::Refuse(AuthRefusal::BadCredentials);
        };
        let digest: [u8; 32] = {
            let d = ring::digest::digest(&ring::digest::SHA256, password);
            let mut out = [0u8; 32];
            out.copy_from_slice(d.as_ref());
            out
        };
        let key = (username.to_owned(), digest);
        let now = Instant::now();
        let cached = self
            .successes
            .lock()
            .map(|cache| cache.get(&key).is_some_and(|until| *until > now))
            .unwrap_or(false);
        let valid = cached || self.verify(&user.password_hash, password).await;
        if !valid {
            return Verdict::Refuse(AuthRefusal::BadCredentials);
        }
        if !cached {
            if let Ok(mut cache) = self.successes.lock() {
                if cache.len() >= SUCCESS_CACHE_MAX {
                    cache.clear();
                }
                cache.insert(key, now + SUCCESS_TTL);
            }
        }
        if !user.enabled {
            return Verdict::Refuse(AuthRefusal::NotAuthorized);
        }
        Verdict::Accept(Principal {
            username: Some(username.into()),
            authenticator: "users".into(),
            ..Principal::default()
        })
    }

    /// argon2 verification on the blocking pool, at most [`MAX_CONCURRENT_VERIFIES`] at once.
    async fn verify(&self, hash: &str, password: &[u8]) -> bool {
        let Ok(_permit) = Arc::clone(&self.verifies).acquire_owned().await else {
            return false;
        };
        let hash = hash.to_owned();
        let password = password.to_vec();
        tokio::task::spawn_blocking(move || {
            Argon2::default()
                .verify_password(&password, hash.as_str())
                .is_ok()
        })
        .await
        .unwrap_or(false)
    }

    fn forget_successes(&self, username: &str) {
        if let Ok(mut cache) = self.successes.lock() {
            cache.retain(|(name, _), _| name != username);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, User>> {
        // A panic while holding this lock leaves the map consistent (single inserts and
        // removes), so a poisoned lock is still usable.
        self.users.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A password as given to create or update a user.
#[derive(Clone)]
pub enum Secret {
    /// Plain text; hashed at once and dropped.
    Password(String),
    /// A ready argon2 PHC string (from a config file or a backup).
    Hash(String),
}

impl Secret {
    fn into_hash(self) -> Result<String, UserError> {
        match self {
            Self::Password(password) => hash_password(&password),
            Self::Hash(hash) => {
                let parsed = argon2::PasswordHash::new(&hash).map_err(|_| UserError::BadHash)?;
                if !parsed.algorithm.as_str().starts_with("argon2") {
                    return Err(UserError::BadHash);
                }
                Ok(hash)
            }
        }
    }
}

impl std::fmt::Debug for Secret {
    /// Never shows the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Password(_) => f.write_str("Password(<redacted>)"),
            Self::Hash(_) => f.write_str("Hash(<redacted>)"),
        }
    }
}
