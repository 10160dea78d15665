//! The web console at `/console/`: one page of plain HTML, JavaScript and CSS embedded in
//! the binary (no build step, no third-party code). The files are served without
//! authentication, like any static asset; the page asks for an API key and calls
//! `/api/v1/...` with it, so it can do exactly what the key can do over the API.

use axum::http::header;
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;
use axum::Router;

use super::AppState;

/// The page.
const INDEX_HTML: &str = include_str!("console/index.html");
/// Its script: every API call the console makes.
pub(crate) const APP_JS: &str = include_str!("console/app.js");
/// Its stylesheet.
const STYLE_CSS: &str = include_str!("console/style.css");

/// Scripts, styles and API calls only from this origin; no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   connect-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'";

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::permanent("/console/") }),
        )
        .route(
            "/console/",
            get(|| asset("text/html; charset=utf-8", INDEX_HTML)),
        )
        .route(
            "/console/app.js",
            get(|| asset("text/javascript; charset=utf-8", APP_JS)),
        )
        .route(
            "/console/style.css",
            get(|| asset("text/css; charset=utf-8", STYLE_CSS)),
        )
}

/// One embedded file with its content type.
async fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}
