//! The `OTEL_*` variables as `traces` overrides (`otel.rs`).

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
