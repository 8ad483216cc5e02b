//! Deterministic synthetic Pix traffic with labelled fraud typologies.
//!
//! The generative story is written down in `docs/synthetic-data.md`; `story.rs` is its code.
//! Arrivals are in time order: row `i` sits at the `(i + u)/rows` quantile of the traffic intensity
//! over the window, and its typology is drawn given its hour, so night-time typologies land at night
//! without breaking the order.

mod calendar;
mod rng;
mod shift;
mod story;

use std::io::{self, Write};

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use calendar::{HOUR_PROFILES, weekday_weight};
pub use rng::Rng;
pub use shift::Shift;

use crate::transaction::{CSV_COLUMNS, Transaction, write_csv_row};

/// The ground truth of a synthetic row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum FraudType {
    /// Legitimate traffic.
    None,
    /// "Falso parente": a scammer posing as a relative with a new phone number.
    FalsoParente,
    /// "Falsa central": a fake bank call centre talks the victim into transfers.
    FalsaCentral,
    /// The payer's account is driven by someone else from a new device.
    AccountTakeover,
    /// "Sequestro relâmpago": the victim is forced to pay at night.
    SequestroRelampago,
    /// The payee is a mule account receiving fraud proceeds.
    Mule,
}

impl FraudType {
    /// Every typology, legitimate first.
    pub const ALL: &'static [FraudType] = &[
        FraudType::None,
        FraudType::FalsoParente,
        FraudType::FalsaCentral,
        FraudType::AccountTakeover,
        FraudType::SequestroRelampago,
        FraudType::Mule,
    ];

    /// The snake_case name written in the `fraud_type` column.
    pub fn as_str(self) -> &'static str {
        match self {
            FraudType::None => "none",
            FraudType::FalsoParente => "falso_parente",
            FraudType::FalsaCentral => "falsa_central",
            FraudType::AccountTakeover => "account_takeover",
            FraudType::SequestroRelampago => "sequestro_relampago",
            FraudType::Mule => "mule",
        }
    }

    /// Share of fraud rows of this typology (legitimate: 0).
    fn share(self) -> f64 {
        match self {
            FraudType::None => 0.0,
            FraudType::FalsoParente => 0.30,
            FraudType::FalsaCentral => 0.15,
            FraudType::AccountTakeover => 0.20,
            FraudType::SequestroRelampago => 0.10,
            FraudType::Mule => 0.25,
        }
    }
}

/// One synthetic row: the transaction and its label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SynthRow {
    /// The transaction, exactly as a client would send it.
    pub transaction: Transaction,
    /// 1 for fraud, 0 for legitimate.
    pub label: u8,
    /// The typology behind the row.
    pub fraud_type: FraudType,
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct SynthConfig {
    /// Seed: the same seed and settings give the same bytes.
    pub seed: u64,
    /// Number of rows.
    pub rows: u64,
    /// Share of fraud rows, in [0, 1).
    pub fraud_rate: f64,
    /// First local day (America/Sao_Paulo) of the window.
    pub start: NaiveDate,
    /// Length of the window in days.
    pub days: u32,
    /// How the traffic moves away from the training distribution (none: it does not).
    pub shifts: Vec<Shift>,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            seed: 42,
            rows: 1_000,
            fraud_rate: 0.008,
            start: NaiveDate::from_ymd_opt(2026, 10, 1).unwrap_or_default(),
            days: 30,
            shifts: Vec::new(),
        }
    }
}

/// Why a generator could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    /// The fraud rate is outside [0, 1).
    #[error("fraud rate must be in [0, 1), got {0}")]
    FraudRate(f64),
    /// The window is empty.
    #[error("days must be at least 1")]
    Days,
}

/// Hour-bucket intensity of the window, as a cumulative table for inverse-CDF arrivals.
struct Arrivals {
    start_utc: DateTime<Utc>,
    cumulative: Vec<f64>,
    bucket: usize,
}

