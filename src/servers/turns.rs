//! One change at a time per server: a stop, a start and a wake of the same server take turns,
//! so that two wakes of a stopped server start it once (and take one slot), and a stop never
//! interleaves with the start it races.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::OwnedMutexGuard;

#[derive(Default)]
pub(crate) struct Turns {
    by_name: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// A server's turn; the next caller for the same server waits until it is dropped.
pub(crate) struct Turn<'a> {
    turns: &'a Turns,
    name: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Turns {
    /// Wait for `name`'s turn.
    pub(crate) async fn take(&self, name: &str) -> Turn<'_> {
        let lock = self.by_name.lock().expect("turns poisoned").entry(name.to_string()).or_default().clone();
        let guard = lock.lock_owned().await;
        Turn { turns: self, name: name.to_string(), guard: Some(guard) }
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut by_name = self.turns.by_name.lock().expect("turns poisoned");
        // Nobody else holds or waits for it: forget it, so the map does not grow.
        if by_name.get(&self.name).is_some_and(|l| Arc::strong_count(l) == 1) {
            by_name.remove(&self.name);
        }
    }
}
