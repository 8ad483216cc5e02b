//! What reaches the output topics: every transaction at least once through three SIGKILLs (some
//! in Schema Registry framing), every bad message dead-lettered with its reason, and nothing
//! scored twice after a graceful SIGTERM.

use super::*;

#[test]
fn at_least_once_through_three_sigkills_with_every_bad_message_dead_lettered() {
    let Some(fx) = Fixture::new("stream-kill") else {
        return;
    };
    let topics = ("kill.in", "kill.out", "kill.dlq");
    fx.topics(&[topics.0, topics.1, topics.2]);
    let (synth, expected) = traffic(&fx.tmp, 100_000, 21);
    // 500 malformed messages of five kinds, spread through the valid ones.
    let valid = std::fs::read(&synth).unwrap();
    let mut input = Vec::new();
    let mut bad = HashMap::<&str, usize>::new();
    for (i, line) in valid
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        // One valid message in a thousand in Confluent Schema Registry's wire format (magic byte
        // 0, schema id 300), as a JSON Schema serializer writes it: scored like the rest.
        if i % 1000 == 500 {
            let row: Value = serde_json::from_slice(line).unwrap();
            input.extend_from_slice(&[0, 0, 0, 1, 44]);
            input.extend_from_slice(&serde_json::to_vec(&row["transaction"]).unwrap());
        } else {
            input.extend_from_slice(line);
        }
        input.push(b'\n');
        if i % 200 == 199 {
            let k = i / 200;
            let (kind, bytes): (&str, Vec<u8>) = match k % 5 {
                0 => ("invalid_json", format!("not json {k}").into_bytes()),
                1 => (
                    "not_utf8",
                    [&[0xff_u8, 0xfe][..], format!("{k}").as_bytes()].concat(),
                ),
                2 => ("empty", Vec::new()),
                3 => {
                    let mut v: Value = serde_json::from_slice(line).unwrap();
                    let tx = v.get_mut("transaction").unwrap_or(&mut Value::Null).clone();
                    let mut tx = if tx.is_null() { v.clone() } else { tx };
                    tx["amount_cents"] = (-5).into();
                    tx["end_to_end_id"] = format!("E60701190202610010000BAD{k:07}").into();
                    ("invalid_field", serde_json::to_vec(&tx).unwrap())
                }
                _ => (
                    "too_large",
                    format!("{{\"pad\": \"{}\"}}", "x".repeat(BODY_LIMIT + 10)).into_bytes(),
                ),
            };
            *bad.entry(kind).or_default() += 1;
            input.extend_from_slice(&bytes);
            input.push(b'\n');
        }
    }
    assert_eq!(bad.values().sum::<usize>(), 500);
    let file = fx.tmp.join("input.jsonl");
    std::fs::write(&file, &input).unwrap();
    fx.produce(&file, topics.0);

    // Three SIGKILLs at moments drawn from the process id, each followed by a restart. The
    // killed members are paced (64-row batches, each held 16 ms: ~4,000 rows/s) so that every
    // kill lands mid-stream: unpaced, a release build scored all 100,500 before the first kill.
    let paced = [
        ("engine.max_batch_size", "64"),
        ("engine.test_worker_delay_us", "16000"),
    ];
    let mut seed = u64::from(std::process::id());
    for kill in 0..3 {
        let stream = fx.stream_with("kill", topics, &paced);
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let wait = Duration::from_millis(4000 + (seed >> 33) % 4000);
        std::thread::sleep(wait);
        let consumed = metric(&stream, "pixguard_stream_consumed_total");
        let in_flight = metric(&stream, "pixguard_stream_in_flight_messages");
        eprintln!(
            "kill {} after {wait:?}: consumed {consumed}, in flight {in_flight}",
            kill + 1
        );
        drop(stream); // SIGKILL
    }
    let mut last = fx.stream("kill", topics);
    wait_idle(&last, 1.0, Duration::from_secs(600));
    // Idle means it has caught up with what it was assigned; give it a moment for stragglers.
    let mut quiet = 0;
    let mut seen = metric(&last, "pixguard_stream_consumed_total");
    while quiet < 5 {
        std::thread::sleep(Duration::from_secs(1));
        let now = metric(&last, "pixguard_stream_consumed_total");
        quiet = if now == seen && metric(&last, "pixguard_stream_in_flight_messages") == 0.0 {
            quiet + 1
        } else {
            0
        };
        seen = now;
    }
    last.terminate();
    assert!(last.wait(Duration::from_secs(60)).success());

    let scores = fx.dump(topics.1, usize::MAX >> 1);
    let mut got: HashMap<String, Vec<f64>> = HashMap::new();
    for r in &scores {
        let v: Value = serde_json::from_str(r["value"].as_str().unwrap()).unwrap();
        assert_eq!(r["key"], v["end_to_end_id"]);
        got.entry(v["end_to_end_id"].as_str().unwrap().to_string())
            .or_default()
            .push(v["score"].as_f64().unwrap());
    }
    let mut missing = 0;
    let mut worst = 0.0f64;
    for (id, want) in &expected {
        match got.get(id) {
            None => missing += 1,
            Some(all) => {
                for s in all {
                    worst = worst.max((s - want).abs());
                }
            }
        }
    }
    let duplicates = scores.len() - got.len();
    let dead = fx.dump(topics.2, usize::MAX >> 1);
    let mut by_class = HashMap::<String, std::collections::HashSet<String>>::new();
    for r in &dead {
        let h = &r["headers"];
        let class = h["__connect.errors.exception.class.name"]
            .as_str()
            .unwrap_or("")
            .to_string();
        assert!(
            !h["__connect.errors.exception.message"]
                .as_str()
                .unwrap_or("")
                .is_empty()
        );
        assert_eq!(h["__connect.errors.topic"], topics.0);
        let at = format!(
            "{}/{}",
            h["__connect.errors.partition"], h["__connect.errors.offset"]
        );
        by_class.entry(class).or_default().insert(at);
    }
    let unique_dead: usize = by_class.values().map(|s| s.len()).sum();
    eprintln!(
        "scores {} for {} ids ({duplicates} duplicates), missing {missing}, max |score - pixguard score| {worst:e}; dead letters {} for {unique_dead} messages",
        scores.len(),
        got.len(),
        dead.len()
    );
    assert_eq!(
        unique_dead, 500,
        "every malformed message, and nothing else, dead-lettered"
    );
    assert_eq!(missing, 0, "valid transactions without a score");
    assert_eq!(
        got.len(),
        expected.len(),
        "scores for ids that were never sent"
    );
    assert!(worst <= 1e-6, "{worst}");
    for (kind, n) in &bad {
        let found = by_class
            .get(&format!("pixguard.{kind}"))
            .map_or(0, |s| s.len());
        assert_eq!(found, *n, "{kind} on the dead-letter topic");
    }
    // At least once: a kill re-scores what was in flight or finished but not yet committed.
    assert!(
        duplicates <= 3 * (32_768 + 512 * 4),
        "{duplicates} duplicates"
    );
    let _ = std::fs::remove_dir_all(&fx.tmp);
}

