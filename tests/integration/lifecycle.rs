use serde_json::json;

use crate::support::*;

/// The full life of a server through one meta-server client; returns nothing, panics on failure.
async fn create_call_list_delete(
    meta: &Client,
    meta_pid: u32,
    create: serde_json::Value,
    tool: &str,
    args: serde_json::Value,
    expect: &str,
) {
    let created = call(meta, "create_mcp_server", create.clone()).await;
    assert_ne!(created.is_error, Some(true), "{}", text(&created));
    assert!(!format!("{created:?}").contains("s3cr3t-value-42"), "a secret value leaked into the result");
    let server = created.structured_content.clone().expect("structured");
    assert_eq!(server["phase"], "Ready", "{server}");
    if create.get("secret_env").is_some() {
        assert_eq!(server["secret_env_names"], json!(["API_KEY"]));
        assert_eq!(server["env_names"], json!(["PLAIN"]));
        let listed = call(meta, "list_mcp_servers", json!({})).await;
        assert!(!format!("{listed:?}").contains("s3cr3t-value-42"));
    } else {
        assert_eq!(server["secret_env_names"], json!([]), "{server}");
    }
    let job = server["job_name"].as_str().expect("job_name").to_string();
    let mcp_url = server["urls"]["mcp"].as_str().expect("urls.mcp").to_string();
    let sse_url = server["urls"]["sse"].as_str().expect("urls.sse").to_string();

    let over_http = connect_http(&mcp_url).await;
    let res = call(&over_http, tool, args.clone()).await;
    assert_ne!(res.is_error, Some(true), "{}", text(&res));
    assert!(text(&res).contains(expect), "streamable HTTP answer: {}", text(&res));

    let over_sse = connect_sse(&sse_url).await;
    let res = call(&over_sse, tool, args).await;
    assert!(text(&res).contains(expect), "SSE answer: {}", text(&res));

    let list = call_ok(meta, "list_mcp_servers", json!({})).await;
    let names: Vec<&str> = list["servers"].as_array().unwrap().iter().filter_map(|s| s["job_name"].as_str()).collect();
    assert!(names.contains(&job.as_str()), "{job} not in {names:?}");

    let processes = snapshot(meta_pid);
    assert!(!processes.is_empty(), "the server runs as a child of the meta server");
    let deleted = call_ok(meta, "delete_mcp_server", json!({"job_name": job, "wait_for_deletion": true})).await;
    assert_eq!(deleted["phase"], "Deleted");
    let left = wait_gone(&processes, std::time::Duration::from_secs(3)).await;
    assert!(left.is_empty(), "still running after delete: {:?}", cmdlines(&left));
    let status = call(meta, "get_mcp_server_status", json!({"job_name": job})).await;
    assert_eq!(status.is_error, Some(true), "a deleted server has no status");
    let _ = over_http.cancel().await;
    let _ = over_sse.cancel().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_preset_over_stdio_meta_server() {
    tokio::time::timeout(TEST_LIMIT, async {
        let (meta, pid) = meta_stdio(&[]).await;
        create_call_list_delete(
            &meta,
            pid,
            json!({"preset": "time", "wait_for_ready": true, "env": {"PLAIN": "visible"}, "secret_env": {"API_KEY": "s3cr3t-value-42"}}),
            "get_current_time",
            json!({"timezone": "UTC"}),
            "\"timezone\"",
        )
        .await;
        let _ = meta.cancel().await;
    })
    .await
    .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_server_receives_its_env_and_secret_env_and_not_the_meta_servers_token() {
    tokio::time::timeout(TEST_LIMIT, async {
        let token = "meta-token-that-children-must-not-see";
        let (meta, _) = meta_stdio_with_env(&[], &[("MCP_EPHEMERAL_TOKEN", token)]).await;
        let server = call_ok(
            &meta,
            "create_mcp_server",
            json!({"preset": "everything", "wait_for_ready": true,
                   "env": {"PLAIN": "visible"}, "secret_env": {"API_KEY": "s3cr3t-value-42"}}),
        )
        .await;
        let session = connect_http(server["urls"]["mcp"].as_str().unwrap()).await;
        let res = call(&session, "get-env", json!({})).await;
        assert_ne!(res.is_error, Some(true), "{}", text(&res));
        let env: serde_json::Value =
            serde_json::from_str(&text(&res)).expect("get-env answers the environment as JSON");
        assert_eq!(env["PLAIN"], "visible", "env reaches the process");
        assert_eq!(env["API_KEY"], "s3cr3t-value-42", "secret_env reaches the process");
        assert!(env.get("MCP_EPHEMERAL_TOKEN").is_none(), "the meta server's token reached a child");
        assert!(!text(&res).contains(token), "the meta server's token reached a child");
        let _ = session.cancel().await;
        let _ = meta.cancel().await;
    })
    .await
    .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_everything_and_runtime_exec_over_http_meta_server() {
    tokio::time::timeout(TEST_LIMIT, async {
        let meta_proc = HttpMeta::start(&[]).await;
        let meta = connect_http(&format!("{}/mcp", meta_proc.base)).await;
        create_call_list_delete(
            &meta,
            meta_proc.pid(),
            json!({"preset": "time", "wait_for_ready": true}),
            "get_current_time",
            json!({"timezone": "Europe/Paris"}),
            "Europe/Paris",
        )
        .await;
        create_call_list_delete(
            &meta,
            meta_proc.pid(),
            json!({"preset": "everything", "wait_for_ready": true}),
            "echo",
            json!({"message": "hello from the test"}),
            "hello from the test",
        )
        .await;
        create_call_list_delete(
            &meta,
            meta_proc.pid(),
            json!({"runtime_exec": "uvx", "runtime_mcp": "mcp-server-time", "runtime_args": "--local-timezone UTC", "wait_for_ready": true, "labels": {"team": "a"}}),
            "get_current_time",
            json!({"timezone": "Asia/Tokyo"}),
            "Asia/Tokyo",
        )
        .await;
        let _ = meta.cancel().await;
    })
    .await
    .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meta_server_answers_over_legacy_sse_and_serves_version() {
    tokio::time::timeout(TEST_LIMIT, async {
        let meta_proc = HttpMeta::start(&[]).await;
        let meta = connect_sse(&format!("{}/sse", meta_proc.base)).await;
        let presets = call_ok(&meta, "list_presets", json!({})).await;
        assert!(presets["presets"].as_array().unwrap().iter().any(|p| p["name"] == "time"));
        let version = call_ok(&meta, "get_version", json!({})).await;
        assert_eq!(version["runtime"], "local");
        let resource = meta
            .read_resource(rmcp::model::ReadResourceRequestParams::new("config://version"))
            .await
            .expect("config://version");
        assert!(format!("{resource:?}").contains(env!("CARGO_PKG_VERSION")));
        let _ = meta.cancel().await;
    })
    .await
    .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_server_reports_its_exit_code_and_stderr() {
    tokio::time::timeout(TEST_LIMIT, async {
        let (meta, _) = meta_stdio(&[]).await;
        let msg = call_err(
            &meta,
            "create_mcp_server",
            json!({"runtime_exec": "sh", "runtime_args": ["-c", "echo the-config-is-broken >&2; exit 3"], "wait_for_ready": true}),
        )
        .await;
        assert!(msg.contains("exit code 3") && msg.contains("the-config-is-broken"), "{msg}");
        let list = call_ok(&meta, "list_mcp_servers", json!({})).await;
        let server = &list["servers"][0];
        assert_eq!(server["phase"], "Failed");
        assert_eq!(server["exit_code"], 3);
        assert_eq!(server["reason"], "ExitedBeforeInitialize");
        let job = server["job_name"].as_str().unwrap();
        let logs = call_ok(&meta, "get_mcp_server_logs", json!({"job_name": job})).await;
        assert!(logs["lines"].to_string().contains("the-config-is-broken"));
        let _ = meta.cancel().await;
    })
    .await
    .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_servers_are_reaped_with_their_processes() {
    tokio::time::timeout(TEST_LIMIT, async {
        let (meta, pid) = meta_stdio(&[]).await;
        // A quick-starting server: `uvx` can take most of an 8 s TTL on a loaded machine.
        let fixture = format!("{}/tests/fixtures/faulty_server.py", env!("CARGO_MANIFEST_DIR"));
        let server = call_ok(
            &meta,
            "create_mcp_server",
            json!({"runtime_exec": "python3", "runtime_mcp": fixture, "runtime_args": ["ok"], "wait_for_ready": true, "ttl_seconds": 8}),
        )
        .await;
        let processes = snapshot(pid);
        assert!(!processes.is_empty());
        let expires = humantime::parse_rfc3339(server["expires_at"].as_str().unwrap()).unwrap();
        tokio::time::sleep(expires.duration_since(std::time::SystemTime::now()).unwrap_or_default()).await;
        let left = wait_gone(&processes, std::time::Duration::from_secs(5)).await;
        assert!(left.is_empty(), "processes outlived the TTL: {left:?}");
        let list = call_ok(&meta, "list_mcp_servers", json!({})).await;
        assert_eq!(list["servers"].as_array().unwrap().len(), 0, "{} should be gone: {list}", server["job_name"]);
        let _ = meta.cancel().await;
    })
    .await
    .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_ready_reports_progress_to_clients_that_ask() {
    tokio::time::timeout(TEST_LIMIT, async {
        let (meta, _) = meta_stdio(&[]).await;
        let token = rmcp::model::ProgressToken(rmcp::model::NumberOrString::String("create-1".into()));
        let mut params = rmcp::model::CallToolRequestParams::new("create_mcp_server")
            .with_arguments(json!({"preset": "time", "wait_for_ready": true}).as_object().unwrap().clone());
        params.meta = Some(rmcp::model::RequestMetaObject::with_progress_token(token));
        let res = meta.call_tool(params).await.expect("create");
        assert_ne!(res.is_error, Some(true), "{}", text(&res));
        // Notifications may be handled after the response: wait for the last one.
        let progress = meta.service().wait_for_progress("ready").await;
        assert!(progress.iter().any(|m| m.contains("waiting for initialize")), "{progress:?}");
        assert!(progress.iter().any(|m| m.contains("ready")), "{progress:?}");
        let _ = meta.cancel().await;
    })
    .await
    .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_pool_hands_out_a_ready_server_once_and_refills() {
    tokio::time::timeout(TEST_LIMIT, async {
        let (meta, pid) = meta_stdio(&["--warm-pool", "time=1"]).await;
        let pool_ready = |v: &serde_json::Value, n: u64| v["pools"][0]["ready"].as_u64() == Some(n);
        let mut version = call_ok(&meta, "get_version", json!({})).await;
        for _ in 0..600 {
            if pool_ready(&version, 1) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            version = call_ok(&meta, "get_version", json!({})).await;
        }
        assert!(pool_ready(&version, 1), "the pool fills: {version}");
        let listed = call_ok(&meta, "list_mcp_servers", json!({})).await;
        assert_eq!(listed["servers"].as_array().unwrap().len(), 0, "pool members are nobody's servers: {listed}");
        let before = descendants(pid);

        let server = call_ok(
            &meta,
            "create_mcp_server",
            json!({"preset": "time", "wait_for_ready": true, "labels": {"team": "a"}}),
        )
        .await;
        assert_eq!(server["phase"], "Ready", "{server}");
        assert_eq!(server["labels"]["team"], "a");
        assert!(before.iter().all(|p| alive(*p)), "the member's processes were handed out, not replaced");
        let client = connect_http(server["urls"]["mcp"].as_str().unwrap()).await;
        let res = call(&client, "get_current_time", json!({"timezone": "UTC"})).await;
        assert!(text(&res).contains("UTC"), "{}", text(&res));

        let mut version = call_ok(&meta, "get_version", json!({})).await;
        assert_eq!(version["pools"][0]["handed_out"], 1, "{version}");
        for _ in 0..600 {
            if pool_ready(&version, 1) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            version = call_ok(&meta, "get_version", json!({})).await;
        }
        assert!(pool_ready(&version, 1), "a replacement member starts: {version}");
        let listed = call_ok(&meta, "list_mcp_servers", json!({})).await;
        assert_eq!(listed["servers"].as_array().unwrap().len(), 1, "{listed}");
        let _ = client.cancel().await;
        let _ = meta.cancel().await;
    })
    .await
    .expect("test finished in time");
}

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/faulty_server.py");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_cancelled_by_the_client_leaves_a_listed_server_and_a_working_meta_server() {
    tokio::time::timeout(TEST_LIMIT, async {
        let (meta, pid) = meta_stdio(&["--ready-timeout", "60s"]).await;
        // A server that never answers initialize: the wait would take the whole minute.
        let args = json!({"runtime_exec": "python3", "runtime_mcp": FIXTURE, "runtime_args": ["no-init"], "wait_for_ready": true});
        let params = rmcp::model::CallToolRequestParams::new("create_mcp_server")
            .with_arguments(args.as_object().unwrap().clone());
        // Dropping the call sends notifications/cancelled.
        let cancelled = tokio::time::timeout(std::time::Duration::from_millis(1500), meta.call_tool(params)).await;
        assert!(cancelled.is_err(), "the create should still be waiting: {cancelled:?}");
        let list = call_ok(&meta, "list_mcp_servers", json!({})).await;
        let servers = list["servers"].as_array().unwrap();
        assert_eq!(servers.len(), 1, "the server the cancelled create started is listed: {list}");
        assert_eq!(servers[0]["phase"], "Starting", "{list}");
        let job = servers[0]["job_name"].as_str().unwrap().to_string();
        let processes = snapshot(pid);
        let deleted = call_ok(&meta, "delete_mcp_server", json!({"job_name": job, "wait_for_deletion": true})).await;
        assert_eq!(deleted["phase"], "Deleted");
        let left = wait_gone(&processes, std::time::Duration::from_secs(5)).await;
        assert!(left.is_empty(), "left behind: {:?}", cmdlines(&left));
        let _ = meta.cancel().await;
    })
    .await
    .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_without_waiting_answers_terminating_and_the_processes_still_go() {
    tokio::time::timeout(TEST_LIMIT, async {
        let (meta, pid) = meta_stdio(&[]).await;
        let args =
            json!({"runtime_exec": "python3", "runtime_mcp": FIXTURE, "runtime_args": ["ok"], "wait_for_ready": true});
        let server = call_ok(&meta, "create_mcp_server", args).await;
        let processes = snapshot(pid);
        assert!(!processes.is_empty());
        let deleted = call_ok(&meta, "delete_mcp_server", json!({"job_name": server["job_name"]})).await;
        assert_eq!((deleted["phase"].as_str(), deleted["already_gone"].as_bool()), (Some("Terminating"), Some(false)));
        let list = call_ok(&meta, "list_mcp_servers", json!({})).await;
        assert_eq!(list["servers"].as_array().unwrap().len(), 0, "gone from the list at once: {list}");
        let left = wait_gone(&processes, std::time::Duration::from_secs(5)).await;
        assert!(left.is_empty(), "left behind: {:?}", cmdlines(&left));
        let _ = meta.cancel().await;
    })
    .await
    .expect("test finished in time");
}

/// Start a meta server with a well-behaved server and one that ignores stdin EOF and SIGTERM
/// (and starts a grandchild that does too), SIGKILL the meta server, and return what was
/// running before (children, grandchildren).
async fn sigkill_meta_with_stubborn_servers() -> Vec<Seen> {
    let (meta, pid) = meta_stdio(&[]).await;
    call_ok(&meta, "create_mcp_server", json!({"preset": "time", "wait_for_ready": true})).await;
    let args = json!({"runtime_exec": "python3", "runtime_mcp": FIXTURE, "runtime_args": ["ignore-sigterm"],
                      "wait_for_ready": true});
    call_ok(&meta, "create_mcp_server", args).await;
    let grandchild = |p: &[Seen]| p.iter().any(|p| cmdline(p.pid).contains("faulty-grandchild"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut processes = snapshot(pid);
    while !grandchild(&processes) && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        processes = snapshot(pid);
    }
    assert!(grandchild(&processes), "the spare's grandchild runs: {:?}", cmdlines(&processes));
    // No shutdown code runs now: only what the kernel does for us stands between the children
    // and a leak.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    drop(meta);
    processes
}

/// Clean up after the known grandchild leak: `seen`, and every fixture grandchild re-parented
/// to this test process (its subreaper), including one started after the snapshot. Another
/// test's grandchildren still have their own parents, so they are left alone.
fn kill_orphaned_grandchildren(seen: &[Seen]) {
    let me = std::process::id();
    let orphans = crate::procfs::descendants(me)
        .into_iter()
        .filter(|p| crate::procfs::parent(*p) == Some(me) && cmdline(*p).contains("faulty-grandchild"));
    for pid in seen.iter().map(|p| p.pid).chain(orphans) {
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_meta_server_leaves_none_of_its_children_behind() {
    tokio::time::timeout(TEST_LIMIT, async {
        let processes = sigkill_meta_with_stubborn_servers().await;
        let (grandchildren, children): (Vec<Seen>, Vec<Seen>) =
            processes.iter().partition(|p| cmdline(p.pid).contains("faulty-grandchild"));
        // The stubborn child ignores EOF and SIGTERM: only PR_SET_PDEATHSIG ends it.
        let left = wait_gone(&children, std::time::Duration::from_secs(5)).await;
        kill_orphaned_grandchildren(&grandchildren);
        assert!(left.is_empty(), "outlived a SIGKILLed meta server: {:?}", cmdlines(&left));
    })
    .await
    .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "known leak: PR_SET_PDEATHSIG reaches a server's own process only, so a grandchild that ignores SIGTERM outlives a SIGKILLed meta server (a fix needs a watchdog per process group)"]
async fn a_sigkilled_meta_server_leaves_no_grandchild_behind() {
    tokio::time::timeout(TEST_LIMIT, async {
        let processes = sigkill_meta_with_stubborn_servers().await;
        let left = wait_gone(&processes, std::time::Duration::from_secs(5)).await;
        kill_orphaned_grandchildren(&left);
        assert!(left.is_empty(), "outlived a SIGKILLed meta server: {:?}", cmdlines(&left));
    })
    .await
    .expect("test finished in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presets_dir_adds_presets_and_overrides_built_in_ones() {
    tokio::time::timeout(TEST_LIMIT, async {
        let dir = std::env::temp_dir().join(format!("mcp-ephemeral-presets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mine = format!(
            "name = \"mine\"\ndescription = \"the fixture, as a preset\"\nruntime_exec = \"python3\"\n\
             runtime_mcp = \"{FIXTURE}\"\nruntime_args = [\"ok\"]\n"
        );
        std::fs::write(dir.join("mine.toml"), mine).unwrap();
        let time = "name = \"time\"\ndescription = \"overridden\"\nruntime_exec = \"uvx\"\nruntime_mcp = \"mcp-server-time\"\n";
        std::fs::write(dir.join("time.toml"), time).unwrap();
        let (meta, _) = meta_stdio(&["--presets-dir", dir.to_str().unwrap()]).await;
        let presets = call_ok(&meta, "list_presets", json!({})).await;
        let find = |name: &str| presets["presets"].as_array().unwrap().iter().find(|p| p["name"] == name).cloned();
        assert!(find("mine").is_some(), "{presets}");
        assert_eq!(find("time").unwrap()["description"], "overridden", "{presets}");
        assert!(find("everything").is_some(), "the other built-in presets stay");
        let server = call_ok(&meta, "create_mcp_server", json!({"preset": "mine", "wait_for_ready": true})).await;
        assert_eq!((server["phase"].as_str(), server["preset"].as_str()), (Some("Ready"), Some("mine")));
        let session = connect_http(server["urls"]["mcp"].as_str().unwrap()).await;
        assert_eq!(text(&call(&session, "echo", json!({"message": "from a preset file"})).await), "from a preset file");
        let _ = session.cancel().await;
        let _ = meta.cancel().await;
        std::fs::remove_dir_all(&dir).ok();
    })
    .await
    .expect("test finished in time");
}
