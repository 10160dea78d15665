//! API keys: `/api/v1/api-keys` (create, list, revoke). A key is shown once, when it is
//! created; only its SHA-256 is kept (in memory for checks and in the store). The
//! bootstrap key comes from the config (`api.api_key`) or is generated at the first start
//! without stored keys and printed once.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::StatusCode;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody, Json, Path};
use super::AppState;
use crate::records::{self, RecordError, RecordKind, Records};

/// A stored API key (without the key itself).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub(crate) struct ApiKeyInfo {
    /// Identifier used to revoke it.
    pub(crate) id: String,
    /// What the key is for, as given at creation.
    pub(crate) name: String,
    /// The first characters of the key, to recognise it.
    pub(crate) prefix: String,
    /// Creation time, seconds since the Unix epoch.
    pub(crate) created: u64,
    /// SHA-256 of the key, hex.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schema(ignore)]
    pub(crate) hash: String,
}

/// `POST /api/v1/api-keys` body.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateApiKey {
    /// What the key is for (1..=64 characters).
    name: String,
}

/// A key just created: the only time the key itself is shown.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct CreatedApiKey {
    #[serde(flatten)]
    info: ApiKeyInfo,
    /// The key; keep it, it is not shown again.
    key: String,
}

/// The keys accepted, by hash; the bootstrap key from the config is not stored.
pub(crate) struct ApiKeys {
    /// SHA-256 (hex) → key info. A std lock held for one map operation.
    by_hash: RwLock<HashMap<String, ApiKeyInfo>>,
    /// Where created keys are kept.
    records: Arc<dyn Records>,
}

/// SHA-256 of `key`, hex.
fn hash(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new random key: `avk_` and 32 random bytes in hex.
fn generate() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("avk_{hex}")
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl ApiKeys {
    /// Loads the stored keys; adds the configured bootstrap key, or, with neither,
    /// generates one, stores it and returns it so the caller prints it once.
    pub(crate) fn load(
        records: Arc<dyn Records>,
        bootstrap: Option<&str>,
    ) -> Result<(Self, Option<String>), RecordError> {
        let stored: Vec<(String, ApiKeyInfo)> = records::list(&*records, RecordKind::ApiKey)?;
        let mut by_hash: HashMap<String, ApiKeyInfo> = stored
            .into_iter()
            .map(|(_, info)| (info.hash.clone(), info))
            .collect();
        if let Some(key) = bootstrap {
            by_hash.insert(
                hash(key),
                ApiKeyInfo {
                    id: "bootstrap".into(),
                    name: "bootstrap key from the configuration".into(),
                    prefix: key.chars().take(8).collect(),
                    created: 0,
                    hash: String::new(),
                },
            );
        }
        let keys = Self {
            by_hash: RwLock::new(by_hash),
            records,
        };
        let generated = if keys.is_empty() {
            let (created, key) = keys.create("bootstrap".into())?;
            tracing::debug!(id = %created.id, "generated the bootstrap API key");
            Some(key)
        } else {
            None
        };
        Ok((keys, generated))
    }

    fn is_empty(&self) -> bool {
        self.by_hash
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_empty()
    }

    /// Whether `key` is accepted.
    pub(crate) fn check(&self, key: &str) -> bool {
        self.by_hash
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains_key(&hash(key))
    }

    /// Creates and stores a key; returns it with its info.
    fn create(&self, name: String) -> Result<(ApiKeyInfo, String), RecordError> {
        let key = generate();
        let info = ApiKeyInfo {
            id: key[4..16].to_owned(),
            name,
            prefix: key[..12].to_owned(),
            created: unix_now(),
            hash: hash(&key),
        };
        records::put(&*self.records, RecordKind::ApiKey, &info.id, &info)?;
        self.by_hash
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(info.hash.clone(), info.clone());
        Ok((info, key))
    }

    /// Every key, by id.
    fn list(&self) -> Vec<ApiKeyInfo> {
        let mut keys: Vec<ApiKeyInfo> = self
            .by_hash
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .map(|k| ApiKeyInfo {
                hash: String::new(),
                ..k.clone()
            })
            .collect();
        keys.sort_by(|a, b| a.id.cmp(&b.id));
        keys
    }

    /// Revokes key `id`; whether it existed.
    fn revoke(&self, id: &str) -> Result<bool, RecordError> {
        let mut map = self
            .by_hash
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(hash) = map.iter().find(|(_, k)| k.id == id).map(|(h, _)| h.clone()) else {
            return Ok(false);
        };
        map.remove(&hash);
        drop(map);
        self.records.delete(RecordKind::ApiKey, id)?;
        Ok(true)
    }
}

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_keys, create_key))
        .routes(routes!(revoke_key))
}

/// List the API keys (never the keys themselves).
#[utoipa::path(get, path = "/api/v1/api-keys", tag = "api-keys",
    responses((status = 200, body = [ApiKeyInfo]), (status = 401, body = ErrorBody)))]
async fn list_keys(State(state): State<AppState>) -> Json<Vec<ApiKeyInfo>> {
    Json(state.keys.list())
}

/// Create an API key; the response is the only time the key is shown.
#[utoipa::path(post, path = "/api/v1/api-keys", tag = "api-keys", request_body = CreateApiKey,
    responses((status = 201, body = CreatedApiKey), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
async fn create_key(
    State(state): State<AppState>,
    Json(body): Json<CreateApiKey>,
) -> Result<(StatusCode, Json<CreatedApiKey>), ApiError> {
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > 64 {
        return Err(ApiError::invalid("name", "must be 1 to 64 characters"));
    }
    let (mut info, key) = state.keys.create(name.to_owned())?;
    info.hash = String::new();
    Ok((StatusCode::CREATED, Json(CreatedApiKey { info, key })))
}

/// Revoke an API key at once.
#[utoipa::path(delete, path = "/api/v1/api-keys/{id}", tag = "api-keys",
    params(("id" = String, Path, description = "The key's id")),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn revoke_key(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if state.keys.revoke(&id)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no API key with id {id:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::MemoryRecords;

    #[test]
    fn the_generated_bootstrap_key_is_stored_hashed_and_printed_once() {
        let records: Arc<dyn Records> = Arc::new(MemoryRecords::default());
        let (keys, generated) = ApiKeys::load(Arc::clone(&records), None).unwrap();
        let key = generated.expect("first start generates a key");
        assert!(keys.check(&key));
        let stored: Vec<(String, ApiKeyInfo)> =
            records::list(&*records, RecordKind::ApiKey).unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].1.hash, hash(&key));
        assert!(
            !stored[0].1.hash.contains(&key[4..]),
            "only the hash is kept"
        );

        let (again, generated) = ApiKeys::load(Arc::clone(&records), None).unwrap();
        assert_eq!(generated, None, "printed once");
        assert!(again.check(&key));
        assert!(again.revoke(&stored[0].0).unwrap());
        let (last, generated) = ApiKeys::load(records, Some("configured-key-0123456789")).unwrap();
        assert_eq!(generated, None, "a configured key needs no generated one");
        assert!(!last.check(&key));
        assert!(last.check("configured-key-0123456789"));
    }
}
