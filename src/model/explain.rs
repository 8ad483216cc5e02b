//! Reason codes: why a payment scored high, as the package describes it (`model.json`
//! `explanations`) and as the PyTorch reference computes it (`models/train/explain.py`).
//!
//! The method is group occlusion: every input feature belongs to one named group; a group's
//! contribution to a row's score is the score minus the score of the same row with that group's
//! features set to their training baseline (a numeric feature to 0, its standardised training mean;
//! a categorical one to its most frequent training category). It is exact for this network (no
//! sampling or linearisation) and costs one forward per group for the rows that need reasons, in
//! one extra batch. The reasons are the groups with a positive contribution, largest first, at
//! most [`MAX_REASONS`].
//!
//! The passes return logits, and the scores are taken in f64 from them: a rejected payment often
//! scores 1.0 in f32, where every occluded copy would also read 1.0 and the differences vanish.

use serde::{Deserialize, Serialize};

use super::PackageError;
use crate::features::FeatureSpec;

/// Reasons given per explained row.
pub const MAX_REASONS: usize = 3;

/// `model.json` `explanations`: the method, and the groups with their codes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplanationSpec {
    /// Always `occlusion`.
    pub method: ExplanationMethod,
    /// The groups; together they cover every input feature once.
    pub groups: Vec<ReasonGroup>,
    /// Baseline category index of each categorical feature (its most frequent training value).
    pub categorical_baselines: std::collections::BTreeMap<String, u32>,
}

/// The attribution methods pixguard implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExplanationMethod {
    /// Each group set to its training baseline, one forward per group.
    Occlusion,
}

/// One reason code and the features behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReasonGroup {
    /// Stable code, e.g. `PAYEE_KEY_NEW`.
    pub code: String,
    /// What it means, in an analyst's words.
    pub description: String,
    /// Names of the group's numeric features.
    #[serde(default)]
    pub numeric: Vec<String>,
    /// Names of the group's categorical features.
    #[serde(default)]
    pub categorical: Vec<String>,
}

/// One reason given for a row: its group (index into the spec's groups) and contribution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reason {
    /// Index of the group in [`ExplanationSpec::groups`].
    pub group: u16,
    /// Score minus the score with the group at its baseline.
    pub contribution: f32,
}

/// The reasons of one row, largest contribution first.
pub type Reasons = Vec<Reason>;

/// A resolved group: its numeric columns, and (categorical column, baseline) pairs.
pub(crate) type ResolvedGroup = (Vec<usize>, Vec<(usize, u32)>);

/// The spec resolved against the feature layout: column indices per group, in the spec's order
/// (a [`Reason`]'s `group` indexes it, and the spec's `groups` give the codes).
#[derive(Debug, Clone)]
pub struct Occlusion {
    numeric: Vec<Vec<usize>>,
    categorical: Vec<Vec<(usize, u32)>>,
    n_numeric: usize,
    n_categorical: usize,
}

