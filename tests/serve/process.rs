//! The process: README's first command serves the bundled model on the CPU, logs are Cloud
//! Logging's structured JSON, and the front end's threads run nicer than the engine's.

use super::*;

/// POSTs `body` to `/v1/score` and asserts a 200.
fn score_ok(client: &reqwest::blocking::Client, server: &Server, body: &Value) {
    let r = client
        .post(server.url("/v1/score"))
        .json(body)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// The server's `/metrics` text.
fn scrape(client: &reqwest::blocking::Client, server: &Server) -> String {
    client
        .get(server.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap()
}

#[test]
fn serve_without_arguments_serves_the_bundled_model_on_the_cpu() {
    // No flags: config.yaml and models/pix-fraud from the repository root; only the port moves,
    // through the environment, so parallel test runs do not collide on 8080.
    let server = Server::spawn(
        Command::new(env!("CARGO_BIN_EXE_pixguard"))
            .arg("serve")
            .env("PIXGUARD__SERVER__PORT", "0")
            .env("PIXGUARD__SERVER__GRPC_PORT", "0"),
    );
    let client = reqwest::blocking::Client::new();
    let ready: Value = client
        .get(server.url("/readyz"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["model"]["name"], "pix-fraud");
    let text = scrape(&client, &server);
    assert_eq!(metric(&text, "pixguard_device_info{device=\"cpu\"}"), 1.0);
    assert_eq!(
        metric(&text, "pixguard_cuda_fallback"),
        1.0,
        "auto without CUDA falls back and says so"
    );
    assert!(server.logged("serving on the CPU"));
    let tx = transactions(1, 35).remove(0);
    score_ok(&client, &server, &tx);
}

#[test]
fn json_logs_are_cloud_logging_structured() {
    let server = Server::start(&["--set", "logging.format=json"]);
    let log = server.log.lock().unwrap().clone();
    let lines: Vec<Value> = log
        .iter()
        .map(|l| serde_json::from_str(l).expect("every log line is JSON"))
        .collect();
    let listening = lines
        .iter()
        .find(|l| l["message"] == "listening")
        .expect("a listening line");
    assert_eq!(listening["severity"], "INFO");
    assert_eq!(listening["device"], "cpu");
    assert!(listening["time"].as_str().unwrap().ends_with('Z'));
    assert!(
        lines.iter().any(|l| l["severity"] == "WARNING"),
        "the CPU fallback is a WARNING"
    );
}

#[cfg(target_os = "linux")]
#[test]
fn the_front_end_threads_run_nicer_than_the_engines() {
    // Two HTTP threads (a multi-thread runtime, its row pool) and two workers (their own
    // threads beside the batcher); the version's engine is built on a blocking thread of the
    // niced runtime, so without the spawner its threads would inherit the front end's value.
    let server = Server::start(&[
        "--set",
        "server.http_threads=2",
        "--set",
        "server.front_end_nice=4",
        "--set",
        "engine.workers=2",
    ]);
    let client = reqwest::blocking::Client::new();
    let txs = transactions(300, 36);
    score_ok(&client, &server, &json!({ "transactions": txs }));
    let threads = server.thread_nice_values();
    for (prefix, count) in [
        ("pixguard-http", 2),
        ("pixguard-rows", 2),
        ("pixguard-batche", 1),
        ("pixguard-worker", 2),
    ] {
        let n = threads
            .iter()
            .filter(|(n, _)| n.starts_with(prefix))
            .count();
        assert!(n >= count, "{count} {prefix} threads: {threads:?}");
    }
    server.assert_front_end_nicer_by(4);
}

#[test]
fn the_log_filter_changes_without_a_restart() {
    const TOKEN: &str = "serve-test-admin-token";
    let server = Server::spawn(
        Server::command(&["--set", "server.grpc_preface_timeout_ms=100"])
            .env("PIXGUARD_ADMIN_TOKEN", TOKEN),
    );
    let client = reqwest::blocking::Client::new();
    let call = |method: reqwest::Method, body: Option<Value>, token: Option<&str>| {
        let mut r = client.request(method, server.url("/admin/logging"));
        if let Some(token) = token {
            r = r.bearer_auth(token);
        }
        if let Some(body) = body {
            r = r.json(&body);
        }
        let answer = r.send().unwrap();
        let status = answer.status().as_u16();
        (status, answer.json::<Value>().unwrap())
    };
    let get = || call(reqwest::Method::GET, None, Some(TOKEN));
    let set = |filter: Value| {
        call(
            reqwest::Method::POST,
            Some(json!({ "filter": filter })),
            Some(TOKEN),
        )
    };
    // A connection that never sends the HTTP/2 preface is closed after 100 ms, which the gRPC port
    // logs at debug.
    let silent_grpc_connection = || {
        let mut tcp = std::net::TcpStream::connect(server.grpc_address()).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut sink = [0u8; 64];
        while std::io::Read::read(&mut tcp, &mut sink).unwrap_or(0) > 0 {}
    };
    let closed_line = "grpc connection closed";
    let logged_soon = |text: &str| {
        (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            server.logged(text)
        })
    };

    assert_eq!(get(), (200, json!({"filter": "info"})));
    silent_grpc_connection();
    assert!(!logged_soon(closed_line), "debug is off at info");

    let (status, body) = set(json!("info,pixguard::server::grpc=debug"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["was"], "info");
    assert_eq!(get().1["filter"], body["filter"]);
    assert!(
        body["filter"]
            .as_str()
            .unwrap()
            .contains("pixguard::server::grpc=debug"),
        "{body}"
    );
    assert!(server.logged("the log filter is being changed through the admin API"));
    silent_grpc_connection();
    assert!(logged_soon(closed_line), "the new filter applies at once");

    // Not a filter: 400 naming it, and the filter in force stays.
    for (bad, says) in [
        (json!("pixguard=loud"), "filter: "),
        (json!(""), "filter: empty"),
        (json!(3), "filter: expected text"),
    ] {
        let (status, body) = set(bad.clone());
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["code"], "malformed_request");
        assert!(
            body["error"].as_str().unwrap().starts_with(says),
            "{bad}: {body}"
        );
    }
    assert!(
        get().1["filter"]
            .as_str()
            .unwrap()
            .contains("pixguard::server::grpc=debug")
    );
    // Without the token: 401, nothing read or changed.
    for method in [reqwest::Method::GET, reqwest::Method::POST] {
        let (status, _) = call(method, Some(json!({"filter": "off"})), None);
        assert_eq!(status, 401);
    }
    assert_eq!(set(json!("info")).0, 200);
}

/// `/metrics` has the `process_*` figures Prometheus' client libraries export, each matching what
/// the kernel says of the server from outside (`/proc/PID/status`, `/fd`, `/limits`).
#[cfg(target_os = "linux")]
#[test]
fn process_metrics_match_what_proc_says_from_outside() {
    let since_epoch = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    let before = since_epoch();
    let server = Server::start(&[]);
    let started = since_epoch();
    let client = reqwest::blocking::Client::new();
    for tx in transactions(50, 36) {
        score_ok(&client, &server, &tx);
    }
    let text = scrape(&client, &server);
    let outside = |file: &str| {
        std::fs::read_to_string(format!("/proc/{}/{file}", server.child.id())).unwrap()
    };
    let status = outside("status");
    let field = |name: &str| -> f64 {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    let fds = std::fs::read_dir(format!("/proc/{}/fd", server.child.id()))
        .unwrap()
        .count() as f64;
    let max_fds: f64 = outside("limits")
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        .unwrap();

    let rss = metric(&text, "process_resident_memory_bytes");
    let rss_outside = field("VmRSS:") * 1024.0;
    assert!(
        (rss - rss_outside).abs() <= 0.25 * rss_outside,
        "resident {rss} against VmRSS {rss_outside}"
    );
    // Both are read a moment apart, so the allocator may have mapped or returned memory between.
    let virtual_bytes = metric(&text, "process_virtual_memory_bytes");
    let virtual_outside = field("VmSize:") * 1024.0;
    assert!(
        (virtual_bytes - virtual_outside).abs() <= 0.1 * virtual_outside,
        "virtual {virtual_bytes} against VmSize {virtual_outside}"
    );
    let threads = metric(&text, "process_threads");
    assert!(
        (threads - field("Threads:")).abs() <= 2.0,
        "{threads} threads"
    );
    // Ours counts the listing's own descriptor and the scrape's connection.
    let open = metric(&text, "process_open_fds");
    assert!((open - fds).abs() <= 3.0, "{open} open against {fds}");
    assert_eq!(metric(&text, "process_max_fds"), max_fds);
    // btime is whole seconds.
    let start = metric(&text, "process_start_time_seconds");
    assert!(
        start >= before - 1.0 && start <= started + 1.0,
        "started at {start}, spawned between {before} and {started}"
    );
    let cpu = metric(&text, "process_cpu_seconds_total");
    let cores = std::thread::available_parallelism().unwrap().get() as f64;
    assert!(
        cpu > 0.0 && cpu <= (since_epoch() - before) * cores,
        "{cpu} CPU seconds"
    );
    assert_eq!(
        metric(
            &text,
            &format!(
                "pixguard_build_info{{version=\"{}\",commit=\"{}\",cuda=\"false\"}}",
                env!("CARGO_PKG_VERSION"),
                // The test and the server are built in one cargo call, from one environment.
                option_env!("PIXGUARD_COMMIT").unwrap_or("unknown")
            )
        ),
        1.0
    );
}

/// Out of file descriptors, a port cannot accept: it counts it, waits and tries again, and a
/// client that connected meanwhile is answered once descriptors are free, as are new ones.
#[cfg(target_os = "linux")]
#[test]
fn out_of_descriptors_the_server_waits_then_answers() {
    use std::os::unix::process::CommandExt;

    const LIMIT: u64 = 64;
    let mut command = Server::command(&[]);
    // SAFETY: setrlimit is async-signal-safe, and nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: LIMIT,
                rlim_max: LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let server = Server::spawn(&mut command);
    let client = reqwest::blocking::Client::new();
    let text = scrape(&client, &server);
    assert_eq!(metric(&text, "process_max_fds"), LIMIT as f64);
    let address = server
        .url("")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();

    // More connections than descriptors: the kernel completes them all (the listen backlog);
    // the server takes what it can hold.
    let held: Vec<std::net::TcpStream> = (0..LIMIT + 16)
        .map(|_| std::net::TcpStream::connect(&address).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    assert!(server.logged("accept failed"), "the server said nothing");
    // A request that arrives now waits in the backlog.
    let waiting = std::thread::spawn({
        let url = server.url("/readyz");
        move || {
            reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap()
                .get(url)
                .send()
                .map(|r| r.status().as_u16())
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    drop(held);
    assert_eq!(waiting.join().unwrap().unwrap(), 200, "the waiting request");
    let text = scrape(&client, &server);
    assert!(
        metric(&text, "pixguard_accept_failures_total{port=\"http\"}") >= 1.0,
        "counted"
    );
    assert_eq!(
        metric(&text, "pixguard_accept_failures_total{port=\"grpc\"}"),
        0.0
    );
    score_ok(&client, &server, &transactions(1, 37).remove(0));
}