#[test]
fn a_sigterm_sends_the_scores_a_long_linger_holds_and_commits_them() {
    let Some(fx) = Fixture::new("stream-linger") else {
        return;
    };
    let topics = ("linger.in", "linger.out", "linger.dlq");
    fx.topics(&[topics.0, topics.1, topics.2]);
    let (synth, expected) = traffic(&fx.tmp, 300, 23);
    fx.produce(&synth, topics.0);
    // librdkafka holds every score for a minute, three times as long as the drain may last: only a
    // flush during the drain gets them to the broker, and their messages committed, before it ends.
    let mut member = fx.stream_with(
        "linger",
        topics,
        &[
            ("stream.librdkafka.linger_ms", "60000"),
            ("server.drain_timeout_ms", "20000"),
        ],
    );
    let until = Instant::now() + Duration::from_secs(120);
    while metric(&member, "pixguard_stream_consumed_total") < expected.len() as f64 {
        assert!(Instant::now() < until, "not all consumed");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        metric(&member, "pixguard_stream_produced_total"),
        0.0,
        "the linger holds every score until the SIGTERM"
    );
    member.terminate();
    assert!(
        member.wait(Duration::from_secs(60)).success(),
        "exit 0 after SIGTERM"
    );
    for problem in ["work unfinished", "offset commit failed"] {
        assert!(!member.logged(problem), "the drain logged {problem:?}");
    }
    let scores = fx.dump(topics.1, expected.len());
    assert_eq!(scores.len(), expected.len());
    let got: HashMap<String, f64> = scores
        .iter()
        .map(|r| {
            let v: Value = serde_json::from_str(r["value"].as_str().unwrap()).unwrap();
            (
                v["end_to_end_id"].as_str().unwrap().to_string(),
                v["score"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got.len(), expected.len(), "one score per transaction");
    for (id, want) in &expected {
        let score = got.get(id).unwrap_or_else(|| panic!("{id} has no score"));
        assert!((score - want).abs() <= 1e-6, "{id}: {score} against {want}");
    }
    // Committed: a member of the same group finds nothing left to score.
    let next = fx.stream("linger", topics);
    let until = Instant::now() + Duration::from_secs(60);
    while !next.logged("partitions assigned") {
        assert!(Instant::now() < until, "the next member was never assigned");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(metric(&next, "pixguard_stream_consumed_total"), 0.0);
    drop(next);
    let _ = std::fs::remove_dir_all(&fx.tmp);
}

#[test]
fn a_graceful_sigterm_leaves_nothing_to_score_twice() {
    let Some(fx) = Fixture::new("stream-term") else {
        return;
    };
    let topics = ("term.in", "term.out", "term.dlq");
    fx.topics(&[topics.0, topics.1, topics.2]);
    let (synth, expected) = traffic(&fx.tmp, 20_000, 22);
    fx.produce(&synth, topics.0);
    // The first member is paced (64-row batches, each held 5 ms: ~12,800 rows/s), so the SIGTERM
    // lands mid-stream. Unpaced it takes all 20,000 at once and finishes them before stopping;
    // a release build did so even with small batches and a low in-flight bound alone.
    let paced = [
        ("stream.max_in_flight", "512"),
        ("stream.max_batch", "64"),
        ("engine.max_batch_size", "64"),
        ("engine.test_worker_delay_us", "5000"),
    ];
    let mut first = fx.stream_with("term", topics, &paced);
    // Stop it mid-stream.
    let until = Instant::now() + Duration::from_secs(120);
    while metric(&first, "pixguard_stream_produced_total") < 2_000.0 {
        assert!(Instant::now() < until, "no progress");
        std::thread::sleep(Duration::from_millis(100));
    }
    first.terminate();
    assert!(
        first.wait(Duration::from_secs(60)).success(),
        "exit 0 after SIGTERM"
    );
    let second = fx.stream("term", topics);
    // One scrape, taken once the member is done: the counters are compared at one moment.
    let text = wait_idle(&second, 1.0, Duration::from_secs(300));
    let value = |name: &str| server::metric_or_zero(&text, name);
    // Every message carries its producer's timestamp: each received one has its age at receipt
    // recorded, each acknowledged score its end-to-end time.
    assert_eq!(
        value("pixguard_stream_fetch_age_seconds_count"),
        value("pixguard_stream_consumed_total")
    );
    assert_eq!(
        value("pixguard_stream_end_to_end_seconds_count"),
        value("pixguard_stream_produced_total")
    );
    // Every score handed to the producer was acknowledged (nothing is in flight any more).
    assert_eq!(
        value("pixguard_stream_scored_age_seconds_count"),
        value("pixguard_stream_produced_total")
    );
    // Each try at a chunk is a request of the version it took, as an API request is (its Triton
    // statistics): the tries that scored are its engine's answers, the others the retries.
    let version = |name: &str, outcome: &str| {
        let labels = r#"model="pix-fraud",version="20261127.0446",role="champion""#;
        value(&format!("pixguard_version_{name}{{{labels}{outcome}}}"))
    };
    let scored = version("requests_total", r#",outcome="ok""#);
    assert!(scored > 0.0, "{text}");
    assert_eq!(scored, version("engine_requests_total", ""));
    assert_eq!(
        version("requests_total", r#",outcome="failed""#),
        value("pixguard_stream_retries_total")
    );
    let scores = fx.dump(topics.1, expected.len());
    let mut ids = std::collections::HashSet::new();
    for r in &scores {
        ids.insert(r["key"].as_str().unwrap().to_string());
    }
    eprintln!("{} scores, {} ids", scores.len(), ids.len());
    assert_eq!(ids.len(), expected.len());
    assert_eq!(
        scores.len(),
        expected.len(),
        "a graceful stop must not cause duplicates"
    );
    drop(second);
    let _ = std::fs::remove_dir_all(&fx.tmp);
}
