//! What a monitor publishes: per window, the decision rates and the drift of the score and of
//! every feature against the package's training reference.

use serde::Serialize;

use super::Role;

/// What a monitor says about one served version.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Model name.
    pub model: String,
    /// Version.
    pub version: String,
    /// Champion, canary or challenger.
    pub role: Role,
    /// The training reference, or null when the package has none (then only decision rates).
    pub reference: Option<ReferenceInfo>,
    /// Rows computed but not observed (the monitor's queue was full).
    pub dropped_rows: u64,
    /// `10m`, `24h`, then `all` (since the version started serving).
    pub windows: Vec<WindowReport>,
}

/// The reference a report compares with.
#[derive(Debug, Clone, Serialize)]
pub struct ReferenceInfo {
    /// Training rows it was computed on.
    pub rows: u64,
    /// How those rows were made.
    pub source: String,
    /// Share of training rows per decision.
    pub decisions: std::collections::BTreeMap<String, f64>,
}

/// One window of a report.
#[derive(Debug, Clone, Serialize)]
pub struct WindowReport {
    /// `10m`, `24h` or `all`.
    pub window: &'static str,
    /// Rows observed in it.
    pub rows: u64,
    /// Share of rows per decision (null without rows).
    pub decisions: std::collections::BTreeMap<&'static str, Option<f64>>,
    /// The score's drift (null without a reference).
    pub score: Option<Drift>,
    /// Every feature's drift, the most drifting first (empty without a reference).
    pub features: Vec<Drift>,
}

/// The drift of one value in one window.
#[derive(Debug, Clone, Serialize)]
pub struct Drift {
    /// Feature name (or `score`).
    pub name: String,
    /// PSI against the reference (null without rows).
    pub psi: Option<f64>,
    /// Rows per bin, in the reference's bin order.
    pub counts: Vec<u64>,
}

/// One window's drift in brief: PSI of the score and of every feature, the most drifting first.
#[derive(Debug, Clone, Serialize)]
pub struct DriftSummary {
    /// Rows observed.
    pub rows: u64,
    /// Rows not observed (the monitor's queue was full).
    pub dropped_rows: u64,
    /// Share of rows per decision.
    pub decisions: std::collections::BTreeMap<&'static str, Option<f64>>,
    /// PSI of the score (null without a reference).
    pub score_psi: Option<f64>,
    /// PSI per feature, the most drifting first.
    pub features: Vec<FeaturePsi>,
}

/// A feature's PSI.
#[derive(Debug, Clone, Serialize)]
pub struct FeaturePsi {
    /// Feature name.
    pub name: String,
    /// PSI against the reference (null without rows).
    pub psi: Option<f64>,
}

impl WindowReport {
    /// The window in brief (no bin counts), with `dropped_rows` from its report.
    pub fn summary(&self, dropped_rows: u64) -> DriftSummary {
        DriftSummary {
            rows: self.rows,
            dropped_rows,
            decisions: self.decisions.clone(),
            score_psi: self.score.as_ref().and_then(|s| s.psi),
            features: self
                .features
                .iter()
                .map(|f| FeaturePsi {
                    name: f.name.clone(),
                    psi: f.psi,
                })
                .collect(),
        }
    }
}

impl Report {
    /// The window named `name`.
    pub fn window(&self, name: &str) -> Option<&WindowReport> {
        self.windows.iter().find(|w| w.window == name)
    }
}
