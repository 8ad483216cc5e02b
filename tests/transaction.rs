//! Validation of the Pix transaction: every rule, each error naming its field.

mod common;

use common::{remove, set, valid};
use pixguard::transaction::{KeyType, Transaction, ValidationError};
use serde_json::{Value, json};

fn parse(doc: &Value) -> Result<Transaction, ValidationError> {
    Transaction::from_json(doc.to_string().as_bytes())
}

/// Asserts that `doc` is refused, on `field`, with a reason containing `reason`.
fn refused(doc: &Value, field: &str, reason: &str) {
    let err = parse(doc).expect_err("the document must be refused");
    assert_eq!(err.field, field, "wrong field for error `{err}`");
    assert!(
        err.reason.contains(reason),
        "reason `{}` lacks `{reason}`",
        err.reason
    );
}

fn with(path: &str, value: Value) -> Value {
    let mut doc = valid();
    set(&mut doc, path, value);
    doc
}

fn without(path: &str) -> Value {
    let mut doc = valid();
    remove(&mut doc, path);
    doc
}

#[test]
fn the_fixture_is_valid_and_round_trips() {
    let tx = parse(&valid()).expect("valid fixture");
    assert_eq!(tx.payee.key_type, Some(KeyType::Phone));
    let again = Transaction::from_json(&serde_json::to_vec(&tx).unwrap()).unwrap();
    assert_eq!(tx, again);
}

#[test]
fn optional_fields_may_be_absent_or_null() {
    let mut doc = valid();
    for path in [
        "payee.key_created_at",
        "payee.account_opened_at",
        "payee.dict_stats",
        "history.amount_zscore_90d",
    ] {
        remove(&mut doc, path);
    }
    let tx = parse(&doc).expect("absent optionals are fine");
    assert!(tx.payee.dict_stats.is_none() && tx.history.amount_zscore_90d.is_none());
    let tx = parse(&with("payee.account_opened_at", Value::Null)).expect("null optionals are fine");
    assert!(tx.payee.account_opened_at.is_none());
}

#[test]
fn syntax_errors_and_trailing_data_are_refused() {
    let err = Transaction::from_json(b"{\"end_to_end_id\": ").unwrap_err();
    assert!(err.reason.contains("EOF"), "{err}");
    let mut bytes = valid().to_string().into_bytes();
    bytes.extend_from_slice(b" {}");
    let err = Transaction::from_json(&bytes).unwrap_err();
    assert!(err.reason.contains("trailing"), "{err}");
}

/// serde reads a struct from an array of its fields in order: a list of transactions, or one
/// transaction written positionally, must be refused as an array, not read field by field.
#[test]
fn a_json_array_is_refused_as_one() {
    let doc = valid();
    let positional = Value::Array(doc.as_object().unwrap().values().cloned().collect());
    for array in [json!([doc.clone(), doc]), positional] {
        for err in [
            Transaction::from_json(array.to_string().as_bytes()).unwrap_err(),
            pixguard::jsonl::parse_line(&array.to_string()).unwrap_err(),
        ] {
            assert_eq!(err.field, "", "{err}");
            assert!(err.reason.contains("JSON array"), "{err}");
        }
    }
}

#[test]
fn unknown_fields_are_refused_with_their_path() {
    refused(&with("channel", json!("app")), "channel", "unknown field");
    refused(
        &with("payer.device.model", json!("x")),
        "payer.device.model",
        "unknown field",
    );
    refused(
        &with("payee.dict_stats.score", json!(1)),
        "payee.dict_stats.score",
        "unknown field",
    );
    refused(
        &with("history.velocity", json!(1)),
        "history.velocity",
        "unknown field",
    );
}

#[test]
fn missing_required_fields_are_named() {
    for path in [
        "end_to_end_id",
        "accepted_at",
        "amount_cents",
        "initiation_form",
        "purpose",
        "payer",
        "payer.ispb",
        "payer.account_type",
        "payer.person_type",
        "payer.account_opened_at",
        "payer.device",
        "payer.device.registered",
        "payee.ispb",
        "payee.account_type",
        "payee.person_type",
        "payee.dict_stats.settlements_90d",
        "payee.dict_stats.fraud_markers_30d",
        "payee.dict_stats.infractions_open",
        "payee.dict_stats.mule_marker",
        "history",
        "history.payee_first_time",
        "history.payer_tx_1h",
        "history.payer_amount_24h_cents",
    ] {
        refused(&without(path), path, "missing field");
    }
}

