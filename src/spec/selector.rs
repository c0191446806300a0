//! Label selectors as `kubectl` writes them, matched locally and sent to the API server as
//! they are, so `list_mcp_servers(label_selector)` means the same on both runtimes.

use std::collections::BTreeMap;

use super::SpecError;

/// A label selector as `kubectl` writes it: `k=v`, `k==v`, `k!=v`, `k`, `!k`, comma-separated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<Requirement>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    Absent(String),
}

impl LabelSelector {
    pub fn parse(text: &str) -> Result<LabelSelector, SpecError> {
        let mut reqs = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let req = if let Some((k, v)) = part.split_once("!=") {
                Requirement::NotEquals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                Requirement::Equals(k.trim().into(), v.trim().into())
            } else if let Some(k) = part.strip_prefix('!') {
                Requirement::Absent(k.trim().into())
            } else {
                Requirement::Exists(part.into())
            };
            let key = match &req {
                Requirement::Equals(k, _)
                | Requirement::NotEquals(k, _)
                | Requirement::Exists(k)
                | Requirement::Absent(k) => k,
            };
            if key.is_empty() || key.contains(char::is_whitespace) {
                return Err(SpecError::Label(format!(
                    "selector `{part}` is not `key=value`, `key!=value`, `key` or `!key`"
                )));
            }
            reqs.push(req);
        }
        Ok(LabelSelector(reqs))
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::Absent(k) => !labels.contains_key(k),
        })
    }

    /// The selector in Kubernetes' structured form (`matchLabels`, `matchExpressions`), as a
    /// NetworkPolicy peer holds it; it selects exactly what [`Self::matches`] does.
    pub(crate) fn to_kube(&self) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
        let mut labels = BTreeMap::new();
        let mut expressions = Vec::new();
        let expression = |key: &str, operator: &str, values: Option<Vec<String>>| LabelSelectorRequirement {
            key: key.to_string(),
            operator: operator.to_string(),
            values,
        };
        for r in &self.0 {
            match r {
                // A second, different value for a key cannot go in matchLabels.
                Requirement::Equals(k, v) if labels.get(k).is_some_and(|have| have != v) => {
                    expressions.push(expression(k, "In", Some(vec![v.clone()])))
                }
                Requirement::Equals(k, v) => {
                    labels.insert(k.clone(), v.clone());
                }
                Requirement::NotEquals(k, v) => expressions.push(expression(k, "NotIn", Some(vec![v.clone()]))),
                Requirement::Exists(k) => expressions.push(expression(k, "Exists", None)),
                Requirement::Absent(k) => expressions.push(expression(k, "DoesNotExist", None)),
            }
        }
        LabelSelector {
            match_labels: (!labels.is_empty()).then_some(labels),
            match_expressions: (!expressions.is_empty()).then_some(expressions),
        }
    }

    /// The selector in Kubernetes' text form.
    pub fn to_query(&self) -> String {
        self.0
            .iter()
            .map(|r| match r {
                Requirement::Equals(k, v) => format!("{k}={v}"),
                Requirement::NotEquals(k, v) => format!("{k}!={v}"),
                Requirement::Exists(k) => k.clone(),
                Requirement::Absent(k) => format!("!{k}"),
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_match_like_kubectl() {
        let labels: BTreeMap<_, _> = [("team".to_string(), "a".to_string()), ("tier".into(), "x".into())].into();
        for (sel, want) in
            [("team=a", true), ("team==a,tier", true), ("team!=a", false), ("!gone", true), ("gone", false), ("", true)]
        {
            assert_eq!(LabelSelector::parse(sel).unwrap().matches(&labels), want, "{sel}");
        }
        assert!(LabelSelector::parse("a b").is_err());
        assert_eq!(LabelSelector::parse("a=b, !c").unwrap().to_query(), "a=b,!c");
    }

    #[test]
    fn the_structured_form_says_the_same_as_the_text() {
        let kube = LabelSelector::parse("team=a,tier!=x,ready,!gone,team=b").unwrap().to_kube();
        assert_eq!(kube.match_labels, Some(BTreeMap::from([("team".to_string(), "a".to_string())])));
        let exprs: Vec<(String, String, Option<Vec<String>>)> =
            kube.match_expressions.unwrap().into_iter().map(|e| (e.key, e.operator, e.values)).collect();
        let own = |s: &str| s.to_string();
        assert_eq!(
            exprs,
            [
                (own("tier"), own("NotIn"), Some(vec![own("x")])),
                (own("ready"), own("Exists"), None),
                (own("gone"), own("DoesNotExist"), None),
                (own("team"), own("In"), Some(vec![own("b")])),
            ]
        );
        assert_eq!(LabelSelector::parse("").unwrap().to_kube(), Default::default());
    }
}
