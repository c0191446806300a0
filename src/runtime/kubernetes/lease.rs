//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several replicas exactly one
//! does what must happen once: the TTL reaper, the idle check, the warm pools, the orphan sweep
//! (and the custom-resource controller). Every replica serves the MCP tools.
//!
//! The election is plain optimistic concurrency: each replica reads the Lease and writes it back
//! (PUT) with the `resourceVersion` it read, so of two writers racing for it one gets 409 and
//! loses. The holder renews every [`ElectionTiming::renew_every`]; a Lease whose `renewTime` plus
//! `leaseDurationSeconds` has passed (or that has no holder) may be taken by anyone. A holder that
//! could not renew for [`ElectionTiming::renew_deadline`] (shorter than the lease) stops leading
//! on its own, before anyone else may take over, so two replicas never lead at once while their
//! clocks agree. A graceful shutdown clears `holderIdentity`, so a successor leads at once.
//!
//! The outcome is a [`Leadership`]: a `watch` of "this replica leads now". Code that must run on
//! the leader only takes one and runs each term with [`while_leading`] (see its docs).

use std::{
    future::Future,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::Timestamp,
};
use kube::{
    Api,
    api::{ObjectMeta, PostParams},
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::retry;
use crate::tasks::Tasks;

/// The Lease every replica of the meta server competes for, in the servers' namespace. One name
/// for all: replicas that share a namespace share its servers, so they share one leader too.
pub(crate) const LEASE_NAME: &str = "mcp-ephemeral-leader";

/// How the election paces itself.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ElectionTiming {
    /// `leaseDurationSeconds`: how long after its last renewal a Lease may be taken.
    pub(crate) lease: Duration,
    /// How often the holder renews (and how often the others look at most).
    pub(crate) renew_every: Duration,
    /// A holder that has not renewed for this long stops leading (less than `lease`).
    pub(crate) renew_deadline: Duration,
}

impl Default for ElectionTiming {
    /// A dead leader is replaced within `lease` + a moment (~10 s): the others look again right
    /// when its Lease runs out.
    fn default() -> Self {
        ElectionTiming {
            lease: Duration::from_secs(10),
            renew_every: Duration::from_secs(2),
            renew_deadline: Duration::from_secs(7),
        }
    }
}

/// Whether this replica leads now: cheap to clone, one per part that runs on the leader only.
#[derive(Debug, Clone)]
pub(crate) struct Leadership {
    leading: watch::Receiver<bool>,
    /// Keeps the channel open for [`Leadership::always`].
    _always: Option<Arc<watch::Sender<bool>>>,
    elected: bool,
}

impl Leadership {
    /// A replica that is always its own leader: the local runtime, `--leader-election off`.
    pub(crate) fn always() -> Leadership {
        let (tx, leading) = watch::channel(true);
        Leadership { leading, _always: Some(Arc::new(tx)), elected: false }
    }

    /// Whether this replica leads now.
    pub(crate) fn is_leader(&self) -> bool {
        *self.leading.borrow()
    }

    /// Whether leadership comes from an election (other replicas may exist and take over what
    /// this one leaves behind), rather than [`Leadership::always`].
    pub(crate) fn elected(&self) -> bool {
        self.elected
    }

    /// Wait until this replica leads; `false` when the election ended first (shutdown).
    pub(crate) async fn acquired(&mut self) -> bool {
        self.leading.wait_for(|l| *l).await.is_ok()
    }

    /// Wait until this replica no longer leads (or the election ended).
    pub(crate) async fn lost(&mut self) {
        let _ = self.leading.wait_for(|l| !*l).await;
    }
}

