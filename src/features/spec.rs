//! The feature spec: which features a model takes, where each comes from and how it is scaled.
//!
//! It is serialised into the model package's `model.json`, so training and serving read the same
//! definition. See `docs/features.md` for every source and the missing-value encoding.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::transaction::{AccountType, InitiationForm, Ispb, PersonType, Purpose};

/// The inputs of a model: numeric features, then categorical features, each in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureSpec {
    /// Numeric features, in the column order of the numeric tensor.
    pub numeric: Vec<NumericFeature>,
    /// Categorical features, in the column order of the categorical tensor.
    pub categorical: Vec<CategoricalFeature>,
}

/// One numeric feature: `standardised = (clip(transform(source)) - mean) / std`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumericFeature {
    /// Unique feature name.
    pub name: String,
    /// Where the raw value comes from.
    pub source: NumericSource,
    /// Applied to the raw value before clipping.
    #[serde(default)]
    pub transform: Transform,
    /// Bounds, in transformed units, applied before standardisation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip: Option<[f64; 2]>,
    /// Training mean of the clipped value.
    pub mean: f64,
    /// Training standard deviation of the clipped value; > 0.
    pub std: f64,
}

/// One categorical feature: the source's token looked up in `vocabulary`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategoricalFeature {
    /// Unique feature name.
    pub name: String,
    /// Where the token comes from.
    pub source: CategoricalSource,
    /// Known tokens; a token's index is its embedding row.
    pub vocabulary: Vec<String>,
    /// Index for tokens not in the vocabulary: `vocabulary.len()` for a dedicated row, or the index
    /// of a catch-all token.
    pub oov_index: u32,
}

impl CategoricalFeature {
    /// Rows of the embedding table this feature needs.
    pub fn cardinality(&self) -> usize {
        self.vocabulary.len().max(self.oov_index as usize + 1)
    }
}

/// A monotone transform applied to a raw numeric value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transform {
    /// The value as is.
    #[default]
    Identity,
    /// `ln(1 + x)`, for non-negative heavy-tailed amounts, counts and ages.
    Log1p,
}

