//! The CLI's HTTP side: one request to the management API, with the key, and errors that
//! say what to do.

use reqwest::Method;
use serde_json::Value;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    /// The API could not be reached.
    #[error("cannot reach the management API at {url}: {source}\n  is the broker running? set --url or AVIARY_URL to its API address")]
    Unreachable { url: String, source: reqwest::Error },
    /// The API refused the key.
    #[error("the API refused the key ({message})\n  pass --api-key or set AVIARY_API_KEY to a valid key (the bootstrap key is printed at first start)")]
    Unauthorized { message: String },
    /// The API answered with an error.
    #[error("{message} ({code}, HTTP {status})")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// The command line is inconsistent (beyond what clap checks).
    #[error("{0}")]
    Usage(String),
}

/// The API's address and key.
pub(crate) struct ApiClient {
    /// Base URL, without a trailing slash.
    url: String,
    key: Option<String>,
    http: reqwest::Client,
}

impl ApiClient {
    pub(crate) fn new(url: &str, key: Option<String>) -> Self {
        Self {
            url: url.trim_end_matches('/').to_owned(),
            key,
            // reqwest is built with rustls but without a provider of its own: the ring
            // provider is installed first (an `https://` API URL then works too).
            http: crate::auth::http_client_builder()
                .build()
                .unwrap_or_else(|_| reqwest::Client::new()),
        }
    }

    /// Sends a request; the JSON body of a success (`Null` when empty).
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, CliError> {
        let mut request = self.http.request(method, format!("{}{path}", self.url));
        if let Some(key) = &self.key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|source| CliError::Unreachable {
                url: self.url.clone(),
                source,
            })?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .map_err(|source| CliError::Unreachable {
                url: self.url.clone(),
                source,
            })?;
        let value: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if (200..300).contains(&status) {
            return Ok(value);
        }
        let code = value["code"].as_str().unwrap_or("error").to_owned();
        let message = value["message"]
            .as_str()
            .map_or_else(|| value.to_string(), str::to_owned);
        if status == 401 {
            return Err(CliError::Unauthorized { message });
        }
        Err(CliError::Api {
            status,
            code,
            message,
        })
    }
}

/// Percent-encodes one path segment (everything but unreserved characters).
pub(crate) fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::segment;

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(segment("a/b c#+"), "a%2Fb%20c%23%2B");
        assert_eq!(segment("car-1_x.y~"), "car-1_x.y~");
        assert_eq!(segment("é"), "%C3%A9");
    }
}