#[test]
fn wrong_types_are_named() {
    refused(
        &with("amount_cents", json!("150000")),
        "amount_cents",
        "invalid type",
    );
    refused(
        &with("amount_cents", json!(1500.5)),
        "amount_cents",
        "expected a whole number of centavos",
    );
    refused(
        &with("amount_cents", Value::Null),
        "amount_cents",
        "invalid type",
    );
    refused(
        &with("payer.device.registered", json!("yes")),
        "payer.device.registered",
        "invalid type",
    );
    refused(
        &with("history.payer_tx_1h", json!(-1)),
        "history.payer_tx_1h",
        "must be a count from 0 to 4294967295, got -1",
    );
    refused(
        &with("history.payer_tx_1h", json!(4_294_967_296u64)),
        "history.payer_tx_1h",
        "must be a count from 0 to 4294967295, got 4294967296",
    );
    refused(
        &with("history.payer_tx_1h", json!(1.5)),
        "history.payer_tx_1h",
        "expected a count from 0 to 4294967295",
    );
    refused(
        &with("amount_cents", json!(9_223_372_036_854_775_808u64)),
        "amount_cents",
        "must be at most 9223372036854775807 centavos",
    );
    refused(
        &with("history.amount_zscore_90d", json!("high")),
        "history.amount_zscore_90d",
        "invalid type",
    );
    refused(
        &with("payee.dict_stats.settlements_90d", json!(-3)),
        "payee.dict_stats.settlements_90d",
        "must be a count from 0 to 4294967295, got -3",
    );
    refused(
        &with("payee.dict_stats.mule_marker", json!(1)),
        "payee.dict_stats.mule_marker",
        "invalid type",
    );
    refused(&with("payer", json!("someone")), "payer", "invalid type");
}

#[test]
fn code_lists_are_enforced() {
    refused(
        &with("initiation_form", json!("PIX")),
        "initiation_form",
        "unknown variant",
    );
    refused(
        &with("purpose", json!("ipay")),
        "purpose",
        "unknown variant",
    );
    refused(
        &with("payer.account_type", json!("CHECKING")),
        "payer.account_type",
        "unknown variant",
    );
    refused(
        &with("payer.person_type", json!("PF")),
        "payer.person_type",
        "unknown variant",
    );
    refused(
        &with("payee.account_type", json!("X")),
        "payee.account_type",
        "unknown variant",
    );
    refused(
        &with("payee.person_type", json!("PJ")),
        "payee.person_type",
        "unknown variant",
    );
    refused(
        &with("payee.key_type", json!("RANDOM")),
        "payee.key_type",
        "unknown variant",
    );
}

#[test]
fn end_to_end_id_layout_is_checked() {
    let cases = [
        ("E18236120202610051700AbCdEf1234", "32 characters"),
        ("X18236120202610051700AbCdEf12345", "start with `E`"),
        ("E1823612A202610051700AbCdEf12345", "ISPB"),
        (
            "E18236120202613051700AbCdEf12345",
            "not a valid yyyyMMddHHmm",
        ),
        (
            "E18236120202602301700AbCdEf12345",
            "not a valid yyyyMMddHHmm",
        ),
        (
            "E18236120202610052460AbCdEf12345",
            "not a valid yyyyMMddHHmm",
        ),
        ("E1823612020261005170xAbCdEf12345", "yyyyMMddHHmm"),
        ("E18236120202610051700AbCdEf1234-", "alphanumeric"),
    ];
    for (id, reason) in cases {
        refused(&with("end_to_end_id", json!(id)), "end_to_end_id", reason);
    }
}

