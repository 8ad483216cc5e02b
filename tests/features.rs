//! Feature extraction against hand-computed values, spec validation and fitting.
//!
//! Expected values were worked out by hand from the fixture (see the comments) with Python's math
//! module, not by running this code.

mod common;

use common::{remove, set, valid};
use pixguard::features::{
    CategoricalFeature, CategoricalSource, FeatureExtractor, FeatureSpec, FitOptions,
    NumericFeature, NumericSource, SpecError, Transform, default_spec, fit,
};
use pixguard::transaction::Transaction;
use serde_json::{Value, json};

fn tx(doc: &Value) -> Transaction {
    Transaction::from_json(doc.to_string().as_bytes()).expect("valid fixture")
}

fn value(spec: &FeatureSpec, numeric: &[f32], name: &str) -> f64 {
    let i = spec
        .numeric
        .iter()
        .position(|f| f.name == name)
        .unwrap_or_else(|| panic!("no feature {name}"));
    f64::from(numeric[i])
}

fn index(spec: &FeatureSpec, categorical: &[u32], name: &str) -> u32 {
    let i = spec
        .categorical
        .iter()
        .position(|f| f.name == name)
        .unwrap_or_else(|| panic!("no feature {name}"));
    categorical[i]
}

#[test]
fn default_spec_values_match_hand_computation() {
    let ex = FeatureExtractor::new(default_spec()).unwrap();
    let batch = ex.extract(&[tx(&valid())]);
    let (spec, num, cat) = (ex.spec(), batch.numeric_row(0), batch.categorical_row(0));
    let expected = [
        ("amount_log", 7.313886831633462),            // ln(1 + 1500.00)
        ("payer_tx_1h_log", 1.6094379124341003),      // ln(1 + 4)
        ("payer_amount_24h_log", 6.2166061010848646), // ln(1 + 500.00)
        ("amount_share_24h", 0.75),                   // 1500 / (1500 + 500)
        ("amount_zscore_90d", 2.5),
        ("amount_zscore_90d_missing", 0.0),
        ("payee_first_time", 1.0),
        ("device_registered", 1.0),
        ("device_age_log", std::f64::consts::LN_2), // 1 h → ln 2
        ("device_first_seen_missing", 0.0),
        ("payer_account_age_log", 3.2188758248682006), // 24 h → ln 25
        ("key_age_log", 1.3862943611198906),           // 3 h → ln 4
        ("key_created_missing", 0.0),
        ("payee_account_age_log", 6.580639137284949), // 30 days = 720 h → ln 721
        ("payee_account_opened_missing", 0.0),
        ("dict_settlements_90d_log", 1.3862943611198906), // ln(1 + 3)
        ("dict_fraud_markers_30d_log", std::f64::consts::LN_2), // ln(1 + 1)
        ("dict_infractions_open_log", 0.0),
        ("dict_mule_marker", 1.0),
        ("dict_stats_missing", 0.0),
        ("same_institution", 0.0),
        ("hour_sin", -0.5), // 14:00 → 7π/6
        ("hour_cos", -0.8660254037844387),
        ("weekday_sin", 0.0), // Monday
        ("weekday_cos", 1.0),
        ("night_window", 0.0),
        ("weekend", 0.0),
    ];
    assert_eq!(
        expected.len(),
        spec.numeric.len(),
        "every default feature is checked"
    );
    for (name, want) in expected {
        let got = value(spec, num, name);
        assert!((got - want).abs() < 1e-6, "{name}: got {got}, want {want}");
    }
    // Default vocabularies list each code in declaration order; the ISPB vocabularies start empty.
    let indices = [
        ("initiation_form", 1), // MANU, DICT, ...
        ("purpose", 0),
        ("payer_account_type", 0),
        ("payer_person_type", 0),
        ("payee_account_type", 2), // CACC, SVGS, TRAN
        ("payee_person_type", 0),
        ("payee_key_type", 2), // CPF, CNPJ, PHONE
        ("payer_ispb", 0),     // empty vocabulary: OOV index 0
        ("payee_ispb", 0),
        ("local_time_hour", 14),
    ];
    for (name, want) in indices {
        assert_eq!(index(spec, cat, name), want, "{name}");
    }
}

