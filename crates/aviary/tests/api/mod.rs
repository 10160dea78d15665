//! Harness of the management API tests: a broker with its API on 127.0.0.1:0 and a known
//! bootstrap key, and a small JSON client over reqwest. Every request is bounded by `WAIT`.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::Duration;

use aviary::RunningServer;
use serde_json::Value;

/// Upper bound on any single wait.
pub const WAIT: Duration = Duration::from_secs(10);

/// The bootstrap key every test broker accepts.
pub const KEY: &str = "test-bootstrap-key-0123456789";

/// A broker with its API.
pub struct Api {
    pub server: Option<RunningServer>,
    pub mqtt: SocketAddr,
    pub base: String,
    pub http: reqwest::Client,
    /// The data directory (taken by [`Api::stop`] to start again on the same data).
    pub dir: Option<tempfile::TempDir>,
}

/// Starts a broker with the API on a free port; `tweak` may change the config.
pub async fn start_api(tweak: impl FnOnce(&mut aviary::Config)) -> Api {
    start_api_in(tempfile::tempdir().unwrap(), tweak).await
}

/// [`start_api`] with its data in `dir` (kept, and removed when the `Api` is dropped).
pub async fn start_api_in(dir: tempfile::TempDir, tweak: impl FnOnce(&mut aviary::Config)) -> Api {
    let mut config = aviary::Config {
        data_dir: dir.path().to_path_buf(),
        ..Default::default()
    };
    config.listener.bind = "127.0.0.1:0".parse().unwrap();
    config.api.bind = "127.0.0.1:0".parse().unwrap();
    config.api.api_key = Some(KEY.to_owned());
    tweak(&mut config);
    let server = tokio::time::timeout(WAIT, aviary::start(config))
        .await
        .expect("start timed out")
        .expect("start failed");
    let base = format!("http://{}", server.api_addr().expect("API enabled"));
    Api {
        mqtt: server.mqtt_addr(),
        server: Some(server),
        base,
        http: reqwest::Client::builder().timeout(WAIT).build().unwrap(),
        dir: Some(dir),
    }
}

impl Api {
    /// Sends a request with the bootstrap key; returns the status and the JSON body
    /// (`Null` when empty).
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_with_key(method, path, body, Some(KEY)).await
    }

    pub async fn call_with_key(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        key: Option<&str>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request failed");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    /// Sends raw text as the JSON body.
    pub async fn call_raw(&self, method: &str, path: &str, body: &str) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let response = self
            .http
            .request(method, format!("{}{}", self.base, path))
            .bearer_auth(KEY)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let value = response.json().await.unwrap_or(Value::Null);
        (status, value)
    }

    /// The Prometheus text of `GET /metrics`.
    pub async fn metrics_text(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Polls `/metrics` until it reports `name` at `value` (at most [`WAIT`]).
    pub async fn wait_metric(&self, name: &str, value: f64) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let text = self.metrics_text().await;
            let got = sample(&text, name);
            if got == Some(value) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} is {got:?}, not {value}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls `GET path` until `done` holds for its body (at most 100 tries, 50 ms apart).
    pub async fn wait_for(&self, path: &str, done: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        for _ in 0..100 {
            let (status, body) = self.call("GET", path, None).await;
            if status == 200 && done(&body) {
                return body;
            }
            last = body;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("condition never held on {path}: last {last}");
    }

    /// Shuts down and returns the data directory, to start again on it.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(server) = self.server.take() {
            tokio::time::timeout(WAIT, server.shutdown())
                .await
                .expect("shutdown timed out")
                .unwrap();
        }
        self.dir.take().unwrap()
    }

    pub async fn shutdown(mut self) {
        if let Some(server) = self.server.take() {
            tokio::time::timeout(WAIT, server.shutdown())
                .await
                .expect("shutdown timed out")
                .unwrap();
        }
    }
}

/// The value of the sample `name` (with its labels, if any) in the Prometheus text `text`.
pub fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Asserts an error response: status, code, and that the message mentions `mentions`.
pub fn assert_error(got: (u16, Value), status: u16, code: &str, mentions: &str) {
    assert_eq!(got.0, status, "{}", got.1);
    assert_eq!(got.1["code"], code, "{}", got.1);
    let message = got.1["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(mentions),
        "{message:?} should mention {mentions:?}"
    );
}