/// Defines `NumericSource` with its wire names and whether the source can be absent.
macro_rules! numeric_sources {
    ($($(#[$m:meta])* $variant:ident => $wire:literal, $optional:literal;)+) => {
        /// Where a numeric feature's raw value comes from: a fixed, documented set.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum NumericSource {
            $($(#[$m])* #[serde(rename = $wire)] $variant,)+
        }

        impl NumericSource {
            /// Every source, in declaration order.
            pub const ALL: &'static [NumericSource] = &[$(NumericSource::$variant),+];

            /// The name used in the spec.
            pub const fn as_str(self) -> &'static str {
                match self { $(NumericSource::$variant => $wire),+ }
            }

            /// Whether the value can be absent (then it is encoded as the training mean).
            pub const fn is_optional(self) -> bool {
                match self { $(NumericSource::$variant => $optional),+ }
            }
        }
    };
}

numeric_sources! {
    /// `amount_cents / 100`.
    AmountReais => "amount_reais", false;
    /// `history.payer_tx_1h`.
    PayerTx1h => "history.payer_tx_1h", false;
    /// `history.payer_amount_24h_cents / 100`.
    PayerAmount24hReais => "history.payer_amount_24h_reais", false;
    /// This amount over (this amount + the last 24 h), in [0, 1].
    AmountShareOf24h => "amount_share_of_24h", false;
    /// `history.amount_zscore_90d`.
    AmountZscore90d => "history.amount_zscore_90d", true;
    /// 1 when `history.amount_zscore_90d` is absent.
    AmountZscore90dMissing => "history.amount_zscore_90d.missing", false;
    /// 1 when the payer has never paid this payee.
    PayeeFirstTime => "history.payee_first_time", false;
    /// 1 when the device is registered.
    DeviceRegistered => "payer.device.registered", false;
    /// Hours between `payer.device.first_seen_at` and `accepted_at` (≥ 0).
    DeviceAgeHours => "payer.device.first_seen_at.age_hours", true;
    /// 1 when `payer.device.first_seen_at` is absent (a device never seen before).
    DeviceFirstSeenMissing => "payer.device.first_seen_at.missing", false;
    /// Hours between `payer.account_opened_at` and `accepted_at` (≥ 0).
    PayerAccountAgeHours => "payer.account_opened_at.age_hours", false;
    /// Hours between `payee.key_created_at` and `accepted_at` (≥ 0).
    KeyAgeHours => "payee.key_created_at.age_hours", true;
    /// 1 when `payee.key_created_at` is absent (no key, or DICT did not say).
    KeyCreatedMissing => "payee.key_created_at.missing", false;
    /// Hours between `payee.account_opened_at` and `accepted_at` (≥ 0).
    PayeeAccountAgeHours => "payee.account_opened_at.age_hours", true;
    /// 1 when `payee.account_opened_at` is absent.
    PayeeAccountOpenedMissing => "payee.account_opened_at.missing", false;
    /// `payee.dict_stats.settlements_90d`.
    DictSettlements90d => "payee.dict_stats.settlements_90d", true;
    /// `payee.dict_stats.fraud_markers_30d`.
    DictFraudMarkers30d => "payee.dict_stats.fraud_markers_30d", true;
    /// `payee.dict_stats.infractions_open`.
    DictInfractionsOpen => "payee.dict_stats.infractions_open", true;
    /// 1 when DICT flags the payee as a suspected mule.
    DictMuleMarker => "payee.dict_stats.mule_marker", true;
    /// 1 when `payee.dict_stats` is absent.
    DictStatsMissing => "payee.dict_stats.missing", false;
    /// 1 when payer and payee are at the same participant.
    SameInstitution => "same_institution", false;
    /// sin(2π · local minute of day / 1440), America/Sao_Paulo.
    LocalHourSin => "local_time.hour_sin", false;
    /// cos(2π · local minute of day / 1440).
    LocalHourCos => "local_time.hour_cos", false;
    /// sin(2π · weekday / 7), Monday = 0.
    LocalWeekdaySin => "local_time.weekday_sin", false;
    /// cos(2π · weekday / 7).
    LocalWeekdayCos => "local_time.weekday_cos", false;
    /// 1 between 20:00 and 06:00 local time, the window of the BCB night limits.
    NightWindow => "local_time.night_window", false;
    /// 1 on Saturday and Sunday.
    Weekend => "local_time.weekend", false;
}

/// Where a categorical feature's token comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CategoricalSource {
    /// `initiation_form`.
    #[serde(rename = "initiation_form")]
    InitiationForm,
    /// `purpose`.
    #[serde(rename = "purpose")]
    Purpose,
    /// `payer.account_type`.
    #[serde(rename = "payer.account_type")]
    PayerAccountType,
    /// `payer.person_type`.
    #[serde(rename = "payer.person_type")]
    PayerPersonType,
    /// `payee.account_type`.
    #[serde(rename = "payee.account_type")]
    PayeeAccountType,
    /// `payee.person_type`.
    #[serde(rename = "payee.person_type")]
    PayeePersonType,
    /// `payee.key_type`; an absent key is the token [`NO_KEY_TOKEN`].
    #[serde(rename = "payee.key_type")]
    PayeeKeyType,
    /// `payer.ispb`.
    #[serde(rename = "payer.ispb")]
    PayerIspb,
    /// `payee.ispb`.
    #[serde(rename = "payee.ispb")]
    PayeeIspb,
    /// Local hour of day, tokens `"0"`..`"23"`.
    #[serde(rename = "local_time.hour")]
    LocalHour,
}

/// The token of `payee.key_type` when the payment used no DICT key.
pub const NO_KEY_TOKEN: &str = "NONE";

impl CategoricalSource {
    /// Every source, in declaration order.
    pub const ALL: &'static [CategoricalSource] = &[
        CategoricalSource::InitiationForm,
        CategoricalSource::Purpose,
        CategoricalSource::PayerAccountType,
        CategoricalSource::PayerPersonType,
        CategoricalSource::PayeeAccountType,
        CategoricalSource::PayeePersonType,
        CategoricalSource::PayeeKeyType,
        CategoricalSource::PayerIspb,
        CategoricalSource::PayeeIspb,
        CategoricalSource::LocalHour,
    ];

    /// The name used in the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            CategoricalSource::InitiationForm => "initiation_form",
            CategoricalSource::Purpose => "purpose",
            CategoricalSource::PayerAccountType => "payer.account_type",
            CategoricalSource::PayerPersonType => "payer.person_type",
            CategoricalSource::PayeeAccountType => "payee.account_type",
            CategoricalSource::PayeePersonType => "payee.person_type",
            CategoricalSource::PayeeKeyType => "payee.key_type",
            CategoricalSource::PayerIspb => "payer.ispb",
            CategoricalSource::PayeeIspb => "payee.ispb",
            CategoricalSource::LocalHour => "local_time.hour",
        }
    }

    /// Every token a closed source can produce, in code-list order; `None` for open sources (ISPBs).
    pub fn closed_tokens(self) -> Option<&'static [&'static str]> {
        Some(match self {
            CategoricalSource::InitiationForm => InitiationForm::NAMES,
            CategoricalSource::Purpose => Purpose::NAMES,
            CategoricalSource::PayerAccountType | CategoricalSource::PayeeAccountType => {
                AccountType::NAMES
            }
            CategoricalSource::PayerPersonType | CategoricalSource::PayeePersonType => {
                PersonType::NAMES
            }
            CategoricalSource::PayeeKeyType => KEY_TOKENS,
            CategoricalSource::LocalHour => HOUR_TOKENS,
            CategoricalSource::PayerIspb | CategoricalSource::PayeeIspb => return None,
        })
    }
}

