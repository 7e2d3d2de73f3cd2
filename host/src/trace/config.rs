//! `[tracing]`: where the host's spans go. Off unless `otlp_endpoint` is set, and only in
//! a wharf built with the `otlp` feature (`cargo build --release --features otlp`).

use serde::{Deserialize, Serialize};

use crate::setting::InvalidSetting;

/// `[tracing]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracingConfig {
    /// Base URL of an OTLP/HTTP collector, e.g. `http://127.0.0.1:4318` (spans go to
    /// `<url>/v1/traces`, as JSON); unset: no export.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported spans.
    pub service_name: String,
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            service_name: "wharf".into(),
        }
    }
}

impl TracingConfig {
    /// An endpoint is an `http://` or `https://` URL, and this build can export to it.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let Some(endpoint) = &self.otlp_endpoint else {
            return Ok(());
        };
        let key = "tracing.otlp_endpoint";
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(InvalidSetting::new(
                key,
                format!(
                    "{endpoint:?} is not an http:// or https:// URL; give the collector's OTLP/HTTP base URL, e.g. http://127.0.0.1:4318"
                ),
            ));
        }
        if !cfg!(feature = "otlp") {
            return Err(InvalidSetting::new(
                key,
                "this wharf was built without OTLP export; build it with `--features otlp`, or remove the setting",
            ));
        }
        if self.service_name.trim().is_empty() {
            return Err(InvalidSetting::new(
                "tracing.service_name",
                "is empty; name the service the spans come from",
            ));
        }
        Ok(())
    }
}
