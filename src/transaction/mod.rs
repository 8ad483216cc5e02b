//! The Pix transaction as a PSP sees it at scoring time, and its validation.
//!
//! The fields come from three places a payer's PSP really has before it settles: the SPI pacs.008
//! message it is about to send, the DICT lookup of the payee's key (with DICT's anti-fraud
//! statistics), and the PSP's own feature store (the payer's recent history).

pub mod arrow;
mod flat;
mod wire;

use chrono::{Datelike, TimeDelta, Timelike};
use chrono_tz::America::Sao_Paulo;
use serde::{Deserialize, Serialize};

pub use flat::{CSV_COLUMNS, at, from_flat, write_csv_row};
pub use wire::{
    AccountType, EndToEndId, InitiationForm, Ispb, KeyType, PersonType, Purpose, Timestamp, count,
};

/// A client error in a transaction: the dotted path of the offending field and why it is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{reason}", if field.is_empty() { String::new() } else { format!("{field}: ") })]
pub struct ValidationError {
    /// Dotted path of the field, e.g. `payee.key_type` or `transactions[3].amount_cents`.
    pub field: String,
    /// Human-readable reason.
    pub reason: String,
}

impl ValidationError {
    /// An error for `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ValidationError {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Prefixes the path, for a transaction nested in a larger document.
    pub fn within(mut self, prefix: &str) -> Self {
        if !prefix.is_empty() {
            self.field = if self.field.is_empty() {
                prefix.to_string()
            } else {
                format!("{prefix}.{}", self.field)
            };
        }
        self
    }
}

/// A scoring request for one Pix payment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transaction {
    /// SPI end-to-end id of the payment.
    pub end_to_end_id: EndToEndId,
    /// When the payer's PSP accepted the order.
    pub accepted_at: Timestamp,
    /// Amount in centavos; strictly positive.
    pub amount_cents: i64,
    /// How the payment was initiated.
    pub initiation_form: InitiationForm,
    /// Purpose code.
    pub purpose: Purpose,
    /// The paying side, from the PSP's own records.
    pub payer: Payer,
    /// The receiving side, from the message and the DICT lookup.
    pub payee: Payee,
    /// The payer's recent behaviour, from the PSP's feature store.
    pub history: History,
}

/// The payer's account and device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payer {
    /// ISPB of the payer's participant.
    pub ispb: Ispb,
    /// The payer's account type.
    pub account_type: AccountType,
    /// Natural or legal person.
    pub person_type: PersonType,
    /// When the payer's account was opened.
    pub account_opened_at: Timestamp,
    /// The device that placed the order.
    pub device: Device,
}

/// The device that placed the order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    /// Whether the device completed the PSP's device-binding (registration) flow.
    pub registered: bool,
    /// First time the PSP saw this device on this account; absent for a device never seen before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seen_at: Option<Timestamp>,
}

/// The payee's account, key and DICT statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payee {
    /// ISPB of the payee's participant.
    pub ispb: Ispb,
    /// The payee's account type.
    pub account_type: AccountType,
    /// Natural or legal person.
    pub person_type: PersonType,
    /// Type of the DICT key used; absent when the payment was keyed in manually (MANU).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_type: Option<KeyType>,
    /// When the key was registered in DICT; absent without a key or when DICT did not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_created_at: Option<Timestamp>,
    /// When the payee's account was opened, as DICT reports it; absent when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_opened_at: Option<Timestamp>,
    /// DICT anti-fraud statistics of the key; absent when no key lookup was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dict_stats: Option<DictStats>,
}

/// DICT anti-fraud statistics for the payee's key and account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DictStats {
    /// Pix payments settled to this key in the last 90 days.
    pub settlements_90d: u32,
    /// Fraud markers recorded against the key or account in the last 30 days.
    pub fraud_markers_30d: u32,
    /// Infraction reports still open against the key or account.
    pub infractions_open: u32,
    /// Whether DICT flags the account as a suspected mule.
    pub mule_marker: bool,
}

/// The payer's recent behaviour, excluding the payment being scored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct History {
    /// Whether the payer has never paid this payee before.
    pub payee_first_time: bool,
    /// Pix payments the payer made in the last hour.
    pub payer_tx_1h: u32,
    /// Total the payer paid by Pix in the last 24 hours, in centavos.
    pub payer_amount_24h_cents: i64,
    /// This amount's z-score against the payer's last 90 days; absent with too little history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_zscore_90d: Option<f64>,
}

/// Wall-clock time of a payment in America/Sao_Paulo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalTime {
    /// Minutes since local midnight, 0..1440.
    pub minute_of_day: u16,
    /// Day of the week, 0 = Monday .. 6 = Sunday.
    pub weekday: u8,
    /// Day of the month, 1..=31.
    pub day_of_month: u8,
}

