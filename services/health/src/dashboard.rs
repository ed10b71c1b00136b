//! The dashboard: one server-rendered HTML page on health's port, the
//! first thing a person opens. System status and per-service figures, lag
//! and events per second, incidents with severity, account and cost (from
//! insights; one row per incident, most severe first), and one entity's usage series against its
//! expected band with anomalies marked, as inline SVG (from detect). No
//! JavaScript: a meta refresh reloads it.
//!
//! Every outside call is bounded by a timeout and a failure is shown in
//! place, so the page renders whatever is down. `/metrics` (Prometheus
//! text for every watched service plus health's own figures) and
//! `/health.json` live here too.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse};
use serde::Deserialize;
use trailhound_proto::detect::v1 as dpb;
use trailhound_proto::detect::v1::detect_service_client::DetectServiceClient;
use trailhound_proto::health::v1 as pb;

use crate::HealthError;
use trailhound_proto::insights::v1 as ipb;
use trailhound_proto::insights::v1::insights_service_client::InsightsServiceClient;

use trailhound_core::incident::incidents;

use crate::alert::label;
pub use crate::html::esc;
use crate::monitor::Monitor;

const FETCH_TIMEOUT: Duration = Duration::from_secs(3);

/// Which entity's series to plot; default the newest anomaly's.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct EntityQuery {
    pub account: Option<String>,
    pub region: Option<String>,
    pub detector: Option<String>,
}

/// The HTTP routes: `/`, `/metrics`, `/health.json`.
pub fn router(monitor: Arc<Monitor>) -> axum::Router {
    axum::Router::new()
        .route("/", axum::routing::get(page))
        .route("/metrics", axum::routing::get(metrics))
        .route("/health.json", axum::routing::get(health_json))
        .with_state(monitor)
        .merge(crate::signin::router())
}

async fn metrics(State(m): State<Arc<Monitor>>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            trailhound_runtime::metrics::CONTENT_TYPE,
        )],
        render_metrics(&m.current(), m.service_stats()),
    )
}

/// Every watched service's figures as last seen, health's own, and one
/// status gauge per service (1 SERVING, 2 DEGRADED, 3 NOT_SERVING).
pub fn render_metrics(
    h: &pb::SystemHealth,
    own: trailhound_proto::common::v1::ServiceStats,
) -> String {
    let mut all: Vec<_> = h.services.iter().filter_map(|s| s.stats.clone()).collect();
    all.push(own);
    let mut out = trailhound_runtime::metrics::render(&all);
    out.push_str("# HELP trailhound_health_status Status of a service as health sees it: 1 SERVING, 2 DEGRADED, 3 NOT_SERVING (0 unknown).\n# TYPE trailhound_health_status gauge\n");
    for s in &h.services {
        let _ = writeln!(
            out,
            "trailhound_health_status{{service=\"{}\"}} {}",
            s.name.replace(['"', '\\', '\n'], "_"),
            s.status
        );
    }
    let _ = writeln!(
        out,
        "trailhound_health_status{{service=\"system\"}} {}",
        h.status
    );
    out.push_str("# HELP trailhound_health_error_rate Errors per event in over the last check interval.\n# TYPE trailhound_health_error_rate gauge\n");
    for s in &h.services {
        let v = if s.error_rate.is_finite() {
            s.error_rate
        } else {
            0.0
        };
        let _ = writeln!(
            out,
            "trailhound_health_error_rate{{service=\"{}\"}} {v}",
            s.name.replace(['"', '\\', '\n'], "_"),
        );
    }
    out
}

