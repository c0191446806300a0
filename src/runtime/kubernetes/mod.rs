//! The Kubernetes runtime: each server is a Job (with a Service, a Secret for `secret_env` and
//! its capability token, and a NetworkPolicy), labelled so that the cluster, not this process,
//! is the source of truth. A restarted meta server lists and deletes the servers of its
//! predecessor and reads their tokens back; a crashed one leaves nothing that outlives its TTL
//! (`activeDeadlineSeconds`, `ttlSecondsAfterFinished`).

pub(crate) mod client;
pub mod crd;
mod dialer;
mod directory;
pub(crate) mod lease;
pub(crate) mod manifests;
pub(crate) mod network_policy;
mod pods;
mod portforward;
pub mod rbac;
pub(crate) mod readiness;
pub(crate) mod retry;
pub(crate) mod status;
mod tokens;
mod transport;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::api::{
    batch::v1::Job,
    core::v1::{Event, Pod, Secret, Service},
    networking::v1::NetworkPolicy,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, LogParams, ObjectMeta, Patch, PatchParams},
    runtime::watcher,
};

use self::{
    client::Connection, dialer::PodDialer, directory::PodDirectory, manifests::JobSettings,
    network_policy::PolicySettings, retry::ApiError,
};
use super::{
    DeletePhase, Deleted, FoundMember, Idleness, LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_POOL, MANAGED_BY, MemberState,
    Phase, Reason, RuntimeError, ServerInfo, StopReason, Urls, wake::Waker,
};
use crate::{
    gateway::Pool,
    http::capability::Capability,
    spec::{LabelSelector, ServerSpec},
    tasks::Tasks,
};

/// How long `delete_mcp_server(wait_for_deletion=true)` waits for the pod to go.
const DELETE_WAIT: Duration = Duration::from_secs(60);
/// How long a stop waits for the suspended Job's pod to go, so that a start right after it
/// never mistakes the old pod for the new one.
const STOP_WAIT: Duration = Duration::from_secs(20);
/// Secrets and Services without their Job are swept once they are this old (a younger one may
/// belong to a create in progress).
const ORPHAN_AGE: Duration = Duration::from_secs(120);
/// Attempts at a fresh name when a create finds the name taken.
const NAME_ATTEMPTS: usize = 3;

/// How callers reach servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum UrlMode {
    /// In the cluster: `http://<job>.<ns>.svc.cluster.local:8080`.
    ServiceDns,
    /// Outside: through the meta server's gateway at this base URL (`http://127.0.0.1:PORT`).
    Gateway(String),
}

impl UrlMode {
    /// Server `job`'s URLs, under its token when it has one.
    fn urls(&self, namespace: &str, job: &str, token: Option<&Capability>) -> Urls {
        let base = match self {
            UrlMode::ServiceDns => format!("http://{job}.{namespace}.svc.cluster.local:{}", manifests::SERVER_PORT),
            UrlMode::Gateway(base) => format!("{}/servers/{job}", base.trim_end_matches('/')),
        };
        let base = match token {
            Some(token) => format!("{base}/{}", token.expose()),
            None => base,
        };
        Urls { mcp: format!("{base}/mcp"), sse: format!("{base}/sse") }
    }
}

pub(crate) struct KubernetesRuntime {
    client: Client,
    namespace: String,
    settings: JobSettings,
    /// Each server's NetworkPolicy (`None`: `--network-policy off`).
    network: Option<PolicySettings>,
    urls: UrlMode,
    /// Which pod runs each server (a watch).
    directory: PodDirectory,
    /// Keep-alive connections to the servers' bridges: the gateway's, the readiness
    /// confirmation's and status reads'.
    pool: Pool,
    /// How the gateway asks for a stopped server to be started.
    waker: Waker,
    /// The servers' capability tokens (from their Secrets).
    tokens: tokens::Tokens,
}

impl KubernetesRuntime {
    /// The runtime, with its pod directory started on `tasks`. What a crashed predecessor left
    /// behind is swept by the leader ([`Self::sweep_orphans`]).
    pub(crate) fn start(
        conn: Connection,
        settings: JobSettings,
        network: Option<PolicySettings>,
        urls: UrlMode,
        tasks: Tasks,
    ) -> Arc<KubernetesRuntime> {
        let pods: Api<Pod> = Api::namespaced(conn.client.clone(), &conn.namespace);
        let directory = PodDirectory::start(pods.clone(), &tasks);
        let dialer = PodDialer::new(pods, directory.clone(), conn.in_cluster, tasks.child());
        let pool = Pool::new(Arc::new(dialer), tasks.child());
        Arc::new(KubernetesRuntime {
            client: conn.client,
            namespace: conn.namespace,
            settings,
            network,
            urls,
            directory,
            pool,
            waker: Waker::default(),
            tokens: tokens::Tokens::default(),
        })
    }

    /// The Leases of the servers' namespace, for leader election.
    pub(crate) fn leases(&self) -> Api<k8s_openapi::api::coordination::v1::Lease> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub(crate) fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The connections to the servers, for the gateway.
    pub(crate) fn pool(&self) -> Pool {
        self.pool.clone()
    }