#[test]
fn ispbs_and_timestamps_are_checked() {
    refused(
        &with("payer.ispb", json!("1823612")),
        "payer.ispb",
        "8 digits",
    );
    refused(
        &with("payee.ispb", json!(60701190)),
        "payee.ispb",
        "invalid type",
    );
    refused(
        &with("accepted_at", json!("2026-10-05 14:00")),
        "accepted_at",
        "RFC 3339",
    );
    refused(
        &with("accepted_at", json!("2026-10-05T14:00:00")),
        "accepted_at",
        "RFC 3339",
    );
    refused(
        &with("payer.account_opened_at", json!("yesterday")),
        "payer.account_opened_at",
        "RFC 3339",
    );
    refused(
        &with("payer.device.first_seen_at", json!("2026-13-01T00:00:00Z")),
        "payer.device.first_seen_at",
        "RFC 3339",
    );
    refused(
        &with("payee.key_created_at", json!(1_700_000_000)),
        "payee.key_created_at",
        "invalid type",
    );
}

#[test]
fn amounts_must_be_positive() {
    refused(&with("amount_cents", json!(0)), "amount_cents", "positive");
    refused(
        &with("amount_cents", json!(-150000)),
        "amount_cents",
        "positive",
    );
    refused(
        &with("history.payer_amount_24h_cents", json!(-1)),
        "history.payer_amount_24h_cents",
        "negative",
    );
}

#[test]
fn key_rules_follow_the_initiation_form() {
    let mut manual = with("initiation_form", json!("MANU"));
    refused(
        &manual,
        "payee.key_type",
        "must be absent when initiation_form is MANU",
    );
    remove(&mut manual, "payee.key_type");
    refused(
        &manual,
        "payee.key_created_at",
        "must be absent when payee.key_type is absent",
    );
    remove(&mut manual, "payee.key_created_at");
    parse(&manual).expect("a manual payment without key is valid");

    for form in ["DICT", "QRES", "QRDN"] {
        let mut doc = with("initiation_form", json!(form));
        remove(&mut doc, "payee.key_type");
        remove(&mut doc, "payee.key_created_at");
        refused(
            &doc,
            "payee.key_type",
            &format!("required when initiation_form is {form}"),
        );
    }
}

#[test]
fn registered_devices_need_a_first_sighting() {
    refused(
        &without("payer.device.first_seen_at"),
        "payer.device.first_seen_at",
        "required when payer.device.registered",
    );
    let mut doc = without("payer.device.first_seen_at");
    set(&mut doc, "payer.device.registered", json!(false));
    parse(&doc).expect("a brand-new unregistered device has no first sighting");
}

#[test]
fn past_timestamps_may_not_be_after_acceptance() {
    // Five minutes of clock skew are tolerated; six are not.
    parse(&with(
        "payee.key_created_at",
        json!("2026-10-05T14:05:00-03:00"),
    ))
    .expect("within skew");
    for path in [
        "payer.account_opened_at",
        "payer.device.first_seen_at",
        "payee.key_created_at",
        "payee.account_opened_at",
    ] {
        refused(
            &with(path, json!("2026-10-05T14:06:00-03:00")),
            path,
            "is after accepted_at",
        );
    }
}

#[test]
fn local_time_is_sao_paulo() {
    let tx = parse(&valid()).unwrap();
    let t = tx.local_time();
    assert_eq!(
        (t.minute_of_day, t.weekday, t.day_of_month),
        (14 * 60, 0, 5)
    );
    // 02:30 UTC on Monday is 23:30 on Sunday in São Paulo.
    let mut doc = with("accepted_at", json!("2026-10-05T02:30:00Z"));
    for path in ["payer.device.first_seen_at", "payee.key_created_at"] {
        set(&mut doc, path, json!("2026-10-04T20:00:00-03:00"));
    }
    let tx = parse(&doc).unwrap();
    let t = tx.local_time();
    assert_eq!(
        (t.minute_of_day, t.weekday, t.day_of_month),
        (23 * 60 + 30, 6, 4)
    );
    // In December 2018 Brazil still had daylight saving (UTC-2): 12:00 UTC was 10:00 local.
    let mut doc = valid();
    for path in [
        "payer.account_opened_at",
        "payer.device.first_seen_at",
        "payee.key_created_at",
        "payee.account_opened_at",
    ] {
        set(&mut doc, path, json!("2018-01-01T00:00:00Z"));
    }
    set(&mut doc, "accepted_at", json!("2018-12-01T12:00:00Z"));
    assert_eq!(parse(&doc).unwrap().local_time().minute_of_day, 10 * 60);
}
