//! The field checks every request goes through, and [`SpecError`], the sentence a refused
//! request gets. Pure functions: a rejected request changes nothing.

use std::collections::BTreeMap;

/// Largest accepted value of one environment variable or argument.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Most environment variables, arguments or labels in one request.
pub const MAX_ITEMS: usize = 256;

/// Label keys this project sets itself; a request cannot override them.
pub const RESERVED_LABEL_PREFIXES: [&str; 2] = ["app.kubernetes.io/", "mcp-ephemeral.dev/"];

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
    #[error("`pool` applies to create_mcp_server only (a server made in an MCPPool)")]
    PoolNotHere,
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
    #[error("`{0}` is reserved: mcp-ephemeral's own tokens live there and never reach a server; use another name")]
    ReservedEnv(String),
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
    #[error("`idle_timeout_seconds` must be at most {max} (the longest TTL; got {got}); 0 turns the idle timeout off")]
    IdleTimeout { got: u64, max: u64 },
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
    #[error("{asked_by} asks for `egress` \"none\" (DNS only), which cannot be enforced here: {why}. {instead}")]
    EgressNotEnforced { asked_by: String, why: &'static str, instead: &'static str },
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
        if crate::bridge::NEVER_PASSED.contains(&name.as_str()) {
            return Err(SpecError::ReservedEnv(name.clone()));
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
        check_label(key, value)?;
    }
    Ok(())
}

/// One label's key and value by Kubernetes' rules (reserved prefixes allowed).
pub fn check_label(key: &str, value: &str) -> Result<(), SpecError> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
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
    Ok(())
}

fn is_label_value(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && v.as_bytes()[0].is_ascii_alphanumeric()
            && v.as_bytes()[v.len() - 1].is_ascii_alphanumeric())
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
    fn labels_follow_kubernetes_rules() {
        let ok: BTreeMap<_, _> = [("team".to_string(), "a-1".to_string()), ("example.com/x".into(), "".into())].into();
        assert!(check_labels(&ok).is_ok());
        for (k, v) in [("app.kubernetes.io/name", "x"), ("bad key", "x"), ("k", "-x"), ("k", &"x".repeat(64))] {
            let m: BTreeMap<_, _> = [(k.to_string(), v.to_string())].into();
            assert!(check_labels(&m).is_err(), "{k}={v}");
        }
    }
}
