//! Device identities: one secret per device. A device has an id (its MQTT client id), an
//! enabled flag, a primary and a secondary key (two, so keys can be rotated without
//! downtime) and properties added as user properties to every message it publishes.
//!
//! A device connects with a signed access token in the password field (see
//! `docs/security.md`):
//!
//! ```text
//! password = "v1." + expiry + "." + base64url_nopad(HMAC-SHA256(key, client_id + "." + expiry))
//! ```
//!
//! where `expiry` is Unix seconds in decimal and `key` is the raw bytes of either key (the
//! API shows keys in standard base64). Expired, malformed and wrongly signed tokens are
//! refused with 0x86 (3.x 4); a disabled device with 0x87 (3.x 5). Keys must be kept to
//! check signatures, so they are stored as given (HMAC needs the key, a hash will not do)
//! and never logged.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use aviary_core::authz::{AuthRefusal, Principal};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use super::{AuthRequest, Verdict};
use crate::records::Persist;

/// Bytes of a generated key.
const KEY_LEN: usize = 32;
/// Properties per device (each becomes a user property on every message).
const MAX_PROPERTIES: usize = 32;

/// Why a device operation failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeviceError {
    #[error("device id must be 1 to 256 characters")]
    BadId,
    #[error("key must be standard base64 of 16 to 64 bytes")]
    BadKey,
    #[error("at most {MAX_PROPERTIES} properties")]
    TooManyProperties,
    #[error("device {0:?} already exists")]
    Exists(String),
    #[error("no device {0:?}")]
    NotFound(String),
    #[error("cannot generate a key")]
    Random,
    /// The change could not be stored (it was not made, unless it disables a device:
    /// that applies anyway).
    #[error("{0}")]
    Store(String),
}

/// A device identity as stored and shown by the API.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeviceIdentity {
    /// The device's MQTT client id.
    pub device_id: String,
    /// A disabled device is refused.
    pub enabled: bool,
    /// Standard base64 of the key bytes.
    pub primary_key: String,
    /// Standard base64 of the key bytes (rotation: devices move to it, then primary is
    /// replaced).
    pub secondary_key: String,
    /// Added as user properties to every message the device publishes.
    pub properties: Vec<(String, String)>,
}

/// What the API may give when creating or changing a device; keys are generated when
/// missing at creation.
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct DeviceSpec {
    pub enabled: Option<bool>,
    pub primary_key: Option<String>,
    pub secondary_key: Option<String>,
    pub properties: Option<Vec<(String, String)>>,
}

/// All device identities.
#[derive(Debug, Default)]
pub struct DeviceRegistry {
    /// Devices by id; the mutex is held only to read or change one entry.
    devices: Mutex<HashMap<String, DeviceIdentity>>,
}

impl DeviceRegistry {
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    pub fn create(&self, device_id: &str, spec: DeviceSpec) -> Result<DeviceIdentity, DeviceError> {
        self.create_stored(device_id, spec, &|_| Ok(()))
    }

    /// [`Self::create`], stored by `persist` before the device exists.
    pub(crate) fn create_stored(
        &self,
        device_id: &str,
        spec: DeviceSpec,
        persist: Persist<'_, DeviceIdentity>,
    ) -> Result<DeviceIdentity, DeviceError> {
        if device_id.is_empty() || device_id.len() > 256 {
            return Err(DeviceError::BadId);
        }
        let device = DeviceIdentity {
            device_id: device_id.to_owned(),
            enabled: spec.enabled.unwrap_or(true),
            primary_key: key_or_generate(spec.primary_key)?,
            secondary_key: key_or_generate(spec.secondary_key)?,
            properties: checked_properties(spec.properties.unwrap_or_default())?,
        };
        if self.lock().contains_key(device_id) {
            return Err(DeviceError::Exists(device_id.to_owned()));
        }
        persist(Some(&device)).map_err(DeviceError::Store)?;
        self.lock().insert(device_id.to_owned(), device.clone());
        Ok(device)
    }

    /// Changes the given fields; a key given as an empty string is regenerated.
    pub fn update(&self, device_id: &str, spec: DeviceSpec) -> Result<DeviceIdentity, DeviceError> {
        self.update_stored(device_id, spec, &|_| Ok(()))
    }

