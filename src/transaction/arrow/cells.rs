//! Reading one row's cells out of typed Arrow columns and checking them as a transaction: each
//! leaf's column cast once per batch to the type its kind reads, then cell by cell, with the field
//! path and reason of the first invalid cell.

use std::str::FromStr;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int64Array, LargeStringArray, StringArray,
    StringViewArray, TimestampMicrosecondArray,
};
use arrow_buffer::NullBuffer;
use arrow_schema::{DataType, TimeUnit};
use chrono::DateTime;

use super::{Kind, LEAVES};
use crate::transaction::at;
use crate::transaction::{
    Device, DictStats, EndToEndId, History, Ispb, Payee, Payer, Timestamp, Transaction,
    ValidationError,
};

/// What a leaf of `kind` accepts, for messages.
pub(super) fn expected(kind: Kind) -> &'static str {
    match kind {
        Kind::Text => "text",
        Kind::Timestamp => "a timestamp or RFC 3339 text",
        Kind::Int | Kind::Count => "an integer (or its text)",
        Kind::Bool => "a boolean (or true/false text)",
        Kind::Float => "a number (or its text)",
    }
}

/// Whether `t` holds text (plain, large, view, or a dictionary of those).
pub(super) fn is_text(t: &DataType) -> bool {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(_, v) => is_text(v),
        _ => false,
    }
}

/// A leaf's column for one batch, cast to the one type its kind reads (text stays as it is).
pub(super) struct Owned {
    array: ArrayRef,
    nulls: Option<NullBuffer>,
    keys: Option<Vec<usize>>,
}

impl Owned {
    pub(super) fn new(kind: Kind, array: ArrayRef) -> Result<Owned, arrow_schema::ArrowError> {
        let nulls = array.logical_nulls();
        if let Some(dict) = array.as_any_dictionary_opt() {
            return Ok(Owned {
                keys: Some(dict.normalized_keys()),
                array: dict.values().clone(),
                nulls,
            });
        }
        let target = match (kind, array.data_type()) {
            (_, t) if is_text(t) => None,
            (Kind::Int | Kind::Count, _) => Some(DataType::Int64),
            (Kind::Float, _) => Some(DataType::Float64),
            // Unit only: an Arrow timestamp with a zone is UTC underneath, and keeping the zone
            // keeps arrow-cast from shifting the values.
            (Kind::Timestamp, DataType::Timestamp(_, tz)) => {
                Some(DataType::Timestamp(TimeUnit::Microsecond, tz.clone()))
            }
            _ => None,
        };
        let array = match target {
            Some(t) if &t != array.data_type() => arrow_cast::cast(&array, &t)?,
            _ => array,
        };
        Ok(Owned {
            array,
            nulls,
            keys: None,
        })
    }

    pub(super) fn view(&self) -> Col<'_> {
        let values = match self.array.data_type() {
            DataType::Utf8 => Values::Utf8(self.array.as_string::<i32>()),
            DataType::LargeUtf8 => Values::Large(self.array.as_string::<i64>()),
            DataType::Utf8View => Values::View(self.array.as_string_view()),
            DataType::Boolean => Values::Bool(self.array.as_boolean()),
            DataType::Int64 => Values::Int(self.array.as_primitive::<Int64Type>()),
            DataType::Float64 => Values::Float(self.array.as_primitive::<Float64Type>()),
            DataType::Timestamp(TimeUnit::Microsecond, _) => {
                Values::Micros(self.array.as_primitive::<TimestampMicrosecondType>())
            }
            _ => Values::Unreadable,
        };
        Col {
            values,
            nulls: self.nulls.as_ref(),
            keys: self.keys.as_deref(),
        }
    }
}