async fn health_json(
    State(m): State<Arc<Monitor>>,
    principal: Option<axum::Extension<trailhound_runtime::auth::Principal>>,
) -> impl IntoResponse {
    let scope = principal.map(|p| p.0.scope).unwrap_or_default();
    let h = crate::for_scope(m.current(), &scope);
    let services: Vec<serde_json::Value> = h
        .services
        .iter()
        .map(|s| {
            serde_json::json!({
                "name": s.name,
                "status": label(s.status()),
                "reasons": s.reasons,
                "lag_seconds": s.stats.as_ref().map(|x| x.lag_seconds),
                "events_in_per_second": s.stats.as_ref().map(|x| x.events_in_per_second),
            })
        })
        .collect();
    axum::Json(serde_json::json!({
        "status": label(h.status()),
        "reasons": h.reasons,
        "services": services,
    }))
}

/// Whether a caller with `scope` may see insight `i` (pb form).
fn visible(scope: &trailhound_core::Scope, i: &ipb::Insight) -> bool {
    if scope.is_unrestricted() {
        return true;
    }
    let Some(a) = i.anomaly.as_ref() else {
        return false;
    };
    let (ou, env) = a
        .account
        .as_ref()
        .map(|m| {
            (
                m.ou_path.clone(),
                trailhound_core::convert::environment_from_pb(m.environment),
            )
        })
        .unwrap_or((Vec::new(), trailhound_core::Environment::Unknown));
    scope.allows(&a.account_id, &ou, env)
}

async fn page(
    State(m): State<Arc<Monitor>>,
    principal: Option<axum::Extension<trailhound_runtime::auth::Principal>>,
    Query(q): Query<EntityQuery>,
) -> Html<String> {
    let cfg = m.config();
    // Health reads with its own service identity; the page shows only the
    // signed-in person's scope, so the filter is applied here, where the
    // page reads the data.
    let who = principal
        .as_ref()
        .filter(|p| p.0.kind == trailhound_runtime::auth::PrincipalKind::User)
        .map(|p| p.0.display());
    let scope = principal.map(|p| p.0.scope).unwrap_or_default();
    let h = crate::for_scope(m.current(), &scope);
    let insights = match cfg.targets.get("insights") {
        // A chosen account narrows the list to it.
        // Rows are incidents, each of one or more windows: fetch the most
        // the service pages at once and group them.
        Some(ep) => fetch_insights(ep, 100, q.account.as_deref(), &scope)
            .await
            .map(|mut l| {
                l.retain(|i| visible(&scope, i));
                l
            }),
        None => Err(HealthError::NotConfigured("insights")),
    };
    // A chosen account outside the scope charts nothing, as if unknown.
    let account_visible = |account: &str| {
        scope.is_unrestricted()
            || insights.as_ref().is_ok_and(|l| {
                l.iter()
                    .any(|i| i.anomaly.as_ref().is_some_and(|a| a.account_id == account))
            })
    };
    // The entity: the query's, else the top incident's.
    let newest = insights
        .as_ref()
        .ok()
        .and_then(|l| incidents(l).into_iter().next())
        .and_then(|i| i.worst.anomaly.clone());
    let entity = match (&q.account, &q.region) {
        (Some(a), Some(r)) => Some((
            q.detector
                .clone()
                .unwrap_or_else(|| cfg.dashboard_detector.clone()),
            a.clone(),
            r.clone(),
        )),
        _ => newest.map(|a| (a.detector, a.account_id, a.region)),
    };
    let entity = entity.filter(|(_, a, _)| account_visible(a));
    let series = match (
        &entity,
        entity.as_ref().and_then(|(_, a, _)| detect_for(cfg, a)),
    ) {
        (Some((d, a, r)), Some(ep)) => Some(fetch_series(ep, d, a, r, &scope).await),
        (Some(_), None) => Some(Err(HealthError::NotConfigured("detect"))),
        (None, _) => None,
    };
    let mut html = render_page(
        &h,
        &insights,
        entity.as_ref(),
        series.as_ref(),
        q.account.as_deref(),
        cfg.poll_interval,
        cfg.dashboard_anomalies as usize,
    );
    if let Some(who) = who
        && let Some(at) = html.find("<body>")
    {
        html.insert_str(
            at + "<body>".len(),
            &format!(
                "<p class=\"reasons\" id=\"signed-in\">Signed in as {} · scope {} · <a href=\"/auth/logout\">sign out</a></p>",
                esc(&who),
                esc(&scope.describe())
            ),
        );
    }
    Html(html)
}

