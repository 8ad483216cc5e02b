//! Random bytes and random mutations of valid transactions thrown at the real server: every answer
//! is a 200 or a JSON 4xx, and the server neither panics nor stops.

#[path = "common/child.rs"]
mod child;
#[path = "common/mod.rs"]
mod fixture;
#[path = "common/server.rs"]
mod server;

use proptest::prelude::*;
use serde_json::Value;
use server::Server;

fn post(url: &str, body: Vec<u8>) -> (u16, Value) {
    let r = reqwest::blocking::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .expect("the server answers");
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

fn check(status: u16, body: &Value) -> Result<(), TestCaseError> {
    prop_assert!(
        [200, 400, 413, 422].contains(&status),
        "status {status}: {body}"
    );
    if status != 200 {
        prop_assert!(
            body["code"].is_string() && body["error"].is_string(),
            "error body {body}"
        );
    }
    Ok(())
}

fn mutated(picks: Vec<(prop::sample::Index, i64, u8)>, batch: bool) -> Vec<u8> {
    let mut doc = fixture::valid();
    let mut paths = Vec::new();
    fixture::leaves(&doc, String::new(), &mut paths);
    for (index, number, kind) in picks {
        let path = index.get(&paths).clone();
        match kind {
            0 => fixture::remove(&mut doc, &path),
            1 => fixture::set(&mut doc, &path, Value::from(number)),
            2 => fixture::set(&mut doc, &path, Value::from(number.to_string())),
            3 => fixture::set(&mut doc, &path, Value::Null),
            _ => fixture::set(&mut doc, &path, serde_json::json!({"nested": [number]})),
        }
    }
    let body = if batch {
        serde_json::json!({"transactions": [doc]})
    } else {
        doc
    };
    body.to_string().into_bytes()
}

#[test]
fn random_bytes_and_mutations_never_break_the_server() {
    // One server for every case; it is killed when this test ends.
    let mut server = Server::start(&["--set", "server.body_limit_bytes=4096"]);
    let url = server.url("/v1/score");
    let config = ProptestConfig {
        cases: 150,
        ..ProptestConfig::default()
    };

    let mut runner = proptest::test_runner::TestRunner::new(config.clone());
    runner
        .run(&proptest::collection::vec(any::<u8>(), 0..6000), |bytes| {
            let (status, body) = post(&url, bytes);
            check(status, &body)?;
            prop_assert_ne!(status, 200);
            Ok(())
        })
        .unwrap();

    let mut runner = proptest::test_runner::TestRunner::new(config);
    let strategy = (
        proptest::collection::vec((any::<prop::sample::Index>(), any::<i64>(), 0u8..5), 1..4),
        any::<bool>(),
    );
    runner
        .run(&strategy, |(picks, batch)| {
            let (status, body) = post(&url, mutated(picks, batch));
            check(status, &body)
        })
        .unwrap();

    let (status, _) = post(&url, fixture::valid().to_string().into_bytes());
    assert_eq!(status, 200, "the server still scores after the fuzzing");
    assert!(server.child.try_wait().unwrap().is_none(), "server exited");
    assert!(!server.logged("panicked"));
}