impl Arrivals {
    fn new(cfg: &SynthConfig) -> Self {
        // America/Sao_Paulo has been UTC-3 all year since 2019; buckets are local hours.
        let start_utc = cfg.start.and_hms_opt(3, 0, 0).unwrap_or_default().and_utc();
        let mut cumulative = Vec::with_capacity(cfg.days as usize * 24);
        let mut total = 0.0;
        for d in 0..i64::from(cfg.days) {
            let date = cfg.start + TimeDelta::days(d);
            let day_weight = weekday_weight(date);
            for h in 0..24 {
                total += day_weight * HOUR_PROFILES.legit_density[h];
                cumulative.push(total);
            }
        }
        for c in &mut cumulative {
            *c /= total;
        }
        Arrivals {
            start_utc,
            cumulative,
            bucket: 0,
        }
    }

    /// The instant at quantile `q` of the window's traffic; `q` must not decrease between calls.
    fn at(&mut self, q: f64) -> (DateTime<Utc>, usize) {
        while self.bucket + 1 < self.cumulative.len() && self.cumulative[self.bucket] <= q {
            self.bucket += 1;
        }
        let lo = if self.bucket == 0 {
            0.0
        } else {
            self.cumulative[self.bucket - 1]
        };
        let hi = self.cumulative[self.bucket];
        let frac = if hi > lo {
            ((q - lo) / (hi - lo)).clamp(0.0, 0.999_999)
        } else {
            0.0
        };
        let micros = ((self.bucket as f64 + frac) * 3_600_000_000.0) as i64;
        // Millisecond precision, as PSPs stamp their orders.
        let t = self.start_utc + TimeDelta::milliseconds(micros / 1000);
        (t, self.bucket % 24)
    }
}

/// An iterator over synthetic rows.
pub struct Generator {
    cfg: SynthConfig,
    rng: Rng,
    arrivals: Arrivals,
    next: u64,
}

impl Generator {
    /// Builds a generator; fails on an impossible configuration.
    pub fn new(cfg: SynthConfig) -> Result<Self, SynthError> {
        if !(0.0..1.0).contains(&cfg.fraud_rate) {
            return Err(SynthError::FraudRate(cfg.fraud_rate));
        }
        if cfg.days == 0 {
            return Err(SynthError::Days);
        }
        Ok(Generator {
            rng: Rng::new(cfg.seed),
            arrivals: Arrivals::new(&cfg),
            cfg,
            next: 0,
        })
    }

    /// P(typology | local hour) so that the overall share of each typology is `fraud_rate × share`
    /// and its hours follow its own profile.
    fn typology_at(&mut self, hour: usize) -> FraudType {
        let legit = HOUR_PROFILES.legit_density[hour];
        let mut u = self.rng.uniform();
        for &t in &FraudType::ALL[1..] {
            let p = self.cfg.fraud_rate * t.share() * HOUR_PROFILES.density(t)[hour] / legit;
            if u < p {
                return t;
            }
            u -= p;
        }
        FraudType::None
    }
}

impl Iterator for Generator {
    type Item = SynthRow;

    fn next(&mut self) -> Option<SynthRow> {
        if self.next >= self.cfg.rows {
            return None;
        }
        let q = (self.next as f64 + self.rng.uniform()) / self.cfg.rows as f64;
        self.next += 1;
        let (mut at, mut hour) = self.arrivals.at(q);
        if self.cfg.shifts.contains(&Shift::Night) {
            (at, hour) = shift::to_night(&mut self.rng, at, hour);
        }
        let campaign = self.cfg.shifts.iter().find_map(|s| match *s {
            Shift::Campaign(t, rate) => shift::campaign(&mut self.rng, t, rate),
            _ => None,
        });
        let fraud_type = campaign.unwrap_or_else(|| self.typology_at(hour));
        let mut transaction = story::transaction(&mut self.rng, at, hour, fraud_type);
        if !self.cfg.shifts.is_empty() {
            shift::apply(&mut self.rng, &self.cfg.shifts, &mut transaction);
        }
        Some(SynthRow {
            transaction,
            label: u8::from(fraud_type != FraudType::None),
            fraud_type,
        })
    }
}

