//! Two `serve --runtime kubernetes` replicas against one fake API server: one holds the Lease
//! and alone keeps the warm pool and reaps TTLs; SIGKILL it and the other takes the Lease within
//! 15 s, adopts the pool's members instead of starting more, and reaps; a graceful stop
//! releases the Lease.

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use k8s_openapi::api::{batch::v1::Job, coordination::v1::Lease};
use rmcp::{ServiceExt, transport::TokioChildProcess};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::{
    fake_kube::{FakeConfig, FakeKube},
    kubernetes::{Cluster, cluster},
    support::*,
};

const NS: &str = "mcp-test";
const LEASE: &str = "mcp-ephemeral-leader";
const LIMIT: Duration = Duration::from_secs(150);
/// What issue 12 promises: a dead leader is replaced within this.
const TAKEOVER: Duration = Duration::from_secs(15);

/// One meta server replica, its pid (to SIGKILL it) and the `HOSTNAME` its Lease identity
/// starts with.
pub(crate) struct Replica {
    pub(crate) client: Client,
    pub(crate) pid: u32,
    host: &'static str,
}

/// A replica keeping a warm pool of 2 `time` servers, from `presets` (see [`presets_dir`]).
async fn replica(c: &Cluster, host: &'static str, presets: &std::path::Path) -> Replica {
    replica_with(c, host, &["--warm-pool", "time=2", "--presets-dir", presets.to_str().unwrap()]).await
}

/// A `time` preset whose resources the API server stores in another form (`0.5` as `500m`,
/// `0.5Gi` as `512Mi`): a new leader must still know its members for the pool's.
fn presets_dir(c: &Cluster) -> std::path::PathBuf {
    let dir = c.kubeconfig.parent().unwrap().join("presets");
    std::fs::create_dir_all(&dir).unwrap();
    let time = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/presets/time.toml")).unwrap();
    let resources = "\n[resources]\ncpu_request = \"0.1\"\ncpu_limit = \"0.5\"\nmemory_limit = \"0.5Gi\"\n";
    std::fs::write(dir.join("time.toml"), format!("{time}{resources}")).unwrap();
    dir
}

/// A replica with `extra` flags.
pub(crate) async fn replica_with(c: &Cluster, host: &'static str, extra: &[&str]) -> Replica {
    become_subreaper();
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(["serve", "--runtime", "kubernetes", "--ready-timeout", "30s"])
        .args(extra)
        .env("KUBECONFIG", &c.kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("HOSTNAME", host)
        .env("MCP_EPHEMERAL_LOG", "mcp_ephemeral=debug");
    let (transport, stderr) = TokioChildProcess::builder(cmd).stderr(Stdio::piped()).spawn().expect("spawn meta");
    let pid = transport.id().expect("meta pid");
    if let Some(stderr) = stderr {
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[{host}] {line}");
            }
        });
    }
    let client = Recorder::default().serve(transport).await.expect("initialize the meta server");
    Replica { client, pid, host }
}

/// The Lease's holder, if any.
pub(crate) fn holder(f: &FakeKube) -> Option<String> {
    f.object::<Lease>(NS, LEASE)?.spec?.holder_identity.filter(|h| !h.is_empty())
}

/// Whether `r` holds the Lease (its identity is its HOSTNAME and a random suffix).
pub(crate) fn holds(f: &FakeKube, r: &Replica) -> bool {
    holder(f).is_some_and(|h| h.starts_with(&format!("{}-", r.host)))
}

/// The warm-pool members in the cluster (not being deleted), by name.
fn members(f: &FakeKube) -> Vec<String> {
    let mut names: Vec<String> = f
        .objects::<Job>(NS)
        .into_iter()
        .filter(|j| j.metadata.deletion_timestamp.is_none())
        .filter(|j| j.metadata.labels.as_ref().is_some_and(|l| l.contains_key("mcp-ephemeral.dev/pool")))
        .filter_map(|j| j.metadata.name)
        .collect();
    names.sort();
    names
}

/// How many times a Job was created (POST) in all.
fn job_creates(f: &FakeKube) -> usize {
    f.requests().iter().filter(|r| r.verb == "create" && r.resource == "jobs" && r.status < 300).count()
}

/// How many DELETE requests named Job `name`.
fn job_deletes(f: &FakeKube, name: &str) -> usize {
    f.requests()
        .iter()
        .filter(|r| r.verb == "delete" && r.resource == "jobs" && r.name.as_deref() == Some(name))
        .count()
}

/// The pool as `r`'s get_version shows it.
async fn pool(r: &Replica) -> Value {
    call_ok(&r.client, "get_version", json!({})).await["pools"][0].clone()
}

