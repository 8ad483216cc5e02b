//! What a message becomes: a transaction to score, or a dead-letter record saying why not; and
//! the score's own message.

use rdkafka::Message;
use rdkafka::message::{BorrowedMessage, Header, OwnedHeaders};
use serde::Serialize;

use crate::monitoring::Role;
use crate::protocol::v1::ScoreResult;
use crate::transaction::Transaction;

/// Why a message cannot be scored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unscorable {
    /// Short class: `empty`, `not_utf8`, `too_large`, `invalid_json`, `invalid_field`.
    pub class: &'static str,
    /// The field path, for a field that is wrong.
    pub field: Option<String>,
    /// Human-readable reason.
    pub message: String,
}

/// The JSON inside a value in Confluent Schema Registry's wire format (magic byte 0, a 4-byte
/// big-endian schema id, then the payload), as its serializers (`KafkaJsonSchemaSerializer`)
/// and Kafka Connect's converters write it, with the schema id; `None` for a plain value. A JSON
/// text never starts with byte 0, so the two cannot be confused.
pub fn schema_registry_framed(value: &[u8]) -> Option<(u32, &[u8])> {
    match value {
        [0, a, b, c, d, payload @ ..] => Some((u32::from_be_bytes([*a, *b, *c, *d]), payload)),
        _ => None,
    }
}

/// Decodes a message's value into a validated transaction.
pub fn decode(value: Option<&[u8]>, limit: usize) -> Result<Transaction, Unscorable> {
    let framed = value.and_then(schema_registry_framed);
    let value = match framed {
        Some((_, payload)) => Some(payload),
        None => value,
    };
    let value = match value {
        None => {
            return Err(Unscorable {
                class: "empty",
                field: None,
                message: "tombstone: the message has no value".into(),
            });
        }
        Some(v) if v.iter().all(u8::is_ascii_whitespace) => {
            return Err(Unscorable {
                class: "empty",
                field: None,
                message: "the message value is empty".into(),
            });
        }
        Some(v) => v,
    };
    if value.len() > limit {
        return Err(Unscorable {
            class: "too_large",
            field: None,
            message: format!(
                "{} bytes, the limit is {limit} (server.body_limit_bytes)",
                value.len()
            ),
        });
    }
    // A transaction that parses is valid UTF-8 (serde_json checks every string, and everything
    // outside strings is ASCII syntax): the separate check is only worth running on failure.
    Transaction::from_json(value).map_err(|e| {
        if let Err(bad) = std::str::from_utf8(value) {
            return Unscorable {
                class: "not_utf8",
                field: None,
                message: format!("the value is not UTF-8: {bad}"),
            };
        }
        // Only on the error path: is it JSON at all? serde names a position inside a broken
        // document as if it were a field; the reason says where, as /v1 says it.
        if let Err(json) = serde_json::from_slice::<serde::de::IgnoredAny>(value) {
            let message = match framed {
                // Avro and Protobuf serializers frame their values the same way.
                Some((id, _)) => format!(
                    "invalid JSON after a Schema Registry header (schema id {id}): {json}; \
                     pixguard reads JSON payloads, not Avro or Protobuf"
                ),
                None => format!("invalid JSON: {json}"),
            };
            Unscorable {
                class: "invalid_json",
                field: None,
                message,
            }
        } else {
            Unscorable {
                class: "invalid_field",
                field: Some(e.field.clone()).filter(|f| !f.is_empty()),
                message: e.to_string(),
            }
        }
    })
}

/// The input message's headers, detached, for the output or dead-letter record; none without.
pub fn headers_of(message: &BorrowedMessage<'_>) -> Option<OwnedHeaders> {
    message.headers().map(|h| h.detach())
}

/// Kafka Connect's dead-letter headers (`__connect.errors.*`) plus pixguard's own, appended to
/// the original headers.
pub fn dead_letter_headers(
    original: Option<OwnedHeaders>,
    source: (&str, i32, i64),
    why: &Unscorable,
    model_version: &str,
) -> OwnedHeaders {
    let (topic, partition, offset) = source;
    let mut h = original.unwrap_or_default();
    let mut add = |key: &str, value: &str| {
        h = std::mem::take(&mut h).insert(Header {
            key,
            value: Some(value.as_bytes()),
        });
    };
    add("__connect.errors.topic", topic);
    add("__connect.errors.partition", &partition.to_string());
    add("__connect.errors.offset", &offset.to_string());
    add("__connect.errors.connector.name", "pixguard-stream");
    add("__connect.errors.stage", "VALUE_CONVERTER");
    add(
        "__connect.errors.exception.class.name",
        &format!("pixguard.{}", why.class),
    );
    add("__connect.errors.exception.message", &why.message);
    if let Some(field) = &why.field {
        add("pixguard.errors.field", field);
    }
    add("pixguard.model.version", model_version);
    h
}

/// The score's message value: the /v1 answer plus the version's full name, when it was scored and
/// where it came from.
#[derive(Serialize)]
struct Output<'a> {
    #[serde(flatten)]
    answer: ScoreResult<'a>,
    model_version: &'a str,
    /// `canary` when the canary scored it; absent for the champion.
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    scored_at: &'a str,
    source: Source<'a>,
}

