//! Environment and command-line overrides, where each key came from, and serde's complaints about
//! a value reworded for the person who set it.

use std::ffi::OsString;

use serde_yaml_ng::Value;

use super::{ConfigError, ENV_PREFIX};

/// `PIXGUARD__SECTION__KEY` and `OTEL_*` variables as (name, value), and an error for one that
/// was meant as an override but would be ignored: `PIXGUARD_ENGINE_WORKERS=4` (one underscore)
/// configures nothing, and a Deployment's env list says nothing when it does not take. Only a
/// name that spells a real key is taken for a mistake: a developer's `PIXGUARD_SERVER_URL`, or
/// the variables Kubernetes makes for a Service named `pixguard-stream`
/// (`PIXGUARD_STREAM_SERVICE_HOST`, `PIXGUARD_STREAM_PORT=tcp://…`), are other programs' and left
/// alone.
pub(super) fn from_environment(
    vars: impl Iterator<Item = (OsString, OsString)>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    let mut sections: Option<Value> = None;
    for (name, value) in vars {
        // Another program's variable need not be UTF-8 (`std::env::vars` would panic on it).
        let Some(name) = name.to_str() else { continue };
        if name.starts_with("OTEL_") {
            // An OpenTelemetry setting whose value is not text is taken as unset, as an empty one
            // is.
            let value = value.into_string().unwrap_or_default();
            out.push((name.to_string(), value));
            continue;
        }
        if let Some(rest) = name.strip_prefix(ENV_PREFIX) {
            let value = value.into_string().map_err(|_| ConfigError::Invalid {
                key: rest.to_ascii_lowercase().replace("__", "."),
                reason: "is not UTF-8 text".into(),
                origin: format!("from environment {name}"),
            })?;
            out.push((name.to_string(), value));
            continue;
        }
        let Some(rest) = name.strip_prefix("PIXGUARD_") else {
            continue;
        };
        let Some((section, key)) = rest.split_once('_') else {
            continue;
        };
        let key = key.trim_start_matches('_');
        let service_link = value.to_str().is_some_and(|v| {
            ["tcp://", "udp://", "sctp://"]
                .iter()
                .any(|p| v.starts_with(p))
        });
        let sections = sections.get_or_insert_with(|| {
            serde_yaml_ng::to_value(super::Config::default()).unwrap_or(Value::Null)
        });
        let is_key = sections
            .get(section.to_ascii_lowercase())
            .and_then(|s| s.get(key.to_ascii_lowercase()))
            .is_some();
        if is_key && !service_link {
            return Err(ConfigError::Invalid {
                key: String::new(),
                reason: format!(
                    "{name} is not read: overrides are named with two underscores after \
                     PIXGUARD and after the section, e.g. {ENV_PREFIX}{section}__{key}"
                ),
                origin: format!("from environment {name}"),
            });
        }
    }
    Ok(out)
}

/// One override: a key, the text it was given, and which reading of that text is in the tree.
pub(super) struct Override {
    /// Dotted key, e.g. `stream.group_id`.
    pub key: String,
    /// Where it came from: `environment NAME` or `command line`.
    pub origin: String,
    text: String,
    typed: bool,
    switched: bool,
}

impl Override {
    /// An override of `key` by `text`, less surrounding whitespace: a Kubernetes Secret written
    /// with `echo` ends in a newline nobody meant as part of the password (reading the text as
    /// YAML dropped it too).
    pub fn new(key: String, text: String, origin: String) -> Self {
        let text = text.trim().to_string();
        // Empty, `null` and `~` unset an optional key, as they would in the file.
        let typed = matches!(text.as_str(), "" | "null" | "~");
        Override {
            key,
            origin,
            text,
            typed,
            switched: false,
        }
    }

    /// The value to put in the tree. Text first: a group id `123`, a topic `true` or a password
    /// `#x1 'y'` are text as given, where reading them as YAML would make a number, a boolean or
    /// a comment of them. A key that refuses text (a count, a flag) gets the text read as YAML.
    pub fn value(&self) -> Value {
        if self.typed {
            serde_yaml_ng::from_str(&self.text).unwrap_or_else(|_| Value::String(self.text.clone()))
        } else {
            Value::String(self.text.clone())
        }
    }

    /// Switches to the other reading of the text, once; false when it was switched already or
    /// the other reading is the same value.
    pub fn try_other_reading(&mut self) -> bool {
        if self.switched {
            return false;
        }
        let before = self.value();
        self.typed = !self.typed;
        self.switched = true;
        self.value() != before
    }
}

/// Where each key was set, in the order the sources apply (a later one wins).
#[derive(Default)]
pub(super) struct Origins(Vec<(String, String)>);