fn numeric(
    name: &str,
    source: NumericSource,
    transform: Transform,
    clip: Option<[f64; 2]>,
    mean: f64,
    std: f64,
) -> NumericFeature {
    NumericFeature {
        name: name.into(),
        source,
        transform,
        clip,
        mean,
        std,
    }
}

fn categorical(
    name: &str,
    source: CategoricalSource,
    vocabulary: &[&str],
    oov_index: u32,
) -> CategoricalFeature {
    CategoricalFeature {
        name: name.into(),
        source,
        vocabulary: vocabulary.iter().map(|s| s.to_string()).collect(),
        oov_index,
    }
}

fn custom_spec() -> FeatureSpec {
    FeatureSpec {
        numeric: vec![
            numeric(
                "amount",
                NumericSource::AmountReais,
                Transform::Log1p,
                None,
                7.0,
                2.0,
            ),
            numeric(
                "z",
                NumericSource::AmountZscore90d,
                Transform::Identity,
                Some([-2.0, 2.0]),
                0.5,
                0.5,
            ),
            numeric(
                "z_missing",
                NumericSource::AmountZscore90dMissing,
                Transform::Identity,
                None,
                0.1,
                0.3,
            ),
            numeric(
                "key_age",
                NumericSource::KeyAgeHours,
                Transform::Log1p,
                Some([0.0, 1.0]),
                0.0,
                1.0,
            ),
            numeric(
                "night",
                NumericSource::NightWindow,
                Transform::Identity,
                None,
                0.25,
                0.5,
            ),
        ],
        categorical: vec![
            categorical(
                "payee_ispb",
                CategoricalSource::PayeeIspb,
                &["00000000", "60701190"],
                2,
            ),
            categorical(
                "payer_ispb",
                CategoricalSource::PayerIspb,
                &["00000000", "60701190"],
                2,
            ),
            categorical("key", CategoricalSource::PayeeKeyType, &["EVP", "PHONE"], 2),
            categorical(
                "form",
                CategoricalSource::InitiationForm,
                &["DICT", "QRES"],
                1,
            ),
        ],
    }
}

#[test]
fn standardisation_clipping_and_vocabularies() {
    let ex = FeatureExtractor::new(custom_spec()).unwrap();
    let spec = ex.spec();
    let batch = ex.extract(&[tx(&valid())]);
    let (num, cat) = (batch.numeric_row(0), batch.categorical_row(0));
    assert!((value(spec, num, "amount") - 0.156943415816731).abs() < 1e-6); // (ln 1501 − 7) / 2
    assert!((value(spec, num, "z") - 3.0).abs() < 1e-6); // 2.5 clipped to 2 → (2 − 0.5) / 0.5
    assert!((value(spec, num, "z_missing") - (-1.0 / 3.0)).abs() < 1e-6); // (0 − 0.1) / 0.3
    assert!((value(spec, num, "key_age") - 1.0).abs() < 1e-6); // ln 4 clipped to 1
    assert!((value(spec, num, "night") - (-0.5)).abs() < 1e-6); // (0 − 0.25) / 0.5
    assert_eq!(cat, &[1, 2, 1, 0]); // 60701190 known; 18236120 OOV; PHONE; DICT

    // A night-time manual payment without z-score: missing → 0 (the mean) plus its indicator.
    let mut doc = valid();
    set(&mut doc, "accepted_at", json!("2026-10-05T23:30:00-03:00"));
    set(&mut doc, "initiation_form", json!("MANU"));
    for path in [
        "payee.key_type",
        "payee.key_created_at",
        "history.amount_zscore_90d",
    ] {
        remove(&mut doc, path);
    }
    let batch = ex.extract(&[tx(&doc)]);
    let (num, cat) = (batch.numeric_row(0), batch.categorical_row(0));
    assert_eq!(value(spec, num, "z"), 0.0);
    assert!((value(spec, num, "z_missing") - 3.0).abs() < 1e-6); // (1 − 0.1) / 0.3
    assert_eq!(value(spec, num, "key_age"), 0.0);
    assert!((value(spec, num, "night") - 1.5).abs() < 1e-6); // (1 − 0.25) / 0.5
    assert_eq!(
        cat[2], 2,
        "no key → NONE token, not in this vocabulary → OOV"
    );
    assert_eq!(
        cat[3], 1,
        "MANU is not in the vocabulary → the catch-all index 1"
    );
}