/// Run `term` each time this replica becomes the leader, until `stop`. Each term gets its own
/// token, cancelled when leadership is lost (or at `stop`); the term's future must then finish
/// its work and return (it is awaited, so nothing of a term overlaps the next replica's term any
/// longer than its cleanup takes). The reaper, idle check and warm pools run this way; so can a
/// controller: `while_leading(leadership, stop, |term| controller.run(term))`.
pub(crate) async fn while_leading<F, Fut>(mut leadership: Leadership, stop: CancellationToken, mut term: F)
where
    F: FnMut(CancellationToken) -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        tokio::select! {
            acquired = leadership.acquired() => if !acquired { return },
            _ = stop.cancelled() => return,
        }
        let term_stop = stop.child_token();
        let work = term(term_stop.clone());
        tokio::pin!(work);
        let ended = tokio::select! {
            _ = &mut work => true,
            _ = leadership.lost() => false,
            _ = stop.cancelled() => false,
        };
        term_stop.cancel();
        if !ended {
            work.await;
        } else {
            // The term's work was done early: wait for the term to end before another.
            tokio::select! {
                _ = leadership.lost() => {}
                _ = stop.cancelled() => return,
            }
        }
        if stop.is_cancelled() {
            return;
        }
    }
}

/// This replica's name in the Lease: its pod's name (`HOSTNAME`) and a random suffix, so a
/// restarted container never mistakes its predecessor's Lease for its own.
pub(crate) fn identity() -> String {
    let host = std::env::var("HOSTNAME").ok().filter(|h| !h.trim().is_empty());
    crate::names::generate(host.as_deref().unwrap_or("mcp-ephemeral"))
}

/// Whether a Lease renewed at `renewed` (none: never) for `lease` has run out at `now`.
fn expired(renewed: Option<SystemTime>, lease: Duration, now: SystemTime) -> bool {
    match renewed {
        None => true,
        Some(renewed) => renewed + lease < now,
    }
}

/// How long until a Lease renewed at `renewed` for `lease` runs out at `now` (zero: it has).
fn left(renewed: Option<SystemTime>, lease: Duration, now: SystemTime) -> Duration {
    renewed.and_then(|r| (r + lease).duration_since(now).ok()).unwrap_or_default()
}

fn micro_time(t: SystemTime) -> Option<MicroTime> {
    Timestamp::try_from(t).ok().map(MicroTime)
}

/// What one look at the Lease found.
#[derive(Debug, PartialEq, Eq)]
enum Look {
    /// This replica holds it (it just took or renewed it).
    Leading,
    /// `holder` holds it (or someone won a race for it) for at least `left` more.
    Following { holder: Option<String>, left: Duration },
}

/// The election of one replica: a task that keeps looking at the Lease.
pub(crate) struct Elector {
    leases: Api<Lease>,
    identity: String,
    timing: ElectionTiming,
    leading: watch::Sender<bool>,
    /// The Lease as this replica last wrote it while holding it (for the release).
    held: Mutex<Option<Lease>>,
}

impl Elector {
    /// Start competing for [`LEASE_NAME`] in `leases`' namespace as `identity`, on `tasks`.
    pub(crate) fn start(leases: Api<Lease>, identity: String, timing: ElectionTiming, tasks: &Tasks) -> Arc<Elector> {
        let (leading, _) = watch::channel(false);
        let elector = Arc::new(Elector { leases, identity, timing, leading, held: Mutex::new(None) });
        tracing::info!(identity = %elector.identity, lease = LEASE_NAME, "leader election started");
        tasks.spawn(elector.clone().run(tasks.token().clone()));
        elector
    }

    /// Whether this replica leads, now and from now on.
    pub(crate) fn leadership(&self) -> Leadership {
        Leadership { leading: self.leading.subscribe(), _always: None, elected: true }
    }

