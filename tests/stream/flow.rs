//! The stream under strain: a slow engine (stall, then paused partitions), a second consumer
//! joining and leaving the group, and the broker going away.

use super::*;

#[test]
fn a_slow_engine_stalls_then_pauses_the_partitions_and_loses_nothing() {
    let Some(fx) = Fixture::new("stream-slow") else {
        return;
    };
    let topics = ("slow.in", "slow.out", "slow.dlq");
    fx.topics(&[topics.0, topics.1, topics.2]);
    let (synth, expected) = traffic(&fx.tmp, 3_000, 24);
    fx.produce(&synth, topics.0);
    // Every batch takes 1.5 s and one chunk fills the in-flight bound: each stall outlasts the
    // second after which the stream pauses its partitions (and keeps polling).
    let slow = [
        ("stream.max_in_flight", "500"),
        ("stream.max_batch", "500"),
        ("engine.test_worker_delay_us", "1500000"),
    ];
    let server = fx.stream_with("slow", topics, &slow);
    wait_idle(&server, expected.len() as f64, Duration::from_secs(240));
    let pauses = metric(&server, "pixguard_stream_pauses_total");
    eprintln!("pauses {pauses}");
    assert!(pauses >= 1.0, "a stall past a second pauses the partitions");
    assert_eq!(
        metric(&server, "pixguard_stream_paused_partitions"),
        0.0,
        "resumed once drained"
    );
    let scores = fx.dump(topics.1, expected.len());
    let mut ids = std::collections::HashSet::new();
    for r in &scores {
        ids.insert(r["key"].as_str().unwrap().to_string());
    }
    assert_eq!(ids.len(), expected.len(), "every message scored");
    assert_eq!(scores.len(), expected.len(), "and once: nothing was killed");
    drop(server);
    let _ = std::fs::remove_dir_all(&fx.tmp);
}

#[test]
fn two_members_share_the_partitions_and_one_leaving_hands_over_without_loss() {
    let Some(fx) = Fixture::new("stream-group") else {
        return;
    };
    let topics = ("group.in", "group.out", "group.dlq");
    fx.topics(&[topics.0, topics.1, topics.2]);
    let (synth, expected) = traffic(&fx.tmp, 30_000, 23);
    // Traffic arrives over ~10 s while the two members run.
    let mut producer = child::spawn(
        Command::new(PIXGUARD)
            .args([
                "produce",
                "--brokers",
                &fx.broker.address,
                "--topic",
                topics.0,
                "--rate",
                "3000",
            ])
            .arg(&synth)
            .stderr(Stdio::null()),
    )
    .expect("pixguard produce");
    let mut a = fx.stream("group", topics);
    let b = fx.stream("group", topics);
    let until = Instant::now() + Duration::from_secs(120);
    while metric(&a, "pixguard_stream_consumed_total") <= 0.0
        || metric(&b, "pixguard_stream_consumed_total") <= 0.0
    {
        assert!(Instant::now() < until, "both members should get partitions");
        std::thread::sleep(Duration::from_millis(100));
    }
    let a_consumed = metric(&a, "pixguard_stream_consumed_total");
    // A leaves mid-stream; B takes its partitions from where A committed.
    a.terminate();
    assert!(a.wait(Duration::from_secs(60)).success());
    assert!(producer.wait().unwrap().success());
    wait_idle(&b, 1.0, Duration::from_secs(300));
    let scores = fx.dump(topics.1, usize::MAX >> 1);
    let ids: std::collections::HashSet<String> = scores
        .iter()
        .map(|r| r["key"].as_str().unwrap().to_string())
        .collect();
    let b_consumed = metric(&b, "pixguard_stream_consumed_total");
    eprintln!(
        "A consumed {a_consumed} before leaving, B {b_consumed}; {} scores for {} ids",
        scores.len(),
        ids.len()
    );
    assert_eq!(ids.len(), expected.len(), "nothing lost in the hand-over");
    // A member that leaves finishes and commits its work, and drops what it had prefetched of
    // partitions already handed over: nothing is scored twice either.
    assert_eq!(
        scores.len(),
        expected.len(),
        "duplicates in a graceful hand-over"
    );
    assert!(
        a_consumed > 0.0 && a_consumed < expected.len() as f64,
        "A had a share, not all"
    );
    drop(b);
    let _ = std::fs::remove_dir_all(&fx.tmp);
}