    /// [`Self::update`], stored by `persist` first; disabling applies first and is stored
    /// after (a withdrawal takes effect even if it cannot be stored).
    pub(crate) fn update_stored(
        &self,
        device_id: &str,
        spec: DeviceSpec,
        persist: Persist<'_, DeviceIdentity>,
    ) -> Result<DeviceIdentity, DeviceError> {
        let primary = spec
            .primary_key
            .map(|k| key_or_generate(Some(k)))
            .transpose()?;
        let secondary = spec
            .secondary_key
            .map(|k| key_or_generate(Some(k)))
            .transpose()?;
        let properties = spec.properties.map(checked_properties).transpose()?;
        let mut device = self
            .get(device_id)
            .ok_or_else(|| DeviceError::NotFound(device_id.to_owned()))?;
        if let Some(enabled) = spec.enabled {
            device.enabled = enabled;
        }
        if let Some(key) = primary {
            device.primary_key = key;
        }
        if let Some(key) = secondary {
            device.secondary_key = key;
        }
        if let Some(properties) = properties {
            device.properties = properties;
        }
        let withdrawal = spec.enabled == Some(false);
        if !withdrawal {
            persist(Some(&device)).map_err(DeviceError::Store)?;
        }
        {
            let mut devices = self.lock();
            let slot = devices
                .get_mut(device_id)
                .ok_or_else(|| DeviceError::NotFound(device_id.to_owned()))?;
            *slot = device.clone();
        }
        if withdrawal {
            persist(Some(&device))
                .map_err(|e| DeviceError::Store(format!("{e} (applied until a restart)")))?;
        }
        Ok(device)
    }

    pub fn delete(&self, device_id: &str) -> Result<(), DeviceError> {
        self.delete_stored(device_id, &|_| Ok(()))
    }

    /// [`Self::delete`], the record deleted by `persist(None)` first.
    pub(crate) fn delete_stored(
        &self,
        device_id: &str,
        persist: Persist<'_, DeviceIdentity>,
    ) -> Result<(), DeviceError> {
        if !self.lock().contains_key(device_id) {
            return Err(DeviceError::NotFound(device_id.to_owned()));
        }
        persist(None).map_err(DeviceError::Store)?;
        self.lock().remove(device_id);
        Ok(())
    }

    pub fn get(&self, device_id: &str) -> Option<DeviceIdentity> {
        self.lock().get(device_id).cloned()
    }

    pub fn list(&self) -> Vec<DeviceIdentity> {
        let mut all: Vec<_> = self.lock().values().cloned().collect();
        all.sort_by(|a, b| a.device_id.cmp(&b.device_id));
        all
    }

    /// A CONNECT whose client id is a registered device is ours: its password must be a
    /// valid token. Other client ids are skipped.
    pub(super) fn authenticate(&self, request: &AuthRequest, now: SystemTime) -> Verdict {
        let Some(device) = self.get(&request.client_id) else {
            return Verdict::Skip;
        };
        let Some(token) = request.password.as_deref() else {
            return Verdict::Refuse(AuthRefusal::BadCredentials);
        };
        let valid = [&device.primary_key, &device.secondary_key]
            .into_iter()
            .any(|key| verify_token(key, &request.client_id, token, now).is_ok());
        if !valid {
            return Verdict::Refuse(AuthRefusal::BadCredentials);
        }
        if !device.enabled {
            return Verdict::Refuse(AuthRefusal::NotAuthorized);
        }
        Verdict::Accept(Principal {
            username: request.username.as_deref().map(Into::into),
            authenticator: "device".into(),
            properties: device.properties,
            ..Principal::default()
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, DeviceIdentity>> {
        // Entries are replaced whole: a poisoned lock still guards a consistent map.
        self.devices.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Why a token was refused (tests and debug logs; the client only sees 0x86).
#[derive(Debug, PartialEq, Eq)]
pub enum TokenError {
    Malformed,
    Expired,
    BadSignature,
}

/// Makes a token for `client_id` valid until `expiry` (Unix seconds) with `key_b64`.
pub fn make_token(key_b64: &str, client_id: &str, expiry: u64) -> Option<String> {
    let key = STANDARD.decode(key_b64).ok()?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, &key);
    let tag = hmac::sign(&key, format!("{client_id}.{expiry}").as_bytes());
    Some(format!(
        "v1.{expiry}.{}",
        URL_SAFE_NO_PAD.encode(tag.as_ref())
    ))
}

/// Checks a token against one key, in constant time for the signature.
pub fn verify_token(
    key_b64: &str,
    client_id: &str,
    token: &[u8],
    now: SystemTime,
) -> Result<(), TokenError> {
    let token = std::str::from_utf8(token).map_err(|_| TokenError::Malformed)?;
    let rest = token.strip_prefix("v1.").ok_or(TokenError::Malformed)?;
    let (expiry, signature) = rest.split_once('.').ok_or(TokenError::Malformed)?;
    if expiry.is_empty() || !expiry.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TokenError::Malformed);
    }
    let expiry_secs: u64 = expiry.parse().map_err(|_| TokenError::Malformed)?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| TokenError::Malformed)?;
    let key = STANDARD
        .decode(key_b64)
        .map_err(|_| TokenError::Malformed)?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, &key);
    hmac::verify(&key, format!("{client_id}.{expiry}").as_bytes(), &signature)
        .map_err(|_| TokenError::BadSignature)?;
    let now_secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if expiry_secs <= now_secs {
        return Err(TokenError::Expired);
    }
    Ok(())
}

