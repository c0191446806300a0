//! Mounts: a server's tools, prompts and resources offered by the meta server, forwarded calls,
//! the server's own list changes passed on, and a reconnect after its session died.

use std::{process::Stdio, sync::Arc, time::Duration};

use rmcp::{
    ClientHandler, RoleClient, ServiceExt,
    model::{
        CallToolRequestParams, CallToolResult, GetPromptRequestParams, ReadResourceRequestParams, ReadResourceResult,
        ResourceContents,
    },
    service::{NotificationContext, RunningService},
    transport::TokioChildProcess,
};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    sync::watch,
};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mounted_tools_appear_answer_and_disappear_with_notifications() {
    tokio::time::timeout(TEST_LIMIT, async {
        let (meta, _) = meta_stdio(&[]).await;
        let server = call_ok(&meta, "create_mcp_server", json!({"preset": "time", "wait_for_ready": true})).await;
        let job = server["job_name"].as_str().unwrap().to_string();

        let before = meta.service().tool_list_changes();
        let mounted = call_ok(&meta, "mount_mcp_server", json!({"job_name": job, "name": "clock"})).await;
        assert!(mounted["tools"].to_string().contains("clock_get_current_time"), "{mounted}");
        meta.service().wait_for_changes(before + 1).await;

        let tools = meta.list_all_tools().await.expect("tools/list");
        assert!(tools.iter().any(|t| t.name == "clock_get_current_time"));
        let res = call(&meta, "clock_get_current_time", json!({"timezone": "UTC"})).await;
        assert_ne!(res.is_error, Some(true), "{}", text(&res));
        assert!(text(&res).contains("UTC"), "{}", text(&res));

        let dup = call_err(&meta, "mount_mcp_server", json!({"job_name": job, "name": "clock"})).await;
        assert!(dup.contains("exists already"), "{dup}");

        call_ok(&meta, "remove_mcp_server_mount", json!({"name": "clock"})).await;
        meta.service().wait_for_changes(before + 2).await;
        let tools = meta.list_all_tools().await.expect("tools/list");
        assert!(!tools.iter().any(|t| t.name.starts_with("clock_")), "mounted tools remain after unmount");

        // Deleting a mounted server removes its mount too.
        call_ok(&meta, "mount_mcp_server", json!({"job_name": job, "name": "clock2"})).await;
        meta.service().wait_for_changes(before + 3).await;
        call_ok(&meta, "delete_mcp_server", json!({"job_name": job, "wait_for_deletion": true})).await;
        meta.service().wait_for_changes(before + 4).await;
        let tools = meta.list_all_tools().await.expect("tools/list");
        assert!(!tools.iter().any(|t| t.name.starts_with("clock2_")));
        let _ = meta.cancel().await;
    })
    .await
    .expect("test finished in time");
}

/// A test client that counts each kind of `list_changed` the meta server sends.
#[derive(Clone, Default)]
struct Lists {
    tools: Arc<watch::Sender<usize>>,
    prompts: Arc<watch::Sender<usize>>,
    resources: Arc<watch::Sender<usize>>,
}

impl ClientHandler for Lists {
    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.tools.send_modify(|c| *c += 1);
    }

    async fn on_prompt_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.prompts.send_modify(|c| *c += 1);
    }

    async fn on_resource_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.resources.send_modify(|c| *c += 1);
    }
}

/// Wait until `counter` reached `n`; the bound only keeps a missing notification from hanging.
async fn wait_for(counter: &watch::Sender<usize>, n: usize, what: &str) {
    let mut rx = counter.subscribe();
    tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|c| *c >= n))
        .await
        .unwrap_or_else(|_| panic!("{what} list_changed number {n} reached the meta server's client"))
        .expect("counter alive");
}

type ListsClient = RunningService<RoleClient, Lists>;

/// The meta server on stdio, with a client that counts every kind of list change.
async fn meta_with_lists() -> ListsClient {
    become_subreaper();
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.arg("serve").env("MCP_EPHEMERAL_LOG", "mcp_ephemeral=debug");
    let (transport, stderr) = TokioChildProcess::builder(cmd).stderr(Stdio::piped()).spawn().expect("spawn meta");
    if let Some(stderr) = stderr {
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[meta-stdio] {line}");
            }
        });
    }
    Lists::default().serve(transport).await.expect("initialize the meta server over stdio")
}