/// Why a JSON array is refused where one transaction is expected. serde reads a struct from an
/// array of its fields in order, so without this check a list of transactions fails on its first
/// element as if it were the `end_to_end_id`.
pub const NOT_AN_ARRAY: &str =
    "a JSON array is not a transaction: expected one transaction as a JSON object";

/// Whether the document is a well-formed JSON array (a broken one is left to the parser, whose
/// error names the syntax fault).
pub fn is_json_array(json: &[u8]) -> bool {
    json.trim_ascii_start().first() == Some(&b'[')
        && serde_json::from_slice::<serde::de::IgnoredAny>(json).is_ok()
}

/// How far into the future a client-supplied timestamp may be, to absorb clock skew between systems.
pub const MAX_CLOCK_SKEW: TimeDelta = TimeDelta::minutes(5);

impl Transaction {
    /// Parses and validates one transaction from JSON.
    pub fn from_json(json: &[u8]) -> Result<Transaction, ValidationError> {
        if is_json_array(json) {
            return Err(ValidationError::new("", NOT_AN_ARRAY));
        }
        let tx = parse_json::<Transaction>(json)?;
        tx.validate()?;
        Ok(tx)
    }

    /// Checks the rules that span fields; deserialisation has already checked each field alone.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.amount_cents <= 0 {
            return Err(ValidationError::new(
                "amount_cents",
                format!(
                    "must be a positive number of centavos, got {}",
                    self.amount_cents
                ),
            ));
        }
        let key = self.payee.key_type;
        match self.initiation_form {
            InitiationForm::Manu if key.is_some() => {
                return Err(ValidationError::new(
                    "payee.key_type",
                    "must be absent when initiation_form is MANU (manual entry uses no DICT key)",
                ));
            }
            form @ (InitiationForm::Dict | InitiationForm::Qres | InitiationForm::Qrdn)
                if key.is_none() =>
            {
                return Err(ValidationError::new(
                    "payee.key_type",
                    format!("is required when initiation_form is {form}"),
                ));
            }
            _ => {}
        }
        if key.is_none() && self.payee.key_created_at.is_some() {
            return Err(ValidationError::new(
                "payee.key_created_at",
                "must be absent when payee.key_type is absent",
            ));
        }
        if self.payer.device.registered && self.payer.device.first_seen_at.is_none() {
            return Err(ValidationError::new(
                "payer.device.first_seen_at",
                "is required when payer.device.registered is true",
            ));
        }
        let latest = self.accepted_at.0 + MAX_CLOCK_SKEW;
        let past = [
            (
                "payer.account_opened_at",
                Some(self.payer.account_opened_at),
            ),
            (
                "payer.device.first_seen_at",
                self.payer.device.first_seen_at,
            ),
            ("payee.key_created_at", self.payee.key_created_at),
            ("payee.account_opened_at", self.payee.account_opened_at),
        ];
        for (field, ts) in past {
            if let Some(ts) = ts
                && ts.0 > latest
            {
                return Err(ValidationError::new(
                    field,
                    format!("{ts} is after accepted_at ({})", self.accepted_at),
                ));
            }
        }
        if self.history.payer_amount_24h_cents < 0 {
            return Err(ValidationError::new(
                "history.payer_amount_24h_cents",
                format!(
                    "must not be negative, got {}",
                    self.history.payer_amount_24h_cents
                ),
            ));
        }
        if let Some(z) = self.history.amount_zscore_90d
            && !z.is_finite()
        {
            return Err(ValidationError::new(
                "history.amount_zscore_90d",
                "must be a finite number",
            ));
        }
        Ok(())
    }

    /// The payment's local time in America/Sao_Paulo (which has had no daylight saving since 2019).
    pub fn local_time(&self) -> LocalTime {
        let local = self.accepted_at.0.with_timezone(&Sao_Paulo);
        LocalTime {
            minute_of_day: (local.hour() * 60 + local.minute()) as u16,
            weekday: local.weekday().num_days_from_monday() as u8,
            day_of_month: local.day() as u8,
        }
    }
}

/// `serde_json::from_slice`, with the same outcome, faster: the bytes are checked as UTF-8 once
/// and parsed as a `str`. From a slice serde_json checks every string it reads on its own (keys
/// included, ~45 per transaction); one check of the whole document and the `str` reader decoded
/// 1,024 transactions in 1,310 µs instead of 1,781 µs (`cargo bench --bench features -- decode`,
/// 2026-12-04). A document that is not UTF-8 goes to `from_slice`, which names where.
pub fn json_from_bytes<T: serde::de::DeserializeOwned>(json: &[u8]) -> serde_json::Result<T> {
    match std::str::from_utf8(json) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(json),
    }
}

