//! `GET /v1/monitoring` (the monitors' fresh reports as JSON) and the drift gauges of `/metrics`
//! (from the reports they publish each second).

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use crate::monitoring::{ALL, Report, WindowReport};
use crate::scoring::Scoring;

/// The champion's and the challenger's reports, after every row already answered is counted.
pub async fn page(State(state): State<Arc<AppState>>) -> Response {
    let scoring = &state.scoring;
    let champion = match scoring.served().monitor() {
        Some(m) => Some(m.report().await),
        None => None,
    };
    let challenger = match scoring
        .shadow()
        .and_then(|s| s.slot().load_full().monitor().cloned())
    {
        Some(m) => Some(m.report().await),
        None => None,
    };
    axum::Json(json!({
        "enabled": state.config.monitoring.enabled,
        "psi_floor": crate::monitoring::reference::PSI_FLOOR,
        "champion": champion.as_deref(),
        "challenger": challenger.as_deref(),
    }))
    .into_response()
}

/// Appends the drift gauges of the serving versions' monitors to `out`.
pub fn prometheus(out: &mut String, scoring: &Scoring) {
    let mut reports: Vec<Arc<Report>> = Vec::new();
    if let Some(m) = scoring.served().monitor() {
        reports.push(m.published());
    }
    if let Some(m) = scoring
        .shadow()
        .and_then(|s| s.slot().load_full().monitor().cloned())
    {
        reports.push(m.published());
    }
    let base = |r: &Report| {
        format!(
            "model=\"{}\",version=\"{}\",role=\"{}\"",
            super::metrics::label(&r.model),
            super::metrics::label(&r.version),
            r.role.as_str()
        )
    };
    header(
        out,
        "pixguard_monitoring_reference",
        "1 when the version's package carries a training reference (reference.json), else 0.",
    );
    for r in &reports {
        let v = u8::from(r.reference.is_some());
        let _ = writeln!(out, "pixguard_monitoring_reference{{{}}} {v}", base(r));
    }
    header(
        out,
        "pixguard_monitoring_rows",
        "Rows observed by the version's monitor in the window.",
    );
    for r in &reports {
        for w in windows(r) {
            let _ = writeln!(
                out,
                "pixguard_monitoring_rows{{{},window=\"{}\"}} {}",
                base(r),
                w.window,
                w.rows
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP pixguard_monitoring_dropped_rows_total Rows computed but not observed (the monitor's queue was full).\n# TYPE pixguard_monitoring_dropped_rows_total counter"
    );
    for r in &reports {
        let _ = writeln!(
            out,
            "pixguard_monitoring_dropped_rows_total{{{}}} {}",
            base(r),
            r.dropped_rows
        );
    }
    header(
        out,
        "pixguard_feature_psi",
        "Population stability index of a model feature in the window against the training reference.",
    );
    for r in &reports {
        for w in windows(r) {
            for f in &w.features {
                if let Some(psi) = f.psi {
                    let _ = writeln!(
                        out,
                        "pixguard_feature_psi{{{},window=\"{}\",feature=\"{}\"}} {psi}",
                        base(r),
                        w.window,
                        super::metrics::label(&f.name)
                    );
                }
            }
        }
    }
    header(
        out,
        "pixguard_score_psi",
        "Population stability index of the score in the window against the training reference.",
    );
    for r in &reports {
        for w in windows(r) {
            if let Some(psi) = w.score.as_ref().and_then(|s| s.psi) {
                let _ = writeln!(
                    out,
                    "pixguard_score_psi{{{},window=\"{}\"}} {psi}",
                    base(r),
                    w.window
                );
            }
        }
    }
    header(
        out,
        "pixguard_decision_ratio",
        "Share of the window's rows given each decision.",
    );
    for r in &reports {
        for w in windows(r) {
            for (d, ratio) in &w.decisions {
                if let Some(ratio) = ratio {
                    let _ = writeln!(
                        out,
                        "pixguard_decision_ratio{{{},window=\"{}\",decision=\"{d}\"}} {ratio}",
                        base(r),
                        w.window
                    );
                }
            }
        }
    }
    header(
        out,
        "pixguard_decision_ratio_reference",
        "Share of the training reference's rows given each decision (under the thresholds of its package).",
    );
    for r in &reports {
        if let Some(reference) = &r.reference {
            for (d, ratio) in &reference.decisions {
                let _ = writeln!(
                    out,
                    "pixguard_decision_ratio_reference{{{},decision=\"{}\"}} {ratio}",
                    base(r),
                    super::metrics::label(d)
                );
            }
        }
    }
}

/// The windows gauges are exported for: `all` only grows, a rule over it would never recover.
fn windows(r: &Report) -> impl Iterator<Item = &WindowReport> {
    r.windows.iter().filter(|w| w.window != ALL)
}

fn header(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
}
