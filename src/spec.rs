//! What a server is, once a request has been checked: [`ServerSpec`], plus the field checks
//! that every request goes through. Nothing here starts anything, so a rejected request
//! changes nothing.

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime},
};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Largest accepted value of one environment variable or argument.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Most environment variables, arguments or labels in one request.
pub const MAX_ITEMS: usize = 256;

/// Label keys this project sets itself; a request cannot override them.
pub const RESERVED_LABEL_PREFIXES: [&str; 2] = ["app.kubernetes.io/", "mcp-ephemeral.dev/"];

/// A checked request: everything a runtime needs to start a server.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    /// The server's name (`job_name`), unique and never reused.
    pub name: String,
    pub preset: Option<String>,
    pub source: Source,
    pub env: BTreeMap<String, String>,
    /// Environment whose values are secret: kept out of every output, log and annotation.
    pub secret_env: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub ttl: Duration,
    pub created_at: SystemTime,
    pub expires_at: SystemTime,
    /// The server needs the Kubernetes API (its pod gets a service-account token).
    pub needs_kube_api: bool,
    /// CPU and memory for its container (Kubernetes); unset fields take the runtime's defaults.
    pub resources: Resources,
    /// The image a `Command` server runs in on Kubernetes, when its preset names one (else the
    /// runtime's `--server-image`).
    pub command_image: Option<String>,
}

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

/// How an `image` server speaks MCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ImageTransport {
    /// stdio: it runs behind `mcp-ephemeral bridge` (its command goes in `runtime_args`).
    Stdio,
    /// It serves streamable HTTP (`/mcp`) and SSE (`/sse`) itself on `image_port`.
    Http,
}

/// What runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A stdio server started as `argv` (behind the bridge).
    Command { argv: Vec<String> },
    /// A container image (Kubernetes runtime only). `transport` and `port` are `None` when the
    /// request left them to the runtime's defaults.
    Image { image: String, args: Vec<String>, transport: Option<ImageTransport>, port: Option<u16> },
}

impl ServerSpec {
    /// The command line, for status output (never contains secret values).
    pub fn command_line(&self) -> Vec<String> {
        match &self.source {
            Source::Command { argv } => argv.clone(),
            Source::Image { image, args, .. } => std::iter::once(image.clone()).chain(args.iter().cloned()).collect(),
        }
    }
}

/// `runtime_args`: a list, or one string split shell-style.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Args {
    List(Vec<String>),
    Line(String),
}

impl Args {
    pub fn into_vec(self) -> Result<Vec<String>, SpecError> {
        match self {
            Args::List(v) => Ok(v),
            Args::Line(s) => shell_words::split(&s).map_err(|e| SpecError::Args(format!("{e} in `{s}`"))),
        }
    }
}

/// Why a request was refused. Each message says what to change.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("unknown preset `{name}`; available presets: {known}")]
    UnknownPreset { name: String, known: String },
    #[error(
        "say what to run: give `preset` (see list_presets), or `runtime_exec` and `runtime_mcp` (e.g. \"uvx\" and \"mcp-server-time\"), or `image`"
    )]
    NoSource,
    #[error("give only one of `preset`, `runtime_exec`/`runtime_mcp` and `image` (got {0})")]
    ConflictingSources(String),
    #[error("`runtime_exec` is empty; name a program such as \"uvx\" or \"npx\"")]
    EmptyExec,
    #[error(
        "`runtime_exec` must be a single program name or path, got `{0}`; put its arguments in `runtime_mcp` and `runtime_args`"
    )]
    MalformedExec(String),
    #[error("`runtime_args` cannot be parsed: {0}")]
    Args(String),
    #[error("`{0}` is not a valid environment variable name (use letters, digits and _, not starting with a digit)")]
    EnvName(String),
    #[error("{what} is {len} bytes; the limit is {limit} bytes", limit = MAX_VALUE_BYTES)]
    TooLarge { what: String, len: usize },
    #[error("{what} contains a NUL byte")]
    Nul { what: String },
    #[error("too many {what} ({count}); the limit is {limit}", limit = MAX_ITEMS)]
    TooMany { what: &'static str, count: usize },
    #[error("preset `{preset}` needs {names}; pass them in `env` or `secret_env`")]
    MissingEnv { preset: String, names: String },
    #[error("`ttl_seconds` must be between 1 and {max} (got {got})")]
    Ttl { got: u64, max: u64 },
    #[error("label {0}")]
    Label(String),
    #[error(
        "`image` needs the Kubernetes runtime; this server runs the local runtime. Use `preset` or `runtime_exec`, or start mcp-ephemeral with --runtime kubernetes"
    )]
    ImageNeedsKubernetes,
    #[error("`resources.{field}` must be a Kubernetes quantity such as \"250m\", \"1\" or \"256Mi\" (got `{value}`)")]
    Quantity { field: &'static str, value: String },
    #[error("`{0}` only applies to `image` servers")]
    ImageOnly(&'static str),
}

/// `[A-Za-z_][A-Za-z0-9_]*`
pub fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A value a user gave: no NUL, not over the size limit.
pub fn check_value(what: impl FnOnce() -> String, value: &str) -> Result<(), SpecError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(SpecError::TooLarge { what: what(), len: value.len() });
    }
    if value.contains('\0') {
        return Err(SpecError::Nul { what: what() });
    }
    Ok(())
}

