//! The objects a server is made of, as pure functions of its spec: a Job, a Service and (for
//! `secret_env` and the capability token) a Secret. Nothing here talks to the API, so the
//! exact objects are snapshot-tested.
//!
//! Everything the meta server needs to know about a server later lives on its Job (labels and
//! annotations): a restarted meta server lists and manages the servers of its predecessors.

use std::collections::BTreeMap;

use k8s_openapi::{
    ByteString,
    api::{
        batch::v1::{Job, JobSpec},
        core::v1::{
            Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvFromSource, EnvVar, HTTPGetAction,
            PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, Secret,
            SecretEnvSource, SecurityContext, Service, ServicePort, ServiceSpec, TCPSocketAction, Volume, VolumeMount,
        },
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{ObjectMeta, OwnerReference},
        util::intstr::IntOrString,
    },
};
use serde::{Deserialize, Serialize};

use crate::{
    bridge::SERVER_TOKEN_ENV,
    runtime::{LABEL_INSTANCE, LABEL_MANAGED_BY, MANAGED_BY, rfc3339, standard_labels},
    spec::{ImageTransport, Resources, ServerSpec, Source},
};

/// The port every server listens on inside its pod, and its Service's port.
pub(crate) const SERVER_PORT: u16 = 8080;
/// The server's container.
pub(crate) const CONTAINER: &str = "mcp";
/// Where the bridge binary is copied for `image` servers that speak stdio.
const BRIDGE_DIR: &str = "/mcp-ephemeral";
/// Unix user and group the containers run as (matches the Dockerfile's user).
const RUN_AS: i64 = 10001;

pub(crate) const ANNOTATION_CREATED: &str = "mcp-ephemeral.dev/created-at";
pub(crate) const ANNOTATION_EXPIRES: &str = "mcp-ephemeral.dev/expires-at";
/// When the meta server saw the server's `/readyz` answer ready itself (ahead of the kubelet,
/// whose probe lags up to a period); from then on every reader agrees it is Ready.
pub(crate) const ANNOTATION_READY: &str = "mcp-ephemeral.dev/ready-at";
/// The spec without secret values ([`SpecAnnotation`]).
pub(crate) const ANNOTATION_SPEC: &str = "mcp-ephemeral.dev/spec";
/// Why a suspended Job was stopped (`IdleTimeout`, `StoppedByRequest`).
pub(crate) const ANNOTATION_STOPPED: &str = "mcp-ephemeral.dev/stopped-reason";
/// The bridge's last activity when the server was stopped (its bridge is gone since).
pub(crate) const ANNOTATION_LAST_ACTIVITY: &str = "mcp-ephemeral.dev/last-activity";
/// On the Job of a server with an idle timeout: the timeout in seconds. A label, so the idle
/// check lists only these Jobs.
pub(crate) const LABEL_IDLE_TIMEOUT: &str = "mcp-ephemeral.dev/idle-timeout";

/// Settings that are the same for every server of a runtime.
#[derive(Debug, Clone)]
pub(crate) struct JobSettings {
    /// Image of preset and `runtime_exec` servers: this project's image (it has the bridge,
    /// `uvx` and `npx`).
    pub(crate) server_image: String,
    /// How `image` servers speak MCP unless the request says.
    pub(crate) image_transport: ImageTransport,
    /// The port `http` images listen on unless the request says.
    pub(crate) image_port: u16,
    /// Defaults for unset resource fields.
    pub(crate) resources: Resources,
    /// How long a finished Job (and its logs) stays for inspection before Kubernetes deletes it.
    pub(crate) keep_finished_secs: i32,
}

impl Default for JobSettings {
    fn default() -> Self {
        JobSettings {
            server_image: format!("ghcr.io/mcp-ephemeral/mcp-ephemeral:{}", env!("CARGO_PKG_VERSION")),
            image_transport: ImageTransport::Stdio,
            image_port: SERVER_PORT,
            resources: Resources {
                cpu_request: Some("50m".into()),
                cpu_limit: Some("1".into()),
                memory_request: Some("64Mi".into()),
                memory_limit: Some("512Mi".into()),
            },
            keep_finished_secs: 300,
        }
    }
}

