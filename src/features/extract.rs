//! Row extraction: transactions in, one contiguous numeric block and one categorical block out.

use std::borrow::Cow;
use std::f64::consts::TAU;
use std::sync::OnceLock;

use super::spec::{CategoricalSource, FeatureSpec, NumericSource, SpecError, Transform};
use crate::parallel::Parallel;
use crate::transaction::{Ispb, Transaction};

/// Feature rows for a batch of transactions, row-major.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FeatureBatch {
    /// Number of rows.
    pub rows: usize,
    /// Numeric features per row.
    pub n_numeric: usize,
    /// Categorical features per row.
    pub n_categorical: usize,
    /// `rows × n_numeric` standardised values.
    pub numeric: Vec<f32>,
    /// `rows × n_categorical` embedding indices.
    pub categorical: Vec<u32>,
}

impl FeatureBatch {
    /// The numeric values of row `i`.
    pub fn numeric_row(&self, i: usize) -> &[f32] {
        &self.numeric[i * self.n_numeric..(i + 1) * self.n_numeric]
    }

    /// The categorical indices of row `i`.
    pub fn categorical_row(&self, i: usize) -> &[u32] {
        &self.categorical[i * self.n_categorical..(i + 1) * self.n_categorical]
    }
}

/// A numeric feature with its scaling folded into constants.
#[derive(Debug, Clone)]
struct CompiledNumeric {
    source: NumericSource,
    transform: Transform,
    lo: f64,
    hi: f64,
    mean: f64,
    inv_std: f64,
}

/// A categorical feature as a lookup table.
#[derive(Debug, Clone)]
enum CompiledCategorical {
    /// Closed sources: index by the value's position in its code list (`NONE` last for key type).
    Table {
        source: CategoricalSource,
        table: Vec<u32>,
    },
    /// ISPBs: sorted (ISPB, index) pairs for binary search, and the OOV index.
    Ispb {
        payee: bool,
        sorted: Vec<(Ispb, u32)>,
        oov: u32,
    },
}

/// A validated [`FeatureSpec`] turned into the tables that extraction runs on.
#[derive(Debug, Clone)]
pub struct FeatureExtractor {
    spec: FeatureSpec,
    numeric: Vec<CompiledNumeric>,
    categorical: Vec<CompiledCategorical>,
    needs_local_time: bool,
}

/// What every source needs from one transaction, computed once per row.
struct RowContext {
    accepted_unix: f64,
    minute_of_day: usize,
    weekday: usize,
}

/// sin/cos of the local time of day for each minute, so a row costs a lookup, not two libm calls.
fn minute_table() -> &'static [(f64, f64)] {
    static TABLE: OnceLock<Vec<(f64, f64)>> = OnceLock::new();
    TABLE.get_or_init(|| {
        (0..1440)
            .map(|m| (TAU * m as f64 / 1440.0).sin_cos())
            .collect()
    })
}

/// sin/cos of the weekday (Monday = 0).
fn weekday_table() -> &'static [(f64, f64)] {
    static TABLE: OnceLock<Vec<(f64, f64)>> = OnceLock::new();
    TABLE.get_or_init(|| (0..7).map(|d| (TAU * d as f64 / 7.0).sin_cos()).collect())
}

fn hours_between(earlier: f64, later: f64) -> f64 {
    ((later - earlier) / 3600.0).max(0.0)
}

fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

