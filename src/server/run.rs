//! The server process's life: both ports bound, the model warmed, serving until SIGTERM or SIGINT,
//! then the drain (readiness off, the grace period, requests in flight finished) and the stop.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::{AppState, build, grpc, http, models, router};
use crate::config::Config;
use crate::monitoring::Role;

/// Serves until SIGTERM or SIGINT, then drains and returns.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let state = build(config).await?;
    let server = &state.config.server;
    let listener = bind(&server.address, server.port).await?;
    let local = listener.local_addr()?;
    let grpc_listener = bind(&server.address, server.grpc_port).await?;
    let grpc_local = grpc_listener.local_addr()?;
    // Logged before the HTTP "listening" line, so whoever waits for that line knows both ports.
    tracing::info!(address = %grpc_local, "grpc listening");
    models::warm_up(&state.scoring.served(), &state.config).await?;
    if let Some(canary) = state.scoring.canary() {
        models::warm_up(&canary.slot().load_full(), &state.config).await?;
    }
    if let Some(shadow) = state.scoring.shadow() {
        models::warm_up(&shadow.slot().load_full(), &state.config).await?;
    }
    state.scoring.lifecycle.mark_ready();
    let served = state.scoring.served();
    tracing::info!(
        address = %local,
        model = %format!("{}:{}", served.model().name, served.model().version),
        source = %served.origin.source,
        admin = state.admin_token.is_some(),
        device = served.engine().device().as_str(),
        workers = state.config.engine.workers,
        http_threads = tokio::runtime::Handle::current().metrics().num_workers(),
        parse_threads = crate::parallel::global().threads(),
        front_end_nice = state.config.server.front_end_nice,
        "listening"
    );
    drop(served);
    // The followers of each configured role, and the canary's guard.
    let mut tasks: Vec<_> = [Role::Champion, Role::Canary, Role::Challenger]
        .into_iter()
        .filter_map(|role| state.follower(role))
        .map(|m| tokio::spawn(m.clone().follow(state.clone())))
        .collect();
    if state.scoring.canary().is_some() {
        tasks.push(tokio::spawn(guard(state.clone())));
    }

    // The Kafka consumer, when enabled: told to stop at SIGTERM, awaited before the engine stops.
    let (stream_stop, stream_stopped) = tokio::sync::watch::channel(false);
    let stream = match state.stream.clone() {
        Some(shared) => Some(spawn_stream(state.clone(), shared, stream_stopped)?),
        None => None,
    };

    let stop = Arc::new(tokio::sync::Notify::new());
    let (drain_state, drained) = (state.clone(), stop.clone());
    let drainer = tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stream_stop.send(true);
        drain(&drain_state).await;
        drained.notify_waiters();
    });
    let grpc = tokio::spawn(grpc::serve(grpc_listener, state.clone(), stop.clone()));
    let server = http::serve(
        listener,
        router(state.clone()),
        http::Timeouts::of(&state.config.server),
        state.http_timed_out.clone(),
        stop.clone(),
    );
    // Idle keep-alive connections close at once; a connection stuck mid-request must not hold the
    // process past the drain: one more second after the drain, then stop regardless.
    let hard_stop = async {
        stop.notified().await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    tokio::select! {
        () = server => {}
        () = hard_stop => tracing::warn!("connections still open after the drain; closing them"),
    }
    drainer.abort();
    for task in tasks {
        task.abort();
    }
    if tokio::time::timeout(Duration::from_secs(1), grpc)
        .await
        .is_err()
    {
        tracing::warn!("gRPC connections still open after the drain; closing them");
    }
    if let Some(stream) = stream {
        // It finishes its work in flight and commits (bounded by server.drain_timeout_ms).
        let _ = stream.await;
    }
    let engine = state.scoring.served().engine().clone();
    tokio::task::spawn_blocking(move || engine.shutdown()).await?;
    if let Some(log) = state.scoring.decision_log().cloned() {
        // The last requests' decisions.
        tokio::task::spawn_blocking(move || log.shutdown(Duration::from_secs(5))).await?;
    }
    if let Some(tracer) = state.scoring.tracer().cloned() {
        // The last requests' spans.
        tokio::task::spawn_blocking(move || tracer.shutdown(Duration::from_secs(5))).await?;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Checks the canary against the champion every second (the monitors publish every second) until
/// the drain.
async fn guard(state: Arc<AppState>) {
    let settings = &state.config.model;
    let guard = crate::scoring::canary::Guard {
        max_stop_ratio: settings.canary_max_stop_ratio,
        min_rows: settings.canary_guard_min_rows,
        max_latency_ratio: settings.canary_max_latency_ratio,
        max_error_share: settings.canary_max_error_share,
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !state.scoring.lifecycle.draining() {
        tick.tick().await;
        if let Some(canary) = state.scoring.canary() {
            canary.check(&state.scoring.served(), guard);
        }
    }
}

async fn bind(host: &str, port: u16) -> anyhow::Result<tokio::net::TcpListener> {
    let address = format!("{host}:{port}");
    tokio::net::TcpListener::bind(&address)
        .await
        .with_context(|| format!("binding {address}"))
}

/// Runs the Kafka source on a thread and runtime of its own; the receiver answers when it is done.
///
/// On the HTTP runtime a drain's thousands of scoring tasks queued ahead of the connections: with
/// a 2,000 /s trickle of `/v1/score` beside a draining backlog, requests waited ~0.9 s (p50) to be
/// read. Apart, the kernel shares the core between the two, and the HTTP runtime stays
/// single-threaded. Multi-threaded itself because a revoked partition's drain blocks its thread
/// (`block_in_place`) while the chunks being waited for finish on the worker.
fn spawn_stream(
    state: Arc<AppState>,
    shared: Arc<crate::sources::kafka::Shared>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<tokio::sync::oneshot::Receiver<()>> {
    let (done, finished) = tokio::sync::oneshot::channel();
    // A front end like HTTP: below the engine (`server.front_end_nice`). librdkafka's own threads
    // start from the consumer's thread and inherit its value.
    let nice = state.config.server.front_end_nice;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .thread_name("pixguard-kafka")
        .on_thread_start(move || crate::threads::lower_priority(nice))
        .build()
        .context("starting the Kafka source's runtime")?;
    std::thread::Builder::new()
        .name("pixguard-kafka".into())
        .spawn(move || {
            crate::threads::lower_priority(nice);
            if let Err(e) = runtime.block_on(crate::sources::kafka::run(state, shared, stop)) {
                tracing::error!(error = %format!("{e:#}"), "the Kafka stream stopped");
            }
            let _ = done.send(());
        })
        .context("starting the Kafka source's thread")?;
    Ok(finished)
}

/// Fails readiness at once, keeps taking requests for the grace period, then refuses new ones and
/// waits (up to the drain timeout) for the ones in flight.
async fn drain(state: &AppState) {
    let server = &state.config.server;
    let scoring = &state.scoring;
    scoring.lifecycle.start_draining();
    tracing::info!(
        grace_ms = server.grace_period_ms,
        drain_timeout_ms = server.drain_timeout_ms,
        "draining"
    );
    let deadline = Instant::now() + Duration::from_millis(server.drain_timeout_ms);
    tokio::time::sleep(Duration::from_millis(server.grace_period_ms)).await;
    scoring.lifecycle.refuse_new();
    let in_flight = || scoring.metrics.in_flight.load(Ordering::Acquire);
    while in_flight() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let left = in_flight();
    if left > 0 {
        tracing::warn!(
            in_flight = left,
            "drain timeout reached with requests in flight"
        );
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
