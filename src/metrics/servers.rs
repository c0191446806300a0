//! The families of the owner of servers' lives ([`crate::servers::Servers`]): what runs, by
//! phase; every create, delete, stop, start and wake by outcome; how long a create takes to
//! Ready; the warm pools' sizes.

use std::time::Duration;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};

use super::label_values;
use crate::{
    runtime::{Phase, RuntimeError, RuntimeKind, wake::WakeError},
    servers::{PoolStatus, ServersError},
};

label_values! {
    /// How a request about a server's life ended.
    pub(crate) enum Outcome {
        Success => "success",
        /// Refused before anything ran: a bad request, or a quota.
        Rejected => "rejected",
        /// No such server.
        NotFound => "not_found",
        /// The runtime could not do it (or the server could not become ready).
        Failed => "failed",
    }
}

impl Outcome {
    /// The outcome of a `Servers` call.
    pub(crate) fn of<T>(result: &Result<T, ServersError>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(ServersError::Spec(_) | ServersError::Quota { .. }) => Outcome::Rejected,
            Err(ServersError::Runtime(RuntimeError::NotFound(_))) => Outcome::NotFound,
            Err(_) => Outcome::Failed,
        }
    }

    /// The outcome of a wake on request.
    pub(crate) fn of_wake(result: &Result<(), WakeError>) -> Outcome {
        match result {
            Ok(()) => Outcome::Success,
            Err(WakeError::NotFound(_)) => Outcome::NotFound,
            Err(_) => Outcome::Failed,
        }
    }
}

label_values! {
    /// A server's phase as a label (the tool contract's spelling).
    pub(crate) enum PhaseLabel {
        Pending => "Pending",
        Starting => "Starting",
        Ready => "Ready",
        Failed => "Failed",
        Terminating => "Terminating",
        Succeeded => "Succeeded",
        Stopped => "Stopped",
    }
}

impl From<Phase> for PhaseLabel {
    fn from(phase: Phase) -> PhaseLabel {
        match phase {
            Phase::Pending => PhaseLabel::Pending,
            Phase::Starting => PhaseLabel::Starting,
            Phase::Ready => PhaseLabel::Ready,
            Phase::Failed => PhaseLabel::Failed,
            Phase::Terminating => PhaseLabel::Terminating,
            Phase::Succeeded => PhaseLabel::Succeeded,
            Phase::Stopped => PhaseLabel::Stopped,
        }
    }
}

label_values! {
    /// Where servers run.
    pub(crate) enum RuntimeLabel {
        Local => "local",
        Kubernetes => "kubernetes",
    }
}

impl From<RuntimeKind> for RuntimeLabel {
    fn from(kind: RuntimeKind) -> RuntimeLabel {
        match kind {
            RuntimeKind::Local => RuntimeLabel::Local,
            RuntimeKind::Kubernetes => RuntimeLabel::Kubernetes,
        }
    }
}

label_values! {
    /// The state of a warm-pool member.
    pub(crate) enum MemberState {
        Ready => "ready",
        Starting => "starting",
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: PhaseLabel,
    runtime: RuntimeLabel,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: Outcome,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    preset: String,
    state: MemberState,
}

/// Seconds from a create to Ready: a warm-pool hand-out takes milliseconds, a local `uvx` start
/// about a second, an image pull minutes.
const READY_BUCKETS: [f64; 13] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];

/// See the module docs. Cloning shares the families.
#[derive(Debug, Clone)]
pub(crate) struct ServerMetrics {
    servers: Family<PhaseLabels, Gauge>,
    creates: Family<OutcomeLabels, Counter>,
    deletes: Family<OutcomeLabels, Counter>,
    stops: Family<OutcomeLabels, Counter>,
    starts: Family<OutcomeLabels, Counter>,
    wakes: Family<OutcomeLabels, Counter>,
    create_ready: Histogram,
    pools: Family<PoolLabels, Gauge>,
}

impl Default for ServerMetrics {
    fn default() -> Self {
        let outcomes = || {
            let family = Family::<OutcomeLabels, Counter>::default();
            for &outcome in Outcome::ALL {
                let _ = family.get_or_create(&OutcomeLabels { outcome });
            }
            family
        };
        ServerMetrics {
            servers: Family::default(),
            creates: outcomes(),
            deletes: outcomes(),
            stops: outcomes(),
            starts: outcomes(),
            wakes: outcomes(),
            create_ready: Histogram::new(READY_BUCKETS),
            pools: Family::default(),
        }
    }
}