#[test]
fn a_revocation_sends_the_scores_a_long_linger_holds_and_the_next_owner_scores_nothing_again() {
    let Some(fx) = Fixture::new("stream-rejoin") else {
        return;
    };
    let topics = ("rejoin.in", "rejoin.out", "rejoin.dlq");
    fx.topics(&[topics.0, topics.1, topics.2]);
    let (synth, expected) = traffic(&fx.tmp, 300, 24);
    fx.produce(&synth, topics.0);
    // librdkafka holds every score for a minute, three times as long as a revocation may wait for
    // them: only a flush while it waits gets them acknowledged and committed before the hand-over.
    let lingering = [
        ("stream.librdkafka.linger_ms", "60000"),
        ("stream.revoke_timeout_ms", "20000"),
    ];
    let mut a = fx.stream_with("rejoin", topics, &lingering);
    let until = Instant::now() + Duration::from_secs(120);
    while metric(&a, "pixguard_stream_consumed_total") < expected.len() as f64 {
        assert!(Instant::now() < until, "A should consume every message");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(metric(&a, "pixguard_stream_produced_total"), 0.0);
    // B joins: the group rebalances and A gives its partitions up (librdkafka's default
    // assignors are eager: all of them, before some come back).
    let mut b = fx.stream_with("rejoin", topics, &lingering);
    let until = Instant::now() + Duration::from_secs(60);
    while !a.logged("partitions revoked") {
        assert!(Instant::now() < until, "A never gave its partitions up");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !a.logged("work unfinished"),
        "A revoked with work unfinished"
    );
    assert_eq!(
        metric(&a, "pixguard_stream_produced_total"),
        expected.len() as f64,
        "every score acknowledged before the partitions went"
    );
    let until = Instant::now() + Duration::from_secs(60);
    while !b.logged("partitions assigned") {
        assert!(Instant::now() < until, "B was never assigned");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        metric(&b, "pixguard_stream_consumed_total"),
        0.0,
        "B starts where A committed"
    );
    for member in [&a, &b] {
        member.terminate();
    }
    assert!(a.wait(Duration::from_secs(60)).success());
    assert!(b.wait(Duration::from_secs(60)).success());
    let scores = fx.dump(topics.1, expected.len());
    let ids: std::collections::HashSet<&str> =
        scores.iter().filter_map(|r| r["key"].as_str()).collect();
    assert_eq!(ids.len(), expected.len(), "every transaction scored");
    assert_eq!(scores.len(), expected.len(), "none scored twice");
    let _ = std::fs::remove_dir_all(&fx.tmp);
}

#[test]
fn a_broker_outage_fails_readiness_and_keeps_the_process_alive() {
    let Some(mut fx) = Fixture::new("stream-outage") else {
        return;
    };
    let topics = ("out.in", "out.out", "out.dlq");
    fx.topics(&[topics.0, topics.1, topics.2]);
    let stream = fx.stream("outage", topics);
    let status =
        |path: &str| reqwest::blocking::get(stream.url(path)).map_or(0, |r| r.status().as_u16());
    let until = Instant::now() + Duration::from_secs(60);
    while status("/readyz") != 200 {
        assert!(Instant::now() < until, "never ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    fx.broker.kill();
    let until = Instant::now() + Duration::from_secs(90);
    while status("/readyz") != 503 {
        assert!(
            Instant::now() < until,
            "readiness still passes with every broker down"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        status("/healthz"),
        200,
        "an outage is not a reason to restart the process"
    );
    assert_eq!(metric(&stream, "pixguard_stream_brokers_down"), 1.0);
    let _ = std::fs::remove_dir_all(&fx.tmp);
}