    async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut renewed: Option<Instant> = None;
        loop {
            // Others count the Lease from the renewTime written, which is about now.
            let began = Instant::now();
            let look = tokio::select! {
                look = tokio::time::timeout(self.timing.renew_every, self.look()) => look,
                _ = stop.cancelled() => break,
            };
            let look = match look {
                Ok(Ok(look)) => Ok(look),
                Ok(Err(e)) => Err(e.detail()),
                Err(_) => Err(format!("no answer within {:?}", self.timing.renew_every)),
            };
            let sleep = match look {
                Ok(Look::Leading) => {
                    renewed = Some(began);
                    self.set_leading(true, None);
                    self.timing.renew_every
                }
                Ok(Look::Following { holder, left }) => {
                    renewed = None;
                    self.set_leading(false, holder.as_deref());
                    // Look again right when the Lease runs out, or at the usual pace.
                    (left + Duration::from_millis(100)).clamp(Duration::from_millis(100), self.timing.renew_every)
                }
                Err(why) => {
                    if let Some(at) = renewed
                        && at.elapsed() >= self.timing.renew_deadline
                    {
                        tracing::warn!(error = %why, "could not renew the leader Lease in time; no longer leading");
                        renewed = None;
                        self.set_leading(false, None);
                    } else {
                        tracing::warn!(error = %why, "could not read or write the leader Lease");
                    }
                    // A holder retries sooner, to renew before its deadline.
                    if renewed.is_some() { Duration::from_millis(500) } else { self.timing.renew_every }
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = stop.cancelled() => break,
            }
        }
        // Shutting down: nothing runs as leader from now on; the Lease is released by
        // [`Elector::release`] once the leader's work has stopped.
        self.leading.send_replace(false);
    }

    fn set_leading(&self, leading: bool, holder: Option<&str>) {
        let was = self.leading.send_replace(leading);
        match (was, leading) {
            (false, true) => tracing::info!(identity = %self.identity, "this replica is now the leader"),
            (true, false) => {
                self.held.lock().expect("lease lock").take();
                tracing::warn!(identity = %self.identity, holder, "this replica is no longer the leader");
            }
            _ => {}
        }
    }