    /// How the gateway asks for a stopped server to be started.
    pub(crate) fn waker(&self) -> &Waker {
        &self.waker
    }

    pub(crate) fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub(crate) fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn services(&self) -> Api<Service> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn network_policies(&self) -> Api<NetworkPolicy> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Whether servers get a NetworkPolicy, so `egress: "none"` is enforced.
    pub(crate) fn restricts_egress(&self) -> bool {
        self.network.is_some()
    }

    pub(crate) fn events(&self) -> Api<Event> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn urls(&self, job: &str) -> Urls {
        self.urls.urls(&self.namespace, job, self.tokens.cached(job).flatten().as_ref())
    }

    pub(crate) fn info(&self, job: &Job, pod: Option<&Pod>) -> ServerInfo {
        status::server_info(job, pod, self.urls(&job.name_any()))
    }

    pub(crate) fn pod_selector(&self, job: &str) -> String {
        manifests::selector_query(job)
    }

    /// Whether the server's bridge has a `/readyz` this process can ask.
    pub(crate) fn can_confirm(&self, job: &Job) -> bool {
        status::spec_annotation(job).transport == manifests::PodTransport::Bridge
    }

    /// The path `path` (`status`, `catalog`, `mcp`) has at `job`'s bridge: under its token.
    fn bridge_path(&self, job: &str, path: &str) -> String {
        match self.tokens.cached(job).flatten() {
            Some(token) => format!("/{}/{path}", token.expose()),
            None => format!("/{path}"),
        }
    }

    /// Server `name`'s Job; its token is known afterwards (for its URLs).
    pub(crate) async fn get_job(&self, name: &str) -> Result<Job, RuntimeError> {
        let jobs = self.jobs();
        match retry::call("get job", || jobs.get(name)).await {
            Ok(job) => {
                self.tokens
                    .learn(&self.secrets(), name)
                    .await
                    .map_err(|e| e.into_runtime(format!("reading the token of server `{name}`")))?;
                Ok(job)
            }
            Err(e) if e.is_not_found() => Err(RuntimeError::NotFound(name.to_string())),
            Err(e) => Err(e.into_runtime(format!("reading server `{name}`"))),
        }
    }

    /// The pod of `job` that matters ([`pods::pod_of_job`]).
    pub(crate) async fn find_pod(&self, job: &str) -> Result<Option<Pod>, RuntimeError> {
        pods::find(&self.pods(), job).await.map_err(|e| e.into_runtime(format!("reading the pod of `{job}`")))
    }

    /// Create the objects of `spec`, trying a fresh name if the name is taken.
    async fn create_objects(&self, mut spec: ServerSpec) -> Result<Job, RuntimeError> {
        for attempt in 1..=NAME_ATTEMPTS {
            match self.create_once(&spec).await {
                Err(e) if e.is_name_taken() && attempt < NAME_ATTEMPTS => {
                    let id = &mut spec.identity;
                    let base = id.name.rsplit_once('-').map_or(id.name.as_str(), |(b, _)| b).to_string();
                    let fresh = crate::names::generate(&base);
                    tracing::info!(taken = %id.name, name = %fresh, "name taken in the cluster; trying another");
                    id.name = fresh;
                }
                Err(e) => return Err(e.into_runtime(format!("creating server `{}`", spec.identity.name))),
                Ok(job) => return Ok(job),
            }
        }
        unreachable!("the last attempt returns")
    }

    /// One try at the objects of `spec` under its name. An object found under the name after a
    /// lost answer is taken as ours when it carries every label and annotation that was sent
    /// (for the Job that includes the creation time to the second and the spec; the API server
    /// and controllers may add their own).
    async fn create_once(&self, spec: &ServerSpec) -> Result<Job, ApiError> {
        let name = &spec.identity.name;
        let secret = manifests::secret(spec);
        // The Secret first: the pod cannot start without it.
        if let Some(secret) = &secret {
            let same = |s: &Secret| carries(&s.metadata, &secret.metadata);
            retry::create("create secret", &self.secrets(), secret, same).await?;
        }
        if let Err(e) = self.create_network_policy(spec).await {
            if secret.is_some() {
                self.delete_quietly(&self.secrets(), &manifests::secret_name(name)).await;
            }
            return Err(e);
        }
        let job_manifest = manifests::job(spec, &self.settings);
        let same = |j: &Job| carries(&j.metadata, &job_manifest.metadata);
        let job = match retry::create("create job", &self.jobs(), &job_manifest, same).await {
            Ok(job) => job,
            Err(e) => {
                if secret.is_some() {
                    self.delete_quietly(&self.secrets(), &manifests::secret_name(name)).await;
                }
                if self.network.is_some() {
                    self.delete_quietly(&self.network_policies(), name).await;
                }
                return Err(e);
            }
        };
        let owner = manifests::owned_by(name, job.metadata.uid.as_deref().unwrap_or_default());
        let service = manifests::service(spec, &self.settings, owner.clone());
        let same = |s: &Service| {
            carries(&s.metadata, &service.metadata) && s.metadata.owner_references == service.metadata.owner_references
        };
        let mut rest = retry::create("create service", &self.services(), &service, same).await.map(|_| ());
        if rest.is_ok() && secret.is_some() {
            let secrets = self.secrets();
            let patch = Patch::Merge(serde_json::json!({"metadata": {"ownerReferences": [owner]}}));
            let secret_name = manifests::secret_name(name);
            let params = PatchParams::default();
            rest = retry::call("patch secret", || secrets.patch(&secret_name, &params, &patch)).await.map(|_| ());
        }
        if rest.is_ok() && self.network.is_some() {
            rest = self.own_network_policy(name, &owner).await;
        }
        if let Err(e) = rest {
            // Half a server is worse than none.
            let _ = self.remove(name).await;
            return Err(e);
        }
        Ok(job)
    }

