//! The process tree as /proc shows it, for tests and benchmarks that check nothing is left
//! running. Include it with `#[path = "…/tests/support/procfs.rs"] mod procfs;`.

#![allow(dead_code)]

/// Every process below `pid` (children, grandchildren, …), read from /proc.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    for entry in entries.flatten() {
        let Ok(p) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        if let Some((ppid, state)) = stat(p)
            && state != 'Z'
        {
            parent_of.push((p, ppid));
        }
    }
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(parent_of.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
        i += 1;
    }
    found.remove(0);
    found
}

/// (parent pid, state) of a process.
fn stat(pid: u32) -> Option<(u32, char)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((ppid, state))
}

/// The parent pid of a process.
pub fn parent(pid: u32) -> Option<u32> {
    stat(pid).map(|(ppid, _)| ppid)
}

/// Whether `pid` runs (a zombie does not count).
pub fn alive(pid: u32) -> bool {
    stat(pid).is_some_and(|(_, s)| s != 'Z')
}

/// A process as it was seen: its pid and start time (clock ticks since boot), so that a pid the
/// kernel hands out again is not mistaken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Seen {
    pub pid: u32,
    pub start: u64,
}

impl Seen {
    /// Whether this very process still runs (not a zombie, not a newer process with its pid).
    pub fn alive(&self) -> bool {
        stat(self.pid).is_some_and(|(_, s)| s != 'Z') && start_time(self.pid) == Some(self.start)
    }
}

/// Every process below `pid`, with start times.
pub fn snapshot(pid: u32) -> Vec<Seen> {
    descendants(pid).into_iter().filter_map(|p| Some(Seen { pid: p, start: start_time(p)? })).collect()
}

/// The start time of a process (field 22 of /proc/PID/stat).
pub fn start_time(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    // Fields after the command: state is field 3, so starttime (22) is the 20th here.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Make this process the reaper of its orphaned descendants (`PR_SET_CHILD_SUBREAPER`): a
/// grandchild whose parent died is re-parented here instead of to init, so it stays in this
/// process's tree where checks can see it. Idempotent.
pub fn become_subreaper() {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER only sets a flag on this process.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong);
    }
}
