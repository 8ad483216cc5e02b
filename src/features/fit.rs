//! The default feature set and fitting its statistics and vocabularies on training rows.

use std::borrow::Cow;
use std::collections::HashMap;

use super::extract::{FeatureExtractor, categorical_token};
use super::spec::{
    CategoricalFeature, CategoricalSource, FeatureSpec, NumericFeature, NumericSource, SpecError,
    Transform,
};
use crate::transaction::Transaction;

/// The feature set pixguard's models are trained on, with neutral statistics (mean 0, std 1) and
/// full closed vocabularies, until [`fit`] replaces them with training values.
pub fn default_spec() -> FeatureSpec {
    use NumericSource as S;
    use Transform::{Identity, Log1p};
    let numeric = [
        ("amount_log", S::AmountReais, Log1p, Some([0.0, 16.0])),
        ("payer_tx_1h_log", S::PayerTx1h, Log1p, Some([0.0, 6.0])),
        (
            "payer_amount_24h_log",
            S::PayerAmount24hReais,
            Log1p,
            Some([0.0, 16.0]),
        ),
        ("amount_share_24h", S::AmountShareOf24h, Identity, None),
        (
            "amount_zscore_90d",
            S::AmountZscore90d,
            Identity,
            Some([-10.0, 10.0]),
        ),
        (
            "amount_zscore_90d_missing",
            S::AmountZscore90dMissing,
            Identity,
            None,
        ),
        ("payee_first_time", S::PayeeFirstTime, Identity, None),
        ("device_registered", S::DeviceRegistered, Identity, None),
        (
            "device_age_log",
            S::DeviceAgeHours,
            Log1p,
            Some([0.0, 12.0]),
        ),
        (
            "device_first_seen_missing",
            S::DeviceFirstSeenMissing,
            Identity,
            None,
        ),
        (
            "payer_account_age_log",
            S::PayerAccountAgeHours,
            Log1p,
            Some([0.0, 12.0]),
        ),
        ("key_age_log", S::KeyAgeHours, Log1p, Some([0.0, 12.0])),
        ("key_created_missing", S::KeyCreatedMissing, Identity, None),
        (
            "payee_account_age_log",
            S::PayeeAccountAgeHours,
            Log1p,
            Some([0.0, 12.0]),
        ),
        (
            "payee_account_opened_missing",
            S::PayeeAccountOpenedMissing,
            Identity,
            None,
        ),
        (
            "dict_settlements_90d_log",
            S::DictSettlements90d,
            Log1p,
            Some([0.0, 12.0]),
        ),
        (
            "dict_fraud_markers_30d_log",
            S::DictFraudMarkers30d,
            Log1p,
            Some([0.0, 5.0]),
        ),
        (
            "dict_infractions_open_log",
            S::DictInfractionsOpen,
            Log1p,
            Some([0.0, 5.0]),
        ),
        ("dict_mule_marker", S::DictMuleMarker, Identity, None),
        ("dict_stats_missing", S::DictStatsMissing, Identity, None),
        ("same_institution", S::SameInstitution, Identity, None),
        ("hour_sin", S::LocalHourSin, Identity, None),
        ("hour_cos", S::LocalHourCos, Identity, None),
        ("weekday_sin", S::LocalWeekdaySin, Identity, None),
        ("weekday_cos", S::LocalWeekdayCos, Identity, None),
        ("night_window", S::NightWindow, Identity, None),
        ("weekend", S::Weekend, Identity, None),
    ]
    .into_iter()
    .map(|(name, source, transform, clip)| NumericFeature {
        name: name.to_string(),
        source,
        transform,
        clip,
        mean: 0.0,
        std: 1.0,
    })
    .collect();
    let categorical = CategoricalSource::ALL
        .iter()
        .map(|&source| {
            let vocabulary: Vec<String> = source
                .closed_tokens()
                .unwrap_or_default()
                .iter()
                .map(|t| t.to_string())
                .collect();
            CategoricalFeature {
                name: source.as_str().replace('.', "_"),
                source,
                oov_index: vocabulary.len() as u32,
                vocabulary,
            }
        })
        .collect();
    FeatureSpec {
        numeric,
        categorical,
    }
}

/// How [`fit`] builds vocabularies.
#[derive(Debug, Clone, Copy)]
pub struct FitOptions {
    /// A token needs at least this many training rows to get its own embedding row.
    pub min_count: usize,
    /// At most this many tokens per vocabulary (the most frequent win).
    pub max_vocabulary: usize,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            min_count: 20,
            max_vocabulary: 256,
        }
    }
}

/// Returns `spec` with mean and std of every numeric feature (over present, clipped values) and every
/// vocabulary computed from `rows`, which must be training rows only.
pub fn fit(
    spec: &FeatureSpec,
    rows: &[Transaction],
    options: FitOptions,
) -> Result<FeatureSpec, SpecError> {
    let extractor = FeatureExtractor::new(spec.clone())?;
    // Welford's running moments: stable over millions of rows.
    let mut moments = vec![(0u64, 0.0f64, 0.0f64); spec.numeric.len()];
    for tx in rows {
        for (m, value) in moments.iter_mut().zip(extractor.unscaled_row(tx)) {
            if let Some(x) = value {
                m.0 += 1;
                let delta = x - m.1;
                m.1 += delta / m.0 as f64;
                m.2 += delta * (x - m.1);
            }
        }
    }
    let mut fitted = spec.clone();
    for (f, (n, mean, m2)) in fitted.numeric.iter_mut().zip(moments) {
        let std = if n > 1 { (m2 / n as f64).sqrt() } else { 0.0 };
        f.mean = if n > 0 { mean } else { 0.0 };
        // A constant feature carries no information; std 1 keeps it finite and harmless.
        f.std = if std > 1e-9 { std } else { 1.0 };
    }
    for f in &mut fitted.categorical {
        let mut counts: HashMap<Cow<'static, str>, usize> = HashMap::new();
        for tx in rows {
            *counts.entry(categorical_token(f.source, tx)).or_default() += 1;
        }
        let mut kept: Vec<(String, usize)> = counts
            .into_iter()
            .filter(|(_, c)| *c >= options.min_count)
            .map(|(t, c)| (t.into_owned(), c))
            .collect();
        kept.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        kept.truncate(options.max_vocabulary);
        // Closed sources keep their declaration order, which reads better in model.json.
        if let Some(order) = f.source.closed_tokens() {
            kept.sort_by_key(|(t, _)| order.iter().position(|o| o == t));
        }
        f.vocabulary = kept.into_iter().map(|(t, _)| t).collect();
        f.oov_index = f.vocabulary.len() as u32;
    }
    fitted.validate()?;
    Ok(fitted)
}