impl ExplanationSpec {
    /// Checks the spec against the features and resolves it; every feature in exactly one group.
    pub fn compile(&self, features: &FeatureSpec) -> Result<Occlusion, PackageError> {
        let err = |m: String| PackageError::Explanations(m);
        let numeric_names: Vec<&str> = features.numeric.iter().map(|f| f.name.as_str()).collect();
        let categorical = &features.categorical;
        let mut numeric_seen = vec![false; numeric_names.len()];
        let mut categorical_seen = vec![false; categorical.len()];
        let mut codes: Vec<&str> = Vec::new();
        let mut groups = Vec::new();
        if self.groups.is_empty() || self.groups.len() > usize::from(u16::MAX) {
            return Err(err(format!("{} groups", self.groups.len())));
        }
        for g in &self.groups {
            if g.code.is_empty() || codes.contains(&g.code.as_str()) {
                return Err(err(format!("group code '{}' empty or repeated", g.code)));
            }
            let mut columns = Vec::new();
            for name in &g.numeric {
                let k = numeric_names
                    .iter()
                    .position(|n| n == name)
                    .ok_or_else(|| err(format!("{}: no numeric feature '{name}'", g.code)))?;
                if std::mem::replace(&mut numeric_seen[k], true) {
                    return Err(err(format!("numeric feature '{name}' in two groups")));
                }
                columns.push(k);
            }
            let mut cats = Vec::new();
            for name in &g.categorical {
                let k = categorical
                    .iter()
                    .position(|f| &f.name == name)
                    .ok_or_else(|| err(format!("{}: no categorical feature '{name}'", g.code)))?;
                if std::mem::replace(&mut categorical_seen[k], true) {
                    return Err(err(format!("categorical feature '{name}' in two groups")));
                }
                let baseline = *self
                    .categorical_baselines
                    .get(name)
                    .ok_or_else(|| err(format!("no baseline for categorical feature '{name}'")))?;
                if baseline as usize >= categorical[k].cardinality() {
                    return Err(err(format!(
                        "baseline {baseline} of '{name}' is outside its {} categories",
                        categorical[k].cardinality()
                    )));
                }
                cats.push((k, baseline));
            }
            if columns.is_empty() && cats.is_empty() {
                return Err(err(format!("group {} has no features", g.code)));
            }
            codes.push(&g.code);
            groups.push((columns, cats));
        }
        let missing: Vec<&str> = numeric_names
            .iter()
            .zip(&numeric_seen)
            .filter(|(_, seen)| !**seen)
            .map(|(n, _)| *n)
            .chain(
                categorical
                    .iter()
                    .zip(&categorical_seen)
                    .filter(|(_, seen)| !**seen)
                    .map(|(f, _)| f.name.as_str()),
            )
            .collect();
        if !missing.is_empty() {
            return Err(err(format!("features in no group: {}", missing.join(", "))));
        }
        Ok(Occlusion::from_groups(
            groups,
            numeric_names.len(),
            categorical.len(),
        ))
    }
}

impl Occlusion {
    /// An occlusion from resolved groups: (numeric columns, (categorical column, baseline)).
    pub(crate) fn from_groups(
        groups: Vec<ResolvedGroup>,
        n_numeric: usize,
        n_categorical: usize,
    ) -> Occlusion {
        let (numeric, categorical) = groups.into_iter().unzip();
        Occlusion {
            numeric,
            categorical,
            n_numeric,
            n_categorical,
        }
    }

    /// Number of groups: occluded rows per explained row.
    pub fn groups(&self) -> usize {
        self.numeric.len()
    }

    /// Appends the given row and then one row per group to `numeric` and `categorical`: the row
    /// itself, and the row with that group's features at their baselines (`groups() + 1` rows).
    pub fn occlude(
        &self,
        numeric_row: &[f32],
        categorical_row: &[u32],
        numeric: &mut Vec<f32>,
        categorical: &mut Vec<u32>,
    ) {
        debug_assert_eq!(numeric_row.len(), self.n_numeric);
        debug_assert_eq!(categorical_row.len(), self.n_categorical);
        numeric.extend_from_slice(numeric_row);
        categorical.extend_from_slice(categorical_row);
        for (columns, cats) in self.numeric.iter().zip(&self.categorical) {
            let start = numeric.len();
            numeric.extend_from_slice(numeric_row);
            for &k in columns {
                numeric[start + k] = 0.0;
            }
            let start = categorical.len();
            categorical.extend_from_slice(categorical_row);
            for &(k, baseline) in cats {
                categorical[start + k] = baseline;
            }
        }
    }

    /// The reasons of a row from the logits of its [`Occlusion::occlude`] rows (the row itself,
    /// then one per group): the positive contributions, largest first (ties in group order), at
    /// most [`MAX_REASONS`].
    pub fn reasons(&self, logits: &[f32]) -> Reasons {
        let Some((&own, occluded)) = logits.split_first() else {
            return Vec::new();
        };
        let score = sigmoid(own);
        let mut all: Vec<Reason> = occluded
            .iter()
            .enumerate()
            .map(|(g, &l)| Reason {
                group: g as u16,
                contribution: (score - sigmoid(l)) as f32,
            })
            .filter(|r| r.contribution > 0.0)
            .collect();
        all.sort_by(|a, b| {
            b.contribution
                .total_cmp(&a.contribution)
                .then(a.group.cmp(&b.group))
        });
        all.truncate(MAX_REASONS);
        all
    }
}

