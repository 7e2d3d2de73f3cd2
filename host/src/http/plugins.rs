//! Plugins: what this host and every host of the database serve, and the fleet registry
//! (`wharf plugins`): deploy an uploaded `.wasm` (validated as `wharf plugins deploy`
//! validates it: compiled, linked, its manifest read), roll back, history.

use std::path::PathBuf;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::Api;
use super::auth::{Operator, Reader};
use super::error::ApiError;
use crate::store::registry::{Artifact, Deployed, Rollback};

/// `GET /api/plugins`: this host's plugins, every host's latest report (version, sha256,
/// source, breaker), and the registry's active deployments.
pub async fn list(_: Reader, State(api): State<Arc<Api>>) -> Result<Json<Value>, ApiError> {
    let served: Vec<Value> = api
        .plugins
        .current()
        .iter()
        .map(|p| {
            json!({
                "name": p.name(),
                "version": p.manifest.version,
                "sha256": p.sha256,
                "subscriptions": p.manifest.subscriptions,
                "world": p.world(),
                "asks_hosts": p.manifest.allowed_hosts,
                "not_granted": p.not_granted,
                "from": p.path.display().to_string(),
            })
        })
        .collect();
    let hosts = api.store.host_reports().await?;
    let registry = api.store.active_deployments().await?;
    Ok(Json(json!({
        "host": api.host,
        "served": served,
        "hosts": hosts,
        "registry": registry,
    })))
}

/// `POST /api/plugins` with the component's bytes as the body: validated, stored, and
/// made its plugin's active deployment on every host of the database. 201 for a new
/// deployment, 200 when it already is the active one.
pub async fn deploy(
    Operator(who): Operator,
    State(api): State<Arc<Api>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let mut target = "plugin (unreadable upload)".to_owned();
    let outcome = async {
        let wasm = body.map_err(|r| ApiError::new(r.status(), r.body_text()))?;
        if wasm.is_empty() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "the body is empty; send the .wasm component's bytes (curl --data-binary @plugin.wasm)",
            ));
        }
        let plugin = api
            .runtime
            .load_bytes(&PathBuf::from("upload.wasm"), wasm.to_vec())
            .await
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("not deployed: {e}")))?;
        target = format!(
            "plugin {} {} (sha256 {})",
            plugin.name(),
            plugin.manifest.version,
            plugin.sha256
        );
        let artifact = Artifact {
            sha256: plugin.sha256.clone(),
            name: plugin.manifest.name.clone(),
            version: plugin.manifest.version.clone(),
            wasm: wasm.to_vec(),
        };
        let (deployed, new) = match api.store.deploy(&artifact, &format!("{who} (HTTP API)")).await? {
            Deployed::New(d) => (d, true),
            Deployed::AlreadyActive(d) => (d, false),
        };
        // With what it asks to call and this host's grants do not cover.
        Ok(Json(json!({
            "deployed": deployed,
            "new": new,
            "not_granted": plugin.not_granted,
        })))
    }
    .await;
    api.record(&who, "deploy", target, &outcome).await;
    let status = match &outcome {
        Ok(Json(answer)) if answer["new"] == true => StatusCode::CREATED,
        _ => StatusCode::OK,
    };
    outcome.map(|answer| (status, answer))
}

/// `POST /api/plugins/{name}/rollback`: withdraw the active deployment; the one before it
/// is active again on every host.
pub async fn rollback(
    Operator(who): Operator,
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let outcome = async {
        match api.store.rollback(&name).await? {
            Rollback::Done { from, to } => Ok(Json(json!({ "rolled_back": from, "active": to }))),
            Rollback::NotDeployed => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("{name} has no deployment in the registry; GET /api/plugins lists them"),
            )),
            Rollback::NothingEarlier { active } => Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "nothing to roll back to: {name} {} (deployment {}) is its only standing deployment; deploy the version you want instead",
                    active.version, active.id
                ),
            )),
        }
    }
    .await;
    api.record(&who, "rollback", format!("plugin {name}"), &outcome)
        .await;
    outcome
}

/// `GET /api/plugins/{name}/history`: every deployment of the plugin, newest first.
pub async fn history(
    _: Reader,
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let deployments = api.store.history(&name).await?;
    if deployments.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("{name} was never deployed to the registry; GET /api/plugins lists them"),
        ));
    }
    Ok(Json(json!({ "plugin": name, "deployments": deployments })))
}