/// The input message a score answers.
#[derive(Serialize)]
struct Source<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
}

/// Writes the output message's value for `answer` into `out`: the message at `source`, scored
/// at `scored_at` (RFC 3339) by `model_version` (`name:version`) in `role`.
pub fn output(
    out: &mut Vec<u8>,
    answer: ScoreResult<'_>,
    (model_version, role): (&str, Role),
    scored_at: &str,
    source: (&str, i32, i64),
) {
    let value = Output {
        answer,
        model_version,
        role: role.in_records(),
        scored_at,
        source: Source {
            topic: source.0,
            partition: source.1,
            offset: source.2,
        },
    };
    // Plain structs of strings and numbers always serialise into a Vec.
    let _ = serde_json::to_writer(out, &value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_output_names_the_canary_and_not_the_champion() {
        let model = crate::protocol::v1::ModelRef {
            name: "pix-fraud".into(),
            version: "7".into(),
        };
        let value = |role| {
            let mut out = Vec::new();
            let answer = ScoreResult {
                end_to_end_id: "E1",
                score: 0.5,
                decision: crate::model::Decision::Hold,
                reasons: None,
                model: &model,
            };
            output(&mut out, answer, ("pix-fraud:7", role), "now", ("in", 2, 9));
            serde_json::from_slice::<serde_json::Value>(&out).unwrap()
        };
        assert_eq!(
            value(Role::Champion),
            serde_json::json!({
                "end_to_end_id": "E1", "score": 0.5, "decision": "HOLD",
                "model": {"name": "pix-fraud", "version": "7"}, "model_version": "pix-fraud:7",
                "scored_at": "now", "source": {"topic": "in", "partition": 2, "offset": 9},
            })
        );
        assert_eq!(value(Role::Canary)["role"], "canary");
    }

    #[test]
    fn each_kind_of_bad_value_gets_its_class() {
        assert_eq!(decode(None, 100).unwrap_err().class, "empty");
        assert_eq!(decode(Some(b"  "), 100).unwrap_err().class, "empty");
        assert_eq!(
            decode(Some(&[b'{'; 200]), 100).unwrap_err().class,
            "too_large"
        );
        assert_eq!(
            decode(Some(&[0xff, 0xfe]), 100).unwrap_err().class,
            "not_utf8"
        );
        // Invalid UTF-8 inside an otherwise well-formed transaction's string.
        let mut tx = br#"{"end_to_end_id": "E"#.to_vec();
        tx.extend_from_slice(&[0xc3, 0x28]);
        tx.extend_from_slice(br#""}"#);
        assert_eq!(decode(Some(&tx), 100).unwrap_err().class, "not_utf8");
        let err = decode(Some(b"{not json"), 100).unwrap_err();
        assert_eq!(err.class, "invalid_json");
        assert_eq!(
            err.message, "invalid JSON: key must be a string at line 1 column 2",
            "where, as /v1 says it"
        );
        let err = decode(Some(br#"{"end_to_end_id": 5}"#), 100).unwrap_err();
        assert_eq!(err.class, "invalid_field", "{err:?}");
        assert_eq!(err.field.as_deref(), Some("end_to_end_id"));
        // A list of transactions in one message is refused as a whole, not read as fields.
        let err = decode(Some(br#"[{"end_to_end_id": "E"}]"#), 100).unwrap_err();
        assert_eq!((err.class, err.field.as_deref()), ("invalid_field", None));
        assert!(err.message.contains("JSON array"), "{err:?}");
        assert_eq!(
            decode(Some(b"[1, 2"), 100).unwrap_err().class,
            "invalid_json"
        );
    }

    #[test]
    fn a_schema_registry_framed_value_is_read_as_its_json() {
        let tx = crate::synth::Generator::new(crate::synth::SynthConfig {
            seed: 5,
            rows: 1,
            ..Default::default()
        })
        .unwrap()
        .next()
        .unwrap()
        .transaction;
        let json = serde_json::to_vec(&tx).unwrap();
        let framed = [&[0, 0, 0, 1, 44][..], &json].concat();
        assert_eq!(schema_registry_framed(&framed), Some((300, &json[..])));
        assert_eq!(schema_registry_framed(&json), None);
        assert_eq!(decode(Some(&framed), 4096), decode(Some(&json), 4096));
        assert_eq!(decode(Some(&framed), 4096).unwrap(), tx);
        // An Avro payload behind the same header says what it is.
        let avro = decode(Some(&[0, 0, 0, 0, 7, 0x02, 0x0a, b'E']), 4096).unwrap_err();
        assert_eq!(avro.class, "invalid_json");
        assert!(
            avro.message.contains("schema id 7") && avro.message.contains("Avro"),
            "{avro:?}"
        );
        // A header with nothing behind it is an empty value; a lone zero byte is not JSON.
        assert_eq!(
            decode(Some(&[0, 0, 0, 0, 7]), 4096).unwrap_err().class,
            "empty"
        );
        assert_eq!(decode(Some(&[0]), 4096).unwrap_err().class, "invalid_json");
    }
}