#[test]
fn batches_are_contiguous_and_buffers_are_reused() {
    let ex = FeatureExtractor::new(default_spec()).unwrap();
    let mut night = valid();
    set(
        &mut night,
        "accepted_at",
        json!("2026-10-10T22:00:00-03:00"),
    );
    let txs = vec![tx(&valid()), tx(&night), tx(&valid())];
    let mut batch = ex.extract(&txs);
    assert_eq!(
        (batch.rows, batch.numeric.len(), batch.categorical.len()),
        (3, 3 * ex.n_numeric(), 3 * ex.n_categorical())
    );
    assert_eq!(batch.numeric_row(0), batch.numeric_row(2));
    assert_ne!(batch.numeric_row(0), batch.numeric_row(1));
    let mut single = vec![0.0; ex.n_numeric()];
    let mut single_cat = vec![0; ex.n_categorical()];
    ex.extract_row(&txs[1], &mut single, &mut single_cat);
    assert_eq!(batch.numeric_row(1), single.as_slice());
    assert_eq!(batch.categorical_row(1), single_cat.as_slice());

    let (num_ptr, cat_ptr) = (batch.numeric.as_ptr(), batch.categorical.as_ptr());
    ex.extract_into(&txs[..2], &mut batch);
    assert_eq!(batch.rows, 2);
    assert_eq!(
        (batch.numeric.as_ptr(), batch.categorical.as_ptr()),
        (num_ptr, cat_ptr),
        "no reallocation"
    );
}

#[test]
fn invalid_specs_are_refused_with_the_reason() {
    let check = |edit: fn(&mut FeatureSpec), want: fn(&SpecError) -> bool| {
        let mut spec = custom_spec();
        edit(&mut spec);
        let err = FeatureExtractor::new(spec).expect_err("spec must be refused");
        assert!(want(&err), "unexpected error: {err}");
    };
    check(
        |s| s.categorical[0].name = "amount".into(),
        |e| matches!(e, SpecError::DuplicateName(n) if n == "amount"),
    );
    check(
        |s| s.numeric[0].std = 0.0,
        |e| matches!(e, SpecError::NonPositiveStd { .. }),
    );
    check(
        |s| s.numeric[0].mean = f64::NAN,
        |e| matches!(e, SpecError::NonFinite { what: "mean", .. }),
    );
    check(
        |s| s.numeric[1].clip = Some([2.0, -2.0]),
        |e| matches!(e, SpecError::UnorderedClip { .. }),
    );
    check(
        |s| s.categorical[2].vocabulary.push("PIX".into()),
        |e| matches!(e, SpecError::InvalidToken { .. }),
    );
    check(
        |s| s.categorical[0].vocabulary.push("123".into()),
        |e| matches!(e, SpecError::InvalidToken { .. }),
    );
    check(
        |s| s.categorical[2].vocabulary.push("EVP".into()),
        |e| matches!(e, SpecError::DuplicateToken { .. }),
    );
    check(
        |s| s.categorical[3].oov_index = 3,
        |e| matches!(e, SpecError::OovIndex { .. }),
    );
    check(
        |s| {
            s.numeric.clear();
            s.categorical.clear();
        },
        |e| matches!(e, SpecError::Empty),
    );
    let mut spec = custom_spec();
    spec.numeric[0].std = -1.0;
    let err = FeatureExtractor::new(spec).expect_err("negative std");
    assert_eq!(
        err.to_string(),
        "numeric feature `amount`: std must be > 0, got -1"
    );
}