/// The probability of a logit, in f64.
fn sigmoid(logit: f32) -> f64 {
    1.0 / (1.0 + (-f64::from(logit)).exp())
}

/// The logit of an f32 probability, kept finite at 0 and 1 (a GPU pass returns probabilities).
pub fn logit_of(p: f32) -> f32 {
    let p = f64::from(p).clamp(1e-12, 1.0 - 1e-12);
    (p / (1.0 - p)).ln() as f32
}

/// Turns a pass's probabilities into logits in place.
pub fn to_logits(values: &mut [f32]) {
    for v in values {
        *v = logit_of(*v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelConfig;

    fn bundled() -> ModelConfig {
        let text = std::fs::read_to_string("models/pix-fraud/model.json").unwrap();
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn the_bundled_groups_cover_every_feature_once() {
        let config = bundled();
        let spec = config.explanations.as_ref().unwrap();
        let occlusion = spec.compile(&config.features).unwrap();
        assert_eq!(occlusion.groups(), spec.groups.len());
        let (mut n, mut c) = (Vec::new(), Vec::new());
        let numeric = vec![1.0; config.features.numeric.len()];
        let categorical = vec![1; config.features.categorical.len()];
        occlusion.occlude(&numeric, &categorical, &mut n, &mut c);
        // The row itself first, then each feature at its baseline in exactly one occluded copy.
        assert_eq!(n.len(), numeric.len() * (spec.groups.len() + 1));
        assert_eq!(n[..numeric.len()], numeric[..]);
        let zeroed = n.iter().filter(|v| **v == 0.0).count();
        assert_eq!(zeroed, numeric.len());
        let moved = c.iter().filter(|v| **v != 1).count();
        let at_one = spec
            .categorical_baselines
            .values()
            .filter(|b| **b == 1)
            .count();
        assert_eq!(moved + at_one, categorical.len());
    }

    #[test]
    fn a_spec_that_misses_repeats_or_overflows_is_refused() {
        let config = bundled();
        let spec = config.explanations.clone().unwrap();
        let refused = |edit: &dyn Fn(&mut ExplanationSpec), says: &str| {
            let mut s = spec.clone();
            edit(&mut s);
            let e = s.compile(&config.features).unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
        };
        refused(
            &|s| s.groups[0].numeric.pop().map(drop).unwrap_or(()),
            "in no group",
        );
        refused(
            &|s| {
                let name = s.groups[1].numeric[0].clone();
                s.groups[0].numeric.push(name);
            },
            "in two groups",
        );
        refused(
            &|s| s.groups[0].numeric.push("nope".into()),
            "no numeric feature 'nope'",
        );
        refused(
            &|s| {
                s.categorical_baselines.insert("purpose".into(), 99);
            },
            "outside its",
        );
        refused(&|s| s.groups[1].code = s.groups[0].code.clone(), "repeated");
    }

    #[test]
    fn reasons_are_the_positive_contributions_largest_first_at_most_three() {
        let o = Occlusion::from_groups((0..5).map(|g| (vec![g], vec![])).collect(), 5, 0);
        // Logit 0 (score 0.5); occluded logits below it push the score up, above it down.
        let r = o.reasons(&[0.0, -1.0, 1.0, -3.0, -1.0, -0.5]);
        let groups: Vec<u16> = r.iter().map(|r| r.group).collect();
        assert_eq!(
            groups,
            vec![2, 0, 3],
            "ties in group order, the negative one left out"
        );
        let want = 0.5 - 1.0 / (1.0 + 3f64.exp());
        assert!((f64::from(r[0].contribution) - want).abs() < 1e-7);
        assert!(o.reasons(&[0.0, 1.0, 0.5, 2.0, 0.1, 0.0]).is_empty());
        // A saturated row still tells its groups apart: scores 1 - 2e-9 and 1 - 4.5e-5 are both
        // 1.0 in f32, not in f64.
        let r = o.reasons(&[20.0, 10.0, 20.0, 20.0, 20.0, 20.0]);
        assert_eq!(r.len(), 1);
        assert!(r[0].contribution > 4e-5, "{r:?}");
    }
}