/// What the `mcp-ephemeral.dev/spec` annotation holds: enough to describe the server after a
/// restart, and no secret value (only the names of secret variables).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SpecAnnotation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) preset: Option<String>,
    pub(crate) command: Vec<String>,
    #[serde(default)]
    pub(crate) env_names: Vec<String>,
    #[serde(default)]
    pub(crate) secret_env_names: Vec<String>,
    /// The container's `/mcp` and `/sse` answer on this port.
    pub(crate) port: u16,
    /// What answers in the pod.
    pub(crate) transport: PodTransport,
}

/// What answers on a server's port in its pod; serialized as `bridge` / `http`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum PodTransport {
    /// The bridge, which has `/readyz` for the meta server to ask.
    Bridge,
    /// An image's own HTTP server; also what an unreadable annotation is taken for, since
    /// nothing is known about it then.
    #[default]
    Http,
}

/// The Secret's name for a server.
pub(crate) fn secret_name(job: &str) -> String {
    format!("{job}-env")
}

/// What answers on the server's port in its pod.
pub(crate) fn pod_transport(spec: &ServerSpec, settings: &JobSettings) -> PodTransport {
    match endpoint(spec, settings).1 {
        ImageTransport::Stdio => PodTransport::Bridge,
        ImageTransport::Http => PodTransport::Http,
    }
}

/// Where the server's MCP endpoints answer in its pod, and whether its bridge has `/readyz`.
pub(crate) fn endpoint(spec: &ServerSpec, settings: &JobSettings) -> (u16, ImageTransport) {
    match &spec.launch.source {
        Source::Command { .. } => (SERVER_PORT, ImageTransport::Stdio),
        Source::Image { transport, port, .. } => {
            let transport = transport.unwrap_or(settings.image_transport);
            match transport {
                ImageTransport::Stdio => (SERVER_PORT, transport),
                ImageTransport::Http => (port.unwrap_or(settings.image_port), transport),
            }
        }
    }
}

fn meta(name: String, spec: &ServerSpec) -> ObjectMeta {
    ObjectMeta { name: Some(name), labels: Some(standard_labels(&spec.identity)), ..Default::default() }
}

/// The Job's labels: the standard ones and, for a server with an idle timeout, the timeout.
pub(crate) fn job_labels(id: &crate::spec::Identity) -> BTreeMap<String, String> {
    let mut labels = standard_labels(id);
    if let Some(idle) = id.idle_timeout {
        labels.insert(LABEL_IDLE_TIMEOUT.into(), idle.as_secs().to_string());
    }
    labels
}

/// [`selector`] as a label-selector query (`k=v,k2=v2`), for lists and watches.
pub(crate) fn selector_query(job: &str) -> String {
    selector(job).iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// The labels that pick a server's pods (also the Service selector).
pub(crate) fn selector(job: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
        (LABEL_INSTANCE.to_string(), job.to_string()),
    ])
}

fn quantities(pairs: [(&str, &Option<String>); 2]) -> Option<BTreeMap<String, Quantity>> {
    let map: BTreeMap<_, _> =
        pairs.into_iter().filter_map(|(k, v)| v.clone().map(|v| (k.to_string(), Quantity(v)))).collect();
    (!map.is_empty()).then_some(map)
}

fn resources(r: &Resources) -> ResourceRequirements {
    ResourceRequirements {
        requests: quantities([("cpu", &r.cpu_request), ("memory", &r.memory_request)]),
        limits: quantities([("cpu", &r.cpu_limit), ("memory", &r.memory_limit)]),
        ..Default::default()
    }
}

/// The restricted Pod Security Standard, for every container we run.
fn container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Default::default() }),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS),
        run_as_group: Some(RUN_AS),
        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
        ..Default::default()
    }
}

