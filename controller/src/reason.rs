//! Why the controller tells people something. Each [`Reason`] owns its Event reason (what
//! `kubectl describe` shows), its severity, and what it counts in the metrics, so the three
//! never disagree and no string is matched again to find out what happened.

use herald_shell::events::{Note, Severity};

use crate::metrics::{Metrics, ReasonLabels};

/// What an Event of the controller reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Reason {
    /// A Service was given addresses (or new ones).
    IpAllocated,
    /// A Service Herald no longer serves gave its addresses back.
    IpReleased,
    /// A Service's spec or annotations cannot be used.
    InvalidService,
    /// No address could be given (pool full, requested address taken, ...).
    AllocationFailed,
    /// An address in a Service's status could not be kept when state was rebuilt.
    AllocationConflict,
    /// A Service holds an address that no pool contains any more.
    IpOutsidePools,
    /// An IPAddressPool's spec cannot be used.
    InvalidPool,
    /// A BGPPeer, BFDProfile or advertisement is not (wholly) in effect; the message says why.
    NotInEffect,
    /// A configuration object that was not in effect is again.
    InEffect,
}

impl Reason {
    /// The Event's `reason`, PascalCase as Kubernetes' own.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Reason::IpAllocated => "IPAllocated",
            Reason::IpReleased => "IPReleased",
            Reason::InvalidService => "InvalidService",
            Reason::AllocationFailed => "AllocationFailed",
            Reason::AllocationConflict => "AllocationConflict",
            Reason::IpOutsidePools => "IPOutsidePools",
            Reason::InvalidPool => "InvalidPool",
            Reason::NotInEffect => "NotInEffect",
            Reason::InEffect => "InEffect",
        }
    }

    pub(crate) fn severity(self) -> Severity {
        match self {
            Reason::IpAllocated | Reason::IpReleased | Reason::InEffect => Severity::Normal,
            _ => Severity::Warning,
        }
    }

    /// The Event of this reason with `message`.
    pub(crate) fn note(self, message: impl Into<String>) -> Note {
        Note {
            severity: self.severity(),
            reason: self.as_str().to_owned(),
            message: message.into(),
        }
    }

    /// Counts one occurrence: an allocation, a release, or a failure by reason.
    pub(crate) fn count(self, metrics: &Metrics) {
        match self {
            Reason::IpAllocated => metrics.allocations.inc(),
            Reason::IpReleased => metrics.releases.inc(),
            // Told, not failures: the configuration_not_in_effect gauge counts them.
            Reason::InEffect | Reason::NotInEffect => 0,
            failure => metrics
                .failures
                .get_or_create(&ReasonLabels {
                    reason: failure.as_str().to_owned(),
                })
                .inc(),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allocations_releases_and_configuration_in_effect_are_normal_events() {
        assert_eq!(Reason::IpAllocated.note("x").reason, "IPAllocated");
        assert!(matches!(Reason::IpReleased.severity(), Severity::Normal));
        assert!(matches!(Reason::InEffect.severity(), Severity::Normal));
        for reason in [
            Reason::InvalidService,
            Reason::AllocationFailed,
            Reason::AllocationConflict,
            Reason::IpOutsidePools,
            Reason::InvalidPool,
            Reason::NotInEffect,
        ] {
            assert!(matches!(reason.severity(), Severity::Warning), "{reason:?}");
        }
    }

    #[test]
    fn each_reason_counts_where_its_metric_says() {
        let (metrics, _) = Metrics::new();
        Reason::IpAllocated.count(&metrics);
        Reason::IpReleased.count(&metrics);
        Reason::AllocationFailed.count(&metrics);
        Reason::AllocationFailed.count(&metrics);
        assert_eq!(metrics.allocations.get(), 1);
        assert_eq!(metrics.releases.get(), 1);
        let failed = ReasonLabels {
            reason: "AllocationFailed".into(),
        };
        assert_eq!(metrics.failures.get_or_create(&failed).get(), 2);
    }
}