/// Writes rows as JSON lines: `{"transaction": {...}, "label": 0, "fraud_type": "none"}`.
pub fn write_jsonl(rows: impl Iterator<Item = SynthRow>, out: &mut impl Write) -> io::Result<u64> {
    let mut n = 0;
    let mut buf = Vec::with_capacity(1024);
    for row in rows {
        buf.clear();
        serde_json::to_writer(&mut buf, &row)?;
        buf.push(b'\n');
        out.write_all(&buf)?;
        n += 1;
    }
    Ok(n)
}

/// Writes rows as CSV with a header: the flattened transaction columns, then `label`, `fraud_type`.
pub fn write_csv(rows: impl Iterator<Item = SynthRow>, out: &mut impl Write) -> io::Result<u64> {
    let mut n = 0;
    let mut buf = Vec::with_capacity(1024);
    writeln!(out, "{},label,fraud_type", CSV_COLUMNS.join(","))?;
    for row in rows {
        buf.clear();
        write_csv_row(&row.transaction, &mut buf);
        buf.push(b',');
        buf.push(b'0' + row.label);
        buf.push(b',');
        buf.extend_from_slice(row.fraud_type.as_str().as_bytes());
        buf.push(b'\n');
        out.write_all(&buf)?;
        n += 1;
    }
    Ok(n)
}

/// Rows per Parquet row group in [`write_parquet`]: large enough for columnar encoding to pay,
/// small enough that a reader streams the file in bounded memory.
pub const PARQUET_ROW_GROUP: usize = 262_144;

/// Writes rows as Parquet (snappy): the transaction's columns in `layout` (see
/// [`crate::transaction::arrow`]), then `label` (int8) and `fraud_type` (text).
pub fn write_parquet<W: Write + Send>(
    rows: impl Iterator<Item = SynthRow>,
    out: W,
    layout: crate::transaction::arrow::Layout,
) -> Result<u64, parquet::errors::ParquetError> {
    use std::sync::Arc;

    use arrow_array::builder::{Int8Builder, StringBuilder};
    use arrow_array::{ArrayRef, RecordBatch};
    use arrow_schema::{DataType, Field, Schema};
    use parquet::arrow::ArrowWriter;
    use parquet::basic::Compression;
    use parquet::file::properties::WriterProperties;

    const CHUNK: usize = 65_536;
    let mut fields = crate::transaction::arrow::schema(layout).fields().to_vec();
    fields.push(Arc::new(Field::new("label", DataType::Int8, false)));
    fields.push(Arc::new(Field::new("fraud_type", DataType::Utf8, false)));
    let schema = Arc::new(Schema::new(fields));
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(PARQUET_ROW_GROUP))
        .build();
    let mut writer = ArrowWriter::try_new(out, schema.clone(), Some(props))?;
    let mut columns = crate::transaction::arrow::Columns::with_capacity(CHUNK);
    let (mut labels, mut types) = (Int8Builder::new(), StringBuilder::new());
    let mut n = 0u64;
    let mut pending = 0usize;
    let flush = |columns: &mut crate::transaction::arrow::Columns,
                 labels: &mut Int8Builder,
                 types: &mut StringBuilder,
                 writer: &mut ArrowWriter<W>|
     -> Result<(), parquet::errors::ParquetError> {
        let mut arrays: Vec<ArrayRef> =
            columns.finish(layout).into_iter().map(|(_, a)| a).collect();
        arrays.push(Arc::new(labels.finish()));
        arrays.push(Arc::new(types.finish()));
        writer.write(&RecordBatch::try_new(schema.clone(), arrays)?)
    };
    for row in rows {
        columns.push(&row.transaction);
        labels.append_value(row.label as i8);
        types.append_value(row.fraud_type.as_str());
        n += 1;
        pending += 1;
        if pending == CHUNK {
            flush(&mut columns, &mut labels, &mut types, &mut writer)?;
            pending = 0;
        }
    }
    if pending > 0 || n == 0 {
        flush(&mut columns, &mut labels, &mut types, &mut writer)?;
    }
    writer.close()?;
    Ok(n)
}