/// The bridge's command line. With a token, it names the variable the token is in (the
/// variable comes from the Secret): the token itself is on no command line.
fn bridge_argv(program: &str, command: &[String], token: bool) -> Vec<String> {
    let listen = format!("0.0.0.0:{SERVER_PORT}");
    let token_env = token.then_some(["--token-env", SERVER_TOKEN_ENV]).into_iter().flatten();
    [program, "bridge", "--listen", &listen]
        .into_iter()
        .chain(token_env)
        .chain(["--"])
        .map(String::from)
        .chain(command.iter().cloned())
        .collect()
}

fn volume(name: &str) -> Volume {
    Volume { name: name.into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Default::default() }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount { name: name.into(), mount_path: path.into(), ..Default::default() }
}

/// What the server's container runs: its image, command and arguments, whether the bridge
/// (with `/readyz`) answers in it, and for a stdio image the init container that brings the
/// bridge.
struct Run {
    image: String,
    command: Option<Vec<String>>,
    args: Vec<String>,
    bridge: bool,
    /// The init container that copies the bridge, for a stdio `image` (it has none of its own).
    bridge_copy: Option<Container>,
}

impl Run {
    fn of(spec: &ServerSpec, settings: &JobSettings, transport: ImageTransport) -> Run {
        let token = spec.identity.capability.is_some();
        match &spec.launch.source {
            Source::Command { argv } => Run {
                image: spec.launch.command_image.clone().unwrap_or_else(|| settings.server_image.clone()),
                command: Some(vec!["mcp-ephemeral".to_string()]),
                args: bridge_argv("mcp-ephemeral", argv, token)[1..].to_vec(),
                bridge: true,
                bridge_copy: None,
            },
            Source::Image { image, args, .. } if transport == ImageTransport::Stdio => {
                let copy = Container {
                    name: "bridge".into(),
                    image: Some(settings.server_image.clone()),
                    command: Some(vec!["cp".into(), "/usr/local/bin/mcp-ephemeral".into(), format!("{BRIDGE_DIR}/")]),
                    volume_mounts: Some(vec![mount("bridge", BRIDGE_DIR)]),
                    security_context: Some(container_security()),
                    resources: Some(resources(&settings.resources)),
                    ..Default::default()
                };
                let program = format!("{BRIDGE_DIR}/mcp-ephemeral");
                let argv = bridge_argv(&program, args, token);
                Run {
                    image: image.clone(),
                    command: Some(vec![program]),
                    args: argv[1..].to_vec(),
                    bridge: true,
                    bridge_copy: Some(copy),
                }
            }
            // An HTTP image runs with its own entrypoint; the request's args are its arguments.
            Source::Image { image, args, .. } => {
                Run { image: image.clone(), command: None, args: args.clone(), bridge: false, bridge_copy: None }
            }
        }
    }
}

/// The readiness probe: the bridge's `/readyz`, or a TCP connect for an HTTP image.
fn readiness_probe(port: u16, bridge: bool) -> Probe {
    let port = IntOrString::Int(port.into());
    if bridge {
        Probe {
            http_get: Some(HTTPGetAction { path: Some("/readyz".into()), port, ..Default::default() }),
            ..probe_timing()
        }
    } else {
        Probe { tcp_socket: Some(TCPSocketAction { port, ..Default::default() }), ..probe_timing() }
    }
}