fn ts_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default()
}

/// A traced channel to `service` at `endpoint` that gives up connecting
/// after [`FETCH_TIMEOUT`].
fn fetch_channel(
    endpoint: &str,
    service: &'static str,
) -> Result<trailhound_runtime::TracedChannel, HealthError> {
    Ok(trailhound_runtime::client::traced(
        &tonic::transport::Endpoint::from_shared(endpoint.to_string())
            .map_err(|e| refused(service, e))?
            .connect_timeout(FETCH_TIMEOUT),
    ))
}

/// The newest insights, read for a viewer with `scope`: insights filters
/// them (and what they say of correlated accounts) by it.
async fn fetch_insights(
    endpoint: &str,
    n: u32,
    account: Option<&str>,
    scope: &trailhound_core::Scope,
) -> Result<Vec<ipb::Insight>, HealthError> {
    let fut = async {
        let ch = fetch_channel(endpoint, "insights")?;
        let mut req = tonic::Request::new(ipb::ListInsightsRequest {
            page_size: n.clamp(1, 100),
            account_id: account
                .filter(|a| trailhound_core::is_account_id(a))
                .unwrap_or_default()
                .to_string(),
            ..Default::default()
        });
        trailhound_runtime::security::on_behalf(&mut req, scope)
            .map_err(|e| refused("insights", e))?;
        InsightsServiceClient::new(ch)
            .list_insights(req)
            .await
            .map(|r| r.into_inner().insights)
            .map_err(|s| refused("insights", s.message()))
    };
    tokio::time::timeout(FETCH_TIMEOUT, fut)
        .await
        .unwrap_or(Err(HealthError::Late("insights")))
}

/// The detect replica holding `account`'s series: the `detect` target,
/// or with sharded detect (`--shard I/N`) the targets `detect-0` …
/// `detect-<N-1>`, one per replica, the account's owner among them.
fn detect_for<'a>(cfg: &'a crate::config::HealthConfig, account: &str) -> Option<&'a String> {
    if let Some(one) = cfg.targets.get("detect") {
        return Some(one);
    }
    let n = (0..)
        .take_while(|i| cfg.targets.contains_key(&format!("detect-{i}")))
        .count() as u32;
    if n == 0 {
        return None;
    }
    cfg.targets
        .get(&format!("detect-{}", trailhound_core::shard_of(account, n)))
}

/// An entity's series, read for a viewer with `scope` (a series summed
/// over every account is not theirs to see).
async fn fetch_series(
    endpoint: &str,
    detector: &str,
    account: &str,
    region: &str,
    scope: &trailhound_core::Scope,
) -> Result<dpb::GetUsageSeriesResponse, HealthError> {
    let fut = async {
        let ch = fetch_channel(endpoint, "detect")?;
        let mut req = tonic::Request::new(dpb::GetUsageSeriesRequest {
            detector: detector.to_string(),
            account_id: account.to_string(),
            region: region.to_string(),
            ..Default::default()
        });
        trailhound_runtime::security::on_behalf(&mut req, scope)
            .map_err(|e| refused("detect", e))?;
        DetectServiceClient::new(ch)
            .max_decoding_message_size(16 << 20)
            .get_usage_series(req)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| refused("detect", s.message()))
    };
    tokio::time::timeout(FETCH_TIMEOUT, fut)
        .await
        .unwrap_or(Err(HealthError::Late("detect")))
}

/// A refusal by `service`, or a request to it that could not be made.
fn refused(service: &'static str, e: impl std::fmt::Display) -> HealthError {
    HealthError::Refused {
        service,
        message: e.to_string(),
    }
}

fn status_class(s: pb::Status) -> &'static str {
    match s {
        pb::Status::Serving => "ok",
        pb::Status::Degraded => "warn",
        _ => "bad",
    }
}

