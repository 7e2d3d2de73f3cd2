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

#[cfg(test)]
mod tests {
    use super::*;

    fn with(endpoint: &str) -> Result<(), InvalidSetting> {
        TracingConfig {
            otlp_endpoint: Some(endpoint.into()),
            ..TracingConfig::default()
        }
        .validate()
    }

    #[test]
    fn an_endpoint_is_an_http_url_and_needs_the_otlp_build() {
        assert!(TracingConfig::default().validate().is_ok());
        let bad = with("127.0.0.1:4318").unwrap_err();
        assert_eq!(bad.key, "tracing.otlp_endpoint");
        assert!(bad.problem.contains("http://127.0.0.1:4318"), "{bad:?}");
        let built = with("http://127.0.0.1:4318");
        assert_eq!(built.is_ok(), cfg!(feature = "otlp"), "{built:?}");
        if let Err(e) = built {
            assert!(e.problem.contains("--features otlp"), "{e:?}");
        }
    }
}
