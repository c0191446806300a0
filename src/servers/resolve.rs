//! [`resolve`]: a create request, the presets, the policy and what the runtime can do, turned
//! into a [`ServerSpec`] — or the sentence that says why not. A pure function: it starts
//! nothing and reads nothing but its arguments (and the clock, for the creation time).

use std::{collections::BTreeMap, time::Duration};

use super::{CreateRequest, Policy, ServerAuth};
use crate::{
    http::capability::Capability,
    presets::Presets,
    runtime::Capabilities,
    spec::{self, Args, Egress, Identity, Launch, Resources, ServerSpec, Source, SpecError},
};

/// Check `req` and build its spec; nothing is started.
pub fn resolve(
    req: CreateRequest,
    presets: &Presets,
    policy: &Policy,
    caps: Capabilities,
) -> Result<ServerSpec, SpecError> {
    check_sources(&req)?;
    let fields = Fields::check(&req)?;
    check_image_fields(&req)?;
    let made = if let Some(name) = &req.preset {
        from_preset(name, presets, &fields)?
    } else if let Some(exec) = &req.runtime_exec {
        from_exec(exec, req.runtime_mcp.as_deref(), &fields)?
    } else if let Some(image) = &req.image {
        from_image(image, &req, &fields, caps)?
    } else {
        return Err(SpecError::NoSource);
    };
    let ttl = ttl(req.ttl_seconds, policy)?;
    let idle_timeout = idle_timeout(req.idle_timeout_seconds, made.idle_timeout, policy)?;
    let egress = egress(&req, made.egress, caps)?;
    let mut env = made.env;
    env.extend(fields.env);
    let launch = Launch {
        source: made.source,
        env,
        secret_env: fields.secret_env,
        needs_kube_api: made.needs_kube_api,
        resources: made.resources,
        command_image: made.command_image,
        egress,
    };
    let mut identity = Identity::fresh(&made.base, req.preset.clone(), fields.labels, ttl);
    identity.idle_timeout = idle_timeout;
    identity.capability = (policy.server_auth == ServerAuth::Token).then(Capability::generate);
    Ok(ServerSpec { identity, launch })
}

