//! JWT authentication: a token in the password (or username) field, signed with HS256/384/512,
//! RS256/384/512 or ES256/384; keys given inline (a secret or a PEM public key) or as a JWKS
//! document fetched from a URL and refreshed periodically. `exp` is required and checked,
//! `nbf` checked when present. Optional claims: one that must equal the client id, one that
//! names the user, and `publish` / `subscribe` arrays of topic filters that become the
//! connection's grants (they then decide publish and subscribe alone).
//!
//! A field that does not look like a JWT (three dot-separated parts) is skipped, so other
//! authenticators can try it. A token whose JWKS could not be fetched yet is refused with
//! "server unavailable", never accepted.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use aviary_core::authz::{AuthRefusal, Grants, Principal, ResourcePattern};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tracing::debug;

use super::{AuthRequest, Verdict};

/// Which CONNECT field carries the token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TokenField {
    Password,
    Username,
}

/// Where the verification keys come from (stored as they are when the API changes them:
/// a shared secret must be kept to check signatures, a hash will not do).
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum JwtKeys {
    /// A shared secret (HS256/384/512).
    Secret(Vec<u8>),
    /// A PEM public key (RSA or EC).
    PublicKeyPem(Vec<u8>),
    /// A JWKS document at this URL, fetched at start and every `refresh`.
    Jwks { url: String, refresh: Duration },
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Secret(_) => f.write_str("Secret(<redacted>)"),
            Self::PublicKeyPem(_) => f.write_str("PublicKeyPem(..)"),
            Self::Jwks { url, refresh } => write!(f, "Jwks({url}, every {refresh:?})"),
        }
    }
}

/// Validated `[auth.jwt]` settings.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JwtSettings {
    pub from: TokenField,
    pub keys: JwtKeys,
    /// Accepted `alg` values.
    pub algorithms: Vec<Algorithm>,
    /// A claim that must equal the client id (`None`: not checked).
    pub client_id_claim: Option<String>,
    /// The claim naming the user (default `sub`), for `${username}` and conditions.
    pub username_claim: String,
    /// Clock skew allowed on `exp`/`nbf`, seconds.
    pub leeway: u64,
}

/// One verification key.
struct Key {
    /// `kid` of a JWKS key; `None` for inline keys.
    kid: Option<String>,
    key: DecodingKey,
}

/// The JWT authenticator.
pub struct JwtAuthenticator {
    settings: JwtSettings,
    /// Current keys; replaced whole by a JWKS refresh. Empty: JWKS not fetched yet.
    keys: ArcSwap<Vec<Key>>,
}

impl std::fmt::Debug for JwtAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAuthenticator")
            .field("settings", &self.settings)
            .field("keys", &self.keys.load().len())
            .finish()
    }
}

/// Why the JWT settings are unusable.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("invalid key: {0}")]
    Key(jsonwebtoken::errors::Error),
    #[error("cannot fetch the JWKS: {0}")]
    Fetch(String),
    #[error("the JWKS has no usable key")]
    NoUsableKeys,
}

impl JwtAuthenticator {
    /// Builds the authenticator; inline keys are parsed here (JWKS: see [`Self::refresh`]).
    pub fn new(settings: JwtSettings) -> Result<Self, JwtError> {
        let keys = match &settings.keys {
            JwtKeys::Secret(secret) => vec![Key {
                kid: None,
                key: DecodingKey::from_secret(secret),
            }],
            JwtKeys::PublicKeyPem(pem) => {
                let key = DecodingKey::from_rsa_pem(pem)
                    .or_else(|_| DecodingKey::from_ec_pem(pem))
                    .map_err(JwtError::Key)?;
                vec![Key { kid: None, key }]
            }
            JwtKeys::Jwks { .. } => Vec::new(),
        };
        Ok(Self {
            settings,
            keys: ArcSwap::from_pointee(keys),
        })
    }

    /// The JWKS URL and refresh period, if keys come from one.
    pub fn jwks(&self) -> Option<(&str, Duration)> {
        match &self.settings.keys {
            JwtKeys::Jwks { url, refresh } => Some((url, *refresh)),
            _ => None,
        }
    }