/// The raw value of a numeric source; `None` when an optional source is absent.
fn numeric_raw(source: NumericSource, tx: &Transaction, ctx: &RowContext) -> Option<f64> {
    use NumericSource as S;
    let payee = &tx.payee;
    let dict = payee.dict_stats.as_ref();
    let age = |ts: Option<&crate::transaction::Timestamp>| {
        ts.map(|t| hours_between(t.unix_seconds(), ctx.accepted_unix))
    };
    Some(match source {
        S::AmountReais => tx.amount_cents as f64 / 100.0,
        S::PayerTx1h => f64::from(tx.history.payer_tx_1h),
        S::PayerAmount24hReais => tx.history.payer_amount_24h_cents as f64 / 100.0,
        S::AmountShareOf24h => {
            let amount = tx.amount_cents as f64;
            amount / (amount + tx.history.payer_amount_24h_cents.max(0) as f64)
        }
        S::AmountZscore90d => return tx.history.amount_zscore_90d,
        S::AmountZscore90dMissing => flag(tx.history.amount_zscore_90d.is_none()),
        S::PayeeFirstTime => flag(tx.history.payee_first_time),
        S::DeviceRegistered => flag(tx.payer.device.registered),
        S::DeviceAgeHours => return age(tx.payer.device.first_seen_at.as_ref()),
        S::DeviceFirstSeenMissing => flag(tx.payer.device.first_seen_at.is_none()),
        S::PayerAccountAgeHours => {
            hours_between(tx.payer.account_opened_at.unix_seconds(), ctx.accepted_unix)
        }
        S::KeyAgeHours => return age(payee.key_created_at.as_ref()),
        S::KeyCreatedMissing => flag(payee.key_created_at.is_none()),
        S::PayeeAccountAgeHours => return age(payee.account_opened_at.as_ref()),
        S::PayeeAccountOpenedMissing => flag(payee.account_opened_at.is_none()),
        S::DictSettlements90d => return dict.map(|d| f64::from(d.settlements_90d)),
        S::DictFraudMarkers30d => return dict.map(|d| f64::from(d.fraud_markers_30d)),
        S::DictInfractionsOpen => return dict.map(|d| f64::from(d.infractions_open)),
        S::DictMuleMarker => return dict.map(|d| flag(d.mule_marker)),
        S::DictStatsMissing => flag(dict.is_none()),
        S::SameInstitution => flag(tx.payer.ispb == payee.ispb),
        S::LocalHourSin => minute_table()[ctx.minute_of_day].0,
        S::LocalHourCos => minute_table()[ctx.minute_of_day].1,
        S::LocalWeekdaySin => weekday_table()[ctx.weekday].0,
        S::LocalWeekdayCos => weekday_table()[ctx.weekday].1,
        S::NightWindow => flag(!(360..1200).contains(&ctx.minute_of_day)),
        S::Weekend => flag(ctx.weekday >= 5),
    })
}

impl CompiledNumeric {
    /// Transformed and clipped, before standardisation; `None` when absent.
    fn clipped(&self, tx: &Transaction, ctx: &RowContext) -> Option<f64> {
        let raw = numeric_raw(self.source, tx, ctx)?;
        let x = match self.transform {
            Transform::Identity => raw,
            // Sources fed to log1p are non-negative by construction; the max keeps NaN out regardless.
            Transform::Log1p => raw.max(0.0).ln_1p(),
        };
        Some(x.clamp(self.lo, self.hi))
    }

    fn standardised(&self, tx: &Transaction, ctx: &RowContext) -> f32 {
        match self.clipped(tx, ctx) {
            Some(x) => ((x - self.mean) * self.inv_std) as f32,
            // Missing: the training mean, i.e. 0 once standardised; the `.missing` indicator carries the signal.
            None => 0.0,
        }
    }
}

/// Position of the transaction's token in `source.closed_tokens()`; 0 for open (ISPB) sources.
fn closed_position(source: CategoricalSource, tx: &Transaction, minute_of_day: usize) -> usize {
    use crate::transaction::KeyType;
    use CategoricalSource as C;
    match source {
        C::InitiationForm => tx.initiation_form.index(),
        C::Purpose => tx.purpose.index(),
        C::PayerAccountType => tx.payer.account_type.index(),
        C::PayerPersonType => tx.payer.person_type.index(),
        C::PayeeAccountType => tx.payee.account_type.index(),
        C::PayeePersonType => tx.payee.person_type.index(),
        // Absent key: the NONE token, listed after every key type.
        C::PayeeKeyType => tx.payee.key_type.map_or(KeyType::ALL.len(), |k| k.index()),
        C::LocalHour => minute_of_day / 60,
        C::PayerIspb | C::PayeeIspb => 0,
    }
}