    /// The server's NetworkPolicy, made before its Job so that its pod never runs without one
    /// (nothing with `--network-policy off`).
    async fn create_network_policy(&self, spec: &ServerSpec) -> Result<(), ApiError> {
        let Some(network) = &self.network else { return Ok(()) };
        let policy = network_policy::network_policy(spec, &self.settings, network);
        let same = |p: &NetworkPolicy| carries(&p.metadata, &policy.metadata);
        retry::create("create network policy", &self.network_policies(), &policy, same).await.map(|_| ())
    }

    /// Make the Job the NetworkPolicy's owner: it goes with the Job.
    async fn own_network_policy(
        &self,
        name: &str,
        owner: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
    ) -> Result<(), ApiError> {
        let (policies, params) = (self.network_policies(), PatchParams::default());
        let patch = Patch::Merge(serde_json::json!({"metadata": {"ownerReferences": [owner]}}));
        retry::call("patch network policy", || policies.patch(name, &params, &patch)).await.map(|_| ())
    }

    async fn delete_quietly<K>(&self, api: &Api<K>, name: &str)
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        if let Err(e) = delete_named(api, name).await {
            tracing::warn!(object = name, error = %e, "could not delete");
        }
    }

    /// Delete the Job (its pods, Service and Secret go with it) and, in case the garbage
    /// collector is slow or the owner was never set, the Service and Secret by name.
    /// Returns what existed.
    async fn remove(&self, name: &str) -> Result<Vec<String>, ApiError> {
        let mut removed = Vec::new();
        if delete_named(&self.jobs(), name).await? {
            removed.push(format!("job/{name} (its pods with it)"));
        }
        if delete_named(&self.services(), name).await? {
            removed.push(format!("service/{name}"));
        }
        // Also with --network-policy off: a previous run may have made one.
        match delete_named(&self.network_policies(), name).await {
            Ok(true) => removed.push(format!("networkpolicy/{name}")),
            Ok(false) => {}
            Err(e) if e.is_forbidden() && self.network.is_none() => {}
            Err(e) => return Err(e),
        }
        let secret = manifests::secret_name(name);
        if delete_named(&self.secrets(), &secret).await? {
            removed.push(format!("secret/{secret}"));
        }
        Ok(removed)
    }

    /// Wait, on a watch, until no pod of `name` is left (at most `limit`).
    async fn pods_gone(&self, name: &str, limit: Duration) -> bool {
        let mut live = std::collections::BTreeSet::new();
        let mut listed = false;
        let stream =
            retry::backed_off(watcher(self.pods(), watcher::Config::default().labels(&self.pod_selector(name))));
        let wait = async {
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::Init) => {
                        live.clear();
                        listed = false;
                    }
                    Ok(watcher::Event::InitApply(p) | watcher::Event::Apply(p)) => {
                        live.insert(p.name_any());
                    }
                    Ok(watcher::Event::InitDone) => listed = true,
                    Ok(watcher::Event::Delete(p)) => {
                        live.remove(&p.name_any());
                    }
                    Err(e) => tracing::debug!(server = name, error = %e, "watch error while deleting"),
                }
                if listed && live.is_empty() {
                    return;
                }
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }

    /// Delete Secrets, Services and NetworkPolicies whose Job is gone: what a crash between
    /// two creates leaves. The leader does it, once per term (warm-pool members of a previous
    /// leader are the pools' to adopt or delete: [`Self::pool_members`]).
    pub(crate) async fn sweep_orphans(&self) {
        let managed = ListParams::default().labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY}"));
        let jobs = self.jobs();
        let Ok(jobs) = retry::call("list jobs", || jobs.list(&managed)).await else { return };
        let alive: std::collections::BTreeSet<String> = jobs.items.iter().map(|j| j.name_any()).collect();
        let old = |meta: &kube::api::ObjectMeta| {
            let instance = meta.labels.as_ref().and_then(|l| l.get(LABEL_INSTANCE));
            let created = meta.creation_timestamp.as_ref().map(|t| std::time::SystemTime::from(t.0));
            let aged = created.and_then(|c| c.elapsed().ok()).is_some_and(|age| age > ORPHAN_AGE);
            instance.is_some_and(|i| !alive.contains(i)) && aged
        };
        let secrets = self.secrets();
        if let Ok(list) = retry::call("list secrets", || secrets.list(&managed)).await {
            for s in list.items.iter().filter(|s| old(&s.metadata)) {
                tracing::info!(secret = %s.name_any(), "deleting a Secret whose server is gone");
                self.delete_quietly(&secrets, &s.name_any()).await;
            }
        }
        let services = self.services();
        if let Ok(list) = retry::call("list services", || services.list(&managed)).await {
            for s in list.items.iter().filter(|s| old(&s.metadata)) {
                tracing::info!(service = %s.name_any(), "deleting a Service whose server is gone");
                self.delete_quietly(&services, &s.name_any()).await;
            }
        }
        let policies = self.network_policies();
        if let Ok(list) = retry::call("list network policies", || policies.list(&managed)).await {
            for p in list.items.iter().filter(|p| old(&p.metadata)) {
                tracing::info!(network_policy = %p.name_any(), "deleting a NetworkPolicy whose server is gone");
                self.delete_quietly(&policies, &p.name_any()).await;
            }
        }
    }

    /// The warm-pool members in the cluster (a previous leader's or run's), each with whether
    /// it can join the pool of its preset: it must run exactly what `members[preset]` (a new
    /// member's spec) would, and be Ready or on its way there.
    pub(crate) async fn pool_members(
        &self,
        members: &BTreeMap<String, ServerSpec>,
    ) -> Result<Vec<FoundMember>, RuntimeError> {
        let labels = format!("{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_POOL}");
        let (jobs, params) = (self.jobs(), ListParams::default().labels(&labels));
        let jobs = retry::call("list jobs", || jobs.list(&params))
            .await
            .map_err(|e| e.into_runtime("listing warm-pool members"))?;
        let mut found = Vec::new();
        for job in jobs.items {
            let name = job.name_any();
            let preset = job.labels().get(LABEL_POOL).cloned().unwrap_or_default();
            let fits = job.metadata.deletion_timestamp.is_none()
                && members.get(&preset).is_some_and(|spec| self.runs_as(&job, spec));
            let state = if !fits {
                MemberState::Unusable
            } else {
                let pod = match self.directory.cached(&name) {
                    Some(pod) => Some(pod),
                    None => self.find_pod(&name).await?,
                };
                match self.info(&job, pod.as_ref()).phase {
                    Phase::Ready => MemberState::Ready,
                    Phase::Pending | Phase::Starting => MemberState::Starting,
                    _ => MemberState::Unusable,
                }
            };
            found.push(FoundMember { name, preset, state });
        }
        Ok(found)
    }

    /// Whether `job` runs what `spec` would under the Job's name: the same containers (image,
    /// command, arguments, environment, resources), API access and spec annotation.
    fn runs_as(&self, job: &Job, spec: &ServerSpec) -> bool {
        let mut spec = spec.clone();
        spec.identity.name = job.name_any();
        let wanted = manifests::job(&spec, &self.settings);
        let what = |job: &Job| {
            let pod = job.spec.as_ref().and_then(|s| s.template.spec.as_ref());
            let containers = |list: Option<&Vec<k8s_openapi::api::core::v1::Container>>| -> Vec<serde_json::Value> {
                list.into_iter()
                    .flatten()
                    .map(|c| {
                        let resources = worth(c.resources.as_ref());
                        serde_json::json!([c.name, c.image, c.command, c.args, c.env, c.env_from, resources])
                    })
                    .collect()
            };
            serde_json::json!([
                containers(pod.map(|p| &p.containers)),
                containers(pod.and_then(|p| p.init_containers.as_ref())),
                pod.and_then(|p| p.automount_service_account_token),
                status::spec_annotation(job),
            ])
        };
        what(job) == what(&wanted)
    }
}