#[test]
fn spec_json_round_trips_and_rejects_unknown_sources() {
    let spec = default_spec();
    let text = serde_json::to_string(&spec).unwrap();
    assert_eq!(serde_json::from_str::<FeatureSpec>(&text).unwrap(), spec);
    let mut doc: Value = serde_json::from_str(&text).unwrap();
    doc["numeric"][0]["source"] = json!("payer.shoe_size");
    assert!(
        serde_json::from_value::<FeatureSpec>(doc.clone())
            .unwrap_err()
            .to_string()
            .contains("unknown variant")
    );
    doc["numeric"][0]["source"] = json!("amount_reais");
    doc["numeric"][0]["scale"] = json!(2);
    assert!(
        serde_json::from_value::<FeatureSpec>(doc)
            .unwrap_err()
            .to_string()
            .contains("unknown field")
    );
}

#[test]
fn fit_computes_moments_and_vocabularies_from_training_rows() {
    // Amounts R$ 1, 3, 7, 15 → log1p = ln 2 · (1, 2, 3, 4): mean 2.5 ln 2, population std ln 2 · √1.25.
    let rows: Vec<Transaction> = [
        (100, "60701190"),
        (300, "60701190"),
        (700, "60701190"),
        (1500, "00000000"),
    ]
    .iter()
    .map(|&(cents, payee)| {
        let mut doc = valid();
        set(&mut doc, "amount_cents", json!(cents));
        set(&mut doc, "payee.ispb", json!(payee));
        tx(&doc)
    })
    .collect();
    let fitted = fit(
        &default_spec(),
        &rows,
        FitOptions {
            min_count: 2,
            max_vocabulary: 10,
        },
    )
    .unwrap();
    let amount = &fitted.numeric[0];
    assert!(
        (amount.mean - 1.7328679513998633).abs() < 1e-9,
        "mean {}",
        amount.mean
    );
    assert!(
        (amount.std - 0.7749621070721793).abs() < 1e-9,
        "std {}",
        amount.std
    );
    // A constant feature gets std 1 so it stays finite.
    let same = fitted
        .numeric
        .iter()
        .find(|f| f.name == "same_institution")
        .unwrap();
    assert_eq!((same.mean, same.std), (0.0, 1.0));
    let payee = fitted
        .categorical
        .iter()
        .find(|f| f.source == CategoricalSource::PayeeIspb)
        .unwrap();
    assert_eq!(
        (payee.vocabulary.clone(), payee.oov_index),
        (vec!["60701190".to_string()], 1)
    );
    let form = fitted
        .categorical
        .iter()
        .find(|f| f.source == CategoricalSource::InitiationForm)
        .unwrap();
    assert_eq!(
        form.vocabulary,
        vec!["DICT".to_string()],
        "codes below min_count go to OOV"
    );
}

#[test]
fn rows_extracted_on_several_threads_equal_one_threads() {
    use pixguard::parallel::Parallel;
    use pixguard::synth::{Generator, SynthConfig};
    let ex = FeatureExtractor::new(default_spec()).unwrap();
    let cfg = SynthConfig {
        seed: 3,
        rows: 1_001,
        ..SynthConfig::default()
    };
    let txs: Vec<Transaction> = Generator::new(cfg)
        .unwrap()
        .map(|r| r.transaction)
        .collect();
    let parallel = Parallel::new(3).unwrap();
    assert!(
        parallel.chunk_rows(txs.len()) < txs.len(),
        "cut into chunks"
    );
    let (one, many) = (ex.extract(&txs), ex.extract_with(&txs, &parallel));
    assert_eq!(
        (many.rows, many.n_numeric, many.n_categorical),
        (one.rows, one.n_numeric, one.n_categorical)
    );
    assert_eq!(many.categorical, one.categorical);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&many.numeric), bits(&one.numeric), "bit for bit");
    // The last, shorter chunk and a request too small to cut.
    let small = ex.extract_with(&txs[..100], &parallel);
    assert_eq!(
        bits(&small.numeric),
        bits(&one.numeric[..100 * one.n_numeric])
    );
}
