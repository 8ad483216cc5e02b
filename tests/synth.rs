//! Synthetic traffic: determinism, validity, and that each typology moves the features its
//! real-world counterpart moves, with overlap.

use std::collections::HashMap;

use chrono::{Datelike, Weekday};
use pixguard::jsonl::parse_line;
use pixguard::synth::{FraudType, Generator, SynthConfig, SynthRow, write_csv, write_jsonl};
use pixguard::transaction::{InitiationForm, KeyType, Transaction};

fn config(seed: u64, rows: u64, fraud_rate: f64) -> SynthConfig {
    SynthConfig {
        seed,
        rows,
        fraud_rate,
        ..SynthConfig::default()
    }
}

fn bytes(cfg: SynthConfig, csv: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let rows = Generator::new(cfg).unwrap();
    if csv {
        write_csv(rows, &mut out)
    } else {
        write_jsonl(rows, &mut out)
    }
    .unwrap();
    out
}

#[test]
fn same_seed_same_bytes() {
    for csv in [false, true] {
        let a = bytes(config(7, 3_000, 0.05), csv);
        assert_eq!(a, bytes(config(7, 3_000, 0.05), csv));
        assert_ne!(a, bytes(config(8, 3_000, 0.05), csv));
    }
}

#[test]
fn every_row_is_a_valid_transaction_in_time_order() {
    let out = bytes(config(3, 5_000, 0.1), false);
    let mut last = None;
    for line in std::str::from_utf8(&out).unwrap().lines() {
        let row = parse_line(line).unwrap_or_else(|e| panic!("{e}\n{line}"));
        let (label, fraud_type) = row.label.expect("synth rows are labelled");
        assert_eq!(label == 1, fraud_type != FraudType::None);
        let at = row.transaction.accepted_at;
        assert!(last.is_none_or(|l| l <= at), "arrivals are ordered");
        last = Some(at);
    }
    let csv = bytes(config(3, 5_000, 0.1), true);
    let text = std::str::from_utf8(&csv).unwrap();
    let header_cells = text.lines().next().unwrap().split(',').count();
    assert_eq!(text.lines().count(), 5_001);
    assert!(text.lines().all(|l| l.split(',').count() == header_cells));
}

