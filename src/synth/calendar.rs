//! When synthetic payments happen: the hour-of-day shapes of legitimate and fraudulent traffic and
//! the weight of a calendar day (weekends, paydays).

use chrono::{Datelike, NaiveDate, TimeDelta, Weekday};

use super::FraudType;

/// Per-hour traffic shapes (local time), each normalised to sum to 1.
pub struct HourProfiles {
    /// Legitimate traffic: quiet nights, a late-morning plateau, an evening peak.
    pub legit_density: [f64; 24],
    falso_parente: [f64; 24],
    falsa_central: [f64; 24],
    account_takeover: [f64; 24],
    sequestro: [f64; 24],
}

impl HourProfiles {
    /// The hour density of a typology (mules follow legitimate traffic).
    pub fn density(&self, t: FraudType) -> &[f64; 24] {
        match t {
            FraudType::None | FraudType::Mule => &self.legit_density,
            FraudType::FalsoParente => &self.falso_parente,
            FraudType::FalsaCentral => &self.falsa_central,
            FraudType::AccountTakeover => &self.account_takeover,
            FraudType::SequestroRelampago => &self.sequestro,
        }
    }
}

const fn normalise(w: [f64; 24]) -> [f64; 24] {
    let mut total = 0.0;
    let mut i = 0;
    while i < 24 {
        total += w[i];
        i += 1;
    }
    let mut out = [0.0; 24];
    let mut i = 0;
    while i < 24 {
        out[i] = w[i] / total;
        i += 1;
    }
    out
}

/// The hour profiles of every typology.
pub static HOUR_PROFILES: HourProfiles = HourProfiles {
    legit_density: normalise([
        0.6, 0.35, 0.25, 0.2, 0.2, 0.35, 0.9, 2.0, 3.5, 4.8, 5.6, 6.0, 6.2, 5.8, 5.6, 5.6, 5.7,
        5.9, 6.3, 6.5, 5.6, 4.4, 3.0, 1.6,
    ]),
    // Victims answer messages while awake.
    falso_parente: normalise([
        0.2, 0.1, 0.05, 0.05, 0.05, 0.1, 0.4, 1.5, 3.5, 5.0, 6.0, 6.0, 6.0, 6.0, 6.0, 6.0, 5.5,
        5.0, 4.5, 4.0, 3.0, 2.0, 1.0, 0.5,
    ]),
    // Calls come in business hours, when a real bank would call.
    falsa_central: normalise([
        0.1, 0.05, 0.05, 0.05, 0.05, 0.05, 0.1, 0.5, 2.0, 5.0, 6.0, 6.0, 5.5, 5.5, 6.0, 6.0, 5.5,
        5.0, 3.0, 1.5, 0.8, 0.4, 0.2, 0.1,
    ]),
    // Intruders work around the clock, more while the owner sleeps.
    account_takeover: normalise([
        3.0, 3.0, 3.0, 2.5, 2.0, 1.5, 1.5, 2.0, 2.5, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0,
        3.0, 3.0, 3.0, 3.5, 3.5, 3.5,
    ]),
    // Lightning kidnappings happen at night.
    sequestro: normalise([
        5.0, 4.0, 3.0, 2.0, 1.0, 0.3, 0.1, 0.05, 0.05, 0.05, 0.1, 0.1, 0.1, 0.1, 0.1, 0.2, 0.3,
        0.5, 1.0, 2.0, 4.0, 5.5, 6.0, 6.0,
    ]),
};

/// Day-of-week and payday weight of a local date.
pub fn weekday_weight(date: NaiveDate) -> f64 {
    let weekday = match date.weekday() {
        Weekday::Sat => 0.8,
        Weekday::Sun => 0.6,
        _ => 1.0,
    };
    let payday = if is_payday(date) { 1.5 } else { 1.0 };
    weekday * payday
}

/// Salary days: the 5th business day, the 20th (advance) and the last day of the month.
fn is_payday(date: NaiveDate) -> bool {
    let business = |d: NaiveDate| !matches!(d.weekday(), Weekday::Sat | Weekday::Sun);
    let first = date.with_day(1).unwrap_or(date);
    let fifth_business = first.iter_days().filter(|d| business(*d)).nth(4);
    let last = (date + TimeDelta::days(1)).month() != date.month();
    Some(date) == fifth_business || date.day() == 20 || last
}