async fn tool(meta: &ListsClient, name: &str, args: Value) -> CallToolResult {
    let params =
        CallToolRequestParams::new(name.to_string()).with_arguments(args.as_object().cloned().unwrap_or_default());
    tokio::time::timeout(Duration::from_secs(150), meta.call_tool(params))
        .await
        .unwrap_or_else(|_| panic!("{name} answered within 150 s"))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

async fn tool_ok(meta: &ListsClient, name: &str, args: Value) -> Value {
    let res = tool(meta, name, args).await;
    assert_ne!(res.is_error, Some(true), "{name} failed: {}", text(&res));
    res.structured_content.clone().unwrap_or_else(|| panic!("{name} gave no structured content: {res:?}"))
}

/// Create server-everything and mount it as `ev`; its job name and URL.
async fn mount_everything(meta: &ListsClient) -> (String, String) {
    let server = tool_ok(meta, "create_mcp_server", json!({"preset": "everything", "wait_for_ready": true})).await;
    let job = server["job_name"].as_str().unwrap().to_string();
    let url = server["urls"]["mcp"].as_str().unwrap().to_string();
    let mounted = tool_ok(meta, "mount_mcp_server", json!({"job_name": job, "name": "ev"})).await;
    assert!(mounted["prompts"].to_string().contains("\"ev_simple-prompt\""), "{mounted}");
    assert!(mounted["resources"].to_string().contains(&format!("\"{ARCH}\"")), "{mounted}");
    (job, url)
}

const ARCH: &str = "mcp-ephemeral://mounts/ev/demo://resource/static/document/architecture.md";
const TEXT_TEMPLATE: &str = "mcp-ephemeral://mounts/ev/demo://resource/dynamic/text/{resourceId}";

fn resource_text(result: &ReadResourceResult) -> (String, String) {
    match &result.contents[..] {
        [ResourceContents::TextResourceContents { uri, text, .. }] => (uri.clone(), text.clone()),
        other => panic!("one text content expected, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mounting_everything_brings_its_prompts_and_resources_and_forwards_get_and_read() {
    within(TEST_LIMIT, async {
        let meta = meta_with_lists().await;
        let (_, url) = mount_everything(&meta).await;
        // The mount announced its prompts and resources, besides its tools.
        wait_for(&meta.service().prompts, 1, "prompts").await;
        wait_for(&meta.service().resources, 1, "resources").await;

        let prompts = meta.list_all_prompts().await.expect("prompts/list");
        let args_prompt = prompts.iter().find(|p| p.name == "ev_args-prompt").expect("ev_args-prompt is listed");
        let arguments = args_prompt.arguments.as_ref().expect("ev_args-prompt keeps its arguments");
        assert!(arguments.iter().any(|a| a.name == "city"), "{arguments:?}");
        let got = meta
            .get_prompt(
                GetPromptRequestParams::new("ev_args-prompt")
                    .with_arguments(json!({"city": "Paris"}).as_object().cloned().unwrap()),
            )
            .await
            .expect("prompts/get through the meta server");
        let said: Vec<String> =
            got.messages.iter().filter_map(|m| m.content.as_text().map(|t| t.text.clone())).collect();
        assert!(said.iter().any(|t| t.contains("What's weather in Paris?")), "{said:?}");

        // A static resource reads the same through the mount as straight from the server.
        let resources = meta.list_all_resources().await.expect("resources/list");
        assert!(resources.iter().any(|r| r.uri == "config://version"), "the meta server's own resource stays");
        assert!(resources.iter().any(|r| r.uri == ARCH), "{:?}", resources.iter().map(|r| &r.uri).collect::<Vec<_>>());
        let via_mount = meta.read_resource(ReadResourceRequestParams::new(ARCH)).await.expect("resources/read");
        let (uri, mounted_text) = resource_text(&via_mount);
        assert_eq!(uri, ARCH, "the contents name the URI as the meta server offers it");
        let direct = connect_http(&url).await;
        let original = direct
            .read_resource(ReadResourceRequestParams::new("demo://resource/static/document/architecture.md"))
            .await
            .expect("read straight from the server");
        assert_eq!(mounted_text, resource_text(&original).1);
        assert!(!mounted_text.is_empty());
        let _ = direct.cancel().await;

        // A template keeps its variables: expand it here, the server gets its own URI.
        let templates = meta.list_all_resource_templates().await.expect("resources/templates/list");
        assert!(
            templates.iter().any(|t| t.uri_template == TEXT_TEMPLATE),
            "{:?}",
            templates.iter().map(|t| &t.uri_template).collect::<Vec<_>>()
        );
        let seven = TEXT_TEMPLATE.replace("{resourceId}", "7");
        let read = meta.read_resource(ReadResourceRequestParams::new(seven.clone())).await.expect("read a template");
        let (uri, text) = resource_text(&read);
        assert_eq!(uri, seven);
        assert!(text.starts_with("Resource 7: This is a plaintext resource"), "{text}");

        // Unknown names: clean MCP errors that say where to look.
        let err = meta.get_prompt(GetPromptRequestParams::new("ev_no-such-prompt")).await.unwrap_err().to_string();
        assert!(err.contains("unknown prompt `ev_no-such-prompt`") && err.contains("prompts/list"), "{err}");
        let err = meta
            .read_resource(ReadResourceRequestParams::new("mcp-ephemeral://mounts/zz/demo://x"))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("no mount named `zz`") && err.contains("list_mcp_servers"), "{err}");
        let err = meta
            .read_resource(ReadResourceRequestParams::new("demo://resource/static/document/architecture.md"))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("resources/list") && err.contains("mcp-ephemeral://mounts/"), "{err}");
        // The server's own error for a URI it does not have comes through.
        let err = meta
            .read_resource(ReadResourceRequestParams::new(TEXT_TEMPLATE.replace("{resourceId}", "x")))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("Unknown resource"), "{err}");

        // Unmounting takes the prompts and resources away again, and says so.
        let (prompts_seen, resources_seen) = (*meta.service().prompts.borrow(), *meta.service().resources.borrow());
        tool_ok(&meta, "remove_mcp_server_mount", json!({"name": "ev"})).await;
        wait_for(&meta.service().prompts, prompts_seen + 1, "prompts").await;
        wait_for(&meta.service().resources, resources_seen + 1, "resources").await;
        let prompts = meta.list_all_prompts().await.expect("prompts/list");
        assert!(prompts.is_empty(), "{prompts:?}");
        let resources = meta.list_all_resources().await.expect("resources/list");
        assert_eq!(resources.iter().map(|r| r.uri.as_str()).collect::<Vec<_>>(), ["config://version"]);
        let err = meta.read_resource(ReadResourceRequestParams::new(ARCH)).await.unwrap_err().to_string();
        assert!(err.contains("no mount named `ev`"), "{err}");
        let _ = meta.cancel().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mounted_servers_own_resource_list_change_reaches_the_meta_servers_client() {
    within(TEST_LIMIT, async {
        let meta = meta_with_lists().await;
        mount_everything(&meta).await;
        wait_for(&meta.service().resources, 1, "resources").await;
        let before = *meta.service().resources.borrow();

        // server-everything registers a session resource for the file it compressed, and sends
        // notifications/resources/list_changed; the mount re-reads its list and passes it on.
        let res = tool(
            &meta,
            "ev_gzip-file-as-resource",
            json!({"name": "note.txt.gz", "data": "data:text/plain;base64,aGVsbG8gbW91bnQ=", "outputType": "resourceLink"}),
        )
        .await;
        assert_ne!(res.is_error, Some(true), "{}", text(&res));
        wait_for(&meta.service().resources, before + 1, "resources").await;

        let note = "mcp-ephemeral://mounts/ev/demo://resource/session/note.txt.gz";
        let resources = meta.list_all_resources().await.expect("resources/list");
        assert!(resources.iter().any(|r| r.uri == note), "{:?}", resources.iter().map(|r| &r.uri).collect::<Vec<_>>());
        let read = meta.read_resource(ReadResourceRequestParams::new(note)).await.expect("read the new resource");
        match &read.contents[..] {
            [ResourceContents::BlobResourceContents { uri, blob, mime_type, .. }] => {
                assert_eq!(uri, note);
                assert_eq!(mime_type.as_deref(), Some("application/gzip"));
                assert!(!blob.is_empty());
            }
            other => panic!("one blob expected, got {other:?}"),
        }
        let _ = meta.cancel().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mount_whose_session_died_reconnects_once_on_the_next_call() {
    within(TEST_LIMIT, async {
        let (meta, _) = meta_stdio(&[]).await;
        let server = call_ok(&meta, "create_mcp_server", json!({"preset": "time", "wait_for_ready": true})).await;
        let job = server["job_name"].as_str().unwrap().to_string();
        call_ok(&meta, "mount_mcp_server", json!({"job_name": job, "name": "clock"})).await;
        let res = call(&meta, "clock_get_current_time", json!({"timezone": "UTC"})).await;
        assert_ne!(res.is_error, Some(true), "{}", text(&res));

        // Stopping ends every session on the server, the mount's too; starting it again
        // makes a new process that knows nothing of the old session.
        call_ok(&meta, "stop_mcp_server", json!({"job_name": job})).await;
        // The mount itself does not wake the server (no retries of its ended GET stream). This
        // wait can only miss such a wake-up, never invent one.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let status = call_ok(&meta, "get_mcp_server_status", json!({"job_name": job})).await;
        assert_eq!(status["phase"], "Stopped", "the mount kept its stopped server awake: {status}");
        let started = call_ok(&meta, "start_mcp_server", json!({"job_name": job, "wait_for_ready": true})).await;
        assert_eq!(started["phase"], "Ready", "{started}");

        let res = call(&meta, "clock_get_current_time", json!({"timezone": "UTC"})).await;
        assert_ne!(res.is_error, Some(true), "the mount reconnected: {}", text(&res));
        assert!(text(&res).contains("UTC"), "{}", text(&res));
        let res = call(&meta, "clock_get_current_time", json!({"timezone": "Europe/Paris"})).await;
        assert_ne!(res.is_error, Some(true), "the new session stays: {}", text(&res));

        // Stopped and not started again: the reconnect is the request that wakes it.
        call_ok(&meta, "stop_mcp_server", json!({"job_name": job})).await;
        let res = call(&meta, "clock_get_current_time", json!({"timezone": "UTC"})).await;
        assert_ne!(res.is_error, Some(true), "the reconnect woke the stopped server: {}", text(&res));
        let _ = meta.cancel().await;
    })
    .await;
}
