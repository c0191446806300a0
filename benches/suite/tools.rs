//! The tools the suite drives, prepared once under `target/bench-tools/` (never committed) and
//! reused when already there:
//!
//! - `mcpbench`, built from `$MCPBENCH` (a binary or its source folder) or from
//!   `../shared/tools/mcpbench` beside the repo, into `bench-tools/mcpbench-target/`;
//! - a Python venv `bench-tools/venv/` with `mcp-proxy` and `mcp-server-time` from PyPI
//!   (`python3 -m venv` + pip; `uv venv` + `uv pip` when the system Python has no venv module);
//! - `bench-tools/node/` with `supergateway` and `@modelcontextprotocol/server-everything` from
//!   npm (`npm install --prefix`);
//! - `uvx` for the meta server's `time` preset: the one on PATH, else `uv` installed in the venv.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

const PY_PACKAGES: &[&str] = &["mcp-proxy", "mcp-server-time"];
const NPM_PACKAGES: &[&str] = &["supergateway", "@modelcontextprotocol/server-everything"];

pub struct Tools {
    /// `target/bench-tools`.
    pub root: PathBuf,
    pub mcpbench: PathBuf,
    pub mcp_proxy: PathBuf,
    pub time_server: PathBuf,
    pub node: PathBuf,
    pub supergateway_js: PathBuf,
    pub everything_js: PathBuf,
    /// `node -r` preload that binds supergateway to 127.0.0.1 (it has no --host flag).
    pub preload: PathBuf,
    /// The folder holding `uvx`, prepended to the meta server's PATH when it is not on PATH.
    pub uvx_dir: Option<PathBuf>,
    /// (tool, version), for the report.
    pub versions: Vec<(String, String)>,
}

/// `target/` of this build: the bench binary is `target/release/deps/suite-HASH`.
pub fn target_dir(repo: &Path) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.to_path_buf()))
        .filter(|t| t.join("release").is_dir())
        .unwrap_or_else(|| repo.join("target"))
}

pub fn prepare(repo: &Path) -> Result<Tools> {
    let root = target_dir(repo).join("bench-tools");
    std::fs::create_dir_all(root.join("logs"))?;
    let mcpbench = mcpbench(repo, &root)?;
    let venv = venv(&root)?;
    let node_dir = npm(&root)?;
    let node = which("node").context("node is not on PATH: install Node.js 20 with npm")?;
    let uvx_dir = match which("uvx") {
        Some(_) => None,
        None => {
            eprintln!("suite: uvx is not on PATH; installing uv into {}", venv.display());
            run(
                Command::new(venv.join("bin/python")).args(["-m", "pip", "install", "--quiet", "uv"]),
                "pip install uv",
            )
            .or_else(|_| {
                run(
                    Command::new("uv").args(["pip", "install", "--python"]).arg(venv.join("bin/python")).arg("uv"),
                    "uv pip install uv",
                )
            })?;
            Some(venv.join("bin"))
        }
    };
    let mut tools = Tools {
        mcpbench,
        mcp_proxy: venv.join("bin/mcp-proxy"),
        time_server: venv.join("bin/mcp-server-time"),
        node,
        supergateway_js: npm_bin(&node_dir, "supergateway")?,
        everything_js: npm_bin(&node_dir, "mcp-server-everything")?,
        preload: Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/suite/bind-localhost.cjs"),
        uvx_dir,
        versions: Vec::new(),
        root,
    };
    tools.versions = versions(&tools, &venv, &node_dir);
    Ok(tools)
}

/// The mcpbench binary, built if needed (cargo makes this a no-op when it is up to date).
fn mcpbench(repo: &Path, root: &Path) -> Result<PathBuf> {
    let source = match std::env::var_os("MCPBENCH").map(PathBuf::from) {
        Some(p) if p.is_file() => return Ok(p),
        Some(p) if p.join("Cargo.toml").is_file() => p,
        Some(p) => {
            bail!("MCPBENCH={} is neither an mcpbench binary nor its source folder (with Cargo.toml)", p.display())
        }
        None => repo.join("../shared/tools/mcpbench"),
    };
    if !source.join("Cargo.toml").is_file() {
        bail!(
            "mcpbench not found: expected its source at {} (the shared/ folder beside the repo). \
             Set MCPBENCH to an mcpbench binary or to its source folder, e.g. \
             MCPBENCH=/path/to/shared/tools/mcpbench cargo bench --bench suite",
            source.display()
        );
    }
    let target = root.join("mcpbench-target");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("suite: building mcpbench from {} (a no-op when up to date)", source.display());
    run(
        Command::new(cargo)
            .args(["build", "--release", "--quiet", "--manifest-path"])
            .arg(source.join("Cargo.toml"))
            .env("CARGO_TARGET_DIR", &target),
        "cargo build mcpbench",
    )?;
    Ok(target.join("release/mcpbench"))
}

