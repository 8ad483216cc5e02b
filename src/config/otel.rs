//! The OpenTelemetry SDK's environment variables (`OTEL_EXPORTER_OTLP_ENDPOINT`,
//! `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER`, …) read as overrides of the `traces` keys, so that a
//! platform which configures every service's telemetry that way (the OpenTelemetry Operator's
//! `inject-sdk`, a Helm chart's common env) configures pixguard too. They apply after
//! `config.yaml` and before `PIXGUARD__TRACES__…`, the more specific name.
//!
//! The specification asks that a value an SDK does not support be logged and ignored: such values
//! (a `b3` propagator, a `console` exporter, `http/json`) become notes for the log. A value of a
//! supported setting that is not valid (`OTEL_BSP_MAX_QUEUE_SIZE=lots`) is passed on, and the
//! configuration refuses it naming the variable, as it does any other override.

/// What the variables set: `(key, text, origin)` in the order they apply, and what was ignored.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Translated {
    /// Overrides of `traces.*` keys.
    pub overrides: Vec<(String, String, String)>,
    /// Settings that were ignored, and why.
    pub notes: Vec<String>,
}

/// The exporter headers' variables, most specific first (read where the exporter starts: their
/// values are credentials, and the configuration is printed and logged).
pub const HEADER_VARIABLES: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_EXPORTER_OTLP_HEADERS",
];

/// Variables that configure what pixguard does not do; set, they are noted as ignored.
const NOT_SUPPORTED: [(&str, &str); 6] = [
    (
        "OTEL_EXPORTER_OTLP_CERTIFICATE",
        "https endpoints are checked against the system's roots",
    ),
    (
        "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
        "https endpoints are checked against the system's roots",
    ),
    (
        "OTEL_EXPORTER_OTLP_CLIENT_KEY",
        "no client certificate is presented",
    ),
    (
        "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
        "no client certificate is presented",
    ),
    (
        "OTEL_EXPORTER_OTLP_INSECURE",
        "the endpoint's scheme says whether TLS is used",
    ),
    (
        "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT",
        "pixguard's spans have a fixed, small set of attributes",
    ),
];

impl Translated {
    fn set(&mut self, key: &str, value: &str, from: &str) {
        self.overrides.push((
            format!("traces.{key}"),
            value.to_string(),
            format!("environment {from}"),
        ));
    }
}