/// The token a categorical source yields for `tx`, as written in a vocabulary.
pub fn categorical_token(source: CategoricalSource, tx: &Transaction) -> Cow<'static, str> {
    match source {
        CategoricalSource::PayerIspb => Cow::Owned(tx.payer.ispb.to_string()),
        CategoricalSource::PayeeIspb => Cow::Owned(tx.payee.ispb.to_string()),
        closed => {
            let minute = usize::from(tx.local_time().minute_of_day);
            let tokens = closed.closed_tokens().unwrap_or_default();
            Cow::Borrowed(
                tokens
                    .get(closed_position(closed, tx, minute))
                    .copied()
                    .unwrap_or_default(),
            )
        }
    }
}

impl CompiledCategorical {
    fn compile(f: &super::spec::CategoricalFeature) -> Self {
        let index_of = |token: &str| {
            f.vocabulary
                .iter()
                .position(|t| t == token)
                .map_or(f.oov_index, |i| i as u32)
        };
        match f.source {
            CategoricalSource::PayerIspb | CategoricalSource::PayeeIspb => {
                let mut sorted: Vec<(Ispb, u32)> = f
                    .vocabulary
                    .iter()
                    .enumerate()
                    .filter_map(|(i, t)| Ispb::parse(t).ok().map(|ispb| (ispb, i as u32)))
                    .collect();
                sorted.sort_unstable();
                CompiledCategorical::Ispb {
                    payee: f.source == CategoricalSource::PayeeIspb,
                    sorted,
                    oov: f.oov_index,
                }
            }
            source => {
                let tokens = source.closed_tokens().unwrap_or_default();
                CompiledCategorical::Table {
                    source,
                    table: tokens.iter().map(|t| index_of(t)).collect(),
                }
            }
        }
    }

    fn index(&self, tx: &Transaction, ctx: &RowContext) -> u32 {
        match self {
            CompiledCategorical::Ispb { payee, sorted, oov } => {
                let ispb = if *payee { tx.payee.ispb } else { tx.payer.ispb };
                sorted
                    .binary_search_by(|(k, _)| k.cmp(&ispb))
                    .map_or(*oov, |i| sorted[i].1)
            }
            CompiledCategorical::Table { source, table } => {
                table[closed_position(*source, tx, ctx.minute_of_day)]
            }
        }
    }
}

impl FeatureExtractor {
    /// Validates `spec` and builds the lookup tables.
    pub fn new(spec: FeatureSpec) -> Result<Self, SpecError> {
        spec.validate()?;
        let numeric = spec
            .numeric
            .iter()
            .map(|f| {
                let [lo, hi] = f.clip.unwrap_or([f64::NEG_INFINITY, f64::INFINITY]);
                CompiledNumeric {
                    source: f.source,
                    transform: f.transform,
                    lo,
                    hi,
                    mean: f.mean,
                    inv_std: 1.0 / f.std,
                }
            })
            .collect::<Vec<_>>();
        let categorical = spec
            .categorical
            .iter()
            .map(CompiledCategorical::compile)
            .collect();
        let needs_local_time = spec
            .categorical
            .iter()
            .any(|f| f.source == CategoricalSource::LocalHour)
            || numeric.iter().any(|f| {
                use NumericSource as S;
                matches!(
                    f.source,
                    S::LocalHourSin
                        | S::LocalHourCos
                        | S::LocalWeekdaySin
                        | S::LocalWeekdayCos
                        | S::NightWindow
                        | S::Weekend
                )
            });
        Ok(FeatureExtractor {
            spec,
            numeric,
            categorical,
            needs_local_time,
        })
    }

