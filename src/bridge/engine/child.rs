//! One stdio MCP server process: spawned in its own process group, fed JSON-RPC lines on stdin,
//! read line by line from stdout, its stderr kept in a shared [`LogRing`].
//!
//! This module owns every way a child can end, so that nothing outlives its session: stdin EOF
//! first (what well-behaved servers exit on), then SIGTERM to the whole group, then SIGKILL.
//! It never interprets messages; routing lives in the http layer ([`crate::bridge::http`]).

use std::{process::Stdio, sync::Arc, time::Duration};

use bytes::Bytes;
use futures::future::BoxFuture;
use serde::de::IgnoredAny;
use tokio::{
    io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    process::Command,
    sync::{mpsc, watch},
};
use tokio_util::sync::CancellationToken;

use super::{
    environment::{self, Inherit},
    logs::LogRing,
};
use crate::{
    bridge::http::{EndReason, Upstream},
    tasks::Tasks,
};

/// Longest stdout line (one JSON-RPC message) accepted from a child; longer lines are dropped.
const MAX_LINE: usize = 64 * 1024 * 1024;
/// Longest stderr line read whole; the rest of a longer one is skipped (the log ring keeps
/// 4 KiB of a line anyway).
const MAX_STDERR_LINE: usize = 16 * 1024;
/// A stdout buffer that grew past this for one big message is given back afterwards.
const KEEP_CAPACITY: usize = 1024 * 1024;
/// Bytes of a junk stdout line passed to the log (which cuts it to 4 KiB and marks the cut).
const MAX_PREVIEW: usize = 8192;
/// How long a child gets after stdin EOF before SIGTERM, and after SIGTERM before SIGKILL.
const EOF_GRACE: Duration = Duration::from_millis(800);
const TERM_GRACE: Duration = Duration::from_millis(1500);

/// What to run: the argv, what it inherits of this process's environment, and the environment
/// added on top.
#[derive(Debug, Clone)]
pub struct ChildCommand {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub inherit: Inherit,
}

impl ChildCommand {
    /// `argv` with `env` on top of this process's whole environment ([`Inherit::All`]).
    pub fn new(argv: Vec<String>, env: Vec<(String, String)>) -> ChildCommand {
        ChildCommand { argv, env, inherit: Inherit::default() }
    }
}

/// How a child ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitInfo {
    /// Exit code, when it exited on its own.
    pub code: Option<i32>,
    /// Signal number, when a signal ended it.
    pub signal: Option<i32>,
}

impl std::fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            (Some(c), _) => write!(f, "exit code {c}"),
            (None, Some(s)) => write!(f, "killed by signal {s}"),
            (None, None) => write!(f, "unknown exit status"),
        }
    }
}

/// A child's exit watch tells its session how the upstream ended: the exit status when the process
/// is gone within 500 ms of closing stdout.
impl EndReason for watch::Receiver<Option<ExitInfo>> {
    fn describe(self: Box<Self>) -> BoxFuture<'static, String> {
        let mut exit = *self;
        Box::pin(async move {
            let waited = tokio::time::timeout(Duration::from_millis(500), exit.wait_for(Option::is_some)).await;
            match waited {
                Ok(Ok(info)) => format!(
                    "the MCP server process ended ({}) before answering; see get_mcp_server_logs for its stderr",
                    info.as_ref().expect("waited for Some")
                ),
                _ => "the MCP server closed its stdout before answering".to_string(),
            }
        })
    }
}

/// Error starting a child.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SpawnError {
    #[error("cannot start `{program}`: {source}")]
    Io {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the command is empty")]
    Empty,
}

/// A running child. Dropping it terminates the process group (in the background).
pub(crate) struct Child {
    pid: u32,
    stdin: Option<mpsc::Sender<Bytes>>,
    stdout: Option<mpsc::Receiver<Bytes>>,
    /// Closes stdin even while a relay still holds the sender.
    close_stdin: CancellationToken,
    exit: watch::Receiver<Option<ExitInfo>>,
    terminated: bool,
    /// Where its I/O tasks run, and its termination when it is dropped.
    tasks: Tasks,
}

