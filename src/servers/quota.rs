//! One limit (`--max-servers`, or one preset's `--max-active`) held under concurrency. A create counts the servers a list shows plus the
//! creates that list may not show yet, and takes its slot in the same step (a [`Reservation`]),
//! before anything is created: thirty creates at once against a limit of ten make exactly ten
//! servers. A list cannot see a create that finished after the list began, so a slot stays held
//! for every list that began before its create finished; lists that began after count the
//! server (or show it gone).

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

/// A finished create's hold is kept this long: longer than any list takes (API calls give up
/// well before), so every list that began before the create finished has been counted.
const FORGET_AFTER: Duration = Duration::from_secs(300);

/// The limit and the slots held now.
pub(crate) struct Quota {
    max: usize,
    held: Mutex<Vec<Hold>>,
}

struct Hold {
    /// Reservation number, to release the right one.
    id: u64,
    /// The server's name: the spec's while creating, the runtime's once created.
    name: String,
    /// When the create finished (`None` while it runs).
    settled: Option<Instant>,
}

/// No slot is free.
#[derive(Debug)]
pub(crate) struct Full {
    pub(crate) max: usize,
}

impl Quota {
    pub(crate) fn new(max: usize) -> Quota {
        Quota { max, held: Mutex::default() }
    }

    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// Take a slot for `name`, given the servers a list that began at `listed_at` returned.
    pub(crate) fn reserve(&self, name: &str, listed: &[String], listed_at: Instant) -> Result<Reservation<'_>, Full> {
        let mut held = self.held.lock().expect("quota poisoned");
        // Forget holds no list can still miss. Not by this list's start: another create's
        // list may have begun before it and still need the hold.
        held.retain(|h| h.settled.is_none_or(|at| at.elapsed() < FORGET_AFTER));
        // A create that finished before this list began is in the list, or gone since.
        let unlisted =
            held.iter().filter(|h| h.settled.is_none_or(|at| at >= listed_at) && !listed.contains(&h.name)).count();
        if listed.len() + unlisted >= self.max {
            return Err(Full { max: self.max });
        }
        let id = held.iter().map(|h| h.id).max().map_or(0, |m| m + 1);
        held.push(Hold { id, name: name.to_string(), settled: None });
        Ok(Reservation { quota: self, id, settled: false })
    }
}

/// A slot taken by a create; released when dropped unless the create [settled](Self::settle).
pub(crate) struct Reservation<'a> {
    quota: &'a Quota,
    id: u64,
    settled: bool,
}

impl Reservation<'_> {
    /// The create made server `name` (the runtime's name: a taken name gets a fresh one).
    pub(crate) fn settle(mut self, name: &str) {
        let mut held = self.quota.held.lock().expect("quota poisoned");
        if let Some(h) = held.iter_mut().find(|h| h.id == self.id) {
            h.name = name.to_string();
            h.settled = Some(Instant::now());
        }
        self.settled = true;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.quota.held.lock().expect("quota poisoned").retain(|h| h.id != self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("s-{i}")).collect()
    }

    #[test]
    fn creates_in_flight_count_and_a_failed_one_gives_its_slot_back() {
        let q = Quota::new(3);
        let t = Instant::now();
        let a = q.reserve("a", &names(1), t).unwrap();
        let _b = q.reserve("b", &names(1), t).unwrap();
        let full = q.reserve("c", &names(1), t).err().expect("full");
        assert_eq!(full.max, 3, "1 listed + 2 in flight");
        drop(a);
        assert!(q.reserve("c", &names(1), t).is_ok(), "a failed create released its slot");
    }

    #[test]
    fn a_finished_create_counts_until_a_later_list_shows_it() {
        let q = Quota::new(2);
        let before = Instant::now();
        q.reserve("a", &[], before).unwrap().settle("a-renamed");
        // A list that began before the create finished may miss it: it still counts.
        let _b = q.reserve("b", &[], before).unwrap();
        assert!(q.reserve("c", &[], before).is_err());
        // A list that began after it finished shows it (counted once, by name) …
        let after = Instant::now();
        assert!(q.reserve("c", &["a-renamed".into()], after).is_err(), "a-renamed + b in flight");
        // … or shows it gone.
        drop(_b);
        let later = Instant::now();
        assert!(q.reserve("c", &[], later).is_ok());
    }

    #[test]
    fn a_later_list_does_not_drop_the_hold_an_earlier_list_still_needs() {
        let q = Quota::new(2);
        let early = Instant::now();
        q.reserve("a", &[], early).unwrap().settle("a");
        // A create whose list began after `a` finished sees it listed …
        let late = Instant::now();
        let _b = q.reserve("b", &["a".into()], late).unwrap();
        // … while one whose list began before (and missed `a`) must still count it.
        assert!(q.reserve("c", &[], early).is_err(), "a (unlisted here) + b in flight fill the quota");
    }
}
