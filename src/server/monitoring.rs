//! `GET /v1/monitoring` (the monitors' fresh reports as JSON) and the drift gauges of `/metrics`
//! (from the reports they publish each second).

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use crate::histogram::{label_value, write_samples};
use crate::monitoring::{ALL, Monitor, Report, WindowReport};
use crate::scoring::Scoring;

/// The monitors of the versions serving now: the champion's, the canary's and the challenger's,
/// where each runs one.
fn monitors(scoring: &Scoring) -> [Option<Arc<Monitor>>; 3] {
    let canary = scoring.canary().map(|c| c.slot().load_full());
    let challenger = scoring.shadow().map(|s| s.slot().load_full());
    [Some(scoring.served()), canary, challenger].map(|served| served?.monitor().cloned())
}

/// The champion's, the canary's and the challenger's reports, after every row already answered is
/// counted.
pub async fn page(State(state): State<Arc<AppState>>) -> Response {
    let mut page = json!({
        "enabled": state.config.monitoring.enabled,
        "psi_floor": crate::model::training_reference::PSI_FLOOR,
    });
    let roles = ["champion", "canary", "challenger"];
    for (role, monitor) in roles.into_iter().zip(monitors(&state.scoring)) {
        page[role] = match monitor {
            Some(m) => json!(*m.report().await),
            None => serde_json::Value::Null,
        };
    }
    axum::Json(page).into_response()
}

/// The labels every drift sample starts with.
fn base(r: &Report) -> String {
    format!(
        "model=\"{}\",version=\"{}\",role=\"{}\"",
        label_value(&r.model),
        label_value(&r.version),
        r.role.as_str()
    )
}

/// The windows gauges are exported for: `all` only grows, a rule over it would never recover.
fn windows(r: &Report) -> impl Iterator<Item = &WindowReport> {
    r.windows.iter().filter(|w| w.window != ALL)
}

/// The samples of every gauge-exported window of every report: `each` gives a window's values
/// with the labels that follow `window` (`,feature="…"`, or none).
fn per_window<T>(
    reports: &[Arc<Report>],
    each: impl Fn(&WindowReport) -> Vec<(String, T)>,
) -> Vec<(String, T)> {
    let mut samples = Vec::new();
    for r in reports {
        let base = base(r);
        for w in windows(r) {
            for (extra, v) in each(w) {
                samples.push((format!("{{{base},window=\"{}\"{extra}}}", w.window), v));
            }
        }
    }
    samples
}

/// Appends the drift gauges of the serving versions' monitors to `out`.
pub fn prometheus(out: &mut String, scoring: &Scoring) {
    let reports: Vec<Arc<Report>> = monitors(scoring)
        .into_iter()
        .flatten()
        .map(|m| m.published())
        .collect();
    write_samples(
        out,
        "pixguard_monitoring_reference",
        "1 when the version's package carries a training reference (reference.json), else 0.",
        "gauge",
        &reports
            .iter()
            .map(|r| (format!("{{{}}}", base(r)), u8::from(r.reference.is_some())))
            .collect::<Vec<_>>(),
    );
    write_samples(
        out,
        "pixguard_monitoring_rows",
        "Rows observed by the version's monitor in the window.",
        "gauge",
        &per_window(&reports, |w| vec![(String::new(), w.rows)]),
    );
    write_samples(
        out,
        "pixguard_monitoring_dropped_rows_total",
        "Rows computed but not observed (the monitor's queue was full).",
        "counter",
        &reports
            .iter()
            .map(|r| (format!("{{{}}}", base(r)), r.dropped_rows))
            .collect::<Vec<_>>(),
    );
    write_samples(
        out,
        "pixguard_feature_psi",
        "Population stability index of a model feature in the window against the training reference.",
        "gauge",
        &per_window(&reports, |w| {
            w.features
                .iter()
                .filter_map(|f| Some((format!(",feature=\"{}\"", label_value(&f.name)), f.psi?)))
                .collect()
        }),
    );
    write_samples(
        out,
        "pixguard_score_psi",
        "Population stability index of the score in the window against the training reference.",
        "gauge",
        &per_window(&reports, |w| {
            w.score
                .as_ref()
                .and_then(|s| s.psi)
                .map(|p| (String::new(), p))
                .into_iter()
                .collect()
        }),
    );
    write_samples(
        out,
        "pixguard_decision_ratio",
        "Share of the window's rows given each decision.",
        "gauge",
        &per_window(&reports, |w| {
            w.decisions
                .iter()
                .filter_map(|(d, ratio)| Some((format!(",decision=\"{d}\""), (*ratio)?)))
                .collect()
        }),
    );
    write_samples(
        out,
        "pixguard_decision_ratio_reference",
        "Share of the training reference's rows given each decision (under the thresholds of its package).",
        "gauge",
        &reports
            .iter()
            .flat_map(|r| {
                r.reference.iter().flat_map(move |reference| {
                    reference.decisions.iter().map(move |(d, ratio)| {
                        (
                            format!("{{{},decision=\"{}\"}}", base(r), label_value(d)),
                            *ratio,
                        )
                    })
                })
            })
            .collect::<Vec<_>>(),
    );
}
