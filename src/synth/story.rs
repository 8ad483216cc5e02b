//! The generative story of one synthetic payment (see `docs/synthetic-data.md`).
//!
//! A row starts as a legitimate payment; a fraud typology then moves the fields its real-world
//! counterpart moves, each with a probability below one, so typologies overlap with legitimate
//! traffic and with each other.

use std::sync::OnceLock;

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::America::Sao_Paulo;

use super::{FraudType, Rng};
use crate::transaction::{
    AccountType, Device, DictStats, EndToEndId, History, InitiationForm, Ispb, KeyType, Payee,
    Payer, PersonType, Purpose, Timestamp, Transaction,
};

/// Big SPI participants with rough shares of Pix accounts; fraud leans to the digital ones.
const PARTICIPANTS: &[(&str, f64, f64)] = &[
    // (ISPB, share of legitimate accounts, share of accounts that receive fraud)
    ("18236120", 0.22, 0.22), // Nu Pagamentos
    ("00000000", 0.12, 0.05), // Banco do Brasil
    ("00360305", 0.12, 0.07), // Caixa
    ("60701190", 0.11, 0.04), // Itaú
    ("60746948", 0.10, 0.04), // Bradesco
    ("90400888", 0.07, 0.04), // Santander
    ("00416968", 0.05, 0.07), // Inter
    ("10573521", 0.05, 0.10), // Mercado Pago
    ("22896431", 0.04, 0.10), // PicPay
    ("31872495", 0.03, 0.06), // C6
    ("08561701", 0.03, 0.08), // PagSeguro
    ("02038232", 0.03, 0.02), // Sicoob
];

/// Parsed participant codes, and a long tail of 40 small payment institutions with stable made-up codes.
struct Participants {
    big: Vec<(Ispb, f64, f64)>,
    tail: Vec<Ispb>,
}

fn participants() -> &'static Participants {
    static P: OnceLock<Participants> = OnceLock::new();
    P.get_or_init(|| Participants {
        big: PARTICIPANTS
            .iter()
            .filter_map(|&(code, l, f)| Ispb::parse(code).ok().map(|i| (i, l, f)))
            .collect(),
        tail: (0..40u64)
            .filter_map(|n| {
                Ispb::parse(&format!(
                    "{:08}",
                    10_000_000 + (n * 1_234_567 + 891_011) % 89_999_999
                ))
                .ok()
            })
            .collect(),
    })
}

fn participant(rng: &mut Rng, fraud: bool, tail_share: f64) -> Ispb {
    let p = participants();
    if rng.chance(tail_share) {
        return p.tail[rng.below(p.tail.len() as u64) as usize];
    }
    let total: f64 = p.big.iter().map(|b| if fraud { b.2 } else { b.1 }).sum();
    let mut u = rng.uniform() * total;
    for &(ispb, legit_w, fraud_w) in &p.big {
        let w = if fraud { fraud_w } else { legit_w };
        if u < w {
            return ispb;
        }
        u -= w;
    }
    p.big[0].0
}

/// The BCB default night limit for natural persons (20:00–06:00): R$ 1,000.
const NIGHT_LIMIT_CENTS: i64 = 100_000;

fn to_cents(reais: f64) -> i64 {
    ((reais * 100.0).round() as i64).max(1)
}

fn ago(at: DateTime<Utc>, hours: f64) -> Timestamp {
    let t = at - TimeDelta::milliseconds((hours.max(0.0) * 3_600_000.0) as i64);
    Timestamp(t.with_timezone(&Sao_Paulo).fixed_offset())
}

fn days(d: f64) -> f64 {
    d * 24.0
}