    /// The spec this extractor was built from.
    pub fn spec(&self) -> &FeatureSpec {
        &self.spec
    }

    /// Numeric features per row.
    pub fn n_numeric(&self) -> usize {
        self.numeric.len()
    }

    /// Categorical features per row.
    pub fn n_categorical(&self) -> usize {
        self.categorical.len()
    }

    fn context(&self, tx: &Transaction) -> RowContext {
        let (minute_of_day, weekday) = if self.needs_local_time {
            let local = tx.local_time();
            (usize::from(local.minute_of_day), usize::from(local.weekday))
        } else {
            (0, 0)
        };
        RowContext {
            accepted_unix: tx.accepted_at.unix_seconds(),
            minute_of_day,
            weekday,
        }
    }

    /// Extracts a batch into fresh buffers.
    pub fn extract(&self, txs: &[Transaction]) -> FeatureBatch {
        let mut batch = FeatureBatch::default();
        self.extract_into(txs, &mut batch);
        batch
    }

    /// Extracts a batch into `out`, reusing its buffers: no allocation once they are large enough.
    pub fn extract_into(&self, txs: &[Transaction], out: &mut FeatureBatch) {
        let (nn, nc) = (self.n_numeric(), self.n_categorical());
        out.rows = txs.len();
        out.n_numeric = nn;
        out.n_categorical = nc;
        out.numeric.resize(txs.len() * nn, 0.0);
        out.categorical.resize(txs.len() * nc, 0);
        for (i, tx) in txs.iter().enumerate() {
            let num = &mut out.numeric[i * nn..(i + 1) * nn];
            let cat = &mut out.categorical[i * nc..(i + 1) * nc];
            self.extract_row(tx, num, cat);
        }
    }

    /// [`Self::extract`] with the rows cut into chunks on `parallel`'s threads (the same values:
    /// each row's features depend on that row alone).
    pub fn extract_with(&self, txs: &[Transaction], parallel: &Parallel) -> FeatureBatch {
        let (nn, nc) = (self.n_numeric(), self.n_categorical());
        let chunk = parallel.chunk_rows(txs.len());
        // A spec without one of the kinds has no slices to cut it by.
        if chunk >= txs.len() || nn == 0 || nc == 0 {
            return self.extract(txs);
        }
        let mut out = FeatureBatch {
            rows: txs.len(),
            n_numeric: nn,
            n_categorical: nc,
            numeric: vec![0.0; txs.len() * nn],
            categorical: vec![0; txs.len() * nc],
        };
        let parts: Vec<_> = txs
            .chunks(chunk)
            .zip(out.numeric.chunks_mut(chunk * nn))
            .zip(out.categorical.chunks_mut(chunk * nc))
            .collect();
        parallel.map(parts, |((txs, numeric), categorical)| {
            let rows = numeric.chunks_mut(nn).zip(categorical.chunks_mut(nc));
            for (tx, (num, cat)) in txs.iter().zip(rows) {
                self.extract_row(tx, num, cat);
            }
        });
        out
    }

    /// Writes one transaction's features into the given row slices.
    pub fn extract_row(&self, tx: &Transaction, numeric: &mut [f32], categorical: &mut [u32]) {
        let ctx = self.context(tx);
        for (slot, f) in numeric.iter_mut().zip(&self.numeric) {
            *slot = f.standardised(tx, &ctx);
        }
        for (slot, f) in categorical.iter_mut().zip(&self.categorical) {
            *slot = f.index(tx, &ctx);
        }
    }

    /// Transformed and clipped values before standardisation (`None` = absent), for fitting and debugging.
    pub fn unscaled_row(&self, tx: &Transaction) -> Vec<Option<f64>> {
        let ctx = self.context(tx);
        self.numeric.iter().map(|f| f.clipped(tx, &ctx)).collect()
    }
}
