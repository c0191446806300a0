//! Which of this process's environment a child gets. The standalone bridge passes all of it:
//! in a pod its environment was made for the server (the preset's env, the Secret). The local
//! runtime passes only what programs need to run and find their caches: the meta server's own
//! environment (its token, cloud credentials, whatever its user exported) is not the server's
//! business.

use std::ffi::OsString;

/// Variables every child of the local runtime gets, when the meta server has them.
const KEPT: [&str; 21] = [
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "TZ",
    "TMPDIR",
    "TMP",
    "TEMP",
    "TERM",
    // Downloads by uvx and npx behind a proxy or a private CA.
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
];

/// Prefixes of kept variables: the locale, the XDG directories (where caches live), and the
/// settings of uv and npm (a cache directory, an index).
const KEPT_PREFIXES: [&str; 5] = ["LC_", "XDG_", "UV_", "npm_config_", "NPM_CONFIG_"];

/// Never passed on, whatever is asked: the meta server's own bearer token, and the capability
/// token a server's bridge reads in its pod.
pub const NEVER: [&str; 2] = ["MCP_EPHEMERAL_TOKEN", SERVER_TOKEN_ENV];

/// Where a server's bridge finds its capability token in its pod (from the server's Secret).
pub const SERVER_TOKEN_ENV: &str = "MCP_EPHEMERAL_SERVER_TOKEN";

/// What a child inherits from this process's environment (its command's `env` comes on top).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inherit {
    /// Everything but [`NEVER`] and `hide` (the standalone bridge: `hide` is its `--token-env`).
    All { hide: Vec<String> },
    /// Only the kept variables and those named in `pass` (the local runtime's `--pass-env`).
    Minimal { pass: Vec<String> },
}

/// Whether the local runtime passes `name` on without being asked.
pub fn kept(name: &str) -> bool {
    KEPT.contains(&name) || KEPT_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The variables of `vars` a child gets under `Minimal { pass }`.
pub(crate) fn minimal(vars: impl Iterator<Item = (OsString, OsString)>, pass: &[String]) -> Vec<(OsString, OsString)> {
    vars.filter(|(k, _)| {
        let Some(k) = k.to_str() else { return false };
        !NEVER.contains(&k) && (kept(k) || pass.iter().any(|p| p == k))
    })
    .collect()
}

impl Default for Inherit {
    fn default() -> Self {
        Inherit::All { hide: Vec::new() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_programs_need_and_what_was_asked_for_passes() {
        let vars = [
            "PATH",
            "HOME",
            "LC_ALL",
            "XDG_CACHE_HOME",
            "UV_CACHE_DIR",
            "AWS_SECRET_ACCESS_KEY",
            "SOME_CANARY",
            "MY_VAR",
            NEVER[0],
            NEVER[1],
        ]
        .map(|k| (OsString::from(k), OsString::from("v")));
        let got = minimal(vars.into_iter(), &["MY_VAR".into(), NEVER[0].into(), NEVER[1].into()]);
        let names: Vec<_> = got.iter().map(|(k, _)| k.to_str().unwrap()).collect();
        assert_eq!(names, ["PATH", "HOME", "LC_ALL", "XDG_CACHE_HOME", "UV_CACHE_DIR", "MY_VAR"]);
    }
}