const ALNUM: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Builds one transaction accepted at `at` (local hour `local_hour`), of typology `t`.
pub fn transaction(
    rng: &mut Rng,
    at: DateTime<Utc>,
    local_hour: usize,
    t: FraudType,
) -> Transaction {
    use FraudType as F;
    let fraud = t != F::None;
    let night = !(6..20).contains(&local_hour);
    // A third of frauds are subtle: each group of fields below then follows the legitimate story
    // with probability 0.6, so such a row looks legitimate in most respects.
    let subtle = fraud && rng.chance(0.3);
    let moved = |rng: &mut Rng| {
        if subtle && rng.chance(0.6) {
            F::None
        } else {
            t
        }
    };

    // --- payer
    let payer_person = match t {
        F::FalsoParente | F::SequestroRelampago => PersonType::Natural,
        F::FalsaCentral => rng.pick(&[(PersonType::Natural, 0.95), (PersonType::Legal, 0.05)]),
        F::AccountTakeover => rng.pick(&[(PersonType::Natural, 0.7), (PersonType::Legal, 0.3)]),
        _ => rng.pick(&[(PersonType::Natural, 0.88), (PersonType::Legal, 0.12)]),
    };
    let natural = payer_person == PersonType::Natural;
    let payer_account = if natural {
        rng.pick(&[
            (AccountType::Cacc, 0.62),
            (AccountType::Svgs, 0.08),
            (AccountType::Tran, 0.25),
            (AccountType::Slry, 0.05),
        ])
    } else {
        rng.pick(&[(AccountType::Cacc, 0.85), (AccountType::Tran, 0.15)])
    };
    let payer_ispb = participant(rng, false, 0.03);
    let payer_age_h = days(rng.lognormal(1_100.0, 1.0).max(1.0));
    let device = match moved(rng) {
        // "Mão fantasma": remote-access malware drives the victim's own, long-registered phone.
        F::AccountTakeover if rng.chance(0.15) => (true, Some(days(rng.lognormal(240.0, 1.1)))),
        F::AccountTakeover => {
            let registered = rng.chance(0.25);
            let first_seen = if !registered && rng.chance(0.6) {
                None
            } else {
                Some(rng.lognormal(6.0, 1.5))
            };
            (registered, first_seen)
        }
        _ => {
            if rng.chance(0.95) {
                (true, Some(days(rng.lognormal(240.0, 1.1))))
            } else {
                // A legitimate new phone: just installed, or seen a few days ago.
                (
                    false,
                    if rng.chance(0.5) {
                        None
                    } else {
                        Some(days(rng.lognormal(2.0, 1.5)))
                    },
                )
            }
        }
    };
    let (registered, device_age_h) = device;
    // Registration requires a first sighting; a device can't predate its account.
    let device_age_h =
        device_age_h
            .map(|h| h.min(payer_age_h))
            .or(if registered { Some(0.5) } else { None });

    // --- payee
    let payee_person = match t {
        F::FalsoParente => rng.pick(&[(PersonType::Natural, 0.9), (PersonType::Legal, 0.1)]),
        F::FalsaCentral => rng.pick(&[(PersonType::Natural, 0.7), (PersonType::Legal, 0.3)]),
        F::AccountTakeover | F::SequestroRelampago | F::Mule => {
            rng.pick(&[(PersonType::Natural, 0.85), (PersonType::Legal, 0.15)])
        }
        F::None if natural => rng.pick(&[(PersonType::Natural, 0.62), (PersonType::Legal, 0.38)]),
        F::None => rng.pick(&[(PersonType::Natural, 0.35), (PersonType::Legal, 0.65)]),
    };
    let payee_natural = payee_person == PersonType::Natural;
    let form = match t {
        F::FalsoParente => rng.pick(&[(InitiationForm::Dict, 0.92), (InitiationForm::Manu, 0.08)]),
        F::FalsaCentral => rng.pick(&[
            (InitiationForm::Dict, 0.85),
            (InitiationForm::Manu, 0.10),
            (InitiationForm::Qres, 0.05),
        ]),
        F::SequestroRelampago => rng.pick(&[
            (InitiationForm::Dict, 0.8),
            (InitiationForm::Qres, 0.1),
            (InitiationForm::Manu, 0.1),
        ]),
        _ if payee_natural => rng.pick(&[
            (InitiationForm::Dict, 0.78),
            (InitiationForm::Manu, 0.10),
            (InitiationForm::Qres, 0.06),
            (InitiationForm::Qrdn, 0.01),
            (InitiationForm::Inic, 0.03),
            (InitiationForm::Apdn, 0.02),
        ]),
        _ => rng.pick(&[
            (InitiationForm::Dict, 0.35),
            (InitiationForm::Manu, 0.07),
            (InitiationForm::Qres, 0.20),
            (InitiationForm::Qrdn, 0.25),
            (InitiationForm::Inic, 0.04),
            (InitiationForm::Auto, 0.06),
            (InitiationForm::Apdn, 0.03),
        ]),
    };
    let has_key = match form {
        InitiationForm::Manu => false,
        InitiationForm::Dict | InitiationForm::Qres | InitiationForm::Qrdn => true,
        _ => rng.chance(0.85),
    };
    let key_story = moved(rng);
    let key_type = has_key.then(|| match key_story {
        F::FalsoParente => rng.pick(&[
            (KeyType::Phone, 0.45),
            (KeyType::Evp, 0.35),
            (KeyType::Cpf, 0.12),
            (KeyType::Email, 0.08),
        ]),
        F::FalsaCentral | F::AccountTakeover => rng.pick(&[
            (KeyType::Evp, 0.52),
            (KeyType::Cpf, 0.28),
            (KeyType::Phone, 0.1),
            (KeyType::Email, 0.1),
        ]),
        F::SequestroRelampago => rng.pick(&[
            (KeyType::Evp, 0.4),
            (KeyType::Cpf, 0.3),
            (KeyType::Phone, 0.3),
        ]),
        F::Mule => rng.pick(&[
            (KeyType::Evp, 0.6),
            (KeyType::Cpf, 0.25),
            (KeyType::Phone, 0.1),
            (KeyType::Email, 0.05),
        ]),
        F::None if payee_natural => rng.pick(&[
            (KeyType::Cpf, 0.38),
            (KeyType::Phone, 0.27),
            (KeyType::Email, 0.10),
            (KeyType::Evp, 0.25),
        ]),
        F::None if matches!(form, InitiationForm::Qres | InitiationForm::Qrdn) => {
            rng.pick(&[(KeyType::Evp, 0.6), (KeyType::Cnpj, 0.4)])
        }
        F::None => rng.pick(&[
            (KeyType::Cnpj, 0.55),
            (KeyType::Evp, 0.38),
            (KeyType::Email, 0.05),
            (KeyType::Phone, 0.02),
        ]),
    });
    // A CPF key belongs to a natural person and a CNPJ key to a legal one.
    let payee_person = match key_type {
        Some(KeyType::Cpf) => PersonType::Natural,
        Some(KeyType::Cnpj) => PersonType::Legal,
        _ => payee_person,
    };
    let payee_natural = payee_person == PersonType::Natural;
    let payee_account = if payee_natural {
        rng.pick(&[
            (AccountType::Cacc, 0.6),
            (AccountType::Svgs, 0.1),
            (AccountType::Tran, 0.28),
            (AccountType::Slry, 0.02),
        ])
    } else {
        rng.pick(&[(AccountType::Cacc, 0.85), (AccountType::Tran, 0.15)])
    };
    let payee_ispb = if !fraud && rng.chance(0.25) {
        payer_ispb
    } else {
        participant(rng, fraud, if fraud { 0.10 } else { 0.03 })
    };
    let payee_story = moved(rng);
    let payee_age_h = days(match payee_story {
        F::FalsoParente => rng.lognormal(90.0, 1.3),
        F::FalsaCentral => rng.lognormal(150.0, 1.3),
        F::AccountTakeover => rng.lognormal(200.0, 1.4),
        F::SequestroRelampago => rng.lognormal(120.0, 1.4),
        F::Mule => rng.lognormal(25.0, 1.0),
        // New customers: 8 % of legitimate payees opened their account recently.
        F::None if rng.chance(0.08) => rng.lognormal(45.0, 1.0),
        F::None if payee_natural => rng.lognormal(1_300.0, 1.1),
        F::None => rng.lognormal(2_000.0, 1.1),
    })
    .max(1.0);
    let payee_age_known = rng.chance(if t == F::Mule { 0.85 } else { 0.96 });
    let key_age_h = key_type.and_then(|_| {
        let age = days(match key_story {
            F::FalsoParente => rng.lognormal(4.0, 1.5),
            F::FalsaCentral => rng.lognormal(20.0, 1.5),
            F::AccountTakeover => rng.lognormal(30.0, 1.5),
            F::SequestroRelampago => rng.lognormal(60.0, 2.0),
            F::Mule => rng.lognormal(10.0, 1.2),
            // New phone numbers and fresh random keys: 8 % of legitimate keys are young.
            F::None if rng.chance(0.08) => rng.lognormal(20.0, 1.5),
            F::None => rng.lognormal(500.0, 1.0),
        });
        rng.chance(0.97).then_some(age.min(payee_age_h))
    });
    let dict_stats = key_type.map(|_| {
        let dict_story = moved(rng);
        let (fraud_p, infraction_p, mule_p) = match dict_story {
            // Markers are reports, and reports are sometimes wrong or stale.
            F::None => (0.01, 0.008, 0.002),
            F::FalsoParente => (0.15, 0.08, 0.03),
            F::FalsaCentral => (0.20, 0.10, 0.05),
            F::AccountTakeover => (0.10, 0.05, 0.05),
            F::SequestroRelampago => (0.12, 0.06, 0.08),
            F::Mule => (0.45, 0.30, 0.35),
        };
        let settlements_median = match dict_story {
            F::Mule => 60.0,
            F::None if payee_natural => 25.0,
            F::None => 800.0,
            _ => 8.0,
        };
        DictStats {
            settlements_90d: rng.lognormal(settlements_median, 1.2).round().min(1e6) as u32,
            fraud_markers_30d: if rng.chance(fraud_p) {
                1 + rng.poisson(1.0)
            } else {
                0
            },
            infractions_open: if rng.chance(infraction_p) {
                1 + rng.poisson(0.5)
            } else {
                0
            },
            mule_marker: rng.chance(mule_p),
        }
    });

    // --- amount
    let amount_story = moved(rng);
    let mut amount = to_cents(match amount_story {
        F::FalsoParente => rng.lognormal(1_500.0, 0.8),
        F::FalsaCentral => rng.lognormal(3_000.0, 0.9),
        F::AccountTakeover => rng.lognormal(2_500.0, 1.0),
        F::Mule => rng.lognormal(800.0, 1.1),
        F::SequestroRelampago => {
            if rng.chance(0.7) {
                // As much as the night limit lets through.
                NIGHT_LIMIT_CENTS as f64 / 100.0 * rng.range(0.85, 1.0)
            } else {
                rng.lognormal(700.0, 0.6)
            }
        }
        F::None if !natural => rng.lognormal(1_200.0, 1.6),
        F::None if payee_natural => rng.lognormal(60.0, 1.35),
        F::None => rng.lognormal(45.0, 1.3),
    });
    if amount_story == F::None && natural && payee_natural && rng.chance(0.3) {
        amount = (amount / 1_000).max(1) * 1_000; // round P2P amounts: R$ 10 multiples
    }
    // Most natural persons keep the default night limit; 10% have raised it.
    if natural && night && amount > NIGHT_LIMIT_CENTS && rng.chance(0.9) {
        amount = (NIGHT_LIMIT_CENTS as f64 * rng.range(0.3, 1.0)) as i64;
    }
    // Nights out, rent split at midnight: some legitimate night payments sit right at the limit.
    if amount_story == F::None && natural && night && rng.chance(0.03) {
        amount = (NIGHT_LIMIT_CENTS as f64 * rng.range(0.85, 1.0)) as i64;
    }
    let purpose = if t == F::None {
        match (payee_natural, rng.uniform()) {
            (false, u) if u < 0.02 => Purpose::Gscb,
            (_, u) if u < 0.06 => Purpose::Othr,
            (_, u) if u < 0.07 && !natural => Purpose::Refu,
            _ => Purpose::Ipay,
        }
    } else {
        rng.pick(&[(Purpose::Ipay, 0.97), (Purpose::Othr, 0.03)])
    };

    // --- history
    let payee_first_time = rng.chance(match t {
        F::FalsoParente => 0.9,
        F::FalsaCentral => 0.85,
        F::AccountTakeover => 0.9,
        F::SequestroRelampago => 0.95,
        F::Mule => 0.75,
        F::None if payee_natural => 0.12,
        F::None => 0.25,
    });
    let burst = match moved(rng) {
        F::FalsaCentral => 1 + rng.poisson(3.0),
        F::AccountTakeover => rng.poisson(2.5),
        F::SequestroRelampago => 1 + rng.poisson(2.0),
        F::FalsoParente => rng.poisson(0.6),
        // One payer in ten is a heavy user who pays several times an hour.
        _ if natural && rng.chance(0.1) => rng.poisson(2.5),
        _ => rng.poisson(if natural { 0.35 } else { 2.0 }),
    };
    // Earlier payments today: the burst at fraud-sized amounts, plus ordinary spending.
    let ordinary = rng.poisson(if natural { 1.5 } else { 6.0 });
    let typical_reais = if natural { 60.0 } else { 1_200.0 };
    let mut amount_24h: i64 = 0;
    for i in 0..(burst + ordinary).min(60) {
        let earlier = if i < burst && fraud {
            amount as f64 / 100.0 * rng.range(0.5, 1.2)
        } else {
            rng.lognormal(typical_reais, 1.3)
        };
        amount_24h += to_cents(earlier);
    }
    let history_known = payer_age_h > days(30.0) && rng.chance(0.95);
    let zscore = history_known.then(|| {
        // The payer's own baseline: the population's, shifted and narrowed per person.
        let baseline = typical_reais.ln() + 0.5 * rng.normal();
        let spread = rng.range(0.7, 1.4);
        (((amount as f64 / 100.0).ln() - baseline) / spread * 1_000.0).round() / 1_000.0
    });

    // --- identifiers
    let mut suffix = [0u8; 11];
    for c in &mut suffix {
        *c = ALNUM[rng.below(62) as usize];
    }
    Transaction {
        end_to_end_id: EndToEndId::from_parts(payer_ispb, at.naive_utc(), &suffix),
        accepted_at: ago(at, 0.0),
        amount_cents: amount,
        initiation_form: form,
        purpose,
        payer: Payer {
            ispb: payer_ispb,
            account_type: payer_account,
            person_type: payer_person,
            account_opened_at: ago(at, payer_age_h),
            device: Device {
                registered,
                first_seen_at: device_age_h.map(|h| ago(at, h)),
            },
        },
        payee: Payee {
            ispb: payee_ispb,
            account_type: payee_account,
            person_type: payee_person,
            key_type,
            key_created_at: key_age_h.map(|h| ago(at, h)),
            account_opened_at: payee_age_known.then(|| ago(at, payee_age_h)),
            dict_stats,
        },
        history: History {
            payee_first_time,
            payer_tx_1h: burst,
            payer_amount_24h_cents: amount_24h,
            amount_zscore_90d: zscore,
        },
    }
}