/// The venv with mcp-proxy and mcp-server-time.
fn venv(root: &Path) -> Result<PathBuf> {
    let venv = root.join("venv");
    let python = venv.join("bin/python");
    let missing = |v: &Path| PY_PACKAGES.iter().any(|p| !v.join("bin").join(p).is_file());
    if !missing(&venv) {
        return Ok(venv);
    }
    eprintln!("suite: installing {} into {}", PY_PACKAGES.join(", "), venv.display());
    if !python.is_file() {
        let made = run(Command::new("python3").args(["-m", "venv"]).arg(&venv), "python3 -m venv");
        if made.is_err() || !venv.join("bin/pip").is_file() {
            // Debian's system Python lacks ensurepip without python3-venv; uv makes a venv anyway.
            let _ = std::fs::remove_dir_all(&venv);
            run(Command::new("uv").args(["venv", "--quiet"]).arg(&venv), "uv venv").context(
                "could not create a Python venv: install python3-venv (apt-get install python3-venv) or uv (pip install uv)",
            )?;
        }
    }
    if venv.join("bin/pip").is_file() {
        run(
            Command::new(&python)
                .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
                .args(PY_PACKAGES),
            "pip install",
        )?;
    } else {
        run(
            Command::new("uv").args(["pip", "install", "--quiet", "--python"]).arg(&python).args(PY_PACKAGES),
            "uv pip install",
        )?;
    }
    if missing(&venv) {
        bail!("installed {} but {} lacks their scripts", PY_PACKAGES.join(", "), venv.join("bin").display());
    }
    Ok(venv)
}

/// `bench-tools/node` with supergateway and server-everything.
fn npm(root: &Path) -> Result<PathBuf> {
    let dir = root.join("node");
    let have = |d: &Path| {
        ["supergateway", "mcp-server-everything"].iter().all(|b| d.join("node_modules/.bin").join(b).exists())
    };
    if !have(&dir) {
        eprintln!("suite: installing {} into {}", NPM_PACKAGES.join(", "), dir.display());
        std::fs::create_dir_all(&dir)?;
        run(
            Command::new("npm")
                .args(["install", "--no-audit", "--no-fund", "--loglevel=error", "--prefix"])
                .arg(&dir)
                .args(NPM_PACKAGES),
            "npm install",
        )
        .context("npm install failed: Node.js 20 with npm and access to the npm registry are needed")?;
    }
    Ok(dir)
}

/// The JavaScript file behind `node_modules/.bin/NAME`, to run with `node` directly (no npx
/// wrapper process, so the measured pid is the bridge itself).
fn npm_bin(node_dir: &Path, name: &str) -> Result<PathBuf> {
    let link = node_dir.join("node_modules/.bin").join(name);
    link.canonicalize().with_context(|| format!("{} is missing", link.display()))
}

fn versions(t: &Tools, venv: &Path, node_dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let first_line = |cmd: &mut Command| {
        cmd.output().ok().map(|o| {
            let s = if o.stdout.is_empty() { o.stderr } else { o.stdout };
            String::from_utf8_lossy(&s).lines().next().unwrap_or("").trim().to_string()
        })
    };
    if let Some(v) = first_line(Command::new(&t.mcpbench).arg("--version")) {
        out.push(("mcpbench".into(), v.trim_start_matches("mcpbench ").to_string()));
    }
    let pip_list = Command::new(venv.join("bin/python")).args(["-m", "pip", "list", "--format=json"]).output();
    let listed: Vec<serde_json::Value> = pip_list
        .ok()
        .and_then(|o| serde_json::from_slice(&o.stdout).ok())
        .or_else(|| {
            let o = Command::new("uv")
                .args(["pip", "list", "--format=json", "--python"])
                .arg(venv.join("bin/python"))
                .output()
                .ok()?;
            serde_json::from_slice(&o.stdout).ok()
        })
        .unwrap_or_default();
    for name in ["mcp-proxy", "mcp-server-time", "mcp"] {
        if let Some(p) = listed.iter().find(|p| p["name"].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name))) {
            out.push((name.into(), p["version"].as_str().unwrap_or("?").into()));
        }
    }
    for (name, dir) in
        [("supergateway", "supergateway"), ("server-everything", "@modelcontextprotocol/server-everything")]
    {
        let pj = node_dir.join("node_modules").join(dir).join("package.json");
        if let Some(v) = std::fs::read(pj)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|j| j["version"].as_str().map(str::to_string))
        {
            out.push((name.into(), v));
        }
    }
    if let Some(v) = first_line(Command::new(&t.node).arg("--version")) {
        out.push(("node".into(), v));
    }
    if let Some(v) = first_line(Command::new(venv.join("bin/python")).arg("--version")) {
        out.push(("python".into(), v.trim_start_matches("Python ").to_string()));
    }
    let uv = t.uvx_dir.as_ref().map(|d| d.join("uv")).unwrap_or_else(|| "uv".into());
    if let Some(v) = first_line(Command::new(uv).arg("--version")) {
        out.push(("uv".into(), v.trim_start_matches("uv ").to_string()));
    }
    out
}

/// Run a setup command, its output going to the suite's stderr.
fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let status =
        cmd.stdin(std::process::Stdio::null()).status().with_context(|| format!("{what}: cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{what} failed ({status}): {cmd:?}");
    }
    Ok(())
}

/// A program on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join(name)).find(|p| {
        use std::os::unix::fs::PermissionsExt;
        p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}