/// Reads the `OTEL_*` variables among `vars` (name, value).
pub(super) fn translate(vars: &[(String, String)]) -> Translated {
    let mut out = Translated::default();
    // An empty value is treated as unset, as the specification says.
    let get = |name: &str| {
        vars.iter()
            .rev()
            .find(|(n, v)| n == name && !v.trim().is_empty())
            .map(|(n, v)| (n.as_str(), v.trim()))
    };
    let first = |names: &[&'static str]| names.iter().find_map(|n| get(n));

    if let Some((name, v)) = get("OTEL_SDK_DISABLED")
        && v.eq_ignore_ascii_case("true")
    {
        out.set("otlp_endpoint", "", name);
        return out;
    }
    if let Some((name, v)) = get("OTEL_TRACES_EXPORTER") {
        let exporters: Vec<&str> = v.split(',').map(str::trim).collect();
        if exporters == ["none"] {
            out.set("otlp_endpoint", "", name);
            return out;
        }
        let others: Vec<&str> = exporters
            .iter()
            .copied()
            .filter(|e| *e != "otlp" && *e != "none")
            .collect();
        if !others.is_empty() {
            out.notes.push(format!(
                "{name}: {} ignored; spans are exported over OTLP only",
                others.join(", ")
            ));
        }
    }

    let protocol = match first(&[
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ]) {
        Some((name, v @ ("grpc" | "http/protobuf"))) => {
            out.set("protocol", v, name);
            Some(v)
        }
        Some((name, v)) => {
            out.notes.push(format!(
                "{name}={v} ignored: pixguard sends OTLP as grpc or http/protobuf"
            ));
            None
        }
        None => None,
    };
    if let Some((name, v)) = get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        out.set("otlp_endpoint", v, name);
        if protocol.is_none() {
            // The specification's default transport.
            out.set("protocol", "http/protobuf", name);
        }
    } else if let Some((name, v)) = get("OTEL_EXPORTER_OTLP_ENDPOINT") {
        // The base URL of every signal: OTLP/HTTP appends the signal's path, gRPC takes it as is.
        if protocol == Some("grpc") {
            out.set("otlp_endpoint", v, name);
        } else {
            out.set(
                "otlp_endpoint",
                &format!("{}/v1/traces", v.trim_end_matches('/')),
                name,
            );
            if protocol.is_none() {
                out.set("protocol", "http/protobuf", name);
            }
        }
    }

    if let Some((name, v)) = first(&[
        "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
        "OTEL_EXPORTER_OTLP_COMPRESSION",
    ]) {
        match v {
            "gzip" | "none" => out.set("compression", v, name),
            _ => out.notes.push(format!(
                "{name}={v} ignored: the compressions are gzip and none"
            )),
        }
    }
    if let Some((name, v)) = first(&[
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
        "OTEL_BSP_EXPORT_TIMEOUT",
    ]) {
        out.set("export_timeout_ms", v, name);
    }
    for (var, key) in [
        ("OTEL_BSP_SCHEDULE_DELAY", "export_interval_ms"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "max_queue_size"),
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "max_export_batch_size"),
    ] {
        if let Some((name, v)) = get(var) {
            out.set(key, v, name);
        }
    }

    sampler(
        get("OTEL_TRACES_SAMPLER"),
        get("OTEL_TRACES_SAMPLER_ARG"),
        &mut out,
    );

    let mut attributes = std::collections::BTreeMap::new();
    if let Some((name, v)) = get("OTEL_RESOURCE_ATTRIBUTES") {
        match pairs(v) {
            Ok(list) => attributes.extend(list),
            // The specification: an invalid value discards the whole variable.
            Err(reason) => out.notes.push(format!("{name} ignored: {reason}")),
        }
    }
    // OTEL_SERVICE_NAME wins over a service.name among the attributes.
    let service = attributes.remove("service.name");
    if let Some((name, v)) = get("OTEL_SERVICE_NAME") {
        out.set("service_name", v, name);
    } else if let Some(v) = service {
        out.set("service_name", &v, "OTEL_RESOURCE_ATTRIBUTES");
    }
    if !attributes.is_empty() {
        // A mapping key takes its override as YAML; JSON is YAML, and quotes every value.
        let text = serde_json::to_string(&attributes).unwrap_or_default();
        out.set("resource_attributes", &text, "OTEL_RESOURCE_ATTRIBUTES");
    }

    if let Some((name, v)) = get("OTEL_PROPAGATORS") {
        let others: Vec<&str> = v
            .split(',')
            .map(str::trim)
            .filter(|p| !matches!(*p, "tracecontext" | "baggage" | "none"))
            .collect();
        if !others.is_empty() {
            out.notes.push(format!(
                "{name}: {} ignored; pixguard reads and writes W3C traceparent (tracecontext) only",
                others.join(", ")
            ));
        }
    }
    for (var, why) in NOT_SUPPORTED {
        if let Some((name, _)) = get(var) {
            out.notes.push(format!("{name} ignored: {why}"));
        }
    }
    out
}

/// `OTEL_TRACES_SAMPLER` and its argument as `traces.sample_ratio` and `traces.parent_based`.
fn sampler(sampler: Option<(&str, &str)>, arg: Option<(&str, &str)>, out: &mut Translated) {
    let Some((name, sampler)) = sampler else {
        return;
    };
    let (parent_based, ratio) = match sampler {
        "always_on" => (false, Some("1")),
        "always_off" => (false, Some("0")),
        "traceidratio" => (false, None),
        "parentbased_always_on" => (true, Some("1")),
        "parentbased_always_off" => (true, Some("0")),
        "parentbased_traceidratio" => (true, None),
        other => {
            out.notes.push(format!(
                "{name}={other} ignored: the samplers are always_on, always_off, traceidratio \
                 and their parentbased_ forms"
            ));
            return;
        }
    };
    let origin = format!("environment {name}");
    out.overrides.push((
        "traces.parent_based".into(),
        parent_based.to_string(),
        origin.clone(),
    ));
    let ratio = match (ratio, arg) {
        (Some(fixed), _) => (fixed.to_string(), origin),
        (None, Some((arg_name, v))) => match v.parse::<f64>() {
            Ok(r) if (0.0..=1.0).contains(&r) => (v.to_string(), format!("environment {arg_name}")),
            _ => {
                out.notes.push(format!(
                    "{arg_name}={v} ignored: not a ratio from 0 to 1; {sampler} samples every trace"
                ));
                ("1".into(), origin)
            }
        },
        // The specification's default argument of the ratio samplers.
        (None, None) => ("1".into(), origin),
    };
    out.overrides
        .push(("traces.sample_ratio".into(), ratio.0, ratio.1));
}

