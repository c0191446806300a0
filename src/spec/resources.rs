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

/// What quantity `s` is worth, in billionths of its unit, so that `"1"` and `"1000m"` are
/// equal, and `"1Gi"` and `"1024Mi"`. The API server stores every quantity in a canonical form
/// (`"0.5"` becomes `"500m"`), so a quantity read back from the cluster is compared by worth,
/// never as text. Rounded up to a billionth, as the API server does; `None` for what is not a
/// quantity, or is too large to count.
pub fn quantity_nanos(s: &str) -> Option<i128> {
    const BINARY: [(&str, u32); 6] = [("Ki", 10), ("Mi", 20), ("Gi", 30), ("Ti", 40), ("Pi", 50), ("Ei", 60)];
    const DECIMAL: [(&str, i32); 8] =
        [("n", -9), ("u", -6), ("m", -3), ("k", 3), ("M", 6), ("G", 9), ("T", 12), ("P", 15)];
    if !is_quantity(s) {
        return None;
    }
    let (number, pow2, pow10) = BINARY
        .iter()
        .find_map(|(suffix, p)| s.strip_suffix(suffix).map(|n| (n, *p, 0)))
        .or_else(|| DECIMAL.iter().find_map(|(suffix, e)| s.strip_suffix(suffix).map(|n| (n, 0, *e))))
        .unwrap_or((s, 0, 0));
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    let digits: i128 = format!("{whole}{frac}").parse().ok()?;
    let scaled = digits.checked_mul(1_i128.checked_shl(pow2)?)?;
    let exponent = pow10 + 9 - frac.len() as i32;
    if exponent >= 0 {
        scaled.checked_mul(10_i128.checked_pow(exponent as u32)?)
    } else {
        let divisor = 10_i128.checked_pow(exponent.unsigned_abs())?;
        Some((scaled + divisor - 1) / divisor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_are_compared_by_what_they_are_worth() {
        let n = |s: &str| quantity_nanos(s).unwrap_or_else(|| panic!("{s}"));
        assert_eq!(n("0.5"), n("500m"));
        assert_eq!(n("1"), n("1000m"));
        assert_eq!(n("1Gi"), n("1024Mi"));
        assert_eq!(n("0.5Gi"), n("512Mi"));
        assert_eq!(n(".5"), 500_000_000);
        assert_eq!(n("2k"), 2_000 * 1_000_000_000);
        assert_eq!(n("1Ki"), 1_024 * 1_000_000_000);
        assert_eq!(n("1n"), 1);
        assert_eq!(n("0.0000000001"), 1, "rounded up to a billionth");
        assert_ne!(n("128Mi"), n("128M"));
        assert_eq!(quantity_nanos("lots"), None);
        assert_eq!(quantity_nanos("99999999999999999999999999999Ei"), None, "too large to count");
    }

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