/// The server's container: `run` with the spec's env (secret env through the Secret), its port,
/// probe, resources and the restricted security context.
fn server_container(
    spec: &ServerSpec,
    settings: &JobSettings,
    run: Run,
    port: u16,
    mounts: Vec<VolumeMount>,
) -> Container {
    let env: Vec<EnvVar> = spec
        .launch
        .env
        .iter()
        .map(|(k, v)| EnvVar { name: k.clone(), value: Some(v.clone()), ..Default::default() })
        .collect();
    let env_from = secret(spec).is_some().then(|| {
        vec![EnvFromSource {
            secret_ref: Some(SecretEnvSource { name: secret_name(&spec.identity.name), optional: Some(false) }),
            ..Default::default()
        }]
    });
    Container {
        name: CONTAINER.into(),
        image: Some(run.image),
        command: run.command,
        args: Some(run.args).filter(|a| !a.is_empty()),
        env: Some(env).filter(|e| !e.is_empty()),
        env_from,
        ports: Some(vec![ContainerPort {
            name: Some("mcp".into()),
            container_port: port.into(),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        readiness_probe: Some(readiness_probe(port, run.bridge)),
        resources: Some(resources(&spec.launch.resources.or(&settings.resources))),
        security_context: Some(container_security()),
        volume_mounts: Some(mounts),
        ..Default::default()
    }
}

/// The Job's annotations: its times and the secret-free spec a restarted meta server reads.
fn annotations(spec: &ServerSpec, port: u16, transport: ImageTransport) -> BTreeMap<String, String> {
    let annotation = SpecAnnotation {
        preset: spec.identity.preset.clone(),
        command: spec.launch.command_line(),
        env_names: spec.launch.env.keys().cloned().collect(),
        secret_env_names: spec.launch.secret_env.keys().cloned().collect(),
        port,
        transport: match transport {
            ImageTransport::Stdio => PodTransport::Bridge,
            ImageTransport::Http => PodTransport::Http,
        },
    };
    BTreeMap::from([
        (ANNOTATION_CREATED.to_string(), rfc3339(spec.identity.created_at)),
        (ANNOTATION_EXPIRES.to_string(), rfc3339(spec.identity.expires_at)),
        (ANNOTATION_SPEC.to_string(), serde_json::to_string(&annotation).unwrap_or_default()),
    ])
}

/// The pod: restricted, no restarts, no service-account token unless the server needs the API.
fn pod_spec(spec: &ServerSpec, init: Option<Container>, container: Container, volumes: Vec<Volume>) -> PodSpec {
    PodSpec {
        restart_policy: Some("Never".into()),
        automount_service_account_token: Some(spec.launch.needs_kube_api),
        enable_service_links: Some(false),
        termination_grace_period_seconds: Some(5),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS),
            run_as_group: Some(RUN_AS),
            fs_group: Some(RUN_AS),
            seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
            ..Default::default()
        }),
        init_containers: init.map(|c| vec![c]),
        containers: vec![container],
        volumes: Some(volumes),
        ..Default::default()
    }
}