/// `key1=value1,key2=value2` with percent-encoded values (the W3C Baggage form the specification
/// uses for resource attributes and headers), keys and values trimmed.
pub fn pairs(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (i, item) in text.split(',').enumerate() {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let Some((key, value)) = item.split_once('=') else {
            return Err(format!("entry {} has no '='", i + 1));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(format!("entry {} has no key", i + 1));
        }
        let value = percent_decode(value.trim())
            .ok_or_else(|| format!("entry {} ({key}) is not percent-encoded UTF-8", i + 1))?;
        out.push((key.to_string(), value));
    }
    Ok(out)
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    fn overrides(t: &Translated) -> Vec<(&str, &str, &str)> {
        t.overrides
            .iter()
            .map(|(k, v, o)| (k.as_str(), v.as_str(), o.as_str()))
            .collect()
    }

    #[test]
    fn a_base_endpoint_gets_the_traces_path_over_http_and_is_kept_over_grpc() {
        let t = translate(&vars(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://collector:4318/",
        )]));
        assert_eq!(
            overrides(&t),
            [
                (
                    "traces.otlp_endpoint",
                    "http://collector:4318/v1/traces",
                    "environment OTEL_EXPORTER_OTLP_ENDPOINT"
                ),
                (
                    "traces.protocol",
                    "http/protobuf",
                    "environment OTEL_EXPORTER_OTLP_ENDPOINT"
                ),
            ]
        );
        let t = translate(&vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ]));
        assert_eq!(
            overrides(&t),
            [
                (
                    "traces.protocol",
                    "grpc",
                    "environment OTEL_EXPORTER_OTLP_PROTOCOL"
                ),
                (
                    "traces.otlp_endpoint",
                    "http://collector:4317",
                    "environment OTEL_EXPORTER_OTLP_ENDPOINT"
                ),
            ]
        );
        // The signal's own endpoint is taken as it is, and wins over the base.
        let t = translate(&vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://base:4318"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "https://x/otlp/traces",
            ),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ]));
        assert_eq!(
            overrides(&t)[..2],
            [
                (
                    "traces.protocol",
                    "http/protobuf",
                    "environment OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
                ),
                (
                    "traces.otlp_endpoint",
                    "https://x/otlp/traces",
                    "environment OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
                ),
            ]
        );
    }

    #[test]
    fn disabled_or_no_exporter_turns_traces_off_and_nothing_else_is_read() {
        for off in [
            ("OTEL_SDK_DISABLED", "TRUE"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ] {
            let t = translate(&vars(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
                off,
            ]));
            assert_eq!(
                overrides(&t),
                [(
                    "traces.otlp_endpoint",
                    "",
                    format!("environment {}", off.0).as_str()
                )]
            );
        }
        // Anything but `true` leaves the SDK on; an empty value is unset.
        let t = translate(&vars(&[
            ("OTEL_SDK_DISABLED", "false"),
            ("OTEL_TRACES_EXPORTER", ""),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://c:4318/v1/traces",
            ),
        ]));
        assert_eq!(overrides(&t)[0].1, "http://c:4318/v1/traces");
    }

    #[test]
    fn samplers_become_a_ratio_and_whether_the_parent_decides() {
        let cases = [
            ("always_on", None, "false", "1"),
            ("always_off", Some("0.5"), "false", "0"),
            ("traceidratio", Some("0.25"), "false", "0.25"),
            ("traceidratio", None, "false", "1"),
            ("parentbased_always_on", None, "true", "1"),
            ("parentbased_always_off", None, "true", "0"),
            ("parentbased_traceidratio", Some("0.001"), "true", "0.001"),
            ("parentbased_traceidratio", Some("2"), "true", "1"),
        ];
        for (sampler, arg, parent_based, ratio) in cases {
            let mut list = vec![("OTEL_TRACES_SAMPLER", sampler)];
            list.extend(arg.map(|a| ("OTEL_TRACES_SAMPLER_ARG", a)));
            let t = translate(&vars(&list));
            let got = overrides(&t);
            assert_eq!(got[0].0, "traces.parent_based");
            assert_eq!(got[0].1, parent_based, "{sampler}");
            assert_eq!(got[1].0, "traces.sample_ratio");
            assert_eq!(got[1].1, ratio, "{sampler} {arg:?}");
            assert_eq!(
                t.notes.len(),
                usize::from(arg == Some("2")),
                "{:?}",
                t.notes
            );
        }
        let t = translate(&vars(&[("OTEL_TRACES_SAMPLER", "jaeger_remote")]));
        assert!(t.overrides.is_empty());
        assert!(t.notes[0].starts_with("OTEL_TRACES_SAMPLER=jaeger_remote ignored"));
    }

    #[test]
    fn resource_attributes_are_decoded_and_the_service_name_is_its_own_key() {
        let t = translate(&vars(&[(
            "OTEL_RESOURCE_ATTRIBUTES",
            "k8s.pod.name=pixguard-0, service.name=from-attrs ,team=fraud%20%26%20risk",
        )]));
        assert_eq!(
            overrides(&t),
            [
                (
                    "traces.service_name",
                    "from-attrs",
                    "environment OTEL_RESOURCE_ATTRIBUTES"
                ),
                (
                    "traces.resource_attributes",
                    r#"{"k8s.pod.name":"pixguard-0","team":"fraud & risk"}"#,
                    "environment OTEL_RESOURCE_ATTRIBUTES"
                ),
            ]
        );
        let t = translate(&vars(&[
            ("OTEL_RESOURCE_ATTRIBUTES", "service.name=a"),
            ("OTEL_SERVICE_NAME", "b"),
        ]));
        assert_eq!(
            overrides(&t),
            [("traces.service_name", "b", "environment OTEL_SERVICE_NAME")]
        );
        // One bad entry discards the variable, with a note.
        let t = translate(&vars(&[("OTEL_RESOURCE_ATTRIBUTES", "a=1,b")]));
        assert!(t.overrides.is_empty());
        assert_eq!(
            t.notes,
            ["OTEL_RESOURCE_ATTRIBUTES ignored: entry 2 has no '='"]
        );
    }

    #[test]
    fn unsupported_values_are_noted_not_applied() {
        let t = translate(&vars(&[
            ("OTEL_TRACES_EXPORTER", "otlp,console"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd"),
            ("OTEL_PROPAGATORS", "tracecontext,baggage,b3"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/etc/ca.pem"),
        ]));
        assert!(t.overrides.is_empty(), "{:?}", t.overrides);
        assert_eq!(t.notes.len(), 5, "{:?}", t.notes);
        for (note, what) in t.notes.iter().zip([
            "OTEL_TRACES_EXPORTER: console ignored",
            "OTEL_EXPORTER_OTLP_PROTOCOL=http/json ignored",
            "OTEL_EXPORTER_OTLP_COMPRESSION=zstd ignored",
            "OTEL_PROPAGATORS: b3 ignored",
            "OTEL_EXPORTER_OTLP_CERTIFICATE ignored",
        ]) {
            assert!(note.starts_with(what), "{note}");
        }
    }

    #[test]
    fn batch_processor_and_timeout_variables_pass_their_text_on() {
        let t = translate(&vars(&[
            ("OTEL_BSP_EXPORT_TIMEOUT", "30000"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "5000"),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "lots"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "64"),
            ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip"),
        ]));
        assert_eq!(
            overrides(&t),
            [
                (
                    "traces.compression",
                    "gzip",
                    "environment OTEL_EXPORTER_OTLP_TRACES_COMPRESSION"
                ),
                (
                    "traces.export_timeout_ms",
                    "5000",
                    "environment OTEL_EXPORTER_OTLP_TIMEOUT"
                ),
                (
                    "traces.export_interval_ms",
                    "200",
                    "environment OTEL_BSP_SCHEDULE_DELAY"
                ),
                (
                    "traces.max_queue_size",
                    "lots",
                    "environment OTEL_BSP_MAX_QUEUE_SIZE"
                ),
                (
                    "traces.max_export_batch_size",
                    "64",
                    "environment OTEL_BSP_MAX_EXPORT_BATCH_SIZE"
                ),
            ]
        );
    }

    #[test]
    fn pairs_are_split_trimmed_and_percent_decoded() {
        assert_eq!(
            pairs(" authorization=Bearer%20abc%3D%3D , x-tenant = pix ,").unwrap(),
            [
                ("authorization".to_string(), "Bearer abc==".to_string()),
                ("x-tenant".to_string(), "pix".to_string()),
            ]
        );
        // The value keeps any '=' after the first.
        assert_eq!(pairs("k=a=b").unwrap(), [("k".into(), "a=b".into())]);
        assert_eq!(pairs("=v").unwrap_err(), "entry 1 has no key");
        assert_eq!(
            pairs("k=%zz").unwrap_err(),
            "entry 1 (k) is not percent-encoded UTF-8"
        );
        assert_eq!(
            pairs("k=%ff").unwrap_err(),
            "entry 1 (k) is not percent-encoded UTF-8"
        );
    }
}
