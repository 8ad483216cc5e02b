//! Open-loop steps: the report files, and as many requests in flight as the offered rate needs.

use super::*;

#[test]
fn open_loop_steps_write_the_table_the_json_and_the_html() {
    let server = Server::start(&[]);
    let out = scratch("open");
    let before = answered(&server);
    let run = pixguard_ok(&[
        "bench",
        "--url",
        &server.base,
        "--rate",
        "200,400",
        "--duration",
        "2",
        "--warmup",
        "0.5",
        "--transactions",
        "300",
        // Three schedulers, each releasing a third of the rate to a third of the connections:
        // the counts below hold for their merged recorders.
        "--threads",
        "3",
        "--no-progress",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        stdout.contains("offered/s") && stdout.contains("p99.9 ms"),
        "{stdout}"
    );

    let r = report(&out);
    let steps = r["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2);
    for (step, rate) in steps.iter().zip([200.0, 400.0]) {
        check_step(step);
        assert_eq!(step["offered_rps"].as_f64(), Some(rate));
        // Poisson arrivals over 2 s: the count is within a few standard deviations of the rate.
        let achieved = step["achieved_rps"].as_f64().unwrap();
        assert!(
            (achieved - rate).abs() < 0.25 * rate,
            "offered {rate}, achieved {achieved}"
        );
        assert!(
            step["scheduler_lateness_us"]["p50"].as_u64().is_some(),
            "{step}"
        );
    }
    let ticks = r["timeline"].as_array().unwrap();
    assert!(
        ticks.iter().any(|t| t["warmup"] == true) && ticks.iter().any(|t| t["warmup"] == false)
    );
    // Every success the bench counted, warm-up included, is a 200 the server counted.
    assert_eq!(answered(&server) - before, bench_ok(&r));

    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert_eq!(html.matches("<svg").count(), 3, "three plots");
    assert!(
        html.contains("Latency percentiles against achieved throughput")
            && html.ends_with("</html>\n")
    );
}

/// An open loop keeps as many requests in flight as its rate needs, up to its connections: against
/// a server whose every batch takes 25 ms, 320/s needs ~8 at once. (A queue lock once held across
/// the call let each scheduler have one request in flight: two schedulers, ~80/s here.)
#[test]
fn open_loop_keeps_as_many_requests_in_flight_as_the_rate_needs() {
    let server = Server::start(&["--set", "engine.test_worker_delay_us=25000"]);
    let out = scratch("in-flight");
    pixguard_ok(&[
        "bench",
        "--url",
        &server.base,
        "--rate",
        "320",
        "--duration",
        "3",
        "--warmup",
        "0.5",
        "--connections",
        "32",
        "--threads",
        "2",
        "--no-progress",
        "--out",
        out.to_str().unwrap(),
    ]);
    let step = &report(&out)["steps"][0];
    check_step(step);
    let achieved = step["achieved_rps"].as_f64().unwrap();
    assert!(
        achieved > 0.75 * 320.0,
        "offered 320/s, achieved {achieved}/s: requests are not overlapping"
    );
    // The server saw them overlap: its batches gathered several requests each.
    let rows = metric_now(&server, "pixguard_batch_size_rows_sum");
    let batches = metric_now(&server, "pixguard_batch_size_rows_count");
    assert!(rows / batches > 3.0, "{rows} rows in {batches} batches");
}
