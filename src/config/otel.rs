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
    // The signal's own URL is taken as it is. The base URL of every signal gets the traces path
    // over OTLP/HTTP; gRPC takes it as it is.
    let endpoint = match get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        Some((name, v)) => Some((name, v.to_string())),
        None => get("OTEL_EXPORTER_OTLP_ENDPOINT").map(|(name, v)| match protocol {
            Some("grpc") => (name, v.to_string()),
            _ => (name, format!("{}/v1/traces", v.trim_end_matches('/'))),
        }),
    };
    if let Some((name, url)) = endpoint {
        out.set("otlp_endpoint", &url, name);
        if protocol.is_none() {
            // The specification's default transport.
            out.set("protocol", "http/protobuf", name);
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
    out.set("parent_based", &parent_based.to_string(), name);
    let (ratio, from) = match (ratio, arg) {
        (Some(fixed), _) => (fixed, name),
        (None, Some((arg_name, v))) => match v.parse::<f64>() {
            Ok(r) if (0.0..=1.0).contains(&r) => (v, arg_name),
            _ => {
                out.notes.push(format!(
                    "{arg_name}={v} ignored: not a ratio from 0 to 1; {sampler} samples every trace"
                ));
                ("1", name)
            }
        },
        // The specification's default argument of the ratio samplers.
        (None, None) => ("1", name),
    };
    out.set("sample_ratio", ratio, from);
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
#[path = "otel_tests.rs"]
mod tests;