impl Child {
    /// Spawn `cmd` with piped stdio in a new process group; `tag` prefixes its stderr lines.
    pub(crate) fn spawn(
        cmd: &ChildCommand,
        logs: Arc<LogRing>,
        tag: String,
        tasks: &Tasks,
    ) -> Result<Child, SpawnError> {
        let (program, args) = cmd.argv.split_first().ok_or(SpawnError::Empty)?;
        let mut command = Command::new(program);
        match &cmd.inherit {
            Inherit::Minimal { pass } => {
                command.env_clear().envs(environment::minimal(std::env::vars_os(), pass));
            }
            Inherit::All { hide } => {
                for name in hide {
                    command.env_remove(name);
                }
            }
        }
        // The meta server's and the bridge's own secrets are not the child's business.
        for name in environment::NEVER {
            command.env_remove(name);
        }
        command
            .args(args)
            .envs(cmd.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(false);
        // SAFETY: prctl is async-signal-safe; it only sets a flag on the new process.
        #[cfg(target_os = "linux")]
        unsafe {
            command.pre_exec(|| {
                // The child dies with us even if we are SIGKILLed. The signal fires when the
                // forking *thread* exits; tokio workers live as long as the runtime.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                Ok(())
            });
        }
        let mut child = command.spawn().map_err(|source| SpawnError::Io { program: program.clone(), source })?;
        let pid = child.id().unwrap_or_default();
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");

        let (in_tx, in_rx) = mpsc::channel::<Bytes>(64);
        let (out_tx, out_rx) = mpsc::channel::<Bytes>(64);
        let (exit_tx, exit_rx) = watch::channel(None);
        let close_stdin = CancellationToken::new();
        // These end with the process (EOF on its pipes, its exit), which termination ensures.
        tasks.spawn(write_stdin(stdin, in_rx, close_stdin.clone()));
        tasks.spawn(read_stdout(stdout, out_tx, logs.clone(), tag.clone()));
        tasks.spawn(read_stderr(stderr, logs.clone(), tag.clone()));
        let exit_tag = tag.clone();
        tasks.spawn(async move {
            let tag = exit_tag;
            let status = child.wait().await;
            let info = match status {
                Ok(s) => {
                    use std::os::unix::process::ExitStatusExt;
                    ExitInfo { code: s.code(), signal: s.signal() }
                }
                Err(_) => ExitInfo { code: None, signal: None },
            };
            tracing::debug!(pid, %info, tag, "child exited");
            // Sweep anything the leader left behind in its group (e.g. uvx's python).
            signal_group(pid, libc::SIGKILL);
            let _ = exit_tx.send(Some(info));
        });
        tracing::debug!(pid, tag, argv = ?cmd.argv, "child started");
        Ok(Child {
            pid,
            stdin: Some(in_tx),
            stdout: Some(out_rx),
            close_stdin,
            exit: exit_rx,
            terminated: false,
            tasks: tasks.clone(),
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// A watch that turns `Some` when the process has exited and been reaped.
    pub(crate) fn exit_watch(&self) -> watch::Receiver<Option<ExitInfo>> {
        self.exit.clone()
    }

    /// Hand the child's stdin and stdout to a relay. Called once.
    pub(crate) fn take_upstream(&mut self) -> Upstream {
        Upstream {
            tx: self.stdin.take().expect("upstream taken once"),
            rx: self.stdout.take().expect("upstream taken once"),
            end: Some(Box::new(self.exit.clone())),
        }
    }

    /// Write one message to stdin (used before the upstream is handed over, e.g. by the probe).
    pub(crate) async fn send(&self, msg: Bytes) -> bool {
        match &self.stdin {
            Some(tx) => tx.send(msg).await.is_ok(),
            None => false,
        }
    }

    /// Receive one stdout message (before the upstream is handed over).
    pub(crate) async fn recv(&mut self) -> Option<Bytes> {
        self.stdout.as_mut()?.recv().await
    }

    /// End the child: stdin EOF, then SIGTERM, then SIGKILL, each after a grace period.
    /// Returns how it ended; bounded by about 2.5 s.
    pub(crate) async fn terminate(mut self) -> Option<ExitInfo> {
        self.terminated = true;
        terminate_process(self.pid, self.close_stdin.clone(), self.exit.clone()).await
    }

    /// [`Child::terminate`] in the background (on the task tree).
    pub(crate) fn terminate_later(mut self) {
        self.terminated = true;
        let (pid, close, exit) = (self.pid, self.close_stdin.clone(), self.exit.clone());
        self.tasks.spawn(terminate_process(pid, close, exit));
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.terminated {
            let (pid, close, exit) = (self.pid, self.close_stdin.clone(), self.exit.clone());
            if tokio::runtime::Handle::try_current().is_ok() {
                self.tasks.spawn(terminate_process(pid, close, exit));
            } else {
                signal_group(pid, libc::SIGKILL);
            }
        }
    }
}

/// The escalation shared by [`Child::terminate`] and [`Drop`].
pub(crate) async fn terminate_process(
    pid: u32,
    close_stdin: CancellationToken,
    mut exit: watch::Receiver<Option<ExitInfo>>,
) -> Option<ExitInfo> {
    close_stdin.cancel();
    for (signal, grace) in [(None, EOF_GRACE), (Some(libc::SIGTERM), TERM_GRACE), (Some(libc::SIGKILL), TERM_GRACE)] {
        if let Some(sig) = signal {
            signal_group(pid, sig);
        }
        if let Ok(Ok(info)) = tokio::time::timeout(grace, exit.wait_for(Option::is_some)).await {
            return info.clone();
        }
    }
    tracing::warn!(pid, "child did not exit after SIGKILL");
    None
}

/// Send `sig` to the process group led by `pid`; a group that is already gone is fine.
pub(crate) fn signal_group(pid: u32, sig: libc::c_int) {
    if pid == 0 {
        return;
    }
    // SAFETY: killpg has no memory-safety preconditions.
    unsafe {
        libc::killpg(pid as libc::pid_t, sig);
    }
}

async fn write_stdin(mut stdin: tokio::process::ChildStdin, mut rx: mpsc::Receiver<Bytes>, close: CancellationToken) {
    loop {
        let msg = tokio::select! {
            _ = close.cancelled() => break,
            msg = rx.recv() => match msg { Some(m) => m, None => break },
        };
        let ok = stdin.write_all(&msg).await.is_ok() && stdin.write_all(b"\n").await.is_ok();
        if !ok || (rx.is_empty() && stdin.flush().await.is_err()) {
            break;
        }
    }
    // Dropping stdin closes the pipe: the child sees EOF.
}

async fn read_stdout(stdout: tokio::process::ChildStdout, tx: mpsc::Sender<Bytes>, logs: Arc<LogRing>, tag: String) {
    let mut reader = BufReader::with_capacity(64 * 1024, stdout);
    let mut line = Vec::with_capacity(4096);
    loop {
        let overlong = match read_line_capped(&mut reader, &mut line, MAX_LINE).await {
            Ok(Some(overlong)) => overlong,
            Ok(None) | Err(_) => break,
        };
        while matches!(line.last(), Some(b'\n' | b'\r')) {
            line.pop();
        }
        // Servers that print banners, logs or junk on stdout break the protocol; keep the text
        // where a person can read it (the logs tool) instead of failing the session, and never
        // hand a client something that is not JSON.
        if overlong {
            let what = format!("a line longer than {} MiB, dropped:", MAX_LINE >> 20);
            logs.push(&tag, &format!("[stdout, not JSON-RPC] {what} {}", preview(&line)));
        } else if line.is_empty() {
            continue;
        } else if !matches!(line.first(), Some(b'{' | b'[')) || serde_json::from_slice::<IgnoredAny>(&line).is_err() {
            logs.push(&tag, &format!("[stdout, not JSON-RPC] {}", preview(&line)));
        } else if tx.send(Bytes::copy_from_slice(&line)).await.is_err() {
            break;
        }
        // One huge message must not pin its buffer for the life of the child.
        if line.capacity() > KEEP_CAPACITY {
            line = Vec::with_capacity(4096);
        }
    }
}

async fn read_stderr(stderr: tokio::process::ChildStderr, logs: Arc<LogRing>, tag: String) {
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::with_capacity(1024);
    // The ring cuts lines at 4 KiB; reading at most MAX_STDERR_LINE bounds memory even when a
    // server writes megabytes without a newline.
    while let Ok(Some(_)) = read_line_capped(&mut reader, &mut line, MAX_STDERR_LINE).await {
        while matches!(line.last(), Some(b'\n' | b'\r')) {
            line.pop();
        }
        logs.push(&tag, &String::from_utf8_lossy(&line));
    }
}

/// The start of a line, as text, for the log (the ring cuts it further).
fn preview(line: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(&line[..line.len().min(MAX_PREVIEW)])
}

/// Read one line into `line` (cleared first), keeping at most `max` bytes of it. `None` at EOF;
/// `Some(true)` when the line was longer: its first `max` bytes are in `line` and the rest was
/// read and thrown away.
async fn read_line_capped<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Option<bool>> {
    line.clear();
    let n = (&mut *reader).take(max as u64).read_until(b'\n', line).await?;
    if n == 0 {
        return Ok(None);
    }
    if n < max || line.last() == Some(&b'\n') {
        return Ok(Some(false));
    }
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            break;
        }
        match buf.iter().position(|b| *b == b'\n') {
            Some(at) => {
                reader.consume(at + 1);
                break;
            }
            None => {
                let len = buf.len();
                reader.consume(len);
            }
        }
    }
    Ok(Some(true))
}
