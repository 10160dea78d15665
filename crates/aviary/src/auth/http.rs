//! The HTTP authentication service: a GET or POST to a configured endpoint with templated
//! headers and body, bounded in time (connect and total timeouts) and in concurrency, with a
//! short cache of answers.
//!
//! Placeholders in the URL, headers and body: `${clientid}`, `${username}`, `${password}`,
//! `${peerhost}` (address), `${peerport}`, `${cert_cn}`. In the URL they are
//! percent-encoded, in a JSON body JSON-escaped, in headers used as they are (control
//! characters refused).
//!
//! The answer: 2xx with `{"result": "allow" | "deny" | "ignore"}` (an empty body is "allow"),
//! optionally `"publish"` / `"subscribe"` arrays of topic filters (the grants) and a
//! `"username"`; 401 is bad credentials, 403 not authorized. Anything else, a timeout or an
//! unreachable service refuses with "server unavailable" (0x88 / 3.x 3), never allows; so
//! does an answer body longer than [`MAX_ANSWER_BYTES`] (64 KiB).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aviary_core::authz::{AuthRefusal, Grants, Principal, ResourcePattern};
use tokio::sync::Semaphore;
use tracing::debug;

use super::{AuthRequest, Verdict};

/// Most cached answers (cleared when full).
const CACHE_MAX: usize = 10_000;
/// Largest answer body read; a longer one refuses as "server unavailable" (a broken or
/// hostile service cannot make the broker buffer without bound).
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// GET or POST.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum HttpMethod {
    Get,
    Post,
}

/// Validated `[auth.http]` settings (stored as they are when the API changes them).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HttpSettings {
    /// Endpoint URL template.
    pub url: String,
    pub method: HttpMethod,
    /// Header name → value template.
    pub headers: Vec<(String, String)>,
    /// Body template (POST); sent as `application/json`.
    pub body: Option<String>,
    pub connect_timeout: Duration,
    /// Whole request, answer included.
    pub timeout: Duration,
    /// Requests in flight at most; further CONNECTs wait for a slot (within `timeout`).
    pub max_concurrency: usize,
    /// How long an allow/deny answer is reused for the same credentials (0: never).
    pub cache_ttl: Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            url: String::new(),
            method: HttpMethod::Post,
            headers: Vec::new(),
            body: Some(
                r#"{"clientid":"${clientid}","username":"${username}","password":"${password}","peerhost":"${peerhost}","cert_cn":"${cert_cn}"}"#
                    .to_owned(),
            ),
            connect_timeout: Duration::from_secs(2),
            timeout: Duration::from_secs(5),
            max_concurrency: 64,
            cache_ttl: Duration::from_secs(30),
        }
    }
}

/// A cached answer.
#[derive(Clone, Debug)]
enum Cached {
    Accept(Principal),
    Refuse(AuthRefusal),
    Skip,
}

/// The HTTP authenticator.
#[derive(Debug)]
pub struct HttpAuthenticator {
    settings: HttpSettings,
    client: reqwest::Client,
    slots: Semaphore,
    /// SHA-256 of the request's fields → answer and its expiry. Never holds a password.
    cache: Mutex<HashMap<[u8; 32], (Cached, Instant)>>,
}

/// The answer body.
#[derive(Debug, Default, serde::Deserialize)]
struct Answer {
    result: Option<String>,
    username: Option<String>,
    publish: Option<Vec<String>>,
    subscribe: Option<Vec<String>>,
}

