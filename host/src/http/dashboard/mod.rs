//! The dashboard at `/`: a small static app embedded in the binary (no build step), a
//! client of this API with the caller's token (kept in the browser tab's session storage
//! and sent as the bearer header, never as a cookie, so no other site can make calls with
//! it). Its pages: overview (queues, readiness, hosts), flow (per-minute charts of the
//! last hour, per queue and plugin: handled, retried, dead, call time; SVG drawn by the
//! script), failed messages (filters, bulk retry and delete of a selection or of all
//! matching, detail with attempts), held keys (skip), plugins (per host, registry,
//! history, deploy, rollback); a read token sees no buttons that change something. `GET /api/whoami`
//! tells the page who the token is.

use axum::Json;
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::auth::Reader;

/// The page, its scripts and its style sheet.
const INDEX: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("app.js");
const FLOW_SCRIPT: &str = include_str!("flow.js");
const STYLE: &str = include_str!("app.css");

/// Scripts and styles only from this origin, no inline code, no framing.
const POLICY: &str =
    "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (CONTENT_TYPE, content_type),
            (CACHE_CONTROL, "no-cache"),
            (CONTENT_SECURITY_POLICY, POLICY),
        ],
        body,
    )
}

/// `GET /`
pub async fn index() -> impl IntoResponse {
    asset("text/html; charset=utf-8", INDEX)
}

/// `GET /dashboard/app.js`
pub async fn script() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// `GET /dashboard/flow.js`
pub async fn flow_script() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", FLOW_SCRIPT)
}

/// `GET /dashboard/app.css`
pub async fn style() -> impl IntoResponse {
    asset("text/css; charset=utf-8", STYLE)
}

/// `GET /api/whoami`: the token's name and scope.
pub async fn whoami(caller: Reader) -> Json<Value> {
    Json(json!({ "name": caller.name, "scope": caller.scope }))
}
