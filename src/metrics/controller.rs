//! The custom-resource controller's families: reconciles by resource kind and outcome, the
//! errors among them, and how long a reconcile takes. The controller records through
//! [`super::Metrics::reconciled`]; every label set is written from the start, so the families
//! read 0 before (or without) a controller.

use std::time::Duration;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::{Registry, Unit},
};

use super::label_values;

label_values! {
    /// Which kind of resource a reconcile was for.
    pub(crate) enum ResourceKind {
        McpServer => "mcpserver",
        McpPool => "mcppool",
    }
}

label_values! {
    /// How a reconcile ended.
    pub(crate) enum ReconcileOutcome {
        /// The resource's server matches its spec (nothing to do, or done).
        Success => "success",
        /// It waits for something (a pool slot, readiness) and is looked at again later.
        Requeued => "requeued",
        /// It failed; the controller retries with backoff.
        Error => "error",
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReconcileLabels {
    kind: ResourceKind,
    outcome: ReconcileOutcome,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: ResourceKind,
}

const RECONCILE_BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// See the module docs. Cloning shares the families.
#[derive(Debug, Clone)]
pub(crate) struct ControllerMetrics {
    reconciles: Family<ReconcileLabels, Counter>,
    errors: Family<KindLabels, Counter>,
    duration: Family<KindLabels, Histogram>,
}

impl Default for ControllerMetrics {
    fn default() -> Self {
        let m = ControllerMetrics {
            reconciles: Family::default(),
            errors: Family::default(),
            duration: Family::new_with_constructor(|| Histogram::new(RECONCILE_BUCKETS)),
        };
        for &kind in ResourceKind::ALL {
            for &outcome in ReconcileOutcome::ALL {
                let _ = m.reconciles.get_or_create(&ReconcileLabels { kind, outcome });
            }
            let _ = m.errors.get_or_create(&KindLabels { kind });
            let _ = m.duration.get_or_create(&KindLabels { kind });
        }
        m
    }
}

impl ControllerMetrics {
    pub(super) fn register(&self, r: &mut Registry) {
        r.register(
            "controller_reconciles",
            "Reconciles of MCPServer and MCPPool resources by kind and outcome",
            self.reconciles.clone(),
        );
        r.register("controller_reconcile_errors", "Reconciles that ended in an error, by kind", self.errors.clone());
        r.register_with_unit(
            "controller_reconcile",
            "Time one reconcile took, by kind",
            Unit::Seconds,
            self.duration.clone(),
        );
    }

    pub(super) fn reconciled(&self, kind: ResourceKind, outcome: ReconcileOutcome, took: Duration) {
        self.reconciles.get_or_create(&ReconcileLabels { kind, outcome }).inc();
        if outcome == ReconcileOutcome::Error {
            self.errors.get_or_create(&KindLabels { kind }).inc();
        }
        self.duration.get_or_create(&KindLabels { kind }).observe(took.as_secs_f64());
    }
}
