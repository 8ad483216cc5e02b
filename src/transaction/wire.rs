//! Wire-level value types of a Pix transaction: identifiers, timestamps and code lists.
//!
//! Each type validates itself while it is deserialised, so a malformed value is reported with the
//! path of the field that holds it.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Defines a closed code list with its wire spelling, `ALL`, `as_str`, `index`, `FromStr` and serde.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $wire:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $wire)] $variant),+
        }

        impl $name {
            /// Every value, in declaration order (the order of `index`).
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire spelling of every value, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$($wire),+];

            /// The spelling used on the wire.
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $wire),+ }
            }

            /// Position in `ALL`, for table lookups on the hot path.
            pub const fn index(self) -> usize {
                self as usize
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($wire => Ok($name::$variant),)+
                    _ => Err(format!(
                        "unknown value `{s}`, expected one of {}",
                        [$($wire),+].join(", ")
                    )),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_enum!(
    /// How the payment was initiated (pacs.008 `LclInstrm`), as SPI codes it.
    InitiationForm {
        /// Manual entry of the payee's account details.
        Manu => "MANU",
        /// A DICT key typed by the payer.
        Dict => "DICT",
        /// A static QR code.
        Qres => "QRES",
        /// A dynamic QR code.
        Qrdn => "QRDN",
        /// A payment initiation service provider.
        Inic => "INIC",
        /// Pix Automático (recurring debit authorisation).
        Auto => "AUTO",
        /// Pix by approximation (NFC).
        Apdn => "APDN",
    }
);

wire_enum!(
    /// The payment's purpose code.
    Purpose {
        /// An ordinary payment.
        Ipay => "IPAY",
        /// A purchase with cash back (Pix Troco).
        Gscb => "GSCB",
        /// Anything else, including Pix Saque.
        Othr => "OTHR",
        /// A refund.
        Refu => "REFU",
    }
);

wire_enum!(
    /// The kind of account at the payer's or payee's institution.
    AccountType {
        /// Current (checking) account.
        Cacc => "CACC",
        /// Savings account.
        Svgs => "SVGS",
        /// Prepaid payment account.
        Tran => "TRAN",
        /// Salary account.
        Slry => "SLRY",
    }
);

wire_enum!(
    /// Whether an account belongs to a natural or a legal person.
    PersonType {
        /// An individual (CPF).
        Natural => "NATURAL",
        /// A company (CNPJ).
        Legal => "LEGAL",
    }
);

wire_enum!(
    /// The type of the DICT key used to address the payee.
    KeyType {
        /// A CPF number.
        Cpf => "CPF",
        /// A CNPJ number.
        Cnpj => "CNPJ",
        /// A mobile phone number.
        Phone => "PHONE",
        /// An e-mail address.
        Email => "EMAIL",
        /// A random key (chave aleatória).
        Evp => "EVP",
    }
);

/// A count (`history.payer_tx_1h`, the DICT statistics) from an integer read anywhere, with the
/// one reason every path gives for a value out of range: JSON, files and OIP tensors alike.
pub fn count<T: TryInto<u32> + Copy + fmt::Display>(v: T) -> Result<u32, String> {
    v.try_into()
        .map_err(|_| format!("must be a count from 0 to {}, got {v}", u32::MAX))
}

/// Writes `value` as zero-padded decimal filling all of `out` (higher digits are dropped).
fn put_digits(out: &mut [u8], value: u32) {
    let mut v = value;
    for d in out.iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// An 8-digit ISPB code that identifies an SPI participant. Stored inline: no allocation.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ispb([u8; 8]);

impl Ispb {
    /// Parses exactly eight ASCII digits.
    pub fn parse(s: &str) -> Result<Self, String> {
        let b = s.as_bytes();
        if b.len() != 8 || !b.iter().all(u8::is_ascii_digit) {
            return Err(format!("`{s}` is not an ISPB: expected exactly 8 digits"));
        }
        let mut out = [0u8; 8];
        out.copy_from_slice(b);
        Ok(Ispb(out))
    }

    fn wire_str<'a>(&'a self, _: &'a mut [u8; 40]) -> &'a str {
        self.as_str()
    }

    /// The eight digits.
    pub fn as_str(&self) -> &str {
        // Only ASCII digits are ever stored.
        std::str::from_utf8(&self.0).unwrap_or("????????")
    }
}

impl fmt::Debug for Ispb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ispb({})", self.as_str())
    }
}

impl fmt::Display for Ispb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The SPI end-to-end identifier: `E` + payer-side ISPB + `yyyyMMddHHmm` (UTC) + 11 alphanumerics.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct EndToEndId([u8; 32]);

