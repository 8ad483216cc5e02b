//! The HTTP ceiling for `/v1/score`: a bare axum handler that parses and validates the same
//! transaction JSON and answers a response of the same shape, with no features, queue or model.
//! `benches/http.sh` runs it beside `pixguard serve` and loads both with wrk.
//!
//! `cargo bench --bench http_echo -- --port 18090`

use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use pixguard::transaction::Transaction;

// The same allocator as the pixguard binary, so the ceiling is not lowered by glibc malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

async fn echo(body: Bytes) -> Response {
    match Transaction::from_json(&body) {
        Ok(tx) => axum::Json(serde_json::json!({
            "end_to_end_id": tx.end_to_end_id.as_str(),
            "score": 0.5f32,
            "decision": "HOLD",
            "model": {"name": "pix-fraud", "version": "echo"},
        }))
        .into_response(),
        Err(e) => (StatusCode::UNPROCESSABLE_ENTITY, e.to_string()).into_response(),
    }
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let port = args
        .iter()
        .position(|a| a == "--port")
        .and_then(|i| args.get(i + 1))
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or(18090);
    let threads = args
        .iter()
        .position(|a| a == "--threads")
        .and_then(|i| args.get(i + 1))
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(2);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        eprintln!("http_echo listening on 127.0.0.1:{port}");
        axum::serve(listener, Router::new().route("/v1/score", post(echo))).await
    })
}