/// Exactly one of `preset`, `runtime_exec` (+ `runtime_mcp`) and `image`.
fn check_sources(req: &CreateRequest) -> Result<(), SpecError> {
    // create_mcp_server takes `pool` off the request (declarative/) before it gets here.
    if req.pool.is_some() {
        return Err(SpecError::PoolNotHere);
    }
    let given: Vec<&str> = [
        req.preset.as_ref().map(|_| "preset"),
        req.runtime_exec.as_ref().map(|_| "runtime_exec"),
        req.image.as_ref().map(|_| "image"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if given.len() > 1 {
        return Err(SpecError::ConflictingSources(given.join(" and ")));
    }
    if req.runtime_mcp.is_some() && req.runtime_exec.is_none() {
        return Err(if req.preset.is_some() || req.image.is_some() {
            SpecError::ConflictingSources("runtime_mcp with preset/image".into())
        } else {
            SpecError::EmptyExec
        });
    }
    Ok(())
}

/// The `image_*` fields only with `image`, and a port that can be one.
fn check_image_fields(req: &CreateRequest) -> Result<(), SpecError> {
    if req.image.is_none() {
        if req.image_transport.is_some() {
            return Err(SpecError::ImageOnly("image_transport"));
        }
        if req.image_port.is_some() {
            return Err(SpecError::ImageOnly("image_port"));
        }
    }
    if req.image_port == Some(0) {
        return Err(SpecError::Args("`image_port` must be a port number between 1 and 65535".into()));
    }
    Ok(())
}

/// The request's TTL, within the policy.
fn ttl(asked: Option<u64>, policy: &Policy) -> Result<Duration, SpecError> {
    let max = policy.max_ttl.as_secs();
    match asked {
        Some(s) if s == 0 || s > max => Err(SpecError::Ttl { got: s, max }),
        Some(s) => Ok(Duration::from_secs(s)),
        None => Ok(policy.default_ttl),
    }
}

/// The idle timeout: the request's, else the preset's, else the policy's; 0 turns it off.
fn idle_timeout(asked: Option<u64>, preset: Option<u64>, policy: &Policy) -> Result<Option<Duration>, SpecError> {
    let max = policy.max_ttl.as_secs();
    match asked.or(preset) {
        Some(0) => Ok(None),
        Some(s) if s > max => Err(SpecError::IdleTimeout { got: s, max }),
        Some(s) => Ok(Some(Duration::from_secs(s))),
        None => Ok(policy.default_idle_timeout),
    }
}

/// The egress: the request's, else the preset's; "none" only where the runtime enforces it.
fn egress(req: &CreateRequest, preset: Egress, caps: Capabilities) -> Result<Egress, SpecError> {
    let egress = req.egress.unwrap_or(preset);
    if egress == Egress::None && !caps.egress {
        let (asked_by, instead) = match (req.egress, &req.preset) {
            (None, Some(name)) => {
                (format!("preset `{name}`"), "Pass `egress: \"open\"` to run it without that restriction")
            }
            _ => ("the request".to_string(), "Leave `egress` out to run it without that restriction"),
        };
        let why = match caps.kind {
            crate::runtime::RuntimeKind::Local => {
                "the local runtime cannot keep a process off the network (only the Kubernetes runtime can, with a NetworkPolicy)"
            }
            crate::runtime::RuntimeKind::Kubernetes => {
                "this meta server runs with --network-policy off, so its servers get no NetworkPolicy"
            }
        };
        return Err(SpecError::EgressNotEnforced { asked_by, why, instead });
    }
    Ok(egress)
}

/// The request's own fields, each checked.
struct Fields {
    args: Option<Vec<String>>,
    env: BTreeMap<String, String>,
    secret_env: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
    resources: Resources,
}

impl Fields {
    fn check(req: &CreateRequest) -> Result<Fields, SpecError> {
        let args = req.runtime_args.clone().map(Args::into_vec).transpose()?;
        if let Some(a) = &args {
            spec::check_args(a)?;
        }
        let env = req.env.clone().unwrap_or_default();
        let secret_env = req.secret_env.clone().unwrap_or_default();
        spec::check_env("env", &env)?;
        spec::check_env("secret_env", &secret_env)?;
        let labels = req.labels.clone().unwrap_or_default();
        spec::check_labels(&labels)?;
        let resources = req.resources.clone().unwrap_or_default();
        resources.check()?;
        Ok(Fields { args, env, secret_env, labels, resources })
    }
}

/// What the source of a request (preset, program or image) contributes.
struct Made {
    source: Source,
    /// What the server's name is made from.
    base: String,
    /// Environment the source sets; the request's `env` goes on top.
    env: BTreeMap<String, String>,
    needs_kube_api: bool,
    resources: Resources,
    command_image: Option<String>,
    /// The preset's idle timeout, in seconds.
    idle_timeout: Option<u64>,
    /// The preset's egress.
    egress: Egress,
}

fn from_preset(name: &str, presets: &Presets, fields: &Fields) -> Result<Made, SpecError> {
    let p = presets
        .get(name)
        .ok_or_else(|| SpecError::UnknownPreset { name: name.to_string(), known: presets.names().join(", ") })?;
    let missing: Vec<&str> = p
        .required_env
        .iter()
        .filter(|n| !fields.env.contains_key(*n) && !fields.secret_env.contains_key(*n))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(SpecError::MissingEnv { preset: name.to_string(), names: missing.join(", ") });
    }
    let mut argv = vec![p.runtime_exec.clone()];
    argv.extend(p.runtime_mcp.clone());
    argv.extend(fields.args.clone().unwrap_or_else(|| p.runtime_args.clone()));
    Ok(Made {
        source: Source::Command { argv },
        base: name.to_string(),
        env: p.env.clone(),
        needs_kube_api: p.needs_kube_api,
        resources: fields.resources.or(&p.resources),
        command_image: p.image.clone(),
        idle_timeout: p.idle_timeout,
        egress: p.egress,
    })
}

fn from_exec(exec: &str, mcp: Option<&str>, fields: &Fields) -> Result<Made, SpecError> {
    spec::check_exec(exec)?;
    let mut argv = vec![exec.to_string()];
    if let Some(mcp) = mcp {
        spec::check_value(|| "runtime_mcp".into(), mcp)?;
        argv.push(mcp.to_string());
    }
    argv.extend(fields.args.clone().unwrap_or_default());
    Ok(Made {
        source: Source::Command { argv },
        base: mcp.unwrap_or(exec).to_string(),
        env: BTreeMap::new(),
        needs_kube_api: false,
        resources: fields.resources.clone(),
        command_image: None,
        idle_timeout: None,
        egress: Egress::Open,
    })
}

fn from_image(image: &str, req: &CreateRequest, fields: &Fields, caps: Capabilities) -> Result<Made, SpecError> {
    spec::check_value(|| "image".into(), image)?;
    if image.trim().is_empty() || image.contains(char::is_whitespace) {
        return Err(SpecError::Args(format!("`image` must be an image reference, got `{image}`")));
    }
    if !caps.images {
        return Err(SpecError::ImageNeedsKubernetes);
    }
    let source = Source::Image {
        image: image.to_string(),
        args: fields.args.clone().unwrap_or_default(),
        transport: req.image_transport,
        port: req.image_port,
    };
    Ok(Made {
        source,
        base: image.to_string(),
        env: BTreeMap::new(),
        needs_kube_api: false,
        resources: fields.resources.clone(),
        command_image: None,
        idle_timeout: None,
        egress: Egress::Open,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::RuntimeKind;

    const LOCAL: Capabilities = Capabilities { kind: RuntimeKind::Local, images: false, egress: false };
    const KUBE: Capabilities = Capabilities { kind: RuntimeKind::Kubernetes, images: true, egress: true };

    fn resolve_json(args: serde_json::Value, caps: Capabilities) -> Result<ServerSpec, SpecError> {
        let presets = Presets::load(None).unwrap();
        resolve(serde_json::from_value(args).unwrap(), &presets, &Policy::default(), caps)
    }

    #[test]
    fn a_preset_request_becomes_its_command_with_the_callers_env_on_top() {
        let spec =
            resolve_json(serde_json::json!({"preset": "time", "env": {"A": "1"}, "ttl_seconds": 60}), LOCAL).unwrap();
        assert!(spec.identity.name.starts_with("time-"));
        assert_eq!(spec.identity.preset.as_deref(), Some("time"));
        assert_eq!(spec.identity.expires_at, spec.identity.created_at + Duration::from_secs(60));
        assert!(matches!(&spec.launch.source, Source::Command { argv } if argv[0] == "uvx"));
        assert_eq!(spec.launch.env.get("A").map(String::as_str), Some("1"));
    }

    #[test]
    fn images_need_a_runtime_that_runs_them() {
        let image = serde_json::json!({"image": "ghcr.io/x/y:1", "image_transport": "http"});
        assert_eq!(resolve_json(image.clone(), LOCAL).unwrap_err(), SpecError::ImageNeedsKubernetes);
        let spec = resolve_json(image, KUBE).unwrap();
        assert!(spec.identity.name.starts_with("y-"), "{}", spec.identity.name);
        assert!(matches!(spec.launch.source, Source::Image { .. }));
    }

    #[test]
    fn conflicting_or_missing_sources_are_refused() {
        let both = serde_json::json!({"preset": "time", "runtime_exec": "uvx"});
        assert!(matches!(resolve_json(both, LOCAL), Err(SpecError::ConflictingSources(_))));
        assert_eq!(resolve_json(serde_json::json!({}), LOCAL).unwrap_err(), SpecError::NoSource);
        let port = serde_json::json!({"preset": "time", "image_port": 80});
        assert_eq!(resolve_json(port, LOCAL).unwrap_err(), SpecError::ImageOnly("image_port"));
    }

    #[test]
    fn the_idle_timeout_is_the_requests_then_the_presets_then_the_policys_and_0_is_off() {
        let mut presets = Presets::load(None).unwrap();
        presets.insert_for_test("idler", "runtime_exec = \"uvx\"\nidle_timeout = 30");
        let policy = Policy { default_idle_timeout: Some(Duration::from_secs(600)), ..Policy::default() };
        let idle = |args: serde_json::Value| {
            resolve(serde_json::from_value(args).unwrap(), &presets, &policy, LOCAL).map(|s| s.identity.idle_timeout)
        };
        let secs = |s| Ok(Some(Duration::from_secs(s)));
        assert_eq!(idle(serde_json::json!({"preset": "time"})), secs(600), "the policy's default");
        assert_eq!(idle(serde_json::json!({"preset": "idler"})), secs(30), "the preset's");
        assert_eq!(idle(serde_json::json!({"preset": "idler", "idle_timeout_seconds": 5})), secs(5), "the request's");
        assert_eq!(idle(serde_json::json!({"preset": "idler", "idle_timeout_seconds": 0})), Ok(None), "0 is off");
        let too_long = idle(serde_json::json!({"preset": "time", "idle_timeout_seconds": 999_999_999}));
        assert!(matches!(too_long, Err(SpecError::IdleTimeout { .. })), "{too_long:?}");
    }

    #[test]
    fn egress_is_the_requests_then_the_presets_and_none_only_where_it_is_enforced() {
        let mut presets = Presets::load(None).unwrap();
        presets.insert_for_test("sealed", "runtime_exec = \"uvx\"\negress = \"none\"");
        let no_policy = Capabilities { egress: false, ..KUBE };
        let egress = |args: serde_json::Value, caps| {
            resolve(serde_json::from_value(args).unwrap(), &presets, &Policy::default(), caps).map(|s| s.launch.egress)
        };
        assert_eq!(egress(serde_json::json!({"preset": "time"}), KUBE), Ok(Egress::Open), "open by default");
        assert_eq!(egress(serde_json::json!({"preset": "sealed"}), KUBE), Ok(Egress::None), "the preset's");
        let open = serde_json::json!({"preset": "sealed", "egress": "open"});
        assert_eq!(egress(open.clone(), KUBE), Ok(Egress::Open), "the request's over the preset's");
        assert_eq!(egress(open, LOCAL), Ok(Egress::Open), "open runs anywhere");
        let none = serde_json::json!({"runtime_exec": "uvx", "egress": "none"});
        assert_eq!(egress(none.clone(), KUBE), Ok(Egress::None));
        for (args, caps, says) in [
            (none.clone(), LOCAL, "the local runtime"),
            (none, no_policy, "--network-policy off"),
            (serde_json::json!({"preset": "sealed"}), LOCAL, "preset `sealed` asks"),
        ] {
            let err = egress(args.clone(), caps).unwrap_err().to_string();
            assert!(err.contains(says) && err.contains("egress"), "{args}: {err}");
        }
        let bad = serde_json::from_value::<CreateRequest>(serde_json::json!({"preset": "time", "egress": "closed"}));
        assert!(bad.unwrap_err().to_string().contains("closed"), "a bad egress is refused");
    }
}