/// Parses one JSON document. The fast path is plain serde_json; only a document that fails is
/// parsed again with path tracking (which allocates for every key) to name the offending field.
pub fn parse_json<T: serde::de::DeserializeOwned>(json: &[u8]) -> Result<T, ValidationError> {
    if let Ok(value) = json_from_bytes::<T>(json) {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_slice(json);
    let value: T = deserialize_with_path(&mut de)?;
    de.end().map_err(|e| {
        ValidationError::new("", format!("trailing characters after the JSON value: {e}"))
    })?;
    Ok(value)
}

/// Deserialises with serde_path_to_error and turns serde's message into a [`ValidationError`] whose
/// field is the full dotted path (including the name of a missing or unknown field).
pub fn deserialize_with_path<'de, T, D>(de: D) -> Result<T, ValidationError>
where
    T: Deserialize<'de>,
    D: serde::Deserializer<'de>,
    D::Error: std::fmt::Display,
{
    serde_path_to_error::deserialize(de).map_err(|err| {
        let path = err.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let message = err.inner().to_string();
        // serde_json appends " at line L column C"; the path already locates the problem.
        let reason = match message.rfind(" at line ") {
            Some(i) if message[i..].contains(" column ") => message[..i].to_string(),
            _ => message,
        };
        let named = ["missing field `", "unknown field `"]
            .iter()
            .find_map(|prefix| reason.strip_prefix(prefix))
            .and_then(|rest| rest.split('`').next())
            .map(str::to_string);
        let field = match named {
            Some(name) if !path.ends_with(&name) => {
                if path.is_empty() {
                    name
                } else {
                    format!("{path}.{name}")
                }
            }
            _ => path,
        };
        let reason = in_our_words(&field, reason);
        ValidationError::new(field, reason)
    })
}

/// serde names a count's or an amount's Rust type in its reason (`invalid value: integer `-2`,
/// expected u32`); a client reads what the field is instead, in the words every other path uses
/// ([`count`]). Done here, on a parse that already failed, because a `deserialize_with` on these
/// fields cost the successful parse 3–8 % (benches/features.rs `decode`, docs/benchmarks.md).
fn in_our_words(field: &str, reason: String) -> String {
    let name = field.rsplit('.').next().unwrap_or(field);
    let (rust, what) = match name {
        "payer_tx_1h" | "settlements_90d" | "fraud_markers_30d" | "infractions_open" => {
            ("u32", format!("a count from 0 to {}", u32::MAX))
        }
        "amount_cents" | "payer_amount_24h_cents" => ("i64", "a whole number of centavos".into()),
        _ => return reason,
    };
    let Some(head) = reason.strip_suffix(&format!(", expected {rust}")) else {
        return reason;
    };
    let out_of_range = head
        .strip_prefix("invalid value: integer `")
        .and_then(|v| v.strip_suffix('`'))
        .and_then(|v| v.parse::<i128>().ok());
    match (out_of_range, rust) {
        (Some(v), "u32") => count(v).err().unwrap_or(reason),
        (Some(v), _) => format!("must be at most {} centavos, got {v}", i64::MAX),
        (None, _) => format!("{head}, expected {what}"),
    }
}

#[cfg(test)]
mod tests {
    use super::json_from_bytes;

    /// The `str` reader must give exactly what the slice reader gives: the same value, or the
    /// same error (kind, line, column), for UTF-8 and for bytes that are not.
    #[test]
    fn json_from_bytes_is_from_slice() {
        let docs: [&[u8]; 12] = [
            br#"{"a": "x\u00e9y", "b": [1, 2.5e-3, -0], "c": null}"#,
            "{\"a\": \"na\u{e7}\u{e3}o\"}".as_bytes(),
            b"{\"a\": \"\xff\"}",
            b"{\"a\": 1}\xff",
            b"\xef\xbb\xbf{}",
            br#"{"a": "\ud800"}"#,
            br#"{"a": "\q"}"#,
            b"{\"a\": \"tab\there\"}",
            br#"{"a": 1,}"#,
            br#"{"a": 1} x"#,
            b"",
            br#"{"a": "unterminated"#,
        ];
        for doc in docs {
            let fast = json_from_bytes::<serde_json::Value>(doc).map_err(|e| e.to_string());
            let slow = serde_json::from_slice::<serde_json::Value>(doc).map_err(|e| e.to_string());
            assert_eq!(fast, slow, "{}", String::from_utf8_lossy(doc));
        }
    }
}