enum Values<'a> {
    Utf8(&'a StringArray),
    Large(&'a LargeStringArray),
    View(&'a StringViewArray),
    Bool(&'a BooleanArray),
    Int(&'a Int64Array),
    Float(&'a Float64Array),
    Micros(&'a TimestampMicrosecondArray),
    /// A dictionary of a type the plan accepted but no reader handles.
    Unreadable,
}

/// A typed view of one leaf's column.
pub(super) struct Col<'a> {
    values: Values<'a>,
    nulls: Option<&'a NullBuffer>,
    keys: Option<&'a [usize]>,
}

/// A cell's value, before it is checked against its field's type.
enum Cell<'a> {
    Text(&'a str),
    Bool(bool),
    Int(i64),
    Float(f64),
    Micros(i64),
}

impl Col<'_> {
    #[inline]
    fn get(&self, row: usize) -> Result<Option<Cell<'_>>, String> {
        if self.nulls.is_some_and(|n| n.is_null(row)) {
            return Ok(None);
        }
        let i = match self.keys {
            Some(keys) => keys[row],
            None => row,
        };
        Ok(Some(match &self.values {
            Values::Utf8(a) => Cell::Text(a.value(i)),
            Values::Large(a) => Cell::Text(a.value(i)),
            Values::View(a) => Cell::Text(a.value(i)),
            Values::Bool(a) => Cell::Bool(a.value(i)),
            Values::Int(a) => Cell::Int(a.value(i)),
            Values::Float(a) => Cell::Float(a.value(i)),
            Values::Micros(a) => Cell::Micros(a.value(i)),
            Values::Unreadable => return Err("has a column type pixguard cannot read".into()),
        }))
    }
}

/// Reads leaf `k` of row `i`; `None` when the column is absent or the cell null.
#[inline]
fn cell<'a>(
    cols: &'a [Option<Col<'a>>],
    k: usize,
    i: usize,
) -> Result<Option<Cell<'a>>, ValidationError> {
    match &cols[k] {
        None => Ok(None),
        Some(c) => c
            .get(i)
            .map_err(|e| ValidationError::new(LEAVES[k].path, e)),
    }
}

/// A required leaf's value: absent or null is an error naming it.
#[inline]
fn need<T>(k: usize, v: Result<Option<T>, ValidationError>) -> Result<T, ValidationError> {
    v?.ok_or_else(|| ValidationError::new(LEAVES[k].path, "is required"))
}

#[cold]
fn wrong(k: usize) -> ValidationError {
    ValidationError::new(
        LEAVES[k].path,
        format!("must be {}", expected(LEAVES[k].kind)),
    )
}

#[inline]
fn text<'a>(
    cols: &'a [Option<Col<'a>>],
    k: usize,
    i: usize,
) -> Result<Option<&'a str>, ValidationError> {
    match cell(cols, k, i)? {
        None => Ok(None),
        Some(Cell::Text(s)) => Ok(Some(s)),
        Some(_) => Err(wrong(k)),
    }
}

