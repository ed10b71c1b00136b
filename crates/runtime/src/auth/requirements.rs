//! What each method or page needs from its caller: one table, so a new
//! RPC is closed (admin only) until someone opens it.

use super::Role;

/// What a method or page needs from its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requirement {
    /// Nothing (grpc.health, the sign-in pages).
    Public,
    /// Any authenticated caller (reflection).
    Authenticated,
    Role(Role),
    /// The role over the whole organization: what reports on every
    /// account at once (a service's counters) would tell a scoped caller
    /// about accounts it may not see.
    WholeOrg(Role),
    /// A service identity or an admin.
    ServiceOrAdmin,
    /// A service identity only.
    Service,
}

/// What `path` (a gRPC `/package.Service/Method` or an HTTP path) needs.
pub fn requirement(path: &str) -> Requirement {
    use Requirement::*;
    let (service, method) = match path.trim_start_matches('/').split_once('/') {
        Some((s, m)) => (s, m),
        None => ("", path),
    };
    match service {
        "grpc.health.v1.Health" => return Public,
        "grpc.reflection.v1.ServerReflection" | "grpc.reflection.v1alpha.ServerReflection" => {
            return Authenticated;
        }
        // Stats counts over every account (see the per-service Stats
        // below); the levers are for those who run the pipeline.
        "trailhound.common.v1.ControlService" if method == "Stats" => {
            return WholeOrg(crate::auth::Role::Viewer);
        }
        "trailhound.common.v1.ControlService" => return Role(crate::auth::Role::Operator),
        _ => {}
    }
    if service.starts_with("trailhound.") {
        return match method {
            // Alerts: a forged one would page people and spend budgets.
            "Notify" | "Analyze" | "AnalyzeBatch" => Service,
            // The pipeline's own hops.
            "PushEvents" | "PushCloudWatchLogs" | "Process" | "ProcessStream" | "Enrich"
            | "Observe" | "ObserveStream" | "Flush" => ServiceOrAdmin,
            // Late and quarantined events are about the pipeline's input
            // across every account: for those who run it.
            "CreateDetector" | "UpdateDetector" | "DeleteDetector" | "StartDetector"
            | "StopDetector" | "ListLateEvents" => Role(crate::auth::Role::Operator),
            "GetStats" | "Stats" => WholeOrg(crate::auth::Role::Viewer),
            "ListAnomalies" | "GetAnomaly" | "WatchAnomalies" | "GetUsageSeries"
            | "ListDetectors" | "GetDetector" | "GetInsight" | "ListInsights" | "WatchInsights"
            | "Ask" | "GetAccount" | "ListAccounts" | "ListDeliveries" | "ListChannels"
            | "GetSystemHealth" | "WatchSystemHealth" => Role(crate::auth::Role::Viewer),
            _ => Role(crate::auth::Role::Admin),
        };
    }
    // HTTP routes sharing the ports.
    if path.starts_with("/auth/") || path == "/favicon.ico" {
        return Public;
    }
    // Prometheus figures are every account's activity summed, as Stats.
    if path == "/metrics" {
        return WholeOrg(crate::auth::Role::Viewer);
    }
    Role(crate::auth::Role::Viewer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_has_a_deliberate_requirement() {
        use Requirement::*;
        assert_eq!(requirement("/grpc.health.v1.Health/Check"), Public);
        assert_eq!(
            requirement("/trailhound.common.v1.ControlService/SetServing"),
            Role(super::Role::Operator)
        );
        assert_eq!(
            requirement("/trailhound.notify.v1.NotifyService/Notify"),
            Service
        );
        assert_eq!(
            requirement("/trailhound.insights.v1.InsightsService/Analyze"),
            Service
        );
        assert_eq!(
            requirement("/trailhound.enrich.v1.EnrichService/Process"),
            ServiceOrAdmin
        );
        // The pipelined hops are the same hops.
        assert_eq!(
            requirement("/trailhound.enrich.v1.EnrichService/ProcessStream"),
            ServiceOrAdmin
        );
        assert_eq!(
            requirement("/trailhound.detect.v1.DetectService/ObserveStream"),
            ServiceOrAdmin
        );
        assert_eq!(
            requirement("/trailhound.detect.v1.DetectService/CreateDetector"),
            Role(super::Role::Operator)
        );
        assert_eq!(
            requirement("/trailhound.detect.v1.DetectService/ListAnomalies"),
            Role(super::Role::Viewer)
        );
        // A method nobody listed is closed to all but admins.
        assert_eq!(
            requirement("/trailhound.detect.v1.DetectService/DropEverything"),
            Role(super::Role::Admin)
        );
        assert_eq!(requirement("/auth/login"), Public);
        assert_eq!(requirement("/"), Role(super::Role::Viewer));
        assert_eq!(requirement("/metrics"), WholeOrg(super::Role::Viewer));
        assert_eq!(
            requirement("/trailhound.common.v1.ControlService/Stats"),
            WholeOrg(super::Role::Viewer)
        );
        assert_eq!(
            requirement("/trailhound.common.v1.ControlService/SetServing"),
            Role(super::Role::Operator)
        );
        assert_eq!(requirement("/health.json"), Role(super::Role::Viewer));
    }
}