fn severity_name(s: i32) -> &'static str {
    match ipb::Severity::try_from(s).unwrap_or(ipb::Severity::Unspecified) {
        ipb::Severity::Critical => "critical",
        ipb::Severity::High => "high",
        ipb::Severity::Medium => "medium",
        ipb::Severity::Low => "low",
        ipb::Severity::Unspecified => "unknown",
    }
}

fn ts(t: Option<&prost_types::Timestamp>) -> String {
    t.and_then(|t| {
        chrono::DateTime::from_timestamp_millis(trailhound_proto::time::to_millis(t))
            .map(|d| d.format("%Y-%m-%d %H:%M UTC").to_string())
    })
    .unwrap_or_default()
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222}\
h1{margin:0 0 .5rem}table{border-collapse:collapse;margin:.5rem 0 1.5rem}\
td,th{border-bottom:1px solid #ddd;padding:.3rem .6rem;text-align:left;font-size:.9rem}\
.ok{color:#0a7d32}.warn{color:#b26a00}.bad{color:#c0192c}\
.badge{font-weight:bold}.reasons{color:#555;font-size:.8rem}\
svg .band{fill:#cfe3ff}svg .expected{stroke:#5b8def;stroke-dasharray:4 3;fill:none}\
svg .actual{stroke:#222;stroke-width:1.5;fill:none}svg .anomaly{fill:#c0192c}";

/// The whole page. Pure, so it is tested without a server.
pub fn render_page(
    h: &pb::SystemHealth,
    insights: &Result<Vec<ipb::Insight>, HealthError>,
    entity: Option<&(String, String, String)>,
    series: Option<&Result<dpb::GetUsageSeriesResponse, HealthError>>,
    filtered: Option<&str>,
    refresh: Duration,
    rows: usize,
) -> String {
    let mut o = String::new();
    let refresh = refresh.as_secs().clamp(2, 60);
    let status = h.status();
    let _ = write!(
        o,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta http-equiv=\"refresh\" content=\"{refresh}\"><title>trailhound health: {}</title>\
<style>{STYLE}</style></head><body>",
        label(status)
    );
    let _ = write!(
        o,
        "<h1>trailhound <span id=\"system-status\" class=\"badge {}\">{}</span></h1>\
<p class=\"reasons\">updated {} · refreshes every {refresh}s</p>",
        status_class(status),
        label(status),
        esc(&ts(h.updated_at.as_ref()))
    );
    if !h.reasons.is_empty() {
        o.push_str("<ul class=\"reasons\">");
        for r in &h.reasons {
            let _ = write!(o, "<li>{}</li>", esc(r));
        }
        o.push_str("</ul>");
    }

    // Pipeline lag is the largest lag of any stage; no figures (withheld
    // or unanswered), no number.
    let lag = h
        .services
        .iter()
        .filter_map(|s| s.stats.as_ref().map(|x| x.lag_seconds))
        .reduce(f64::max)
        .map_or_else(|| "–".to_string(), |l| format!("{l:.1} s"));
    let ingest_rate = h
        .services
        .iter()
        .find(|s| s.name == "ingest")
        .and_then(|s| s.stats.as_ref())
        .map_or_else(
            || "–".to_string(),
            |s| format!("{:.1} events/s", s.events_in_per_second),
        );
    let _ = write!(
        o,
        "<p>Pipeline lag <b id=\"pipeline-lag\">{lag}</b> · \
ingest <b id=\"events-per-second\">{ingest_rate}</b></p>"
    );

    o.push_str("<h2>Services</h2><table id=\"services\"><tr><th>service</th><th>status</th><th>in/s</th><th>out/s</th><th>events in</th><th>lag s</th><th>batch p99 ms</th><th>errors</th><th>dead letters</th><th>cache hit</th><th>denied</th><th>check ms</th></tr>");
    for s in &h.services {
        let st = s.status();
        // Figures withheld (a scoped viewer: they count every account) or
        // not answered: dashes, not zeros.
        let figures = match &s.stats {
            None => "<td>–</td>".repeat(9),
            Some(d) => {
                let errors: u64 = d.errors.values().fold(0u64, |a, b| a.saturating_add(*b));
                format!(
                    "<td>{:.1}</td><td>{:.1}</td><td>{}</td><td>{:.1}</td><td>{:.0}</td><td>{errors}</td><td>{}</td><td>{}</td>\
<td class=\"denied\" title=\"refused as unauthenticated or not permitted; over a caller's limit\">{} / {}{insecure}</td>",
                    d.events_in_per_second,
                    d.events_out_per_second,
                    d.events_in,
                    d.lag_seconds,
                    d.batch_latency.map(|l| l.p99_ms).unwrap_or(0.0),
                    d.dead_letters,
                    d.cache_hit_rate
                        .map(|r| format!("{:.0}%", r * 100.0))
                        .unwrap_or_else(|| "–".into()),
                    d.denied_requests,
                    d.rate_limited_requests,
                    insecure = if d.insecure.is_empty() {
                        String::new()
                    } else {
                        format!("<div class=\"reasons sev-HIGH\">{}</div>", esc(&d.insecure))
                    },
                )
            }
        };
        let _ = write!(
            o,
            "<tr class=\"service\" data-service=\"{name}\"><td>{name}</td>\
<td><span class=\"badge {cls}\">{label}</span><div class=\"reasons\">{reasons}</div></td>\
{figures}<td>{:.0}</td></tr>",
            s.latency_ms,
            name = esc(&s.name),
            cls = status_class(st),
            label = label(st),
            reasons = esc(&s.reasons.join("; ")),
        );
    }
    o.push_str("</table>");

    match filtered {
        Some(a) => {
            let _ = write!(
                o,
                "<h2>Incidents in {} <a class=\"reasons\" href=\"/\">(all accounts)</a></h2>",
                esc(a)
            );
        }
        None => o.push_str("<h2>Incidents</h2>"),
    }
    match insights {
        Err(e) => {
            let _ = write!(
                o,
                "<p class=\"bad\" id=\"anomalies-error\">{}</p>",
                esc(&e.to_string())
            );
        }
        Ok(list) if list.is_empty() => o.push_str("<p id=\"anomalies-none\">None yet.</p>"),
        Ok(list) => {
            o.push_str("<p class=\"reasons\">Most severe first, then most recent; one row per incident (consecutive anomalous windows of one entity).</p>");
            o.push_str("<table id=\"anomalies\"><tr><th>when</th><th>windows</th><th>severity</th><th>account</th><th>region</th><th>detector</th><th>peak cost/h</th><th>summary</th></tr>");
            for row in incidents(list).iter().take(rows.max(1)) {
                let i = row.worst;
                let a = i.anomaly.clone().unwrap_or_default();
                let acct = a.account.as_ref().map(|m| m.name.as_str()).unwrap_or("");
                let href = format!(
                    "/?account={}&region={}&detector={}",
                    esc(&a.account_id),
                    esc(&a.region),
                    esc(&a.detector)
                );
                let when = if row.windows.len() > 1 {
                    format!("{} → {}", ts_ms(row.first_ms), ts_ms(row.last_ms))
                } else {
                    ts_ms(row.first_ms)
                };
                let ids: Vec<&str> = row
                    .windows
                    .iter()
                    .map(|w| w.anomaly.as_ref().map_or("", |a| a.id.as_str()))
                    .collect();
                let _ = write!(
                    o,
                    "<tr class=\"anomaly-row\" data-incident=\"{}\" data-anomalies=\"{}\"><td>{}</td><td>{}</td><td class=\"sev-{sev}\">{sev}</td>\
<td><a href=\"{href}\">{} {}</a></td><td>{}</td><td>{}</td><td>${:.2}</td><td>{}</td></tr>",
                    esc(if i.incident_id.is_empty() {
                        &i.id
                    } else {
                        &i.incident_id
                    }),
                    esc(&ids.join(" ")),
                    esc(&when),
                    row.windows.len(),
                    esc(&a.account_id),
                    esc(acct),
                    esc(&a.region),
                    esc(&a.detector),
                    row.peak_usd_per_hour,
                    esc(&i.summary),
                    sev = severity_name(i.severity),
                );
            }
            o.push_str("</table>");
        }
    }

    if let Some((d, a, r)) = entity {
        let _ = write!(o, "<h2>Usage: {} in {} ({})</h2>", esc(a), esc(r), esc(d));
        match series {
            Some(Ok(s)) => o.push_str(&render_chart(&s.points)),
            Some(Err(e)) => {
                let _ = write!(
                    o,
                    "<p class=\"bad\" id=\"series-error\">{}</p>",
                    esc(&e.to_string())
                );
            }
            None => {}
        }
    }

    if !h.recent_actions.is_empty() {
        o.push_str("<h2>Recovery actions</h2><table id=\"actions\"><tr><th>when</th><th>action</th><th>service</th><th>result</th><th>reason</th></tr>");
        for a in &h.recent_actions {
            let _ = write!(
                o,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td></tr>",
                esc(&ts(a.at.as_ref())),
                esc(&a.action),
                esc(&a.target),
                if a.ok { "ok" } else { "bad" },
                esc(&a.detail),
                esc(&a.reason)
            );
        }
        o.push_str("</table>");
    }
    o.push_str("<p class=\"reasons\"><a href=\"/metrics\">/metrics</a> · <a href=\"/health.json\">/health.json</a></p></body></html>");
    o
}

/// The series as SVG: the expected band, the expected line, the actual
/// line, and a red dot on each anomalous window.
pub fn render_chart(points: &[dpb::SeriesPoint]) -> String {
    const W: f64 = 760.0;
    const H: f64 = 220.0;
    const PAD: f64 = 30.0;
    let pts: Vec<&dpb::SeriesPoint> = points
        .iter()
        .filter(|p| p.actual.is_finite() && p.lower.is_finite() && p.upper.is_finite())
        .collect();
    if pts.is_empty() {
        return "<p id=\"series-empty\">No windows for this entity yet.</p>".into();
    }
    let max = pts
        .iter()
        .map(|p| p.actual.max(p.upper).max(p.expected))
        .fold(1.0f64, f64::max);
    let n = pts.len().max(2) as f64 - 1.0;
    let x = |i: usize| PAD + (W - 2.0 * PAD) * i as f64 / n;
    let y = |v: f64| H - PAD - (H - 2.0 * PAD) * (v.max(0.0) / max);
    let line = |f: &dyn Fn(&dpb::SeriesPoint) -> f64| {
        let mut d = String::new();
        for (i, p) in pts.iter().enumerate() {
            let _ = write!(
                d,
                "{}{:.1},{:.1} ",
                if i == 0 { "M" } else { "L" },
                x(i),
                y(f(p))
            );
        }
        d.trim_end().to_string()
    };
    let mut band = String::new();
    for (i, p) in pts.iter().enumerate() {
        let _ = write!(band, "{:.1},{:.1} ", x(i), y(p.upper));
    }
    for (i, p) in pts.iter().enumerate().rev() {
        let _ = write!(band, "{:.1},{:.1} ", x(i), y(p.lower));
    }
    let mut o = format!(
        "<svg id=\"usage-chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"usage against expected band\">\
<polygon class=\"band\" points=\"{}\"/>\
<path class=\"expected\" d=\"{}\"/>\
<path id=\"series-actual\" class=\"actual\" d=\"{}\"/>",
        band.trim_end(),
        line(&|p| p.expected),
        line(&|p| p.actual),
    );
    for (i, p) in pts.iter().enumerate() {
        if p.grade > 0.0 && (p.actual > p.upper || p.actual < p.lower) {
            let _ = write!(
                o,
                "<circle class=\"anomaly\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\"><title>{}: {} (expected {:.1}, grade {:.2})</title></circle>",
                x(i),
                y(p.actual),
                esc(&ts(p.window_start.as_ref())),
                p.actual,
                p.expected,
                p.grade
            );
        }
    }
    let _ = write!(
        o,
        "<text x=\"{PAD}\" y=\"{:.0}\" font-size=\"11\">{}</text><text x=\"{:.0}\" y=\"{:.0}\" font-size=\"11\" text-anchor=\"end\">{}</text><text x=\"4\" y=\"{:.0}\" font-size=\"11\">{max:.0}</text></svg>",
        H - 8.0,
        esc(&ts(pts.first().and_then(|p| p.window_start.as_ref()))),
        W - PAD,
        H - 8.0,
        esc(&ts(pts.last().and_then(|p| p.window_start.as_ref()))),
        PAD
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_series_is_read_from_the_replica_that_owns_its_account() {
        let mut cfg = crate::config::HealthConfig::default();
        assert_eq!(
            detect_for(&cfg, "111111111111").map(String::as_str),
            Some("http://127.0.0.1:50053")
        );
        cfg.targets.remove("detect");
        assert_eq!(detect_for(&cfg, "111111111111"), None);
        for i in 0..3 {
            cfg.targets
                .insert(format!("detect-{i}"), format!("http://detect-{i}:50053"));
        }
        for account in ["111111111111", "222222222222", "123456789012"] {
            let owner = trailhound_core::shard_of(account, 3);
            assert_eq!(
                detect_for(&cfg, account).map(String::as_str),
                Some(format!("http://detect-{owner}:50053").as_str()),
                "{account}"
            );
        }
    }

    #[test]
    fn the_page_escapes_names_and_marks_anomalies() {
        let h = pb::SystemHealth {
            status: pb::Status::Degraded as i32,
            reasons: vec!["enrich NOT_SERVING: <gone>".into()],
            services: vec![pb::ServiceHealth {
                name: "enrich".into(),
                status: pb::Status::NotServing as i32,
                reasons: vec!["unreachable".into()],
                ..Default::default()
            }],
            ..Default::default()
        };
        let point = |v: f64, g: f64| dpb::SeriesPoint {
            actual: v,
            expected: 2.0,
            lower: 1.0,
            upper: 3.0,
            grade: g,
            ..Default::default()
        };
        let series = Ok(dpb::GetUsageSeriesResponse {
            points: vec![point(2.0, 0.0), point(40.0, 0.9), point(f64::NAN, 0.0)],
            ..Default::default()
        });
        let entity = (
            "ec2".to_string(),
            "111122223333".to_string(),
            "us-east-1".to_string(),
        );
        let html = render_page(
            &h,
            &Err(HealthError::Unreachable("connection refused".into())),
            Some(&entity),
            Some(&series),
            None,
            Duration::from_secs(5),
            20,
        );
        assert!(html.contains("&lt;gone&gt;") && !html.contains("<gone>"));
        assert!(html.contains("http-equiv=\"refresh\""));
        assert!(html.contains("id=\"series-actual\""));
        assert_eq!(html.matches("class=\"anomaly\"").count(), 1);
        assert!(html.contains("unreachable: connection refused"));
        assert!(html.contains("data-service=\"enrich\""));
    }

    #[test]
    fn incidents_group_windows_and_put_the_most_severe_first() {
        let insight = |incident: &str, window: i64, sev: ipb::Severity, cost: f64| ipb::Insight {
            id: format!("{incident}:{window}"),
            incident_id: incident.into(),
            severity: sev as i32,
            anomaly: Some(trailhound_proto::common::v1::Anomaly {
                id: format!("{incident}:{window}"),
                window_start: Some(trailhound_proto::time::from_millis(window * 600_000)),
                ..Default::default()
            }),
            cost: Some(ipb::CostImpact {
                usd_per_hour: cost,
                ..Default::default()
            }),
            ..Default::default()
        };
        // A long, milder incident after a short critical one, and a newer
        // high one; newest first, as insights lists them.
        let mut list = vec![insight("burst", 10, ipb::Severity::Critical, 700.0)];
        for w in 11..40 {
            list.push(insight("drop", w, ipb::Severity::Medium, 0.0));
        }
        list.push(insight("drop", 40, ipb::Severity::High, 0.0));
        list.push(insight("storm", 50, ipb::Severity::High, 0.5));
        list.push(insight("storm", 51, ipb::Severity::High, 0.9));
        list.reverse();
        let rows = incidents(&list);
        let order: Vec<&str> = rows.iter().map(|r| r.worst.incident_id.as_str()).collect();
        assert_eq!(order, ["burst", "storm", "drop"]);
        assert_eq!(rows[2].windows.len(), 30);
        assert_eq!(rows[2].worst.id, "drop:40");
        assert_eq!(rows[2].first_ms, 11 * 600_000);
        assert_eq!(rows[2].last_ms, 40 * 600_000);
        assert_eq!(rows[1].peak_usd_per_hour, 0.9);

        let html = render_page(
            &pb::SystemHealth::default(),
            &Ok(list.clone()),
            None,
            None,
            None,
            Duration::from_secs(5),
            2,
        );
        assert_eq!(html.matches("class=\"anomaly-row\"").count(), 2);
        assert!(html.contains("data-incident=\"burst\""), "{html}");
        assert!(!html.contains("data-incident=\"drop\""), "{html}");
        assert!(html.contains("$700.00"), "{html}");
    }

    /// Service figures count every account's events: a viewer scoped to
    /// some accounts sees statuses and reasons, and dashes for figures.
    #[test]
    fn a_scoped_viewer_sees_no_org_wide_figures() {
        let h = pb::SystemHealth {
            status: pb::Status::Serving as i32,
            services: vec![pb::ServiceHealth {
                name: "ingest".into(),
                status: 1,
                reasons: vec!["all good".into()],
                error_rate: 0.25,
                stats: Some(trailhound_proto::common::v1::ServiceStats {
                    service: "ingest".into(),
                    events_in: 987_654,
                    events_in_per_second: 4321.0,
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let render = |h: &pb::SystemHealth| {
            render_page(h, &Ok(vec![]), None, None, None, Duration::from_secs(5), 5)
        };
        let whole = crate::for_scope(h.clone(), &trailhound_core::Scope::all());
        assert_eq!(whole, h);
        let html = render(&whole);
        assert!(
            html.contains("987654") && html.contains("4321.0 events/s"),
            "{html}"
        );
        let sandbox = trailhound_core::Scope::union([trailhound_core::ScopeRule {
            ous: vec!["Root/Sandbox".into()],
            ..Default::default()
        }]);
        let seen = crate::for_scope(h, &sandbox);
        assert_eq!(seen.services[0].stats, None);
        assert_eq!(seen.services[0].error_rate, 0.0);
        assert_eq!(seen.services[0].reasons, ["all good"]);
        let html = render(&seen);
        assert!(!html.contains("987654") && !html.contains("4321"), "{html}");
        assert!(html.contains("id=\"events-per-second\">–<"), "{html}");
        assert!(html.contains("data-service=\"ingest\""));
    }

    #[test]
    fn metrics_include_status_per_service() {
        let h = pb::SystemHealth {
            status: pb::Status::Serving as i32,
            services: vec![pb::ServiceHealth {
                name: "ingest".into(),
                status: 1,
                stats: Some(trailhound_proto::common::v1::ServiceStats {
                    service: "ingest".into(),
                    events_in: 5,
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let text = render_metrics(&h, Default::default());
        assert!(text.contains("trailhound_health_status{service=\"ingest\"} 1"));
        assert!(text.contains("trailhound_events_in_total{service=\"ingest\"} 5"));
    }
}