/// Check an environment map (names, sizes); `kind` is `env` or `secret_env`.
pub fn check_env(kind: &'static str, env: &BTreeMap<String, String>) -> Result<(), SpecError> {
    if env.len() > MAX_ITEMS {
        return Err(SpecError::TooMany { what: "environment variables", count: env.len() });
    }
    for (name, value) in env {
        if !is_env_name(name) {
            return Err(SpecError::EnvName(name.clone()));
        }
        check_value(|| format!("{kind}.{name}"), value)?;
    }
    Ok(())
}

/// Check a program name for `runtime_exec`.
pub fn check_exec(exec: &str) -> Result<(), SpecError> {
    if exec.trim().is_empty() {
        return Err(SpecError::EmptyExec);
    }
    if exec.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(SpecError::MalformedExec(exec.to_string()));
    }
    check_value(|| "runtime_exec".into(), exec)
}

pub fn check_args(args: &[String]) -> Result<(), SpecError> {
    if args.len() > MAX_ITEMS {
        return Err(SpecError::TooMany { what: "arguments", count: args.len() });
    }
    for (i, a) in args.iter().enumerate() {
        check_value(|| format!("runtime_args[{i}]"), a)?;
    }
    Ok(())
}

/// Kubernetes label rules, so a label that works locally also works in a cluster.
pub fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), SpecError> {
    if labels.len() > MAX_ITEMS {
        return Err(SpecError::TooMany { what: "labels", count: labels.len() });
    }
    for (key, value) in labels {
        if RESERVED_LABEL_PREFIXES.iter().any(|p| key.starts_with(p)) {
            return Err(SpecError::Label(format!("key `{key}` is reserved for mcp-ephemeral")));
        }
        let (prefix, name) = match key.rsplit_once('/') {
            Some((p, n)) => (Some(p), n),
            None => (None, key.as_str()),
        };
        if prefix.is_some_and(|p| p.is_empty() || p.len() > 253 || !p.split('.').all(crate::names::is_rfc1123_label))
            || !is_label_value(name)
            || name.is_empty()
        {
            return Err(SpecError::Label(format!(
                "key `{key}` is invalid: use up to 63 of [A-Za-z0-9_.-], optionally after a DNS prefix and `/`"
            )));
        }
        if !is_label_value(value) {
            return Err(SpecError::Label(format!(
                "value `{value}` of `{key}` is invalid: use up to 63 of [A-Za-z0-9_.-], starting and ending alphanumeric"
            )));
        }
    }
    Ok(())
}

fn is_label_value(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && v.as_bytes()[0].is_ascii_alphanumeric()
            && v.as_bytes()[v.len() - 1].is_ascii_alphanumeric())
}

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
    fn env_names_follow_the_posix_shape() {
        for good in ["A", "_x", "PATH_2", "a1"] {
            assert!(is_env_name(good), "{good}");
        }
        for bad in ["", "1A", "A-B", "A B", "É", "A=B"] {
            assert!(!is_env_name(bad), "{bad}");
        }
    }

    #[test]
    fn oversized_and_nul_values_are_refused() {
        let big = "x".repeat(MAX_VALUE_BYTES + 1);
        assert!(matches!(check_value(|| "env.A".into(), &big), Err(SpecError::TooLarge { .. })));
        assert!(matches!(check_value(|| "env.A".into(), "a\0b"), Err(SpecError::Nul { .. })));
        assert!(check_value(|| "env.A".into(), &"x".repeat(MAX_VALUE_BYTES)).is_ok());
    }

    #[test]
    fn exec_must_be_one_program() {
        assert_eq!(check_exec("  "), Err(SpecError::EmptyExec));
        assert!(matches!(check_exec("uvx mcp-server-time"), Err(SpecError::MalformedExec(_))));
        assert!(check_exec("/usr/bin/env").is_ok());
    }

    #[test]
    fn string_args_split_like_a_shell() {
        let args = Args::Line("--repository '/tmp/my repo' -v".into()).into_vec().unwrap();
        assert_eq!(args, ["--repository", "/tmp/my repo", "-v"]);
        assert!(Args::Line("'unbalanced".into()).into_vec().is_err());
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

    #[test]
    fn labels_follow_kubernetes_rules() {
        let ok: BTreeMap<_, _> = [("team".to_string(), "a-1".to_string()), ("example.com/x".into(), "".into())].into();
        assert!(check_labels(&ok).is_ok());
        for (k, v) in [("app.kubernetes.io/name", "x"), ("bad key", "x"), ("k", "-x"), ("k", &"x".repeat(64))] {
            let m: BTreeMap<_, _> = [(k.to_string(), v.to_string())].into();
            assert!(check_labels(&m).is_err(), "{k}={v}");
        }
    }

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
}
