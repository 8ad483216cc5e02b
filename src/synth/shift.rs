//! Traffic that moved away from the training distribution the way real Pix traffic moves
//! (`pixguard synth --shift`), so that model monitoring can be tested and shown
//! (docs/monitoring.md). Without a shift the generator's bytes are unchanged.

use std::str::FromStr;

use chrono::{DateTime, TimeDelta, Utc};

use super::calendar::HOUR_PROFILES;
use super::{FraudType, Rng};
use crate::transaction::{Timestamp, Transaction};

/// One way the traffic shifts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Shift {
    /// `amounts:F` — every amount, and the payer's 24-hour total with it, multiplied by `F`
    /// (inflation, a 13th-salary December, a change of the app's default amounts).
    Amounts(f64),
    /// `new-keys:S` — a share `S` of the payees that have a key registered it in the last three
    /// days (a bank's onboarding drive, or mules registering keys).
    NewKeys(f64),
    /// `campaign:TYPOLOGY:R` — a fraud campaign: that typology is a share `R` of all payments,
    /// on top of the usual fraud.
    Campaign(FraudType, f64),
    /// `night` — every payment between 22:00 and 05:59 local time, hours weighted as legitimate
    /// night traffic is (rows are then no longer in time order).
    Night,
}

impl FromStr for Shift {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let share = |v: &str, what: &str| -> Result<f64, String> {
            let x: f64 = v
                .parse()
                .map_err(|_| format!("{what} must be a number, got '{v}'"))?;
            if (0.0..=1.0).contains(&x) {
                Ok(x)
            } else {
                Err(format!("{what} must be in [0, 1], got {x}"))
            }
        };
        match parts.as_slice() {
            ["amounts", f] => {
                let f: f64 = f
                    .parse()
                    .map_err(|_| format!("amounts: the factor must be a number, got '{f}'"))?;
                if f > 0.0 && f <= 1_000.0 {
                    Ok(Shift::Amounts(f))
                } else {
                    Err(format!("amounts: the factor must be in (0, 1000], got {f}"))
                }
            }
            ["new-keys", s] => Ok(Shift::NewKeys(share(s, "new-keys: the share")?)),
            ["campaign", t, r] => {
                let typology = FraudType::ALL[1..]
                    .iter()
                    .copied()
                    .find(|x| x.as_str() == *t)
                    .ok_or_else(|| {
                        format!(
                            "campaign: unknown typology '{t}' (one of {})",
                            FraudType::ALL[1..]
                                .iter()
                                .map(|x| x.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    })?;
                Ok(Shift::Campaign(typology, share(r, "campaign: the rate")?))
            }
            ["night"] => Ok(Shift::Night),
            _ => Err(format!(
                "unknown shift '{s}': amounts:FACTOR, new-keys:SHARE, campaign:TYPOLOGY:RATE or night"
            )),
        }
    }
}

/// Local night hours (America/Sao_Paulo) and their weights in legitimate traffic.
const NIGHT_HOURS: [usize; 8] = [22, 23, 0, 1, 2, 3, 4, 5];

/// Moves an arrival at local hour `hour` to a night hour of the same local day.
pub(super) fn to_night(rng: &mut Rng, at: DateTime<Utc>, hour: usize) -> (DateTime<Utc>, usize) {
    let choices: Vec<(usize, f64)> = NIGHT_HOURS
        .iter()
        .map(|&h| (h, HOUR_PROFILES.legit_density[h]))
        .collect();
    let night = rng.pick(&choices);
    (at + TimeDelta::hours(night as i64 - hour as i64), night)
}

/// The typology of a row under a campaign of `typology` at `rate`, or `None` to draw as usual.
pub(super) fn campaign(rng: &mut Rng, typology: FraudType, rate: f64) -> Option<FraudType> {
    rng.chance(rate).then_some(typology)
}

/// Applies the shifts that change a built transaction.
pub(super) fn apply(rng: &mut Rng, shifts: &[Shift], tx: &mut Transaction) {
    for shift in shifts {
        match *shift {
            Shift::Amounts(f) => {
                let scale = |c: i64| ((c as f64 * f).round() as i64).max(1);
                tx.amount_cents = scale(tx.amount_cents);
                tx.history.payer_amount_24h_cents = scale(tx.history.payer_amount_24h_cents);
            }
            Shift::NewKeys(share) => {
                if tx.payee.key_type.is_some() && rng.chance(share) {
                    let hours = rng.range(1.0, 72.0);
                    let at = tx.accepted_at.0;
                    let created = at - TimeDelta::seconds((hours * 3600.0) as i64);
                    tx.payee.key_created_at = Some(Timestamp(created));
                }
            }
            Shift::Campaign(..) | Shift::Night => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shifts_parse_and_bad_ones_say_why() {
        assert_eq!("amounts:2.5".parse(), Ok(Shift::Amounts(2.5)));
        assert_eq!("new-keys:0.4".parse(), Ok(Shift::NewKeys(0.4)));
        assert_eq!(
            "campaign:falso_parente:0.05".parse(),
            Ok(Shift::Campaign(FraudType::FalsoParente, 0.05))
        );
        assert_eq!("night".parse(), Ok(Shift::Night));
        for (bad, says) in [
            ("amounts:0", "(0, 1000]"),
            ("amounts:x", "must be a number"),
            ("new-keys:1.5", "in [0, 1]"),
            ("campaign:none:0.1", "unknown typology 'none'"),
            ("dawn", "unknown shift 'dawn'"),
        ] {
            let err = bad.parse::<Shift>().expect_err(bad);
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
