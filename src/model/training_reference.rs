//! The training reference a package carries (`reference.json`, written by
//! `models/train/reference.py`): per model feature and for the score, bins and the share of
//! training rows in each, checked against the package's feature spec when it loads.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::features::FeatureSpec;
use crate::model::Decision;

/// Bins of a numeric value: `edges` cut the line, bin `i` holds `edges[i-1] < x <= edges[i]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumericBins {
    /// Strictly increasing cut points.
    pub edges: Vec<f64>,
    /// Share of training rows per bin (`edges.len() + 1` of them).
    pub proportions: Vec<f64>,
}

impl NumericBins {
    /// The bin of `x`: how many edges lie strictly below it (a NaN lands in bin 0).
    pub fn bin(&self, x: f64) -> usize {
        bin_of(&self.edges, x)
    }
}

/// How many of the increasing `edges` lie strictly below `x`: its bin. A branch-free count over a
/// dozen edges beats a binary search, and the monitor runs it for every value of every row.
pub(crate) fn bin_of(edges: &[f64], x: f64) -> usize {
    edges.iter().map(|e| usize::from(*e < x)).sum()
}

/// The reference of one model feature, in the space the model reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FeatureReference {
    /// A numeric feature, standardised as the model reads it.
    Numeric {
        /// The feature's name in the spec.
        name: String,
        /// Its bins.
        #[serde(flatten)]
        bins: NumericBins,
    },
    /// A categorical feature: vocabulary indexes with a bin of their own, then "other".
    Categorical {
        /// The feature's name in the spec.
        name: String,
        /// Vocabulary indexes with their own bin, increasing.
        categories: Vec<u32>,
        /// The token of each (for people).
        labels: Vec<String>,
        /// Share of training rows per category, then of every other index.
        proportions: Vec<f64>,
    },
}

impl FeatureReference {
    /// The feature's name.
    pub fn name(&self) -> &str {
        match self {
            FeatureReference::Numeric { name, .. } | FeatureReference::Categorical { name, .. } => {
                name
            }
        }
    }

    /// Share of training rows per bin.
    pub fn proportions(&self) -> &[f64] {
        match self {
            FeatureReference::Numeric { bins, .. } => &bins.proportions,
            FeatureReference::Categorical { proportions, .. } => proportions,
        }
    }
}

/// `reference.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reference {
    /// Layout version; 1.
    pub format: u32,
    /// Training rows it was computed on.
    pub rows: u64,
    /// How those rows were made.
    pub source: String,
    /// One per model feature: the spec's numeric features in order, then its categorical ones.
    pub features: Vec<FeatureReference>,
    /// Bins of the score.
    pub score: NumericBins,
    /// Share of training rows each decision took, keyed ALLOW, HOLD, REJECT.
    pub decisions: BTreeMap<String, f64>,
}

/// How far the proportions of a bin set may sum from 1 (they are rounded shares of integers).
const SUM_TOLERANCE: f64 = 1e-6;

fn check_proportions(what: &str, p: &[f64], bins: usize) -> Result<(), String> {
    if p.len() != bins {
        return Err(format!("{what}: {} proportions for {bins} bins", p.len()));
    }
    if let Some(x) = p.iter().find(|x| !(0.0..=1.0).contains(*x)) {
        return Err(format!("{what}: proportion {x} is outside [0, 1]"));
    }
    let sum: f64 = p.iter().sum();
    if (sum - 1.0).abs() > SUM_TOLERANCE {
        return Err(format!("{what}: proportions sum to {sum}, not 1"));
    }
    Ok(())
}

fn check_numeric(what: &str, bins: &NumericBins) -> Result<(), String> {
    if bins.edges.iter().any(|e| !e.is_finite()) || bins.edges.windows(2).any(|w| w[0] >= w[1]) {
        return Err(format!(
            "{what}: edges must be finite and strictly increasing"
        ));
    }
    check_proportions(what, &bins.proportions, bins.edges.len() + 1)
}

