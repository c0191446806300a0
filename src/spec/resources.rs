//! Container resources of a server (Kubernetes quantities), checked when a request comes in so
//! that a typo fails the request, not the pod.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::SpecError;

/// Container resources as Kubernetes quantities (`250m`, `1`, `256Mi`); `None` = the default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// e.g. "100m"
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_request: Option<String>,
    /// e.g. "1"
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_limit: Option<String>,
    /// e.g. "128Mi"
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_request: Option<String>,
    /// e.g. "512Mi"
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit: Option<String>,
}

impl Resources {
    /// `self`, with the fields it leaves unset taken from `fallback`.
    pub fn or(&self, fallback: &Resources) -> Resources {
        Resources {
            cpu_request: self.cpu_request.clone().or_else(|| fallback.cpu_request.clone()),
            cpu_limit: self.cpu_limit.clone().or_else(|| fallback.cpu_limit.clone()),
            memory_request: self.memory_request.clone().or_else(|| fallback.memory_request.clone()),
            memory_limit: self.memory_limit.clone().or_else(|| fallback.memory_limit.clone()),
        }
    }

    /// Each set field must be a Kubernetes quantity, so a typo fails the request, not the pod.
    pub fn check(&self) -> Result<(), SpecError> {
        let fields = [
            ("cpu_request", &self.cpu_request),
            ("cpu_limit", &self.cpu_limit),
            ("memory_request", &self.memory_request),
            ("memory_limit", &self.memory_limit),
        ];
        for (name, value) in fields {
            if let Some(v) = value
                && !is_quantity(v)
            {
                return Err(SpecError::Quantity { field: name, value: v.chars().take(64).collect() });
            }
        }
        Ok(())
    }
}

/// A Kubernetes resource quantity: a decimal number with an optional suffix.
pub fn is_quantity(s: &str) -> bool {
    const SUFFIXES: [&str; 14] = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "k", "M", "G", "T", "P"];
    let number = SUFFIXES.iter().find_map(|suf| s.strip_suffix(suf)).unwrap_or(s);
    let mut parts = number.splitn(2, '.');
    let whole = parts.next().unwrap_or("");
    let frac = parts.next();
    !number.is_empty()
        && number.len() <= 32
        && whole.bytes().all(|b| b.is_ascii_digit())
        && frac.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
        && (!whole.is_empty() || frac.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_follow_kubernetes_rules() {
        for ok in ["1", "250m", "0.5", "128Mi", "1Gi", "2k", ".5"] {
            assert!(is_quantity(ok), "{ok}");
        }
        for bad in ["", "Mi", "1.2.3", "1 Gi", "-1", "1Xi", "1.", "abc"] {
            assert!(!is_quantity(bad), "{bad}");
        }
        let r = Resources { memory_limit: Some("lots".into()), ..Default::default() };
        assert!(r.check().unwrap_err().to_string().contains("resources.memory_limit"));
    }
}