/// `payee.key_type` tokens: the key types in code-list order, then [`NO_KEY_TOKEN`].
const KEY_TOKENS: &[&str] = &["CPF", "CNPJ", "PHONE", "EMAIL", "EVP", NO_KEY_TOKEN];

/// `local_time.hour` tokens.
const HOUR_TOKENS: &[&str] = &[
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
    "17", "18", "19", "20", "21", "22", "23",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transaction::KeyType;

    #[test]
    fn key_tokens_follow_the_code_list() {
        assert_eq!(&KEY_TOKENS[..KeyType::NAMES.len()], KeyType::NAMES);
        assert_eq!(KEY_TOKENS.len(), KeyType::NAMES.len() + 1);
        assert!(
            HOUR_TOKENS
                .iter()
                .enumerate()
                .all(|(i, t)| *t == i.to_string())
        );
    }
}

/// Why a feature spec was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpecError {
    /// Two features share a name.
    #[error("feature name `{0}` is used more than once")]
    DuplicateName(String),
    /// A statistic is NaN or infinite.
    #[error("numeric feature `{feature}`: {what} must be finite, got {value}")]
    NonFinite {
        feature: String,
        what: &'static str,
        value: f64,
    },
    /// A standard deviation is zero or negative.
    #[error("numeric feature `{feature}`: std must be > 0, got {value}")]
    NonPositiveStd { feature: String, value: f64 },
    /// Clip bounds are not ordered.
    #[error("numeric feature `{feature}`: clip lower bound {lo} is not below upper bound {hi}")]
    UnorderedClip { feature: String, lo: f64, hi: f64 },
    /// A vocabulary token cannot come from the source.
    #[error("categorical feature `{feature}`: token `{token}` can never come from {source_name}")]
    InvalidToken {
        feature: String,
        token: String,
        source_name: &'static str,
    },
    /// A token appears twice in one vocabulary.
    #[error("categorical feature `{feature}`: token `{token}` is listed more than once")]
    DuplicateToken { feature: String, token: String },
    /// The out-of-vocabulary index points past the table.
    #[error(
        "categorical feature `{feature}`: oov_index {oov_index} must be at most the vocabulary size {len}"
    )]
    OovIndex {
        feature: String,
        oov_index: u32,
        len: usize,
    },
    /// The spec has no features at all.
    #[error("the spec has no features")]
    Empty,
}