impl Reference {
    /// Checks the reference against the package's feature spec: one entry per feature, same
    /// names, kinds and order, bins well formed, categories inside the vocabulary.
    pub fn check(&self, spec: &FeatureSpec) -> Result<(), String> {
        if self.format != 1 {
            return Err(format!("format {} (this pixguard reads 1)", self.format));
        }
        let expected: Vec<(&str, bool)> = spec
            .numeric
            .iter()
            .map(|f| (f.name.as_str(), true))
            .chain(spec.categorical.iter().map(|f| (f.name.as_str(), false)))
            .collect();
        let got: Vec<(&str, bool)> = self
            .features
            .iter()
            .map(|f| (f.name(), matches!(f, FeatureReference::Numeric { .. })))
            .collect();
        if expected != got {
            return Err(format!(
                "features {:?} do not match the model's {:?} (numeric first, in the spec's order)",
                got.iter().map(|g| g.0).collect::<Vec<_>>(),
                expected.iter().map(|e| e.0).collect::<Vec<_>>()
            ));
        }
        for (f, reference) in spec
            .categorical
            .iter()
            .zip(&self.features[spec.numeric.len()..])
        {
            let FeatureReference::Categorical {
                name,
                categories,
                labels,
                proportions,
            } = reference
            else {
                continue;
            };
            let what = format!("features.{name}");
            if categories.windows(2).any(|w| w[0] >= w[1]) {
                return Err(format!("{what}: categories must be strictly increasing"));
            }
            if let Some(c) = categories.iter().find(|&&c| c as usize >= f.cardinality()) {
                return Err(format!(
                    "{what}: category {c} is outside the vocabulary ({} indexes)",
                    f.cardinality()
                ));
            }
            if labels.len() != categories.len() {
                return Err(format!("{what}: one label per category"));
            }
            check_proportions(&what, proportions, categories.len() + 1)?;
        }
        for reference in &self.features {
            if let FeatureReference::Numeric { name, bins } = reference {
                check_numeric(&format!("features.{name}"), bins)?;
            }
        }
        check_numeric("score", &self.score)?;
        for d in Decision::ALL {
            if !self.decisions.contains_key(d.as_str()) {
                return Err(format!("decisions: no share for {}", d.as_str()));
            }
        }
        Ok(())
    }
}

/// Population stability index of observed bin `counts` against reference `expected` shares:
/// Σ (a − e) · ln(a / e), each share floored at [`PSI_FLOOR`] so that an empty bin on either side
/// costs a large but finite amount. `None` without rows.
pub fn psi(counts: &[u64], expected: &[f64]) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let n = total as f64;
    Some(
        counts
            .iter()
            .zip(expected)
            .map(|(&c, &e)| {
                let a = (c as f64 / n).max(PSI_FLOOR);
                let e = e.max(PSI_FLOOR);
                (a - e) * (a / e).ln()
            })
            .sum(),
    )
}

/// Smallest share [`psi`] uses for a bin (1 row in 10,000).
pub const PSI_FLOOR: f64 = 1e-4;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_on_an_edge_falls_in_the_bin_below_it() {
        let bins = NumericBins {
            edges: vec![0.0, 1.0],
            proportions: vec![0.5, 0.25, 0.25],
        };
        assert_eq!(bins.bin(-0.5), 0);
        assert_eq!(bins.bin(0.0), 0);
        assert_eq!(bins.bin(0.5), 1);
        assert_eq!(bins.bin(1.0), 1);
        assert_eq!(bins.bin(1.5), 2);
        assert_eq!(bins.bin(f64::NAN), 0);
    }

    #[test]
    fn psi_is_zero_on_the_reference_and_grows_with_the_shift() {
        let expected = [0.25, 0.25, 0.5];
        assert_eq!(psi(&[25, 25, 50], &expected), Some(0.0));
        assert_eq!(psi(&[0, 0, 0], &expected), None);
        // By hand: (0.5-0.25)ln2 + (0.25-0.25)·0 + (0.25-0.5)ln(0.5) = 0.5 ln 2.
        let shifted = psi(&[50, 25, 25], &expected).unwrap_or_default();
        assert!((shifted - 0.5 * 2f64.ln()).abs() < 1e-15, "{shifted}");
        // An emptied bin is floored, not infinite.
        let emptied = psi(&[0, 50, 50], &expected).unwrap_or_default();
        assert!(emptied.is_finite() && emptied > shifted, "{emptied}");
    }
}