impl Origins {
    /// Records every value in a YAML file's tree (not its sections: a section in the file says
    /// nothing about a key in it that the file leaves out).
    pub fn file(&mut self, node: &Value, prefix: &str, file: &str) {
        let Value::Mapping(map) = node else { return };
        for (k, v) in map {
            let name = match k {
                Value::String(s) => s.clone(),
                other => serde_yaml_ng::to_string(other)
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
            };
            let key = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}.{name}")
            };
            match v {
                Value::Mapping(m) if !m.is_empty() => self.file(v, &key, file),
                _ => self.0.push((key, file.to_string())),
            }
        }
    }

    /// Records that `origin` set `key`.
    pub fn set(&mut self, key: &str, origin: &str) {
        self.0.push((key.to_string(), origin.to_string()));
    }

    /// Where `key`'s value came from: whatever set it, a key inside it, or the value holding it,
    /// last; `defaults` when nothing did.
    pub fn of(&self, key: &str) -> &str {
        let within = |outer: &str, inner: &str| {
            inner
                .strip_prefix(outer)
                .is_some_and(|rest| rest.starts_with('.'))
        };
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key || within(key, k) || within(k, key))
            .map_or("defaults", |(_, origin)| origin)
    }

    /// `from X` when the keys share an origin, else `K from X, L from Y`.
    pub fn describe(&self, keys: &[&str]) -> String {
        let origins: Vec<&str> = keys.iter().map(|k| self.of(k)).collect();
        if origins.iter().all(|o| *o == origins[0]) {
            return format!("from {}", origins[0]);
        }
        keys.iter()
            .zip(&origins)
            .map(|(k, o)| format!("{k} from {o}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// serde's reason in a configuration reader's words: `invalid value: integer `-1`, expected usize`
/// becomes `expected a whole number (0 or more), got -1`. Reasons it does not know are kept.
pub(super) fn in_our_words(reason: &str) -> String {
    let Some((got, expected)) = reason
        .strip_prefix("invalid type: ")
        .or_else(|| reason.strip_prefix("invalid value: "))
        .and_then(|r| r.rsplit_once(", expected "))
    else {
        return reason.to_string();
    };
    let wanted = match expected {
        "usize" | "u64" => "a whole number (0 or more)",
        "u32" => "a whole number from 0 to 4294967295",
        "u16" => "a whole number from 0 to 65535",
        "u8" => "a whole number from 0 to 255",
        "f64" | "f32" => "a number",
        "a boolean" => "true or false",
        "a string" => "text",
        "path string" => "a path",
        e if e.starts_with("struct ") => "a section of keys",
        _ => return reason.to_string(),
    };
    let quoted = |s: &str| s.trim_matches('`').to_string();
    let given = if let Some(s) = got.strip_prefix("string ") {
        s.to_string()
    } else if let Some(n) = got
        .strip_prefix("integer ")
        .or_else(|| got.strip_prefix("floating point "))
        .or_else(|| got.strip_prefix("boolean "))
    {
        quoted(n)
    } else {
        match got {
            "unit value" => "nothing".into(),
            "sequence" => "a list".into(),
            "map" => "a section".into(),
            other => other.to_string(),
        }
    };
    let hint = if wanted == "text" && !got.starts_with("string") {
        // Only a file can give text keys a number now (overrides are text first).
        format!(" (in YAML, quote it: \"{given}\")")
    } else {
        String::new()
    };
    format!("expected {wanted}, got {given}{hint}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_reasons_are_reworded_and_unknown_ones_kept() {
        for (serde, ours) in [
            (
                "invalid type: string \"abc\", expected usize",
                "expected a whole number (0 or more), got \"abc\"",
            ),
            (
                "invalid value: integer `-1`, expected usize",
                "expected a whole number (0 or more), got -1",
            ),
            (
                "invalid value: integer `99999`, expected u16",
                "expected a whole number from 0 to 65535, got 99999",
            ),
            (
                "invalid type: unit value, expected u64",
                "expected a whole number (0 or more), got nothing",
            ),
            (
                "invalid type: floating point `0.5`, expected a boolean",
                "expected true or false, got 0.5",
            ),
            (
                "invalid type: integer `123`, expected a string",
                "expected text, got 123 (in YAML, quote it: \"123\")",
            ),
            (
                "invalid type: integer `5`, expected struct EngineConfig",
                "expected a section of keys, got 5",
            ),
            (
                "unknown variant `tpu`, expected one of `auto`, `cuda`, `cpu`",
                "unknown variant `tpu`, expected one of `auto`, `cuda`, `cpu`",
            ),
            (
                "invalid type: map, expected a tuple",
                "invalid type: map, expected a tuple",
            ),
        ] {
            assert_eq!(in_our_words(serde), ours);
        }
    }

    #[test]
    fn an_origin_covers_the_keys_inside_it_and_the_latest_wins() {
        let mut origins = Origins::default();
        let file: Value =
            serde_yaml_ng::from_str("engine:\n  workers: 2\nstream:\n  librdkafka: {}\n").unwrap();
        origins.file(&file, "", "config.yaml");
        origins.set(
            "engin.max_batch_size",
            "environment PIXGUARD__ENGIN__MAX_BATCH_SIZE",
        );
        origins.set("engine.workers", "command line");
        assert_eq!(origins.of("engine.workers"), "command line");
        assert_eq!(
            origins.of("engine.max_queue_rows"),
            "defaults",
            "the file's engine section does not set this key"
        );
        assert_eq!(
            origins.of("engin"),
            "environment PIXGUARD__ENGIN__MAX_BATCH_SIZE",
            "an unknown section is where its key was set"
        );
        assert_eq!(
            origins.of("stream.librdkafka.a"),
            "config.yaml",
            "a key inside a value the file set"
        );
        assert_eq!(
            origins.describe(&["engine.workers", "engine.max_queue_rows"]),
            "engine.workers from command line, engine.max_queue_rows from defaults"
        );
        assert_eq!(origins.describe(&["engine.workers"]), "from command line");
    }

    #[test]
    fn an_override_is_text_until_its_key_refuses_text() {
        let mut o = Override::new("engine.workers".into(), "4".into(), "command line".into());
        assert_eq!(o.value(), Value::String("4".into()));
        assert!(o.try_other_reading());
        assert_eq!(o.value(), serde_yaml_ng::from_str::<Value>("4").unwrap());
        assert!(!o.try_other_reading(), "both readings tried");

        let o = Override::new("x".into(), "#x1 'y'".into(), "command line".into());
        assert_eq!(o.value(), Value::String("#x1 'y'".into()), "not a comment");
        let o = Override::new("x".into(), " s3cret\n".into(), "command line".into());
        assert_eq!(
            o.value(),
            Value::String("s3cret".into()),
            "a Secret's newline"
        );

        let mut o = Override::new("x".into(), "abc".into(), "command line".into());
        assert!(
            !o.try_other_reading(),
            "YAML reads abc as the same text: nothing else to try"
        );

        let mut o = Override::new("model.shadow".into(), String::new(), "command line".into());
        assert_eq!(o.value(), Value::Null, "empty unsets");
        assert!(o.try_other_reading());
        assert_eq!(o.value(), Value::String(String::new()));
        assert!(!o.try_other_reading());
    }

    #[test]
    fn a_one_underscore_override_is_an_error_and_other_programs_variables_are_left() {
        let vars = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (OsString::from(k), OsString::from(v)))
                .collect::<Vec<_>>()
                .into_iter()
        };
        let found = from_environment(vars(&[
            ("PIXGUARD__ENGINE__WORKERS", "2"),
            ("PIXGUARD_ADMIN_TOKEN", "t"),
            ("PIXGUARD_MODEL", "models/pix-fraud"),
            ("PIXGUARD_SERVER_URL", "http://127.0.0.1:8080"),
            // Kubernetes' variables for Services named pixguard-stream and pixguard-server.
            ("PIXGUARD_STREAM_SERVICE_HOST", "10.0.0.7"),
            ("PIXGUARD_STREAM_PORT", "tcp://10.0.0.7:8080"),
            ("PIXGUARD_SERVER_PORT", "tcp://10.0.0.8:8080"),
            ("PIXGUARD_SERVER_PORT_8080_TCP_ADDR", "10.0.0.8"),
            ("PATH", "/bin"),
        ]))
        .unwrap();
        assert_eq!(
            found,
            vec![("PIXGUARD__ENGINE__WORKERS".to_string(), "2".to_string())]
        );
        for (name, meant) in [
            ("PIXGUARD_ENGINE_WORKERS", "PIXGUARD__ENGINE__WORKERS"),
            (
                "PIXGUARD_ENGINE__MAX_BATCH_SIZE",
                "PIXGUARD__ENGINE__MAX_BATCH_SIZE",
            ),
            ("PIXGUARD_SERVER_PORT", "PIXGUARD__SERVER__PORT"),
        ] {
            let err = from_environment(vars(&[(name, "2")]))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!("{name} is not read"))
                    && err.contains(&format!("e.g. {meant}")),
                "{err}"
            );
        }
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStringExt;
            let found = from_environment(
                vec![(
                    OsString::from("OTHER"),
                    OsString::from_vec(vec![0xff, 0xfe]),
                )]
                .into_iter(),
            )
            .unwrap();
            assert!(
                found.is_empty(),
                "another program's non-UTF-8 value is no error"
            );
        }
    }
}