impl EndToEndId {
    /// Parses and validates the 32-character layout, including the embedded date and time.
    pub fn parse(s: &str) -> Result<Self, String> {
        let b = s.as_bytes();
        if b.len() != 32 {
            return Err(format!(
                "must be 32 characters (E + 8-digit ISPB + yyyyMMddHHmm + 11 alphanumerics), got {}",
                s.chars().count()
            ));
        }
        if b[0] != b'E' {
            return Err("must start with `E`".into());
        }
        if !b[1..9].iter().all(u8::is_ascii_digit) {
            return Err(
                "characters 2-9 must be the 8-digit ISPB of the payer's participant".into(),
            );
        }
        if !b[9..21].iter().all(u8::is_ascii_digit) {
            return Err("characters 10-21 must be a yyyyMMddHHmm timestamp".into());
        }
        let num = |r: std::ops::Range<usize>| -> u32 {
            b[r].iter()
                .fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'))
        };
        let date = NaiveDate::from_ymd_opt(num(9..13) as i32, num(13..15), num(15..17));
        let valid_time = num(17..19) < 24 && num(19..21) < 60;
        if date.is_none() || !valid_time {
            return Err(format!(
                "characters 10-21 (`{}`) are not a valid yyyyMMddHHmm timestamp",
                &s[9..21]
            ));
        }
        if !b[21..].iter().all(u8::is_ascii_alphanumeric) {
            return Err("the last 11 characters must be alphanumeric".into());
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(b);
        Ok(EndToEndId(out))
    }

    fn wire_str<'a>(&'a self, _: &'a mut [u8; 40]) -> &'a str {
        self.as_str()
    }

    /// The identifier as text.
    pub fn as_str(&self) -> &str {
        // Only validated ASCII is ever stored.
        std::str::from_utf8(&self.0).unwrap_or("")
    }

    /// Builds an identifier from its parts; `suffix` must be 11 ASCII alphanumerics.
    pub fn from_parts(ispb: Ispb, utc: NaiveDateTime, suffix: &[u8; 11]) -> Self {
        let mut out = [0u8; 32];
        out[0] = b'E';
        out[1..9].copy_from_slice(&ispb.0);
        use chrono::{Datelike, Timelike};
        let fields = [
            (utc.year().clamp(0, 9999) as u32, 4),
            (utc.month(), 2),
            (utc.day(), 2),
            (utc.hour(), 2),
            (utc.minute(), 2),
        ];
        let mut at = 9;
        for (value, width) in fields {
            put_digits(&mut out[at..at + width], value);
            at += width;
        }
        out[21..].copy_from_slice(suffix);
        EndToEndId(out)
    }
}

impl fmt::Debug for EndToEndId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EndToEndId({})", self.as_str())
    }
}

impl fmt::Display for EndToEndId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An RFC 3339 instant that keeps the offset it was written with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub DateTime<FixedOffset>);

impl Timestamp {
    /// Parses RFC 3339 (`2026-10-05T14:03:22-03:00`, fractional seconds allowed).
    pub fn parse(s: &str) -> Result<Self, String> {
        DateTime::parse_from_rfc3339(s).map(Timestamp).map_err(|e| {
            format!("`{s}` is not an RFC 3339 timestamp (e.g. 2026-10-05T14:03:22-03:00): {e}")
        })
    }

    /// Seconds since the Unix epoch, with the fraction.
    pub fn unix_seconds(&self) -> f64 {
        self.0.timestamp() as f64 + f64::from(self.0.timestamp_subsec_micros()) * 1e-6
    }