impl ServerMetrics {
    pub(super) fn register(&self, r: &mut Registry) {
        r.register(
            "servers",
            "Servers of this meta server by phase and runtime (warm-pool members not included)",
            self.servers.clone(),
        );
        r.register("creates", "create_mcp_server calls (and other creates) by outcome", self.creates.clone());
        r.register("deletes", "Deletes asked for (delete_mcp_server, the controller; not TTL expiries) by outcome; deleting what is gone is a success", self.deletes.clone());
        r.register("stops", "Stops (by a tool or the idle check) by outcome", self.stops.clone());
        r.register("starts", "start_mcp_server calls (starts of stopped servers) by outcome", self.starts.clone());
        r.register(
            "wakes",
            "Requests that reached a stopped or starting server and woke it, by outcome",
            self.wakes.clone(),
        );
        r.register_with_unit(
            "create_ready",
            "Time from a create to its server being Ready, for creates that ended Ready (waited for, or a warm-pool hand-out)",
            Unit::Seconds,
            self.create_ready.clone(),
        );
        r.register(
            "warm_pool_members",
            "Warm-pool members by preset and state (ready to hand out, starting)",
            self.pools.clone(),
        );
    }

    pub(crate) fn created(&self, outcome: Outcome) {
        self.creates.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    pub(crate) fn deleted(&self, outcome: Outcome) {
        self.deletes.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    pub(crate) fn stopped(&self, outcome: Outcome) {
        self.stops.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    pub(crate) fn started(&self, outcome: Outcome) {
        self.starts.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    pub(crate) fn woken(&self, outcome: Outcome) {
        self.wakes.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// A create ended Ready `took` after it was asked for.
    pub(crate) fn ready_after(&self, took: Duration) {
        self.create_ready.observe(took.as_secs_f64());
    }

    /// The servers of `runtime` now, one phase each; every phase is written (0 for none).
    pub(crate) fn census(&self, runtime: RuntimeLabel, phases: impl IntoIterator<Item = Phase>) {
        let mut counts = [0i64; PhaseLabel::ALL.len()];
        for phase in phases {
            let label = PhaseLabel::from(phase);
            if let Some(i) = PhaseLabel::ALL.iter().position(|p| *p == label) {
                counts[i] += 1;
            }
        }
        for (phase, n) in PhaseLabel::ALL.iter().zip(counts) {
            self.servers.get_or_create(&PhaseLabels { phase: *phase, runtime }).set(n);
        }
    }

    /// The warm pools' sizes now.
    pub(crate) fn pools(&self, pools: &[PoolStatus]) {
        for pool in pools {
            for (state, n) in [(MemberState::Ready, pool.ready), (MemberState::Starting, pool.starting)] {
                let labels = PoolLabels { preset: pool.preset.clone(), state };
                self.pools.get_or_create(&labels).set(n as i64);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_census_writes_every_phase_and_replaces_the_last_one() {
        let m = ServerMetrics::default();
        m.census(RuntimeLabel::Local, [Phase::Ready, Phase::Ready, Phase::Stopped]);
        m.census(RuntimeLabel::Local, [Phase::Ready]);
        let of = |phase| m.servers.get_or_create(&PhaseLabels { phase, runtime: RuntimeLabel::Local }).get();
        assert_eq!((of(PhaseLabel::Ready), of(PhaseLabel::Stopped), of(PhaseLabel::Pending)), (1, 0, 0));
    }

    #[test]
    fn each_pool_shows_its_ready_and_starting_members() {
        let m = ServerMetrics::default();
        let pool =
            PoolStatus { preset: "time".into(), size: 3, ready: 2, starting: 1, handed_out: 0, last_error: None };
        m.pools(&[pool]);
        let of = |state| m.pools.get_or_create(&PoolLabels { preset: "time".into(), state }).get();
        assert_eq!((of(MemberState::Ready), of(MemberState::Starting)), (2, 1));
    }

    #[test]
    fn refusals_and_missing_servers_are_told_apart_from_failures() {
        let refused = ServersError::Spec(crate::spec::SpecError::Args("no".into()));
        assert_eq!(Outcome::of::<()>(&Err(refused)), Outcome::Rejected);
        let missing = ServersError::Runtime(RuntimeError::NotFound("x".into()));
        assert_eq!(Outcome::of::<()>(&Err(missing)), Outcome::NotFound);
        assert_eq!(Outcome::of::<()>(&Err(ServersError::Runtime(RuntimeError::ShuttingDown))), Outcome::Failed);
        assert_eq!(Outcome::of_wake(&Err(WakeError::Unavailable("no".into()))), Outcome::Failed);
    }
}