/// The Job that runs `spec`.
///
/// The probe has no initial delay and a 1 s period, so the kubelet marks the pod Ready within a
/// second of the child answering `initialize` (the meta server may notice sooner on its own).
pub(crate) fn job(spec: &ServerSpec, settings: &JobSettings) -> Job {
    let (port, transport) = endpoint(spec, settings);
    let mut run = Run::of(spec, settings, transport);
    let mut volumes = vec![volume("tmp")];
    let mut mounts = vec![mount("tmp", "/tmp")];
    let init = run.bridge_copy.take();
    if init.is_some() {
        // The image has no bridge: the init container copies ours into a shared volume.
        volumes.push(volume("bridge"));
        mounts.push(VolumeMount { read_only: Some(true), ..mount("bridge", BRIDGE_DIR) });
    }
    let container = server_container(spec, settings, run, port, mounts);
    let mut pod_meta = meta(spec.identity.name.clone(), spec);
    pod_meta.name = None;
    Job {
        metadata: ObjectMeta {
            annotations: Some(annotations(spec, port, transport)),
            labels: Some(job_labels(&spec.identity)),
            owner_references: spec.identity.owner.as_ref().map(|o| {
                // Not blockOwnerDeletion: it would need `update` on the owner's finalizers.
                vec![OwnerReference {
                    api_version: o.api_version.clone(),
                    kind: o.kind.clone(),
                    name: o.name.clone(),
                    uid: o.uid.clone(),
                    controller: Some(true),
                    block_owner_deletion: None,
                }]
            }),
            ..meta(spec.identity.name.clone(), spec)
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: Some(spec.identity.ttl.as_secs().max(1) as i64),
            ttl_seconds_after_finished: Some(settings.keep_finished_secs),
            template: PodTemplateSpec {
                metadata: Some(pod_meta),
                spec: Some(pod_spec(spec, init, container, volumes)),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn probe_timing() -> Probe {
    Probe {
        initial_delay_seconds: Some(0),
        period_seconds: Some(1),
        timeout_seconds: Some(1),
        success_threshold: Some(1),
        failure_threshold: Some(3),
        ..Default::default()
    }
}

/// Makes `job` the owner: deleting the Job deletes the object.
pub(crate) fn owned_by(job_name: &str, job_uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: "batch/v1".into(),
        kind: "Job".into(),
        name: job_name.into(),
        uid: job_uid.into(),
        controller: Some(true),
        // Not blockOwnerDeletion: it would need `update` on jobs/finalizers.
        block_owner_deletion: None,
    }
}

/// The ClusterIP Service in front of the server's pod, owned by its Job.
pub(crate) fn service(spec: &ServerSpec, settings: &JobSettings, owner: OwnerReference) -> Service {
    let (port, _) = endpoint(spec, settings);
    Service {
        metadata: ObjectMeta { owner_references: Some(vec![owner]), ..meta(spec.identity.name.clone(), spec) },
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector(&spec.identity.name)),
            ports: Some(vec![ServicePort {
                name: Some("mcp".into()),
                port: SERVER_PORT.into(),
                target_port: Some(IntOrString::Int(port.into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The Secret holding `secret_env` and the capability token (as [`SERVER_TOKEN_ENV`], the
/// variable the bridge reads it from), if there is either. It is created before its Job (the
/// pod needs it to start) and given the Job as owner right after.
pub(crate) fn secret(spec: &ServerSpec) -> Option<Secret> {
    let token = spec.identity.capability.as_ref().map(|t| (SERVER_TOKEN_ENV.to_string(), t.expose().to_string()));
    let values: BTreeMap<String, String> =
        spec.launch.secret_env.iter().map(|(k, v)| (k.clone(), v.clone())).chain(token).collect();
    if values.is_empty() {
        return None;
    }
    let data = values.into_iter().map(|(k, v)| (k, ByteString(v.into_bytes()))).collect();
    Some(Secret {
        metadata: meta(secret_name(&spec.identity.name), spec),
        type_: Some("Opaque".into()),
        immutable: Some(true),
        data: Some(data),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::spec::{Identity, Launch};

    fn spec(source: Source) -> ServerSpec {
        let created_at = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        ServerSpec {
            identity: Identity {
                name: "time-abcd1234".into(),
                preset: Some("time".into()),
                labels: BTreeMap::from([("team".into(), "blue".into())]),
                ttl: Duration::from_secs(600),
                created_at,
                expires_at: created_at + Duration::from_secs(600),
                idle_timeout: None,
                capability: None,
                owner: None,
            },
            launch: Launch {
                source,
                env: BTreeMap::from([("TZ".into(), "UTC".into())]),
                secret_env: BTreeMap::from([("API_KEY".into(), "s3cr3t-value".into())]),
                needs_kube_api: false,
                resources: Resources { memory_limit: Some("256Mi".into()), ..Default::default() },
                command_image: None,
                egress: Default::default(),
            },
        }
    }

    fn preset_spec() -> ServerSpec {
        spec(Source::Command {
            argv: vec!["uvx".into(), "mcp-server-time".into(), "--local-timezone".into(), "UTC".into()],
        })
    }

    fn yaml<T: Serialize>(v: &T) -> String {
        serde_saphyr::to_string(v).expect("yaml")
    }

    #[test]
    fn preset_server_job_runs_the_bridge_with_separate_argv_items() {
        insta::assert_snapshot!(yaml(&job(&preset_spec(), &JobSettings::default())));
    }

    #[test]
    fn stdio_image_gets_the_bridge_from_an_init_container() {
        let s = spec(Source::Image {
            image: "example.com/weather:1".into(),
            args: vec!["node".into(), "dist/index.js".into()],
            transport: None,
            port: None,
        });
        insta::assert_snapshot!(yaml(&job(&s, &JobSettings::default())));
    }

    #[test]
    fn http_image_runs_its_own_entrypoint_on_its_port() {
        let s = spec(Source::Image {
            image: "example.com/weather:1".into(),
            args: vec!["--verbose".into()],
            transport: Some(ImageTransport::Http),
            port: Some(3000),
        });
        let job = job(&s, &JobSettings::default());
        let c = &job.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0];
        assert_eq!(c.command, None);
        assert_eq!(c.args.as_deref(), Some(&["--verbose".to_string()][..]));
        let probe = c.readiness_probe.as_ref().unwrap();
        assert_eq!(probe.tcp_socket.as_ref().unwrap().port, IntOrString::Int(3000));
        let svc = service(&s, &JobSettings::default(), owned_by("time-abcd1234", "uid-1"));
        assert_eq!(svc.spec.unwrap().ports.unwrap()[0].target_port, Some(IntOrString::Int(3000)));
    }

    #[test]
    fn service_is_owned_by_the_job_and_selects_its_pod() {
        insta::assert_snapshot!(yaml(&service(
            &preset_spec(),
            &JobSettings::default(),
            owned_by("time-abcd1234", "uid-1")
        )));
    }

    #[test]
    fn secret_holds_the_values_and_the_job_only_their_names() {
        let s = preset_spec();
        insta::assert_snapshot!(yaml(&secret(&s).expect("secret")));
        let job_text = yaml(&job(&s, &JobSettings::default()));
        assert!(!job_text.contains("s3cr3t-value"), "a secret value leaked into the Job");
        assert!(job_text.contains("API_KEY"));
        let mut no_secrets = s.clone();
        no_secrets.launch.secret_env.clear();
        assert!(secret(&no_secrets).is_none());
        assert!(!yaml(&job(&no_secrets, &JobSettings::default())).contains("envFrom"));
    }

    #[test]
    fn the_capability_token_is_in_the_secret_and_the_bridge_gets_only_its_variables_name() {
        let mut s = preset_spec();
        s.launch.secret_env.clear();
        let token = crate::http::capability::Capability::generate();
        s.identity.capability = Some(token.clone());
        let secret = secret(&s).expect("a server with a token has a Secret");
        let stored = &secret.data.as_ref().unwrap()[SERVER_TOKEN_ENV];
        assert_eq!(stored.0, token.expose().as_bytes());
        let job = job(&s, &JobSettings::default());
        let text = yaml(&job);
        assert!(!text.contains(token.expose()), "the token is on the Job");
        let container = &job.spec.unwrap().template.spec.unwrap().containers[0];
        let args = container.args.clone().unwrap();
        assert!(args.windows(2).any(|w| w == ["--token-env", SERVER_TOKEN_ENV]), "{args:?}");
        assert!(container.env_from.is_some(), "the pod reads the Secret");
        // An HTTP image has no bridge to take the flag.
        let mut http = spec(Source::Image {
            image: "ghcr.io/x/y:1".into(),
            args: vec![],
            transport: Some(ImageTransport::Http),
            port: None,
        });
        http.identity.capability = Some(token);
        assert_eq!(pod_transport(&http, &JobSettings::default()), PodTransport::Http);
    }

    #[test]
    fn servers_that_need_the_api_get_a_token_and_others_do_not() {
        let mut s = preset_spec();
        let pod = |s: &ServerSpec| job(s, &JobSettings::default()).spec.unwrap().template.spec.unwrap();
        assert_eq!(pod(&s).automount_service_account_token, Some(false));
        s.launch.needs_kube_api = true;
        assert_eq!(pod(&s).automount_service_account_token, Some(true));
    }

    #[test]
    fn the_spec_annotation_round_trips() {
        let job = job(&preset_spec(), &JobSettings::default());
        let text = &job.metadata.annotations.as_ref().unwrap()[ANNOTATION_SPEC];
        let back: SpecAnnotation = serde_json::from_str(text).unwrap();
        assert_eq!(back.command, ["uvx", "mcp-server-time", "--local-timezone", "UTC"]);
        assert_eq!(back.secret_env_names, ["API_KEY"]);
        assert_eq!(back.transport, PodTransport::Bridge);
    }
}