    /// Formats as RFC 3339 into a stack buffer: seconds, with a milli/micro/nano fraction only when
    /// present, and `Z` for UTC (chrono's `AutoSi` with `use_z`). Returns the used length.
    fn format_into(&self, buf: &mut [u8; 40]) -> usize {
        use chrono::{Datelike, Offset, Timelike};
        // RFC 3339 offsets are whole minutes. One with seconds (local mean time: America/Sao_Paulo
        // was -03:06:28 before 1914) is written as the nearest whole-minute offset and the local
        // time there, the same instant; writing the local time with the offset cut would move
        // the instant by the cut seconds.
        let seconds = self.0.offset().fix().local_minus_utc();
        let at_minutes = if seconds % 60 == 0 {
            self.0
        } else {
            FixedOffset::east_opt((f64::from(seconds) / 60.0).round() as i32 * 60)
                .map_or(self.0, |whole| self.0.with_timezone(&whole))
        };
        let local = at_minutes.naive_local();
        let mut at = 0;
        let put = |value: u32, width: usize, buf: &mut [u8; 40], at: &mut usize| {
            put_digits(&mut buf[*at..*at + width], value);
            *at += width;
        };
        let sep = |c: u8, buf: &mut [u8; 40], at: &mut usize| {
            buf[*at] = c;
            *at += 1;
        };
        put(local.year().clamp(0, 9999) as u32, 4, buf, &mut at);
        sep(b'-', buf, &mut at);
        put(local.month(), 2, buf, &mut at);
        sep(b'-', buf, &mut at);
        put(local.day(), 2, buf, &mut at);
        sep(b'T', buf, &mut at);
        put(local.hour(), 2, buf, &mut at);
        sep(b':', buf, &mut at);
        put(local.minute(), 2, buf, &mut at);
        sep(b':', buf, &mut at);
        put(local.second(), 2, buf, &mut at);
        let nanos = local.nanosecond() % 1_000_000_000;
        if nanos != 0 {
            sep(b'.', buf, &mut at);
            if nanos.is_multiple_of(1_000_000) {
                put(nanos / 1_000_000, 3, buf, &mut at);
            } else if nanos.is_multiple_of(1_000) {
                put(nanos / 1_000, 6, buf, &mut at);
            } else {
                put(nanos, 9, buf, &mut at);
            }
        }
        let offset = at_minutes.offset().fix().local_minus_utc();
        if offset == 0 {
            sep(b'Z', buf, &mut at);
        } else {
            sep(if offset < 0 { b'-' } else { b'+' }, buf, &mut at);
            let minutes = offset.unsigned_abs() / 60;
            put(minutes / 60, 2, buf, &mut at);
            sep(b':', buf, &mut at);
            put(minutes % 60, 2, buf, &mut at);
        }
        at
    }

    fn wire_str<'a>(&self, buf: &'a mut [u8; 40]) -> &'a str {
        let n = self.format_into(buf);
        std::str::from_utf8(&buf[..n]).unwrap_or("")
    }

    /// Appends the canonical RFC 3339 form to `out` without allocating.
    pub fn write_rfc3339(&self, out: &mut Vec<u8>) {
        let mut buf = [0u8; 40];
        let n = self.format_into(&mut buf);
        out.extend_from_slice(&buf[..n]);
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 40];
        let n = self.format_into(&mut buf);
        // Only ASCII digits and separators are written.
        f.write_str(std::str::from_utf8(&buf[..n]).map_err(|_| fmt::Error)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_format_matches_chrono() {
        for s in [
            "2026-10-05T14:03:22-03:00",
            "2026-10-05T14:03:22.100-03:00",
            "2026-10-05T14:03:22.123456+05:30",
            "2026-10-05T14:03:22.000000007Z",
            "0001-01-01T00:00:00+00:00",
            "2018-12-01T10:00:00.5-02:00",
        ] {
            let t = Timestamp::parse(s).unwrap();
            let want = t.0.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
            assert_eq!(t.to_string(), want);
            let mut out = Vec::new();
            t.write_rfc3339(&mut out);
            assert_eq!(out, want.as_bytes());
        }
    }

    #[test]
    fn an_offset_with_seconds_is_written_as_the_same_instant() {
        // America/Sao_Paulo's local mean time, as chrono-tz gives it for 1907.
        let lmt = FixedOffset::west_opt(3 * 3600 + 6 * 60 + 28).unwrap();
        let utc = NaiveDate::from_ymd_opt(1907, 4, 12)
            .and_then(|d| d.and_hms_milli_opt(18, 24, 1, 726))
            .unwrap();
        let t = Timestamp(DateTime::from_naive_utc_and_offset(utc, lmt));
        let text = t.to_string();
        // 18:24:01.726 UTC is 15:17:33.726 at -03:06:28 and 15:18:01.726 at -03:06.
        assert_eq!(text, "1907-04-12T15:18:01.726-03:06");
        assert_eq!(Timestamp::parse(&text).unwrap(), t, "the same instant");
        let mut out = Vec::new();
        t.write_rfc3339(&mut out);
        assert_eq!(out, text.as_bytes());
    }
}

/// Implements string-based serde for a type with `parse(&str) -> Result<Self, String>` and `Display`.
macro_rules! serde_via_str {
    ($ty:ty, $expecting:literal) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut buf = [0u8; 40];
                s.serialize_str(self.wire_str(&mut buf))
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl Visitor<'_> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$ty, E> {
                        <$ty>::parse(v).map_err(E::custom)
                    }
                }
                d.deserialize_str(V)
            }
        }
    };
}

serde_via_str!(Ispb, "an 8-digit ISPB string");
serde_via_str!(EndToEndId, "a 32-character end-to-end id string");
serde_via_str!(Timestamp, "an RFC 3339 timestamp string");