impl HttpAuthenticator {
    pub fn new(settings: HttpSettings) -> Result<Self, reqwest::Error> {
        let client = super::http_client_builder()
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.timeout)
            .build()?;
        Ok(Self {
            slots: Semaphore::new(settings.max_concurrency.max(1)),
            settings,
            client,
            cache: Mutex::default(),
        })
    }

    pub(super) async fn authenticate(&self, request: &AuthRequest) -> Verdict {
        let key = cache_key(request);
        let now = Instant::now();
        if let Some((cached, until)) = self.lock().get(&key).cloned() {
            if until > now {
                return match cached {
                    Cached::Accept(p) => Verdict::Accept(p),
                    Cached::Refuse(r) => Verdict::Refuse(r),
                    Cached::Skip => Verdict::Skip,
                };
            }
        }
        let verdict = match tokio::time::timeout(self.settings.timeout, self.call(request)).await {
            Ok(verdict) => verdict,
            Err(_) => Verdict::Refuse(AuthRefusal::ServerUnavailable),
        };
        let cached = match &verdict {
            Verdict::Accept(p) => Some(Cached::Accept(p.clone())),
            Verdict::Refuse(AuthRefusal::ServerUnavailable) => None,
            Verdict::Refuse(r) => Some(Cached::Refuse(*r)),
            Verdict::Skip => Some(Cached::Skip),
        };
        if let (Some(cached), false) = (cached, self.settings.cache_ttl.is_zero()) {
            let mut cache = self.lock();
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
            cache.insert(key, (cached, now + self.settings.cache_ttl));
        }
        verdict
    }

    /// One call to the service (waits for a concurrency slot first).
    async fn call(&self, request: &AuthRequest) -> Verdict {
        let Ok(_slot) = self.slots.acquire().await else {
            return Verdict::Refuse(AuthRefusal::ServerUnavailable);
        };
        let url = fill(&self.settings.url, request, Escape::Url);
        let mut builder = match self.settings.method {
            HttpMethod::Get => self.client.get(&url),
            HttpMethod::Post => self.client.post(&url),
        };
        for (name, template) in &self.settings.headers {
            let value = fill(template, request, Escape::Header);
            builder = builder.header(name.as_str(), value);
        }
        if let (HttpMethod::Post, Some(body)) = (self.settings.method, &self.settings.body) {
            builder = builder
                .header("content-type", "application/json")
                .body(fill(body, request, Escape::Json));
        }
        let response = match builder.send().await {
            Ok(r) => r,
            Err(e) => {
                debug!(error = %e, "HTTP auth service unreachable");
                return Verdict::Refuse(AuthRefusal::ServerUnavailable);
            }
        };
        match response.status().as_u16() {
            401 => return Verdict::Refuse(AuthRefusal::BadCredentials),
            403 => return Verdict::Refuse(AuthRefusal::NotAuthorized),
            200..=299 => {}
            status => {
                debug!(status, "HTTP auth service answered with an error");
                return Verdict::Refuse(AuthRefusal::ServerUnavailable);
            }
        }
        let Some(bytes) = read_capped(response).await else {
            return Verdict::Refuse(AuthRefusal::ServerUnavailable);
        };
        let answer: Answer = if bytes.iter().all(u8::is_ascii_whitespace) {
            Answer::default()
        } else {
            match serde_json::from_slice(&bytes) {
                Ok(a) => a,
                Err(_) => return Verdict::Refuse(AuthRefusal::ServerUnavailable),
            }
        };
        match answer.result.as_deref().unwrap_or("allow") {
            "allow" => {}
            "deny" => return Verdict::Refuse(AuthRefusal::BadCredentials),
            "ignore" => return Verdict::Skip,
            _ => return Verdict::Refuse(AuthRefusal::ServerUnavailable),
        }
        let grants = if answer.publish.is_some() || answer.subscribe.is_some() {
            let parse = |list: Option<Vec<String>>| -> Option<Vec<ResourcePattern>> {
                list.unwrap_or_default()
                    .iter()
                    .map(|f| ResourcePattern::new(f).ok())
                    .collect()
            };
            match (parse(answer.publish), parse(answer.subscribe)) {
                (Some(publish), Some(subscribe)) => Some(Grants { publish, subscribe }),
                _ => return Verdict::Refuse(AuthRefusal::ServerUnavailable),
            }
        } else {
            None
        };
        Verdict::Accept(Principal {
            username: answer
                .username
                .or_else(|| request.username.clone())
                .map(Into::into),
            certificate_cn: request
                .certificate
                .as_ref()
                .and_then(|c| c.common_name.as_deref())
                .map(Into::into),
            authenticator: "http".into(),
            grants,
            ..Principal::default()
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], (Cached, Instant)>> {
        // A cache: a poisoned one is still correct (entries are inserted whole).
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How placeholder values are escaped.
#[derive(Clone, Copy)]
enum Escape {
    Url,
    Json,
    Header,
}

/// Fills the placeholders of `template`.
fn fill(template: &str, request: &AuthRequest, escape: Escape) -> String {
    let password = request
        .password
        .as_deref()
        .map(String::from_utf8_lossy)
        .unwrap_or_default();
    let cn = request
        .certificate
        .as_ref()
        .and_then(|c| c.common_name.clone())
        .unwrap_or_default();
    let values = [
        ("${clientid}", request.client_id.clone()),
        ("${username}", request.username.clone().unwrap_or_default()),
        ("${password}", password.into_owned()),
        ("${peerhost}", request.peer.ip().to_string()),
        ("${peerport}", request.peer.port().to_string()),
        ("${cert_cn}", cn),
    ];
    let mut out = template.to_owned();
    for (name, value) in values {
        if out.contains(name) {
            out = out.replace(name, &escaped(&value, escape));
        }
    }
    out
}

/// The answer body, if it arrives whole and within [`MAX_ANSWER_BYTES`].
async fn read_capped(mut response: reqwest::Response) -> Option<Vec<u8>> {
    if response
        .content_length()
        .is_some_and(|n| n > MAX_ANSWER_BYTES as u64)
    {
        debug!("HTTP auth answer too long");
        return None;
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.ok()? {
        if bytes.len() + chunk.len() > MAX_ANSWER_BYTES {
            debug!("HTTP auth answer too long");
            return None;
        }
        bytes.extend_from_slice(&chunk);
    }
    Some(bytes)
}

fn escaped(value: &str, escape: Escape) -> String {
    match escape {
        Escape::Json => {
            let quoted = serde_json::Value::String(value.to_owned()).to_string();
            quoted[1..quoted.len() - 1].to_owned()
        }
        Escape::Url => value
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect(),
        Escape::Header => value.chars().filter(|c| !c.is_control()).collect(),
    }
}

/// The cache key: a digest of every field the answer may depend on.
fn cache_key(request: &AuthRequest) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [
        request.client_id.as_bytes(),
        request.username.as_deref().unwrap_or("\u{0}").as_bytes(),
        request.password.as_deref().unwrap_or(b"\x00none"),
        request.peer.ip().to_string().as_bytes(),
        request
            .certificate
            .as_ref()
            .and_then(|c| c.common_name.as_deref())
            .unwrap_or("")
            .as_bytes(),
    ] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}