/// A container's requests and limits by what each quantity is worth: the API server stores
/// them in its canonical form (`0.5` as `500m`, `1024Mi` as `1Gi`), so the text read back need
/// not be the text sent. No resources and empty ones are the same.
fn worth(r: Option<&k8s_openapi::api::core::v1::ResourceRequirements>) -> serde_json::Value {
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use std::collections::BTreeMap;
    let side = |m: Option<&BTreeMap<String, Quantity>>| -> BTreeMap<String, String> {
        m.into_iter()
            .flatten()
            .map(|(k, q)| (k.clone(), crate::spec::quantity_nanos(&q.0).map_or_else(|| q.0.clone(), |n| n.to_string())))
            .collect()
    };
    serde_json::json!([side(r.and_then(|r| r.requests.as_ref())), side(r.and_then(|r| r.limits.as_ref()))])
}

/// Fill `tools`, `sessions`, `last_activity` and `ready_after_ms` from a bridge's `/status`,
/// as the local runtime has them.
fn add_bridge_status(info: &mut ServerInfo, status: crate::bridge::BridgeStatus) {
    if status.state == "ready" {
        info.tools = Some(status.tools);
        info.ready_after_ms = info.ready_after_ms.or(status.ready_after_ms);
    }
    info.sessions = Some(status.sessions);
    info.last_activity = status.last_activity.and_then(|t| humantime::parse_rfc3339(&t).ok());
}

/// Whether `stored` has every label and annotation of `sent`, with the same values.
fn carries(stored: &ObjectMeta, sent: &ObjectMeta) -> bool {
    let subset = |stored: &Option<BTreeMap<String, String>>, sent: &Option<BTreeMap<String, String>>| {
        sent.iter().flatten().all(|(k, v)| stored.as_ref().and_then(|m| m.get(k)) == Some(v))
    };
    subset(&stored.labels, &sent.labels) && subset(&stored.annotations, &sent.annotations)
}

