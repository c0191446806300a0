//! Presets: named recipes for well-known MCP servers, one TOML file each in `presets/`,
//! embedded at build time and overridable (or extended) by `--presets-dir`.
//!
//! A preset names its command, default arguments and environment, and the environment a user
//! must or may supply; values of user-supplied variables never appear in listings.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/presets.rs"));
}

/// One preset file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preset {
    pub name: String,
    pub description: String,
    /// The program: `uvx`, `npx`, or a server binary.
    pub runtime_exec: String,
    /// The MCP package or script the program runs (`mcp-server-time`), if any.
    #[serde(default)]
    pub runtime_mcp: Option<String>,
    /// Default arguments; a request's `runtime_args` replace them.
    #[serde(default)]
    pub runtime_args: Vec<String>,
    /// Environment always set (a request's `env` may override).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Variables the user must supply in `env` or `secret_env`.
    #[serde(default)]
    pub required_env: Vec<String>,
    /// Variables the server understands but does not need.
    #[serde(default)]
    pub optional_env: Vec<String>,
    /// The server talks to the Kubernetes API (its pod gets a service-account token).
    #[serde(default)]
    pub needs_kube_api: bool,
    /// Container image for the Kubernetes runtime (not used by the local runtime).
    #[serde(default)]
    pub image: Option<String>,
    /// Servers of this preset kept started ahead (`--warm-pool` overrides it).
    #[serde(default)]
    pub warm_pool: usize,
    /// Seconds without MCP traffic after which its servers stop (a request's
    /// `idle_timeout_seconds` overrides it; `--default-idle-timeout` applies when unset).
    #[serde(default)]
    pub idle_timeout: Option<u64>,
    /// Most servers of this preset not Stopped at once (`--max-active` overrides it).
    #[serde(default)]
    pub max_active: Option<usize>,
    /// CPU and memory for its container on Kubernetes (a request's `resources` override these).
    #[serde(default)]
    pub resources: crate::spec::Resources,
    /// Where its servers may connect to: `"open"` (default) or `"none"` (DNS only, through the
    /// server's NetworkPolicy on Kubernetes); a request's `egress` overrides it.
    #[serde(default)]
    pub egress: crate::spec::Egress,
}

/// What `list_presets` shows of a preset.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PresetSummary {
    pub name: String,
    pub description: String,
    /// The command line it runs.
    pub command: Vec<String>,
    /// Variables that must be supplied (`env` or `secret_env`).
    pub required_env: Vec<String>,
    pub optional_env: Vec<String>,
}

impl Preset {
    pub fn argv(&self) -> Vec<String> {
        std::iter::once(self.runtime_exec.clone())
            .chain(self.runtime_mcp.clone())
            .chain(self.runtime_args.iter().cloned())
            .collect()
    }

    pub fn summary(&self) -> PresetSummary {
        PresetSummary {
            name: self.name.clone(),
            description: self.description.clone(),
            command: self.argv(),
            required_env: self.required_env.clone(),
            optional_env: self.optional_env.clone(),
        }
    }
}

/// Error loading presets.
#[derive(Debug, thiserror::Error)]
pub enum PresetError {
    #[error("preset file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("cannot read presets directory {path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The presets in force, by name.
#[derive(Debug, Clone, Default)]
pub struct Presets {
    by_name: BTreeMap<String, Preset>,
}

impl Presets {
    /// The embedded presets, then those of `dir` (same name replaces).
    pub fn load(dir: Option<&Path>) -> Result<Presets, PresetError> {
        let mut presets = Presets::default();
        for (file, text) in embedded::EMBEDDED {
            presets.add(Path::new("presets").join(file), text)?;
        }
        if let Some(dir) = dir {
            let entries = std::fs::read_dir(dir).map_err(|source| PresetError::Dir { path: dir.into(), source })?;
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect();
            files.sort();
            for path in files {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| PresetError::Invalid { path: path.clone(), message: e.to_string() })?;
                presets.add(path, &text)?;
            }
        }
        Ok(presets)
    }

    fn add(&mut self, path: PathBuf, text: &str) -> Result<(), PresetError> {
        let preset = parse(text).map_err(|message| PresetError::Invalid { path, message })?;
        self.by_name.insert(preset.name.clone(), preset);
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&Preset> {
        self.by_name.get(name)
    }

    pub fn names(&self) -> Vec<&str> {
        self.by_name.keys().map(String::as_str).collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Preset> {
        self.by_name.values()
    }

    /// Add preset `name` whose file has `body` besides its name and description.
    #[cfg(test)]
    pub(crate) fn insert_for_test(&mut self, name: &str, body: &str) {
        let text = format!("name = \"{name}\"\ndescription = \"test\"\n{body}");
        self.add(PathBuf::from(format!("{name}.toml")), &text).expect("a valid preset");
    }
}

/// Parse and check one preset file.
pub fn parse(text: &str) -> Result<Preset, String> {
    let preset: Preset = toml::from_str(text).map_err(|e| e.to_string())?;
    if !crate::names::is_rfc1123_label(&preset.name) {
        return Err(format!("name `{}` must be lower-case letters, digits and `-`", preset.name));
    }
    if preset.runtime_exec.trim().is_empty() {
        return Err("runtime_exec must name a program".into());
    }
    for var in preset.env.keys().chain(&preset.required_env).chain(&preset.optional_env) {
        if !crate::spec::is_env_name(var) {
            return Err(format!("`{var}` is not a valid environment variable name"));
        }
    }
    Ok(preset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_presets_all_load() {
        let presets = Presets::load(None).unwrap();
        for name in ["time", "fetch", "git", "everything", "filesystem", "memory", "sequential-thinking", "kubernetes"]
        {
            assert!(presets.get(name).is_some(), "missing preset {name}");
        }
        assert_eq!(presets.get("time").unwrap().argv(), ["uvx", "mcp-server-time"]);
    }

    #[test]
    fn a_presets_dir_overrides_and_adds() {
        let dir = std::env::temp_dir().join(format!("mcp-eph-presets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("time.toml"), "name='time'\ndescription='mine'\nruntime_exec='my-time'\n").unwrap();
        std::fs::write(dir.join("extra.toml"), "name='extra'\ndescription='x'\nruntime_exec='x'\n").unwrap();
        let presets = Presets::load(Some(&dir)).unwrap();
        assert_eq!(presets.get("time").unwrap().runtime_exec, "my-time");
        assert!(presets.get("extra").is_some());
        std::fs::write(dir.join("bad.toml"), "name='bad'\ndescription='x'\nruntime_exec='x'\ntypo=1\n").unwrap();
        let err = Presets::load(Some(&dir)).unwrap_err().to_string();
        assert!(err.contains("bad.toml") && err.contains("typo"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_preset_fields_are_rejected_with_a_reason() {
        assert!(parse("name='Bad Name'\ndescription='x'\nruntime_exec='x'").unwrap_err().contains("lower-case"));
        assert!(parse("name='a'\ndescription='x'\nruntime_exec='x'\nrequired_env=['1X']").unwrap_err().contains("1X"));
    }
}
