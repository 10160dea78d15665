//! The web console over HTTP: its files are served with the right content types and
//! headers without a key, and every `/api/v1/...` call its script makes is a route of the
//! OpenAPI document, with that method. (The page's behaviour in a real browser is tested
//! in `tests/console/`.)

mod api;

use std::collections::BTreeSet;

use serde_json::Value;

use api::{start_api, Api};

/// `GET base+path` without a key: status, content type, body, and the CSP header.
async fn fetch(api: &Api, path: &str) -> (u16, String, String, Option<String>) {
    let response = api
        .http
        .get(format!("{}{}", api.base, path))
        .send()
        .await
        .expect("request failed");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let content_type = header("content-type").unwrap_or_default();
    let csp = header("content-security-policy");
    let status = response.status().as_u16();
    (status, content_type, response.text().await.unwrap(), csp)
}

#[tokio::test]
async fn console_files_are_served_without_a_key_with_their_content_types() {
    let api = start_api(|_| {}).await;
    for (path, mime, marker) in [
        ("/console/", "text/html", "<script src=\"app.js\">"),
        ("/console/app.js", "text/javascript", "async function api("),
        ("/console/style.css", "text/css", "body {"),
    ] {
        let (status, content_type, body, csp) = fetch(&api, path).await;
        assert_eq!(status, 200, "{path}");
        assert!(content_type.starts_with(mime), "{path}: {content_type}");
        assert!(body.contains(marker), "{path} lacks {marker:?}");
        let csp = csp.unwrap_or_default();
        assert!(csp.contains("script-src 'self'"), "{path}: CSP {csp:?}");
    }
    // `/console` sends the browser to the page, whose relative links need the slash.
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = no_redirect
        .get(format!("{}/console", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 308);
    assert_eq!(response.headers()["location"], "/console/");
    // Files that do not exist are the API's JSON 404, not the page.
    let (status, _, body, _) = fetch(&api, "/console/nope.js").await;
    assert_eq!(status, 404);
    assert!(body.contains("not_found"), "{body}");
}

/// Every `api('METHOD', '/api/v1/...')` call in the script, as `METHOD path` with each
/// `${...}` placeholder and the query string removed.
fn script_calls(js: &str) -> BTreeSet<(String, String)> {
    let mut calls = BTreeSet::new();
    let mut rest = js;
    while let Some(at) = rest.find("api('") {
        rest = &rest[at + 5..];
        let Some(method_end) = rest.find('\'') else {
            break;
        };
        let method = rest[..method_end].to_owned();
        let args = rest[method_end + 1..].trim_start_matches([',', ' ']);
        let Some(quote) = args.chars().next() else {
            break;
        };
        let body = &args[1..];
        let Some(end) = body.find(quote) else {
            break;
        };
        let path = body[..end].split('?').next().unwrap_or_default().to_owned();
        calls.insert((method, path));
    }
    calls
}

/// Whether the script's `path` (placeholders as `${...}`) is the document's `route`
/// (parameters as `{name}`).
fn same_route(path: &str, route: &str) -> bool {
    let (a, b): (Vec<&str>, Vec<&str>) = (path.split('/').collect(), route.split('/').collect());
    a.len() == b.len()
        && a.iter()
            .zip(&b)
            .all(|(x, y)| x == y || (x.starts_with("${") && y.starts_with('{') && y.ends_with('}')))
}

#[tokio::test]
async fn every_api_call_of_the_console_is_a_route_of_the_openapi_document() {
    let api = start_api(|_| {}).await;
    let (_, _, js, _) = fetch(&api, "/console/app.js").await;
    let (status, doc) = api.call("GET", "/api/v1/openapi.json", None).await;
    assert_eq!(status, 200);
    let paths = doc["paths"].as_object().expect("paths");
    let calls = script_calls(&js);
    // The overview, clients (list, detail, kick), listeners, retained, publish, limits,
    // usage, users, devices, policies: the parser found them all.
    assert!(calls.len() >= 14, "too few calls parsed: {calls:?}");
    for (method, path) in &calls {
        assert!(path.starts_with("/api/v1/"), "{method} {path}");
        let found = paths.iter().any(|(route, item): (&String, &Value)| {
            same_route(path, route) && item.get(method.to_lowercase()).is_some()
        });
        assert!(
            found,
            "the console calls {method} {path}, which the API does not have"
        );
    }
    // And the console really covers the operations the product promises.
    for needed in [
        ("DELETE", "/api/v1/clients/${enc(id)}"),
        ("PATCH", "/api/v1/listeners/${enc(name)}"),
        ("DELETE", "/api/v1/retained/${enc(topic)}"),
        ("PUT", "/api/v1/limits"),
    ] {
        let needed = (needed.0.to_owned(), needed.1.to_owned());
        assert!(calls.contains(&needed), "missing {needed:?}");
    }
}