/// A given key checked (base64, 16–64 bytes), or a new random one for `None` or `""`.
fn key_or_generate(key: Option<String>) -> Result<String, DeviceError> {
    match key.filter(|k| !k.is_empty()) {
        Some(key) => {
            let bytes = STANDARD.decode(&key).map_err(|_| DeviceError::BadKey)?;
            if !(16..=64).contains(&bytes.len()) {
                return Err(DeviceError::BadKey);
            }
            Ok(key)
        }
        None => {
            let mut bytes = [0u8; KEY_LEN];
            SystemRandom::new()
                .fill(&mut bytes)
                .map_err(|_| DeviceError::Random)?;
            Ok(STANDARD.encode(bytes))
        }
    }
}

fn checked_properties(
    properties: Vec<(String, String)>,
) -> Result<Vec<(String, String)>, DeviceError> {
    if properties.len() > MAX_PROPERTIES {
        return Err(DeviceError::TooManyProperties);
    }
    Ok(properties)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn token_format_is_pinned() {
        // HMAC-SHA256(key = "0123456789abcdef0123456789abcdef", "dev-1.2000000000"),
        // base64url without padding; the same value docs/security.md's examples produce.
        let token = make_token(KEY, "dev-1", 2_000_000_000).unwrap();
        assert_eq!(
            token,
            "v1.2000000000.t0ulG3RqkwAR2E6_d76gi2h3DJp7HCgOd7yhGaKRFn0"
        );
        assert_eq!(
            verify_token(KEY, "dev-1", token.as_bytes(), at(1_999_999_999)),
            Ok(())
        );
    }

    #[test]
    fn expired_malformed_and_wrongly_signed_tokens_are_refused() {
        let token = make_token(KEY, "dev-1", 1000).unwrap();
        let check =
            |t: &str, client: &str, now: u64| verify_token(KEY, client, t.as_bytes(), at(now));
        assert_eq!(check(&token, "dev-1", 1000), Err(TokenError::Expired));
        assert_eq!(check(&token, "dev-2", 10), Err(TokenError::BadSignature));
        assert_eq!(check("v1.1000", "dev-1", 10), Err(TokenError::Malformed));
        assert_eq!(
            check("v2.1000.abc", "dev-1", 10),
            Err(TokenError::Malformed)
        );
        assert_eq!(check("v1.-5.abc", "dev-1", 10), Err(TokenError::Malformed));
        assert_eq!(check("v1.1000.!!", "dev-1", 10), Err(TokenError::Malformed));
        let other = make_token(&STANDARD.encode([7u8; 32]), "dev-1", 1000).unwrap();
        assert_eq!(check(&other, "dev-1", 10), Err(TokenError::BadSignature));
        // Changing the expiry breaks the signature.
        let forged = token.replacen("v1.1000.", "v1.9999.", 1);
        assert_eq!(check(&forged, "dev-1", 10), Err(TokenError::BadSignature));
    }

    #[test]
    fn keys_are_generated_when_missing_and_checked_when_given() {
        let registry = DeviceRegistry::default();
        let device = registry.create("d", DeviceSpec::default()).unwrap();
        assert_eq!(STANDARD.decode(&device.primary_key).unwrap().len(), KEY_LEN);
        assert_ne!(device.primary_key, device.secondary_key);
        let bad = DeviceSpec {
            primary_key: Some("short".into()),
            ..DeviceSpec::default()
        };
        assert_eq!(registry.create("e", bad).unwrap_err(), DeviceError::BadKey);
        assert!(matches!(
            registry.create("d", DeviceSpec::default()),
            Err(DeviceError::Exists(_))
        ));
    }
}
