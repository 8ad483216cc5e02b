//! Steps 7–8: starting with the registry unreachable (exit 69, or the cached version), and the
//! admin routes off without a token.

use super::*;

/// An unreachable registry at start, then a server with no admin token.
pub fn without_the_registry_or_the_admin_token(env: &Env, v_prod: &str, txs: &[Value]) {
    let tmp = &env.tmp;

    // 7. An unreachable registry at start: a clear error and exit code 69 …
    env.set_alias("production", v_prod);
    let dead = format!("http://127.0.0.1:{}", registry::free_port());
    let cache_dir = format!("model.cache_dir={}", tmp.join("cache").display());
    let out = env
        .command(&[
            "serve",
            "--port",
            "0",
            "--grpc-port",
            "0",
            "--model",
            "models:/pix-fraud@production",
            "--set",
            &cache_dir,
        ])
        .env("MLFLOW_TRACKING_URI", &dead)
        .output()
        .expect("serve");
    assert_eq!(
        out.status.code(),
        Some(69),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("unreachable"));
    //    … or, when configured to, the last good version of that source from the cache.
    let mut command = env.command(&[
        "serve",
        "--address",
        "127.0.0.1",
        "--port",
        "0",
        "--grpc-port",
        "0",
        "--model",
        "models:/pix-fraud@production",
        "--set",
        &cache_dir,
        "--set",
        "model.use_cached_on_error=true",
        "--set",
        "model.poll_interval_s=0",
    ]);
    command
        .env("MLFLOW_TRACKING_URI", &dead)
        .env("PIXGUARD_ADMIN_TOKEN", TOKEN);
    let cached = Server::spawn(&mut command);
    assert_eq!(serving_version(&cached), v_prod);
    let (versions, scores) = score(&cached, txs);
    assert!(versions.iter().all(|v| *v == v_prod));
    assert_eq!(scores, folder_scores("models/pix-fraud", txs, tmp));
    drop(cached);

    // 8. No admin token configured: the admin routes are off.
    let plain = Server::start(&["--set", "model.poll_interval_s=0"]);
    let (status, _) = admin(&plain, "GET", "/admin/model", Some(TOKEN), None);
    assert_eq!(status, 404);
    drop(plain);
}