impl FeatureSpec {
    /// Checks every rule a spec must satisfy before it can drive extraction.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.numeric.is_empty() && self.categorical.is_empty() {
            return Err(SpecError::Empty);
        }
        let mut names = HashSet::new();
        let all_names = self
            .numeric
            .iter()
            .map(|f| &f.name)
            .chain(self.categorical.iter().map(|f| &f.name));
        for name in all_names {
            if !names.insert(name.as_str()) {
                return Err(SpecError::DuplicateName(name.clone()));
            }
        }
        for f in &self.numeric {
            let mut stats = vec![("mean", f.mean), ("std", f.std)];
            if let Some([lo, hi]) = f.clip {
                stats.extend([("clip lower bound", lo), ("clip upper bound", hi)]);
                if lo.is_finite() && hi.is_finite() && lo >= hi {
                    return Err(SpecError::UnorderedClip {
                        feature: f.name.clone(),
                        lo,
                        hi,
                    });
                }
            }
            if let Some((what, value)) = stats.into_iter().find(|(_, v)| !v.is_finite()) {
                return Err(SpecError::NonFinite {
                    feature: f.name.clone(),
                    what,
                    value,
                });
            }
            if f.std <= 0.0 {
                return Err(SpecError::NonPositiveStd {
                    feature: f.name.clone(),
                    value: f.std,
                });
            }
        }
        for f in &self.categorical {
            let closed = f.source.closed_tokens();
            let mut seen = HashSet::new();
            for token in &f.vocabulary {
                let valid = match closed {
                    Some(tokens) => tokens.contains(&token.as_str()),
                    None => Ispb::parse(token).is_ok(),
                };
                if !valid {
                    return Err(SpecError::InvalidToken {
                        feature: f.name.clone(),
                        token: token.clone(),
                        source_name: f.source.as_str(),
                    });
                }
                if !seen.insert(token.as_str()) {
                    return Err(SpecError::DuplicateToken {
                        feature: f.name.clone(),
                        token: token.clone(),
                    });
                }
            }
            if f.oov_index as usize > f.vocabulary.len() {
                return Err(SpecError::OovIndex {
                    feature: f.name.clone(),
                    oov_index: f.oov_index,
                    len: f.vocabulary.len(),
                });
            }
        }
        Ok(())
    }

    /// The columns encoded otherwise than in `before`, column for column, each with what changed:
    /// `` 2 columns encoded otherwise (`amount_log` (mean, std), `purpose` (vocabulary)) `` (the
    /// first four, then how many more); a column either spec lacks is left out.
    pub fn recoded_since(&self, before: &FeatureSpec) -> String {
        let numeric = self.numeric.iter().zip(&before.numeric).map(|(a, b)| {
            let fields = [
                ("source", a.source != b.source),
                ("transform", a.transform != b.transform),
                ("clip", a.clip != b.clip),
                ("mean", a.mean != b.mean),
                ("std", a.std != b.std),
            ];
            (&a.name, a != b, fields)
        });
        let categorical = self
            .categorical
            .iter()
            .zip(&before.categorical)
            .map(|(a, b)| {
                let fields = [
                    ("source", a.source != b.source),
                    ("vocabulary", a.vocabulary != b.vocabulary),
                    ("oov_index", a.oov_index != b.oov_index),
                ];
                (&a.name, a != b, fields)
            });
        let changed: Vec<String> = numeric
            .map(|(name, differs, fields)| describe(name, differs, &fields))
            .chain(categorical.map(|(name, differs, fields)| describe(name, differs, &fields)))
            .flatten()
            .collect();
        let mut text = changed
            .iter()
            .take(4)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if changed.len() > 4 {
            text.push_str(&format!(" and {} more", changed.len() - 4));
        }
        let columns = if changed.len() == 1 {
            "column"
        } else {
            "columns"
        };
        format!("{} {columns} encoded otherwise ({text})", changed.len())
    }
}

/// `` `name` (field, field) `` when the column `differs`: the fields named that changed, or
/// `definition` when none of them did (a field the list does not name yet).
fn describe(name: &str, differs: bool, fields: &[(&str, bool)]) -> Option<String> {
    if !differs {
        return None;
    }
    let mut changed: Vec<&str> = fields.iter().filter(|f| f.1).map(|f| f.0).collect();
    if changed.is_empty() {
        changed.push("definition");
    }
    Some(format!("`{name}` ({})", changed.join(", ")))
}