/// Delete `name` with Background propagation; `false` when it was already gone.
async fn delete_named<K>(api: &Api<K>, name: &str) -> Result<bool, ApiError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let background = DeleteParams::background();
    match retry::call("delete", || api.delete(name, &background)).await {
        Ok(_) => Ok(true),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}

impl KubernetesRuntime {
    pub(crate) async fn create(&self, spec: ServerSpec) -> Result<ServerInfo, RuntimeError> {
        if let crate::spec::Source::Image { image, args, .. } = &spec.launch.source
            && manifests::endpoint(&spec, &self.settings).1 == crate::spec::ImageTransport::Stdio
            && args.is_empty()
        {
            return Err(RuntimeError::Unsupported(format!(
                "`{image}` speaks stdio (image_transport \"stdio\"), so it runs behind the bridge, which needs the command to start in `runtime_args` (an image's ENTRYPOINT cannot be read from the cluster), e.g. [\"node\", \"dist/index.js\"]; or set image_transport \"http\" if it serves MCP over HTTP itself"
            )));
        }
        let mut spec = spec;
        if manifests::pod_transport(&spec, &self.settings) == manifests::PodTransport::Http {
            // An image's own HTTP server cannot check a token: a URL with one would only
            // pretend to be closed. Its door is the NetworkPolicy.
            spec.identity.capability = None;
        }
        let token = spec.identity.capability.clone();
        let job = self.create_objects(spec).await?;
        self.tokens.insert(&job.name_any(), token);
        tracing::info!(server = %job.name_any(), namespace = %self.namespace, "job created");
        Ok(self.info(&job, None))
    }

    pub(crate) async fn status(&self, name: &str) -> Result<ServerInfo, RuntimeError> {
        let job = self.get_job(name).await?;
        let pod = self.find_pod(name).await?;
        let mut info = self.info(&job, pod.as_ref());
        if self.bridge_answers(&info, &job, pod.as_ref())
            && let Some(status) = self.bridge_status(name).await
        {
            add_bridge_status(&mut info, status);
        }
        if info.phase == Phase::Failed
            && let Some(pod) = &pod
        {
            let tail = self.logs_of(pod, 20).await.unwrap_or_default();
            info.log_tail = Some(tail);
        }
        Ok(info)
    }

    pub(crate) async fn list(&self, selector: &LabelSelector) -> Result<Vec<ServerInfo>, RuntimeError> {
        self.list_with(selector, true).await
    }

    /// [`list`](Self::list) without asking each running bridge for its `/status` (sessions,
    /// tools, last activity): two API lists, for counting phases, labels and expiry.
    pub(crate) async fn list_brief(&self, selector: &LabelSelector) -> Result<Vec<ServerInfo>, RuntimeError> {
        self.list_with(selector, false).await
    }

