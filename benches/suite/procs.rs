//! Every process the suite starts runs in its own process group, registered here. A [`Group`]
//! kills its group (and any descendants that moved to groups of their own) when dropped, so an
//! early return or a panic leaves nothing behind; [`kill_all`] is the last resort at exit and
//! on SIGINT/SIGTERM.

use crate::procfs::{alive, descendants};
use std::{
    collections::BTreeSet,
    process::Stdio,
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

/// Process-group ids of the groups alive now.
static LIVE: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

/// A process group led by `pid`; killed on drop.
pub struct Group {
    pub pid: u32,
    stopped: bool,
}

impl Group {
    /// Take charge of a process started with `process_group(0)`.
    pub fn adopt(pid: u32) -> Group {
        LIVE.lock().unwrap_or_else(|e| e.into_inner()).insert(pid as i32);
        Group { pid, stopped: false }
    }

    /// SIGTERM to the leader only (so it can stop its own children), up to `grace` for the
    /// whole tree to go, then SIGKILL to the group and every descendant left.
    pub async fn stop(&mut self, grace: Duration) {
        if self.stopped {
            return;
        }
        let tree = descendants(self.pid);
        if alive(self.pid) {
            signal(self.pid as i32, libc::SIGTERM);
        }
        let start = Instant::now();
        while start.elapsed() < grace && (alive(self.pid) || tree.iter().any(|p| alive(*p))) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.kill_now(&tree);
    }

    fn kill_now(&mut self, tree: &[u32]) {
        killpg(self.pid as i32);
        for p in tree {
            signal(*p as i32, libc::SIGKILL);
        }
        LIVE.lock().unwrap_or_else(|e| e.into_inner()).remove(&(self.pid as i32));
        self.stopped = true;
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if !self.stopped {
            let tree = descendants(self.pid);
            self.kill_now(&tree);
        }
    }
}

/// A child process in its own group; the group dies with this value.
pub struct Proc {
    pub child: tokio::process::Child,
    pub group: Group,
}

impl Proc {
    /// Spawn `cmd` as the leader of a new process group. stdin is /dev/null unless set.
    pub fn spawn(name: &str, mut cmd: tokio::process::Command) -> Result<Proc> {
        cmd.process_group(0).kill_on_drop(true);
        let child = cmd.spawn().with_context(|| format!("start {name}: {cmd:?}"))?;
        let pid = child.id().context("no pid")?;
        Ok(Proc { child, group: Group::adopt(pid) })
    }

    /// A command with stdin from /dev/null and stdout/stderr appended to `log`.
    pub fn logged_command(program: &std::path::Path, log: &std::path::Path) -> Result<tokio::process::Command> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("open {}", log.display()))?;
        let mut cmd = tokio::process::Command::new(program);
        cmd.stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out);
        Ok(cmd)
    }

    pub fn pid(&self) -> u32 {
        self.group.pid
    }

    pub async fn stop(&mut self, grace: Duration) {
        self.group.stop(grace).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await;
    }
}

/// Kill every group still registered (SIGKILL). Safe to call more than once.
pub fn kill_all() {
    let groups: Vec<i32> = std::mem::take(&mut *LIVE.lock().unwrap_or_else(|e| e.into_inner())).into_iter().collect();
    for pgid in groups {
        for p in descendants(pgid as u32) {
            signal(p as i32, libc::SIGKILL);
        }
        killpg(pgid);
    }
}

/// On SIGINT or SIGTERM: kill everything started, then exit.
pub fn kill_all_on_signal() {
    tokio::spawn(async {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
            return;
        };
        tokio::select! {
            _ = int.recv() => {},
            _ = term.recv() => {},
        }
        eprintln!("suite: interrupted; stopping every process it started");
        kill_all();
        std::process::exit(130);
    });
}

fn killpg(pgid: i32) {
    if pgid > 1 {
        // SAFETY: plain syscall; a group that is gone gives ESRCH, which is fine.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
    }
}

fn signal(pid: i32, sig: i32) {
    if pid > 1 {
        // SAFETY: plain syscall on a pid we started (or one of its descendants).
        unsafe { libc::kill(pid, sig) };
    }
}