/// Wait (at most `limit`) until `r`'s pool has `n` ready members.
async fn pool_ready(r: &Replica, n: u64, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if pool(r).await["ready"].as_u64() == Some(n) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_replicas_only_the_leader_keeps_pools_and_reaps_and_a_killed_leader_is_replaced_within_15s() {
    within(LIMIT, async {
        let c = cluster(FakeConfig::new(NS)).await;
        // Both start at once: they race for the Lease, and one create of it gets 409.
        let presets = presets_dir(&c);
        let (a, b) = tokio::join!(replica(&c, "meta-a", &presets), replica(&c, "meta-b", &presets));
        assert!(c.fake.wait_until(Duration::from_secs(15), |f| holder(f).is_some()).await, "someone leads");
        let (leader, follower) = if holds(&c.fake, &a) { (a, b) } else { (b, a) };
        assert!(holds(&c.fake, &leader), "the Lease names one of the two: {:?}", holder(&c.fake));
        assert!(
            pool_ready(&leader, 2, Duration::from_secs(30)).await,
            "the leader fills its pool: {}",
            pool(&leader).await
        );
        // Time for a follower that kept a pool too to show it.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let pooled = members(&c.fake);
        assert_eq!(pooled.len(), 2, "exactly the pool's 2 members exist, not one set per replica: {pooled:?}");
        assert_eq!(job_creates(&c.fake), 2, "only the leader started members");
        let member = c.fake.object::<Job>(NS, &pooled[0]).expect("a member");
        let pod = member.spec.unwrap().template.spec.unwrap();
        let mcp = pod.containers.iter().find(|c| c.name == "mcp").expect("the server's container");
        let limits = mcp.resources.clone().and_then(|r| r.limits).unwrap_or_default();
        assert_eq!((limits["cpu"].0.as_str(), limits["memory"].0.as_str()), ("500m", "512Mi"), "stored canonical");
        assert!(holds(&c.fake, &leader), "the leader kept the Lease");
        let leads = async |r: &Replica| call_ok(&r.client, "get_version", json!({})).await["leader"].clone();
        assert_eq!(
            (leads(&leader).await, leads(&follower).await),
            (json!(true), json!(false)),
            "get_version says who leads"
        );
        let shown = pool(&follower).await;
        assert_eq!((shown["ready"].as_u64(), shown["starting"].as_u64()), (Some(0), Some(0)), "{shown}");

        // The follower serves the tools; the leader alone reaps, and once.
        let short = call_ok(&follower.client, "create_mcp_server", json!({"preset": "time", "ttl_seconds": 3})).await;
        let short = short["job_name"].as_str().expect("a job name").to_string();
        assert!(!pooled.contains(&short), "a follower hands out no pool member");
        let listed = call_ok(&leader.client, "list_mcp_servers", json!({})).await;
        assert_eq!(listed["servers"].as_array().map(Vec::len), Some(1), "both see the cluster's servers: {listed}");
        let reaped = c.fake.wait_until(Duration::from_secs(15), |f| f.object::<Job>(NS, &short).is_none()).await;
        assert!(reaped, "the leader reaps a server made through the follower");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(job_deletes(&c.fake, &short), 1, "the expired server was deleted exactly once");

        // A server that expires while nobody leads; then the leader dies.
        let orphan = call_ok(&follower.client, "create_mcp_server", json!({"preset": "time", "ttl_seconds": 6})).await;
        let orphan = orphan["job_name"].as_str().expect("a job name").to_string();
        let killed = Instant::now();
        unsafe { libc::kill(leader.pid as i32, libc::SIGKILL) };
        let took_over = c.fake.wait_until(TAKEOVER, |f| holds(f, &follower)).await;
        let takeover = killed.elapsed();
        eprintln!("takeover after SIGKILL: {takeover:?}");
        assert!(took_over, "the follower holds the Lease within {TAKEOVER:?}: {:?}", holder(&c.fake));
        drop(leader);
        assert_eq!(leads(&follower).await, json!(true));

        assert!(
            pool_ready(&follower, 2, Duration::from_secs(10)).await,
            "the new leader's pool: {}",
            pool(&follower).await
        );
        assert_eq!(members(&c.fake), pooled, "the new leader adopted the members instead of starting others");
        assert_eq!(job_creates(&c.fake), 4, "no Job was created but the two servers asked for");
        for m in &pooled {
            assert_eq!(job_deletes(&c.fake, m), 0, "member {m} was kept");
        }
        let reaped = c.fake.wait_until(Duration::from_secs(15), |f| f.object::<Job>(NS, &orphan).is_none()).await;
        assert!(reaped, "the new leader reaps what expired while nobody led");
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(job_deletes(&c.fake, &orphan), 1, "deleted exactly once");

        // The new leader's pool hands out and refills as before.
        let server =
            call_ok(&follower.client, "create_mcp_server", json!({"preset": "time", "wait_for_ready": true})).await;
        assert!(pooled.iter().any(|m| server["job_name"] == m.as_str()), "a member was handed out: {server}");
        assert!(pool_ready(&follower, 2, Duration::from_secs(15)).await, "a replacement member starts");
        assert_eq!(members(&c.fake).len(), 2, "{:?}", members(&c.fake));

        // A graceful stop releases the Lease at once, and leaves the members for a successor.
        follower.client.cancel().await.expect("stop the meta server");
        let released = c.fake.wait_until(Duration::from_secs(10), |f| holder(f).is_none()).await;
        assert!(released, "the Lease is released on shutdown: {:?}", holder(&c.fake));
        assert_eq!(members(&c.fake).len(), 2, "the members stay for the next leader");
    })
    .await;
}