#[inline]
fn parsed<T>(
    cols: &[Option<Col<'_>>],
    k: usize,
    i: usize,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<T>, ValidationError> {
    text(cols, k, i)?
        .map(|s| parse(s).map_err(|e| ValidationError::new(LEAVES[k].path, e)))
        .transpose()
}

#[inline]
fn code<T: FromStr<Err = String>>(
    cols: &[Option<Col<'_>>],
    k: usize,
    i: usize,
) -> Result<Option<T>, ValidationError> {
    parsed(cols, k, i, T::from_str)
}

#[inline]
fn timestamp(
    cols: &[Option<Col<'_>>],
    k: usize,
    i: usize,
) -> Result<Option<Timestamp>, ValidationError> {
    match cell(cols, k, i)? {
        None => Ok(None),
        Some(Cell::Text(s)) => Timestamp::parse(s)
            .map(Some)
            .map_err(|e| ValidationError::new(LEAVES[k].path, e)),
        Some(Cell::Micros(us)) => DateTime::from_timestamp_micros(us)
            .map(|t| Some(Timestamp(t.fixed_offset())))
            .ok_or_else(|| {
                ValidationError::new(LEAVES[k].path, format!("{us} µs is out of range"))
            }),
        Some(_) => Err(wrong(k)),
    }
}

#[inline]
fn int(cols: &[Option<Col<'_>>], k: usize, i: usize) -> Result<Option<i64>, ValidationError> {
    match cell(cols, k, i)? {
        None => Ok(None),
        Some(Cell::Int(v)) => Ok(Some(v)),
        Some(Cell::Text(s)) => s
            .trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| ValidationError::new(LEAVES[k].path, not_an_integer(s))),
        Some(_) => Err(wrong(k)),
    }
}

#[inline]
fn count(cols: &[Option<Col<'_>>], k: usize, i: usize) -> Result<Option<u32>, ValidationError> {
    int(cols, k, i)?
        .map(|v| {
            crate::transaction::count(v)
                .map_err(|reason| ValidationError::new(LEAVES[k].path, reason))
        })
        .transpose()
}

/// Why a text cell is not an integer; a whole number written as a float gets a hint, since that
/// is how pandas writes an integer column that has missing values.
#[cold]
fn not_an_integer(s: &str) -> String {
    match s.trim().parse::<f64>() {
        // Only a number written with a point: `99999999999999999999` is an integer, too large.
        Ok(v) if s.contains('.') && v.is_finite() && v.fract() == 0.0 => format!(
            "`{s}` is not an integer (a float column: pandas writes integers with missing values \
             as floats; cast the column to Int64 before writing)"
        ),
        _ => format!("`{s}` is not an integer"),
    }
}

#[inline]
fn boolean(cols: &[Option<Col<'_>>], k: usize, i: usize) -> Result<Option<bool>, ValidationError> {
    match cell(cols, k, i)? {
        None => Ok(None),
        Some(Cell::Bool(b)) => Ok(Some(b)),
        // As Spark (`true`), pandas (`True`) and Excel (`TRUE`) write them.
        Some(Cell::Text(s)) if s.trim().eq_ignore_ascii_case("true") => Ok(Some(true)),
        Some(Cell::Text(s)) if s.trim().eq_ignore_ascii_case("false") => Ok(Some(false)),
        Some(_) => Err(wrong(k)),
    }
}

#[inline]
fn float(cols: &[Option<Col<'_>>], k: usize, i: usize) -> Result<Option<f64>, ValidationError> {
    match cell(cols, k, i)? {
        None => Ok(None),
        Some(Cell::Float(v)) => Ok(Some(v)),
        Some(Cell::Int(v)) => Ok(Some(v as f64)),
        Some(Cell::Text(s)) => s
            .trim()
            .parse::<f64>()
            .map(Some)
            .map_err(|_| ValidationError::new(LEAVES[k].path, format!("`{s}` is not a number"))),
        Some(_) => Err(wrong(k)),
    }
}

/// Row `i` as a validated transaction.
pub(super) fn row(c: &[Option<Col<'_>>], i: usize) -> Result<Transaction, ValidationError> {
    use at::*;
    let dict = [
        count(c, SETTLEMENTS, i)?,
        count(c, FRAUD_MARKERS, i)?,
        count(c, INFRACTIONS, i)?,
    ];
    let mule = boolean(c, MULE, i)?;
    let given = dict.iter().filter(|v| v.is_some()).count() + usize::from(mule.is_some());
    let dict_stats = match (dict, mule) {
        ([Some(s), Some(f), Some(o)], Some(m)) => Some(DictStats {
            settlements_90d: s,
            fraud_markers_30d: f,
            infractions_open: o,
            mule_marker: m,
        }),
        _ if given == 0 => None,
        _ => {
            let k = [SETTLEMENTS, FRAUD_MARKERS, INFRACTIONS]
                .into_iter()
                .zip(dict)
                .find(|(_, v)| v.is_none())
                .map_or(MULE, |(k, _)| k);
            return Err(ValidationError::new(
                LEAVES[k].path,
                "is required when the other payee.dict_stats fields are given",
            ));
        }
    };
    let tx = Transaction {
        end_to_end_id: need(E2E, parsed(c, E2E, i, EndToEndId::parse))?,
        accepted_at: need(ACCEPTED, timestamp(c, ACCEPTED, i))?,
        amount_cents: need(AMOUNT, int(c, AMOUNT, i))?,
        initiation_form: need(FORM, code(c, FORM, i))?,
        purpose: need(PURPOSE, code(c, PURPOSE, i))?,
        payer: Payer {
            ispb: need(PAYER_ISPB, parsed(c, PAYER_ISPB, i, Ispb::parse))?,
            account_type: need(PAYER_ACCOUNT, code(c, PAYER_ACCOUNT, i))?,
            person_type: need(PAYER_PERSON, code(c, PAYER_PERSON, i))?,
            account_opened_at: need(PAYER_OPENED, timestamp(c, PAYER_OPENED, i))?,
            device: Device {
                registered: need(DEVICE_REGISTERED, boolean(c, DEVICE_REGISTERED, i))?,
                first_seen_at: timestamp(c, DEVICE_FIRST_SEEN, i)?,
            },
        },
        payee: Payee {
            ispb: need(PAYEE_ISPB, parsed(c, PAYEE_ISPB, i, Ispb::parse))?,
            account_type: need(PAYEE_ACCOUNT, code(c, PAYEE_ACCOUNT, i))?,
            person_type: need(PAYEE_PERSON, code(c, PAYEE_PERSON, i))?,
            key_type: code(c, KEY_TYPE, i)?,
            key_created_at: timestamp(c, KEY_CREATED, i)?,
            account_opened_at: timestamp(c, PAYEE_OPENED, i)?,
            dict_stats,
        },
        history: History {
            payee_first_time: need(FIRST_TIME, boolean(c, FIRST_TIME, i))?,
            payer_tx_1h: need(TX_1H, count(c, TX_1H, i))?,
            payer_amount_24h_cents: need(AMOUNT_24H, int(c, AMOUNT_24H, i))?,
            amount_zscore_90d: float(c, ZSCORE, i)?,
        },
    };
    tx.validate()?;
    Ok(tx)
}