    async fn list_with(&self, selector: &LabelSelector, ask_bridges: bool) -> Result<Vec<ServerInfo>, RuntimeError> {
        let managed = format!("{LABEL_MANAGED_BY}={MANAGED_BY}");
        // Warm-pool members are nobody's servers until handed out.
        let user = [selector.to_query(), format!("!{LABEL_POOL},!{},!{}", super::LABEL_THROWAWAY, super::LABEL_WARM)]
            .join(",");
        let user = user.trim_start_matches(',');
        let labels = format!("{managed},{user}");
        let (jobs, pods) = (self.jobs(), self.pods());
        let (job_params, pod_params) = (ListParams::default().labels(&labels), ListParams::default().labels(&managed));
        let (jobs, pods) = futures::join!(
            retry::call("list jobs", || jobs.list(&job_params)),
            retry::call("list pods", || pods.list(&pod_params))
        );
        let jobs = jobs.map_err(|e| e.into_runtime("listing servers"))?.items;
        let pods = pods.map_err(|e| e.into_runtime("listing servers"))?.items;
        let names: Vec<String> = jobs.iter().map(|j| j.name_any()).collect();
        self.tokens.learn_all(&self.secrets(), &names).await.map_err(|e| e.into_runtime("reading servers' tokens"))?;
        let mut by_job: BTreeMap<String, Vec<Pod>> = BTreeMap::new();
        for pod in pods {
            if let Some(instance) = pod.labels().get(LABEL_INSTANCE).cloned() {
                by_job.entry(instance).or_default().push(pod);
            }
        }
        let mut infos: Vec<ServerInfo> = Vec::with_capacity(jobs.len());
        let mut askable = Vec::new();
        for job in &jobs {
            let pod = by_job.remove(&job.name_any()).and_then(pods::pod_of_job);
            let info = self.info(job, pod.as_ref());
            if ask_bridges && self.bridge_answers(&info, job, pod.as_ref()) {
                askable.push(infos.len());
            }
            infos.push(info);
        }
        // Sessions and last activity come from the bridges, asked all at once (pooled).
        let statuses = futures::future::join_all(askable.iter().map(|&i| self.bridge_status(&infos[i].job_name))).await;
        for (i, status) in askable.into_iter().zip(statuses) {
            if let Some(status) = status {
                add_bridge_status(&mut infos[i], status);
            }
        }
        infos.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.job_name.cmp(&b.job_name)));
        Ok(infos)
    }

    /// Delete the `MCPServer` resource server `name` was made for, if any (its Job, and with
    /// it the server, then goes by garbage collection; the caller deletes it at once too).
    pub(crate) async fn delete_owner(&self, name: &str) -> Result<(), RuntimeError> {
        let jobs = self.jobs();
        let job = retry::call("get job", || jobs.get_opt(name))
            .await
            .map_err(|e| e.into_runtime(format!("reading server `{name}`")))?;
        let Some(resource) = job.as_ref().and_then(|j| j.labels().get(super::LABEL_RESOURCE).cloned()) else {
            return Ok(());
        };
        let resources: Api<crd::MCPServer> = Api::namespaced(self.client.clone(), &self.namespace);
        let gone = delete_named(&resources, &resource)
            .await
            .map_err(|e| e.into_runtime(format!("deleting the MCPServer `{resource}` of server `{name}`")))?;
        tracing::info!(server = name, resource, existed = gone, "deleted the server's MCPServer resource");
        Ok(())
    }

    /// The API client and namespace, for the controller of `MCPServer` resources.
    pub(crate) fn client(&self) -> (Client, String) {
        (self.client.clone(), self.namespace.clone())
    }

    pub(crate) async fn delete(&self, name: &str, wait: bool) -> Result<Deleted, RuntimeError> {
        let removed = self.remove(name).await.map_err(|e| e.into_runtime(format!("deleting `{name}`")))?;
        let already_gone = removed.is_empty();
        self.tokens.forget(name);
        let gone = already_gone || (wait && self.pods_gone(name, DELETE_WAIT).await);
        let phase = if gone { DeletePhase::Deleted } else { DeletePhase::Terminating };
        tracing::info!(server = name, ?phase, "deleted");
        Ok(Deleted { job_name: name.to_string(), phase, removed, already_gone })
    }

    /// Hand out warm-pool member `pooled` as `spec`'s server: one Job patch when the pod
    /// directory knows its Ready pod (the bridge's tunnel in the pool stays open).
    pub(crate) async fn adopt(&self, pooled: &str, spec: ServerSpec) -> Result<ServerInfo, RuntimeError> {
        let ready = |p: &Pod| status::pod_state(p) == status::PodState::Ready;
        let pod = match self.directory.cached(pooled).filter(ready) {
            Some(pod) => Some(pod),
            None => self.find_pod(pooled).await?.filter(ready),
        };
        let Some(pod) = pod else {
            let _ = self.remove(pooled).await;
            return Err(RuntimeError::Failed {
                name: pooled.to_string(),
                reason: Reason::PoolMemberNotReady,
                message: "the warm-pool member stopped being ready".into(),
            });
        };
        // A Job cannot be renamed: the member keeps its name and takes the caller's labels,
        // times and deadline (counted from the Job's start).
        let mut renamed = spec.identity.clone();
        renamed.name = pooled.to_string();
        let mut labels: serde_json::Map<String, serde_json::Value> =
            manifests::job_labels(&renamed).into_iter().map(|(k, v)| (k, v.into())).collect();
        labels.insert(LABEL_POOL.into(), serde_json::Value::Null);
        labels.insert(super::LABEL_WARM.into(), serde_json::Value::Null);
        // An MCPPool's member becomes its MCPServer's: owned by it, gone with it.
        let owners = renamed.owner.as_ref().map(|o| {
            vec![serde_json::json!({
                "apiVersion": o.api_version, "kind": o.kind, "name": o.name, "uid": o.uid, "controller": true,
            })]
        });
        // The deadline counts from the Job's start, a moment before its pod was created; a
        // second more than the pod's age keeps it from ending the server early (the reaper
        // ends it at expires_at).
        let pod_created = pod.metadata.creation_timestamp.clone();
        let age = pod_created.and_then(|t| std::time::SystemTime::from(t.0).elapsed().ok()).unwrap_or_default();
        let deadline = (age + renamed.ttl).as_secs() + 1;
        let patch = Patch::Merge(serde_json::json!({
            "metadata": {
                "labels": labels,
                "annotations": {
                    manifests::ANNOTATION_CREATED: super::rfc3339(renamed.created_at),
                    manifests::ANNOTATION_EXPIRES: super::rfc3339(renamed.expires_at),
                },
                "ownerReferences": owners,
            },
            "spec": {"activeDeadlineSeconds": deadline},
        }));
        let (jobs, params) = (self.jobs(), PatchParams::default());
        let job = retry::call("patch job", || jobs.patch(pooled, &params, &patch))
            .await
            .map_err(|e| e.into_runtime(format!("handing out pool member `{pooled}`")))?;
        tracing::info!(server = pooled, "warm-pool member handed out");
        Ok(self.info(&job, Some(&pod)))
    }

    /// What Ready server `name` offers, from its bridge's `/catalog` through the pool.
    pub(crate) async fn catalog(&self, name: &str) -> Result<crate::bridge::catalog::Catalog, RuntimeError> {
        const CATALOG_WAIT: Duration = Duration::from_secs(5);
        let job = self.get_job(name).await?;
        let phase = self.info(&job, self.find_pod(name).await?.as_ref()).phase;
        if phase != Phase::Ready {
            return Err(RuntimeError::NotReady { name: name.to_string(), phase });
        }
        if !self.can_confirm(&job) {
            return Err(RuntimeError::Unsupported(format!(
                "server `{name}` is an image that serves MCP itself (image_transport \"http\"), without the bridge that reads its tools; connect to its URL and call tools/list"
            )));
        }
        let unreadable = |why: String| RuntimeError::Unsupported(format!("cannot read the tools of `{name}`: {why}"));
        match self.pool.get(name, &self.bridge_path(name, "catalog"), CATALOG_WAIT).await {
            Ok((hyper::StatusCode::OK, body)) => serde_json::from_slice(&body).map_err(|e| unreadable(e.to_string())),
            Ok((code, body)) => {
                Err(unreadable(format!("its bridge answered {code}: {}", String::from_utf8_lossy(&body))))
            }
            Err(e) => Err(unreadable(e.to_string())),
        }
    }

    /// Suspend the Job (the Job controller deletes its pod); the Service, the Secret and the
    /// Job stay. The bridge's last activity is kept on the Job, since the bridge goes.
    pub(crate) async fn stop(&self, name: &str, reason: StopReason) -> Result<ServerInfo, RuntimeError> {
        let job = self.get_job(name).await?;
        if status::is_suspended(&job) {
            return Ok(self.info(&job, None));
        }
        let last_activity = match self.bridge_status(name).await {
            Some(status) => status.last_activity,
            None => None,
        };
        let patch = Patch::Merge(serde_json::json!({
            "metadata": {"annotations": {
                manifests::ANNOTATION_STOPPED: reason.reason().as_str(),
                manifests::ANNOTATION_LAST_ACTIVITY: last_activity,
                // The next pod must be confirmed ready afresh.
                manifests::ANNOTATION_READY: null,
            }},
            "spec": {"suspend": true},
        }));
        let job = self.patch_job(name, &patch, "stopping").await?;
        tracing::info!(server = name, reason = %reason.reason(), "job suspended (its pod goes; Service and Secret stay)");
        if !self.pods_gone(name, STOP_WAIT).await {
            tracing::warn!(server = name, "the suspended Job's pod is still there after {STOP_WAIT:?}");
        }
        Ok(self.info(&job, None))
    }

    /// Resume a suspended Job. Kubernetes restarts the deadline clock on resume, so the
    /// deadline becomes what is left of the TTL.
    pub(crate) async fn resume(&self, name: &str) -> Result<ServerInfo, RuntimeError> {
        let job = self.get_job(name).await?;
        if !status::is_suspended(&job) {
            return Ok(self.info(&job, self.directory.cached(name).as_ref()));
        }
        let expires = self.info(&job, None).expires_at;
        let left = expires.duration_since(std::time::SystemTime::now()).unwrap_or_default();
        if left < Duration::from_secs(1) {
            return Err(RuntimeError::Failed {
                name: name.to_string(),
                reason: Reason::Cluster("DeadlineExceeded".into()),
                message: "its TTL has ended; it is being deleted".into(),
            });
        }
        let patch = Patch::Merge(serde_json::json!({
            "metadata": {"annotations": {manifests::ANNOTATION_STOPPED: null}},
            "spec": {"suspend": false, "activeDeadlineSeconds": left.as_secs().max(1)},
        }));
        let job = self.patch_job(name, &patch, "starting").await?;
        tracing::info!(server = name, deadline_s = left.as_secs(), "job resumed");
        Ok(self.info(&job, None))
    }

    async fn patch_job(&self, name: &str, patch: &Patch<serde_json::Value>, doing: &str) -> Result<Job, RuntimeError> {
        let (jobs, params) = (self.jobs(), PatchParams::default());
        match retry::call("patch job", || jobs.patch(name, &params, patch)).await {
            Ok(job) => Ok(job),
            Err(e) if e.is_not_found() => Err(RuntimeError::NotFound(name.to_string())),
            Err(e) => Err(e.into_runtime(format!("{doing} `{name}`"))),
        }
    }

    /// The running servers with an idle timeout and how long each has been idle: one list of
    /// the Jobs that carry the idle-timeout label, then one `/status` read per running one,
    /// through the pool (no API request in the cluster; a pooled tunnel outside).
    pub(crate) async fn idleness(&self) -> Result<Vec<Idleness>, RuntimeError> {
        let labels = format!(
            "{LABEL_MANAGED_BY}={MANAGED_BY},{},!{LABEL_POOL},!{}",
            manifests::LABEL_IDLE_TIMEOUT,
            super::LABEL_WARM
        );
        let (jobs, params) = (self.jobs(), ListParams::default().labels(&labels));
        let jobs = retry::call("list jobs", || jobs.list(&params))
            .await
            .map_err(|e| e.into_runtime("checking idle servers"))?;
        // (name, timeout, since when it is this server: a warm-pool member handed out later
        // than its bridge started has been idle only since the hand-out)
        let candidates: Vec<(String, Duration, Duration)> = jobs
            .items
            .iter()
            .filter(|j| !status::is_suspended(j) && j.metadata.deletion_timestamp.is_none() && self.can_confirm(j))
            .filter_map(|j| {
                let since = self.info(j, None).created_at.elapsed().unwrap_or_default();
                Some((j.name_any(), status::idle_timeout(j)?, since))
            })
            .collect();
        let statuses = futures::future::join_all(candidates.iter().map(|(name, _, _)| async move {
            // A server without a running pod is not idle yet (it cannot have been used).
            let running = self.directory.cached(name).is_some_and(|p| pods::is_running(&p));
            if running { self.bridge_status(name).await } else { None }
        }))
        .await;
        Ok(candidates
            .into_iter()
            .zip(statuses)
            .map(|((name, timeout, since), status)| {
                let idle_ms = status.filter(|s| s.state == "ready").map_or(0, |s| s.idle_ms);
                Idleness { name, timeout, idle_for: Duration::from_millis(idle_ms).min(since) }
            })
            .collect())
    }

    pub(crate) async fn logs(&self, name: &str, tail: usize) -> Result<Vec<String>, RuntimeError> {
        let job = self.get_job(name).await?;
        let pod = self.find_pod(name).await?.ok_or_else(|| {
            RuntimeError::Unsupported(if status::is_suspended(&job) {
                format!("server `{name}` is stopped: its pod and its logs are gone; start_mcp_server starts it again")
            } else {
                format!("server `{name}` has no pod yet, so there are no logs; get_mcp_server_status shows why")
            })
        })?;
        self.logs_of(&pod, tail).await
    }
}