    /// Fetches the JWKS document and swaps its keys in (unsupported keys are skipped). A
    /// document without a usable key is refused ([`JwtError::NoUsableKeys`]): the previous
    /// keys stay, so a broken or emptied endpoint does not lock every device out.
    pub async fn refresh(&self, client: &reqwest::Client) -> Result<usize, JwtError> {
        let Some((url, _)) = self.jwks() else {
            return Ok(self.keys.load().len());
        };
        let fetch = |e: reqwest::Error| JwtError::Fetch(e.to_string());
        let set: JwkSet = client
            .get(url)
            .send()
            .await
            .map_err(fetch)?
            .error_for_status()
            .map_err(fetch)?
            .json()
            .await
            .map_err(fetch)?;
        let keys: Vec<Key> = set
            .keys
            .iter()
            .filter_map(|jwk| {
                let key = DecodingKey::from_jwk(jwk).ok()?;
                Some(Key {
                    kid: jwk.common.key_id.clone(),
                    key,
                })
            })
            .collect();
        let count = keys.len();
        if count == 0 {
            return Err(JwtError::NoUsableKeys);
        }
        self.keys.store(Arc::new(keys));
        Ok(count)
    }

    pub(super) fn authenticate(&self, request: &AuthRequest) -> Verdict {
        let token = match self.settings.from {
            TokenField::Password => request
                .password
                .as_deref()
                .and_then(|p| std::str::from_utf8(p).ok()),
            TokenField::Username => request.username.as_deref(),
        };
        let Some(token) = token.filter(|t| t.split('.').count() == 3) else {
            return Verdict::Skip;
        };
        let Ok(header) = jsonwebtoken::decode_header(token) else {
            return Verdict::Skip;
        };
        if !self.settings.algorithms.contains(&header.alg) {
            return Verdict::Refuse(AuthRefusal::BadCredentials);
        }
        let keys = self.keys.load();
        if keys.is_empty() {
            return Verdict::Refuse(AuthRefusal::ServerUnavailable);
        }
        let mut validation = Validation::new(header.alg);
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.leeway = self.settings.leeway;
        let candidates = keys
            .iter()
            .filter(|k| header.kid.is_none() || k.kid.is_none() || k.kid == header.kid);
        let mut claims = None;
        for key in candidates {
            match jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
                token,
                &key.key,
                &validation,
            ) {
                Ok(data) => {
                    claims = Some(data.claims);
                    break;
                }
                Err(e) => debug!(error = %e, "JWT refused by a key"),
            }
        }
        let Some(claims) = claims else {
            return Verdict::Refuse(AuthRefusal::BadCredentials);
        };
        self.principal(&claims, request)
    }

    /// The principal for verified claims: client id binding, username, grants.
    fn principal(
        &self,
        claims: &serde_json::Map<String, serde_json::Value>,
        request: &AuthRequest,
    ) -> Verdict {
        if let Some(claim) = &self.settings.client_id_claim {
            if claims.get(claim).and_then(|v| v.as_str()) != Some(request.client_id.as_str()) {
                return Verdict::Refuse(AuthRefusal::NotAuthorized);
            }
        }
        let username = claims
            .get(&self.settings.username_claim)
            .and_then(|v| v.as_str())
            .map(Into::into)
            .or_else(|| match self.settings.from {
                TokenField::Password => request.username.as_deref().map(Into::into),
                TokenField::Username => None,
            });
        let grants = match (claims.get("publish"), claims.get("subscribe")) {
            (None, None) => None,
            (publish, subscribe) => match (patterns(publish), patterns(subscribe)) {
                (Some(publish), Some(subscribe)) => Some(Grants { publish, subscribe }),
                _ => return Verdict::Refuse(AuthRefusal::BadCredentials),
            },
        };
        Verdict::Accept(Principal {
            username,
            authenticator: "jwt".into(),
            grants,
            ..Principal::default()
        })
    }
}

/// A claim holding an array of topic filters (missing: none).
fn patterns(claim: Option<&serde_json::Value>) -> Option<Vec<ResourcePattern>> {
    let Some(claim) = claim else {
        return Some(Vec::new());
    };
    claim
        .as_array()?
        .iter()
        .map(|v| ResourcePattern::new(v.as_str()?).ok())
        .collect()
}