fn share(rows: &[&Transaction], f: impl Fn(&Transaction) -> bool) -> f64 {
    rows.iter().filter(|t| f(t)).count() as f64 / rows.len() as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn hours_since(t: &Transaction, ts: &pixguard::transaction::Timestamp) -> f64 {
    (t.accepted_at.unix_seconds() - ts.unix_seconds()) / 3600.0
}

fn key_age_days(rows: &[&Transaction]) -> f64 {
    median(
        rows.iter()
            .filter_map(|t| {
                t.payee
                    .key_created_at
                    .as_ref()
                    .map(|k| hours_since(t, k) / 24.0)
            })
            .collect(),
    )
}

fn night(t: &Transaction) -> bool {
    let m = t.local_time().minute_of_day;
    !(360..1200).contains(&m)
}

fn new_device(t: &Transaction) -> bool {
    let d = &t.payer.device;
    !d.registered
        || d.first_seen_at
            .as_ref()
            .is_none_or(|f| hours_since(t, f) < 48.0)
}

fn dict_flag(t: &Transaction) -> bool {
    t.payee
        .dict_stats
        .is_some_and(|d| d.fraud_markers_30d > 0 || d.infractions_open > 0 || d.mule_marker)
}

#[test]
fn typologies_have_their_real_world_shapes() {
    let rows: Vec<SynthRow> = Generator::new(config(11, 200_000, 0.05)).unwrap().collect();
    let mut by_type: HashMap<FraudType, Vec<&Transaction>> = HashMap::new();
    for r in &rows {
        by_type
            .entry(r.fraud_type)
            .or_default()
            .push(&r.transaction);
    }
    let fraud = rows.iter().filter(|r| r.label == 1).count() as f64 / rows.len() as f64;
    assert!((fraud - 0.05).abs() < 0.004, "fraud share {fraud}");
    let legit = &by_type[&FraudType::None];
    let fp = &by_type[&FraudType::FalsoParente];
    let fc = &by_type[&FraudType::FalsaCentral];
    let ato = &by_type[&FraudType::AccountTakeover];
    let sr = &by_type[&FraudType::SequestroRelampago];
    let mule = &by_type[&FraudType::Mule];
    for (t, want) in [
        (fp, 0.30),
        (fc, 0.15),
        (ato, 0.20),
        (sr, 0.10),
        (mule, 0.25),
    ] {
        let got = t.len() as f64 / (rows.len() as f64 * 0.05);
        assert!(
            (got - want).abs() < want * 0.2,
            "typology share {got} vs {want}"
        );
    }

    // Falso parente: a new payee, a phone or random key, a key registered days ago.
    let first = |t: &Transaction| t.history.payee_first_time;
    assert!(
        share(fp, first) > 0.8,
        "falso parente new payee {}",
        share(fp, first)
    );
    assert!(
        share(legit, first) < 0.2,
        "legit new payee {}",
        share(legit, first)
    );
    let phone_evp =
        |t: &Transaction| matches!(t.payee.key_type, Some(KeyType::Phone | KeyType::Evp));
    assert!(share(fp, phone_evp) > 0.65 && share(legit, phone_evp) < 0.5);
    assert!(
        key_age_days(fp) < 15.0 && key_age_days(legit) > 180.0,
        "{} {}",
        key_age_days(fp),
        key_age_days(legit)
    );

    // Sequestro relâmpago: at night, in bursts, near the R$ 1,000 night limit.
    assert!(
        share(sr, night) > 0.85 && share(legit, night) < 0.25,
        "{} {}",
        share(sr, night),
        share(legit, night)
    );
    let near_limit = |t: &Transaction| (85_000..=100_000).contains(&t.amount_cents);
    assert!(share(sr, near_limit) > 0.5 && share(legit, near_limit) < 0.03);
    let burst = |t: &Transaction| t.history.payer_tx_1h >= 1;
    assert!(share(sr, burst) > 0.8 && share(fc, burst) > 0.8 && share(legit, burst) < 0.45);

    // Account takeover: unregistered or freshly seen device, bursts.
    assert!(
        share(ato, new_device) > 0.65 && share(legit, new_device) < 0.08,
        "{}",
        share(ato, new_device)
    );
    let mean_tx = |v: &[&Transaction]| {
        v.iter()
            .map(|t| f64::from(t.history.payer_tx_1h))
            .sum::<f64>()
            / v.len() as f64
    };
    assert!(mean_tx(ato) > 2.5 * mean_tx(legit));

    // Falsa central: business hours.
    let office = |t: &Transaction| (480..1080).contains(&t.local_time().minute_of_day);
    assert!(share(fc, office) > 0.8, "{}", share(fc, office));

    // Mules: a young payee account and DICT markers.
    let age_days = |v: &[&Transaction]| {
        median(
            v.iter()
                .filter_map(|t| {
                    t.payee
                        .account_opened_at
                        .as_ref()
                        .map(|o| hours_since(t, o) / 24.0)
                })
                .collect(),
        )
    };
    assert!(
        age_days(mule) < 60.0 && age_days(legit) > 700.0,
        "{} {}",
        age_days(mule),
        age_days(legit)
    );
    assert!(share(mule, dict_flag) > 0.5 && share(legit, dict_flag) < 0.03);

    // Overlap: every main signal misses some frauds and fires on some legitimate payments.
    for (name, signal, typology) in [
        ("new payee", &first as &dyn Fn(&Transaction) -> bool, fp),
        ("night", &night, sr),
        ("new device", &new_device, ato),
        ("DICT flags", &dict_flag, mule),
    ] {
        let (missed, false_alarms) = (share(typology, |t| !signal(t)), share(legit, signal));
        assert!(
            missed > 0.02,
            "{name} fires on {:.1}% of its frauds",
            100.0 * (1.0 - missed)
        );
        assert!(
            false_alarms > 0.003,
            "{name} fires on only {:.2}% of legitimate traffic",
            100.0 * false_alarms
        );
    }
}

#[test]
fn legitimate_traffic_has_calendar_seasonality() {
    let rows: Vec<SynthRow> = Generator::new(config(5, 100_000, 0.0)).unwrap().collect();
    let mut per_day: HashMap<chrono::NaiveDate, usize> = HashMap::new();
    let mut per_hour = [0usize; 24];
    for r in &rows {
        let local = r.transaction.accepted_at.0.naive_local();
        *per_day.entry(local.date()).or_default() += 1;
        per_hour[usize::from(r.transaction.local_time().minute_of_day / 60)] += 1;
    }
    assert_eq!(per_day.len(), 30, "every day of the window has traffic");
    let mean = |f: &dyn Fn(&chrono::NaiveDate) -> bool| {
        let days: Vec<usize> = per_day
            .iter()
            .filter(|(d, _)| f(d))
            .map(|(_, n)| *n)
            .collect();
        days.iter().sum::<usize>() as f64 / days.len() as f64
    };
    let weekday =
        mean(&|d| d.weekday().number_from_monday() <= 5 && ![5, 7, 20, 31].contains(&d.day()));
    let sunday = mean(&|d| d.weekday() == Weekday::Sun);
    // October 2026: the 7th is the 5th business day, the 20th the advance, the 31st the last day.
    let paydays = mean(&|d| [7, 20].contains(&d.day()));
    assert!(
        sunday < 0.7 * weekday && paydays > 1.3 * weekday,
        "sun {sunday} weekday {weekday} payday {paydays}"
    );
    assert!(
        per_hour[3] * 10 < per_hour[12],
        "nights are quiet: {per_hour:?}"
    );
    assert!(
        rows.iter()
            .all(|r| r.transaction.initiation_form != InitiationForm::Manu
                || r.transaction.payee.key_type.is_none())
    );
}