impl KubernetesRuntime {
    /// Whether `job`'s bridge can be asked for its `/status` now.
    fn bridge_answers(&self, info: &ServerInfo, job: &Job, pod: Option<&Pod>) -> bool {
        matches!(info.phase, Phase::Ready | Phase::Starting)
            && self.can_confirm(job)
            && pod.is_some_and(pods::is_running)
    }

    /// The bridge's `/status` (through the pool: pod IP in the cluster, a tunnel outside);
    /// `None` when it does not answer within a second.
    async fn bridge_status(&self, job: &str) -> Option<crate::bridge::BridgeStatus> {
        const STATUS_WAIT: Duration = Duration::from_secs(1);
        match self.pool.get(job, &self.bridge_path(job, "status"), STATUS_WAIT).await {
            Ok((hyper::StatusCode::OK, body)) => serde_json::from_slice(&body).ok(),
            Ok((code, _)) => {
                tracing::debug!(server = job, %code, "the bridge's /status failed");
                None
            }
            Err(e) => {
                tracing::debug!(server = job, error = %e, "the bridge's /status did not answer");
                None
            }
        }
    }

    async fn logs_of(&self, pod: &Pod, tail: usize) -> Result<Vec<String>, RuntimeError> {
        let params = LogParams {
            container: Some(manifests::CONTAINER.into()),
            tail_lines: Some(tail.max(1) as i64),
            ..Default::default()
        };
        let pods = self.pods();
        let name = pod.name_any();
        let text = retry::call("read logs", || pods.logs(&name, &params))
            .await
            .map_err(|e| e.into_runtime(format!("reading the logs of pod `{name}`")))?;
        Ok(text.lines().map(str::to_string).collect())
    }
}