    /// Read the Lease and take, renew or leave it.
    async fn look(&self) -> Result<Look, retry::ApiError> {
        let now = SystemTime::now();
        let lease = retry::once(self.leases.get_opt(LEASE_NAME)).await?;
        let Some(mut lease) = lease else {
            return self.create(now).await;
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let duration =
            spec.lease_duration_seconds.filter(|s| *s > 0).map_or(self.timing.lease, |s| Duration::from_secs(s as u64));
        let renewed = spec.renew_time.as_ref().map(|t| SystemTime::from(t.0));
        let mine = holder.as_deref() == Some(self.identity.as_str());
        if !mine && holder.is_some() && !expired(renewed, duration, now) {
            return Ok(Look::Following { holder, left: left(renewed, duration, now) });
        }
        if !mine {
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = micro_time(now);
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            if let Some(previous) = &holder {
                tracing::info!(previous = %previous, "the leader Lease ran out; taking it");
            }
        }
        spec.lease_duration_seconds = Some(self.timing.lease.as_secs() as i32);
        spec.renew_time = micro_time(now);
        // The resourceVersion read above goes with the write: a stale one gets 409.
        match retry::once(self.leases.replace(LEASE_NAME, &PostParams::default(), &lease)).await {
            Ok(written) => {
                *self.held.lock().expect("lease lock") = Some(written);
                Ok(Look::Leading)
            }
            Err(e) if is_conflict(&e) => Ok(Look::Following { holder: None, left: Duration::ZERO }),
            Err(e) => Err(e),
        }
    }

    /// No Lease yet: make it, held by this replica. Another replica making it at the same time
    /// wins or loses by the API server's 409.
    async fn create(&self, now: SystemTime) -> Result<Look, retry::ApiError> {
        let lease = Lease {
            metadata: ObjectMeta { name: Some(LEASE_NAME.into()), ..Default::default() },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(self.timing.lease.as_secs() as i32),
                acquire_time: micro_time(now),
                renew_time: micro_time(now),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        match retry::once(self.leases.create(&PostParams::default(), &lease)).await {
            Ok(written) => {
                *self.held.lock().expect("lease lock") = Some(written);
                Ok(Look::Leading)
            }
            Err(e) if is_conflict(&e) => Ok(Look::Following { holder: None, left: Duration::ZERO }),
            Err(e) => Err(e),
        }
    }

    /// Give the Lease up (graceful shutdown, after the leader's work stopped): clear the holder,
    /// so another replica takes over at its next look instead of after the lease runs out.
    /// Written with the version this replica last wrote: if anyone wrote since, it is not ours.
    pub(crate) async fn release(&self) {
        self.leading.send_replace(false);
        let Some(mut lease) = self.held.lock().expect("lease lock").take() else { return };
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = None;
            spec.acquire_time = None;
            spec.renew_time = None;
        }
        match retry::once(self.leases.replace(LEASE_NAME, &PostParams::default(), &lease)).await {
            Ok(_) => tracing::info!(identity = %self.identity, "leader Lease released"),
            Err(e) if is_conflict(&e) => {}
            Err(e) => tracing::warn!(error = %e.detail(), "could not release the leader Lease; it runs out on its own"),
        }
    }
}

fn is_conflict(e: &retry::ApiError) -> bool {
    matches!(e, retry::ApiError::Kube(kube::Error::Api(s)) if s.is_conflict() || s.is_already_exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(10);

    #[test]
    fn a_lease_runs_out_only_once_its_duration_has_passed_since_the_last_renewal() {
        let renewed = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let at = |secs: f64| renewed + Duration::from_secs_f64(secs);
        assert!(!expired(Some(renewed), LEASE, at(0.0)), "just renewed");
        assert!(!expired(Some(renewed), LEASE, at(9.9)));
        assert!(!expired(Some(renewed), LEASE, at(10.0)), "exactly at the end it is still held");
        assert!(expired(Some(renewed), LEASE, at(10.1)));
        assert!(expired(None, LEASE, at(0.0)), "a Lease never renewed is free");
        // A renewal in the future (the holder's clock runs ahead) holds for longer, never less.
        assert!(!expired(Some(at(5.0)), LEASE, at(12.0)));
        assert_eq!(left(Some(renewed), LEASE, at(4.0)), Duration::from_secs(6));
        assert_eq!(left(Some(renewed), LEASE, at(11.0)), Duration::ZERO);
        assert_eq!(left(None, LEASE, at(0.0)), Duration::ZERO);
    }

    #[test]
    fn a_holder_stops_leading_before_anyone_else_may_take_over() {
        let t = ElectionTiming::default();
        assert!(t.renew_every * 3 <= t.renew_deadline + t.renew_every, "several renewals fit in the deadline");
        assert!(t.renew_deadline + t.renew_every < t.lease, "the holder steps down before its Lease runs out");
        assert!(t.lease + t.renew_every < Duration::from_secs(15), "a dead leader is replaced within 15 s");
    }

    #[test]
    fn micro_times_round_trip_to_the_microsecond() {
        let now = SystemTime::now();
        let back = SystemTime::from(micro_time(now).unwrap().0);
        let diff = now.duration_since(back).or_else(|e| Ok::<_, ()>(e.duration())).unwrap();
        assert!(diff < Duration::from_millis(1));
    }

    #[tokio::test]
    async fn while_leading_runs_a_term_per_leadership_and_ends_it_when_lost() {
        let (tx, rx) = watch::channel(false);
        let leadership = Leadership { leading: rx, _always: None, elected: true };
        let stop = CancellationToken::new();
        let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
        let runner = tokio::spawn(while_leading(leadership, stop.clone(), move |term: CancellationToken| {
            let events = events_tx.clone();
            async move {
                let _ = events.send("start");
                term.cancelled().await;
                let _ = events.send("end");
            }
        }));
        let mut next = async || tokio::time::timeout(Duration::from_secs(2), events.recv()).await.unwrap();
        tx.send_replace(true);
        assert_eq!(next().await, Some("start"));
        tx.send_replace(false);
        assert_eq!(next().await, Some("end"));
        tx.send_replace(true);
        assert_eq!(next().await, Some("start"), "a second term on regaining leadership");
        stop.cancel();
        assert_eq!(next().await, Some("end"), "shutdown ends the term");
        tokio::time::timeout(Duration::from_secs(2), runner).await.unwrap().unwrap();
    }
}
