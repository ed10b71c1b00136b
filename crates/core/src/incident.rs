//! Incidents: consecutive anomalous windows of one entity, as insights
//! groups them (an insight's `incident_id` is the first window's anomaly).
//! One grouping and one order for everything that lists incidents — the
//! dashboard, the demo and Ask — whether it holds insights as domain
//! values or as protobuf messages.

use crate::insight::Insight;

/// What grouping needs of an insight.
pub trait Member {
    /// The incident it belongs to (its own id when it has none).
    fn incident_key(&self) -> &str;
    /// Its severity as a number that orders like the severity.
    fn severity_rank(&self) -> i32;
    /// Start of its anomalous window, ms (i64::MIN when unknown).
    fn window_start_ms(&self) -> i64;
    fn usd_per_hour(&self) -> f64;
}

/// One incident of a list of insights.
#[derive(Debug)]
pub struct Incident<'a, T> {
    /// The most severe window (then the costliest, then the latest).
    pub worst: &'a T,
    /// The earliest window: what opened the alert.
    pub first: &'a T,
    pub first_ms: i64,
    pub last_ms: i64,
    /// Every window listed, in list order.
    pub windows: Vec<&'a T>,
    pub peak_usd_per_hour: f64,
}

/// `list` grouped by incident, most severe first, then the costliest peak,
/// then the most recent: a burst that started the alerts stays on top
/// however many windows a later, milder incident adds.
pub fn incidents<T: Member>(list: &[T]) -> Vec<Incident<'_, T>> {
    let mut by_key: std::collections::BTreeMap<&str, Incident<'_, T>> = Default::default();
    for i in list {
        let start = i.window_start_ms();
        let row = by_key.entry(i.incident_key()).or_insert(Incident {
            worst: i,
            first: i,
            first_ms: start,
            last_ms: start,
            windows: Vec::new(),
            peak_usd_per_hour: 0.0,
        });
        row.windows.push(i);
        row.peak_usd_per_hour = row.peak_usd_per_hour.max(i.usd_per_hour());
        if start < row.first_ms {
            row.first_ms = start;
            row.first = i;
        }
        row.last_ms = row.last_ms.max(start);
        let w = row.worst;
        let key = |m: &T| (m.severity_rank(), m.usd_per_hour(), m.window_start_ms());
        if key(i).partial_cmp(&key(w)) == Some(std::cmp::Ordering::Greater) {
            row.worst = i;
        }
    }
    let mut rows: Vec<Incident<'_, T>> = by_key.into_values().collect();
    rows.sort_by(|a, b| {
        b.worst
            .severity_rank()
            .cmp(&a.worst.severity_rank())
            .then(b.peak_usd_per_hour.total_cmp(&a.peak_usd_per_hour))
            .then(b.last_ms.cmp(&a.last_ms))
    });
    rows
}

/// An insight's incident: the one it names, else its own id.
fn own_or_incident<'a>(id: &'a str, incident_id: &'a str) -> &'a str {
    if incident_id.is_empty() {
        id
    } else {
        incident_id
    }
}

impl Member for Insight {
    fn incident_key(&self) -> &str {
        own_or_incident(&self.id, &self.incident_id)
    }
    fn severity_rank(&self) -> i32 {
        self.severity as i32
    }
    fn window_start_ms(&self) -> i64 {
        self.anomaly.window_start.timestamp_millis()
    }
    fn usd_per_hour(&self) -> f64 {
        self.cost.usd_per_hour
    }
}

impl Member for trailhound_proto::insights::v1::Insight {
    fn incident_key(&self) -> &str {
        own_or_incident(&self.id, &self.incident_id)
    }
    fn severity_rank(&self) -> i32 {
        self.severity
    }
    fn window_start_ms(&self) -> i64 {
        self.anomaly
            .as_ref()
            .and_then(|a| a.window_start.as_ref())
            .map(trailhound_proto::time::to_millis)
            .unwrap_or(i64::MIN)
    }
    fn usd_per_hour(&self) -> f64 {
        self.cost.as_ref().map_or(0.0, |c| c.usd_per_hour)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct W(&'static str, i32, i64, f64);

    impl Member for W {
        fn incident_key(&self) -> &str {
            self.0
        }
        fn severity_rank(&self) -> i32 {
            self.1
        }
        fn window_start_ms(&self) -> i64 {
            self.2
        }
        fn usd_per_hour(&self) -> f64 {
            self.3
        }
    }

    #[test]
    fn windows_group_and_the_most_severe_incident_comes_first() {
        // A short critical burst, then a long milder drop with one high
        // window, then a high storm that costs something.
        let mut list = vec![W("burst", 4, 10, 700.0)];
        for t in 11..40 {
            list.push(W("drop", 2, t, 0.0));
        }
        list.push(W("drop", 3, 40, 0.0));
        list.push(W("storm", 3, 50, 0.5));
        list.push(W("storm", 3, 51, 0.9));
        list.reverse();
        let rows = incidents(&list);
        let order: Vec<&str> = rows.iter().map(|r| r.worst.0).collect();
        assert_eq!(order, ["burst", "storm", "drop"]);
        let drop = &rows[2];
        assert_eq!(drop.windows.len(), 30);
        assert_eq!((drop.worst.1, drop.worst.2), (3, 40));
        assert_eq!((drop.first_ms, drop.last_ms), (11, 40));
        assert_eq!(drop.first.2, 11);
        let storm = &rows[1];
        assert_eq!(storm.peak_usd_per_hour, 0.9);
        // Equal severity: the costlier window is the worst.
        assert_eq!(storm.worst.2, 51);
    }
}