/// The gateway learns a server's token from its Secret (once; then from memory).
impl crate::gateway::Keys for KubernetesRuntime {
    fn key<'a>(&'a self, job: &'a str) -> futures::future::BoxFuture<'a, Option<crate::gateway::Key>> {
        use crate::gateway::Key;
        Box::pin(async move {
            match self.tokens.learn(&self.secrets(), job).await {
                Ok(token) => Some(token.map_or(Key::Open, Key::Token)),
                Err(e) => {
                    // The dial that follows reports the trouble; without a token nothing passes.
                    tracing::warn!(server = job, error = %e, "cannot read the server's token");
                    None
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_carry_the_token_in_the_cluster_and_through_the_gateway() {
        let token = Capability::parse("AbcdefghijklmnopqrstuV").unwrap();
        let dns = UrlMode::ServiceDns.urls("ns1", "time-ab12cd34", Some(&token));
        assert_eq!(dns.mcp, "http://time-ab12cd34.ns1.svc.cluster.local:8080/AbcdefghijklmnopqrstuV/mcp");
        assert_eq!(dns.sse, "http://time-ab12cd34.ns1.svc.cluster.local:8080/AbcdefghijklmnopqrstuV/sse");
        let gw = UrlMode::Gateway("http://127.0.0.1:9/".into()).urls("ns1", "time-ab12cd34", Some(&token));
        assert_eq!(gw.mcp, "http://127.0.0.1:9/servers/time-ab12cd34/AbcdefghijklmnopqrstuV/mcp");
        let open = UrlMode::ServiceDns.urls("ns1", "time-ab12cd34", None);
        assert_eq!(open.mcp, "http://time-ab12cd34.ns1.svc.cluster.local:8080/mcp");
    }
}
