//! `/admin/*`: what model serves and from where, reload it, pin another source; the canary's
//! share of requests and the log filter, read and changed without a restart. Authenticated by a
//! bearer token read from `server.admin_token_file` or `PIXGUARD_ADMIN_TOKEN` (never from
//! config.yaml itself, never logged); without one the routes are off (404). A missing or wrong
//! token gets 401 and changes nothing.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::AppState;
use crate::config::ServerConfig;
use crate::monitoring::Role;

/// Environment variable holding the admin token (when no file is configured).
pub const TOKEN_ENV: &str = "PIXGUARD_ADMIN_TOKEN";

/// The admin bearer token, kept only as its SHA-256.
pub struct Token([u8; 32]);

impl Token {
    /// The token from `server.admin_token_file`, else `PIXGUARD_ADMIN_TOKEN`; `None`: admin off.
    pub fn from_config(server: &ServerConfig) -> anyhow::Result<Option<Token>> {
        let text =
            match &server.admin_token_file {
                Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
                    anyhow::anyhow!("server.admin_token_file {}: {e}", path.display())
                })?),
                None => std::env::var(TOKEN_ENV).ok(),
            };
        let Some(text) = text else { return Ok(None) };
        let token = text.trim();
        anyhow::ensure!(
            token.len() >= 16,
            "the admin token must be at least 16 characters (it guards model swaps)"
        );
        Ok(Some(Token(Sha256::digest(token.as_bytes()).into())))
    }

    /// Whether `presented` is the token. Both sides are hashed first and compared without an
    /// early exit, so the time taken says nothing about how much of it was right.
    fn matches(&self, presented: &str) -> bool {
        let other: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        self.0
            .iter()
            .zip(other.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

/// The admin routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/admin/model", get(describe).post(pin))
        .route("/admin/model/reload", post(reload))
        .route("/admin/canary", post(set_canary))
        .route("/admin/logging", get(logging).post(set_logging))
}

/// Why an admin request is refused.
enum Refusal {
    /// No token is configured: the admin routes are off.
    Off,
    /// No token, or the wrong one.
    Unauthorized,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Off => (
                StatusCode::NOT_FOUND,
                axum::Json(json!({"error": "the admin API is off: no admin token is configured"})),
            )
                .into_response(),
            Refusal::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                axum::Json(json!({"error": "missing or wrong admin bearer token"})),
            )
                .into_response(),
        }
    }
}

/// Refuses the request unless the admin routes are on and it carries the token.
fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), Refusal> {
    let token = state.admin_token.as_ref().ok_or(Refusal::Off)?;
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(p) if token.matches(p.trim()) => Ok(()),
        _ => Err(Refusal::Unauthorized),
    }
}

/// `GET /admin/model`.
async fn describe(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(refused) = authorize(&state, &headers) {
        return refused.into_response();
    }
    let mut body = state.models.describe(&state.scoring);
    if let (Some(canary), Some(models)) = (state.scoring.canary(), &state.canary_models) {
        let mut described = super::with_fields(models.describe(&state.scoring), canary.figures());
        // What a features-mode request built for the champion meets at the canary, when the two
        // take other precomputed features (also warned of in the log when it loaded).
        let champion = state.scoring.served();
        if let Some(change) = crate::protocol::oip::features_mode_change(
            canary.slot().load().extractor().spec(),
            champion.extractor().spec(),
        ) {
            described["features_mode_change"] = change.into();
        }
        body["canary"] = described;
    }
    if let Some(shadow) = &state.shadow_models {
        body["shadow"] = shadow.describe(&state.scoring);
    }
    axum::Json(body).into_response()
}

/// `?force=true`: try again a version that was refused before (`?forse=true` is refused, not
/// taken for an unforced check); `?role=canary|challenger`: check that version's source instead of
/// the champion's.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ReloadQuery {
    #[serde(default)]
    force: bool,
    #[serde(default)]
    role: Option<Role>,
    /// Cloud Endpoints' API key (`?key=`), which a client may send on every call and ESPv2
    /// passes through: not a typo to refuse.
    #[serde(default, rename = "key")]
    _key: Option<String>,
}

/// `POST /admin/model/reload`: check the source now (the champion's, or `role`'s); 200 swapped or
/// unchanged, 409 refused or no such role configured.
async fn reload(
    State(state): State<Arc<AppState>>,
    query: Result<Query<ReloadQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = authorize(&state, &headers) {
        return refused.into_response();
    }
    // `?force=yes` read as "not forced" would look like a forced check that found nothing.
    let (force, role) = match query {
        Ok(q) => (q.force, q.role.unwrap_or(Role::Champion)),
        Err(e) => {
            return malformed(format!(
                "query: {} (expected ?force=true, ?role=champion|canary|challenger)",
                e.body_text()
            ));
        }
    };
    let models = match follower(&state, role) {
        Ok(models) => models,
        Err(why) => return conflict(why),
    };
    let checked = models.check(&state.scoring, force).await;
    let status = if checked.outcome == "refused" {
        StatusCode::CONFLICT
    } else {
        StatusCode::OK
    };
    (status, axum::Json(checked)).into_response()
}

/// The follower of `role`, or why there is none (that role is not configured).
fn follower(state: &AppState, role: Role) -> Result<&Arc<super::models::Models>, String> {
    state.follower(role).ok_or_else(|| {
        let key = match role {
            Role::Canary => "model.canary",
            _ => "model.shadow",
        };
        format!("no {} is configured ({key})", role.as_str())
    })
}

/// 409: the request cannot apply to the server as it is configured; nothing changed.
fn conflict(error: String) -> Response {
    (StatusCode::CONFLICT, axum::Json(json!({"error": error}))).into_response()
}

/// `?role=canary|challenger` on `POST /admin/model`: pin that version's source instead of the
/// champion's.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PinQuery {
    #[serde(default)]
    role: Option<Role>,
    /// Cloud Endpoints' API key, as on reload.
    #[serde(default, rename = "key")]
    _key: Option<String>,
}

/// The one text an admin body `{"<name>": "…"}` holds, or why the body is refused.
fn text_field(body: &[u8], name: &str) -> Result<String, String> {
    match one_field(body, name, "\"…\"")? {
        serde_json::Value::String(text) => Ok(text),
        other => Err(format!(
            "{name}: expected text, got {other} (expected {{\"{name}\": \"…\"}})"
        )),
    }
}

/// The one value an admin body `{"<name>": <example>}` holds, or why the body is refused.
fn one_field(body: &[u8], name: &str, example: &str) -> Result<serde_json::Value, String> {
    let expected = format!("expected {{\"{name}\": {example}}}");
    // A list or an empty body is told what is expected, not serde's "expected a map".
    if !body.trim_ascii_start().starts_with(b"{") {
        return Err(format!("body: {expected}"));
    }
    let mut object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(body).map_err(|e| format!("body: {e} ({expected})"))?;
    if let Some(other) = object.keys().find(|k| *k != name) {
        return Err(format!("body: unknown field `{other}` ({expected})"));
    }
    object
        .remove(name)
        .ok_or_else(|| format!("body: missing field `{name}` ({expected})"))
}

/// The share an admin body `{"fraction": 0.05}` sets, or why the body is refused.
fn fraction_field(body: &[u8]) -> Result<f64, String> {
    let value = one_field(body, "fraction", "0.05")?;
    match value.as_f64() {
        Some(f) if (0.0..=1.0).contains(&f) => Ok(f),
        Some(f) => Err(format!("fraction: {f} is not between 0 and 1")),
        None => Err(format!(
            "fraction: expected a number from 0 to 1, got {value}"
        )),
    }
}

/// `POST /admin/canary` `{"fraction": 0.05}`: the share of requests the canary answers from the
/// next request on, until the next change or the restart (config.yaml is not changed; 0 stops it
/// answering at once, its version stays loaded and followed). 409 when no canary is configured.
async fn set_canary(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(refused) = authorize(&state, &headers) {
        return refused.into_response();
    }
    let fraction = match fraction_field(&body) {
        Ok(fraction) => fraction,
        Err(reason) => return malformed(reason),
    };
    let Some(canary) = state.scoring.canary() else {
        return conflict("no canary is configured (model.canary)".into());
    };
    let was = canary.fraction();
    canary.set_fraction(fraction);
    let served = canary.slot().load();
    tracing::info!(
        fraction,
        was,
        version = %served.model().version,
        "the canary's share was changed through the admin API"
    );
    axum::Json(json!({"fraction": fraction, "was": was, "model": served.model()})).into_response()
}

/// 400 with the admin API's error body.
fn malformed(reason: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"error": reason, "code": "malformed_request"})),
    )
        .into_response()
}

/// `POST /admin/model[?role=canary|challenger]` `{"source": "models:/pix-fraud/7"}`: serve and
/// follow another source in that role (the champion's by default); 409 (and nothing changes) when
/// it is refused or the role is not configured.
async fn pin(
    State(state): State<Arc<AppState>>,
    query: Result<Query<PinQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(refused) = authorize(&state, &headers) {
        return refused.into_response();
    }
    let role = match query {
        Ok(q) => q.role.unwrap_or(Role::Champion),
        Err(e) => {
            return malformed(format!(
                "query: {} (expected ?role=champion|canary|challenger)",
                e.body_text()
            ));
        }
    };
    let source = match text_field(&body, "source") {
        Ok(source) => source,
        Err(reason) => return malformed(reason),
    };
    let models = match follower(&state, role) {
        Ok(models) => models,
        Err(why) => return conflict(why),
    };
    match models.pin(&state.scoring, &source).await {
        Ok(checked) => axum::Json(checked).into_response(),
        Err(reason) => (
            StatusCode::CONFLICT,
            axum::Json(json!({"outcome": "refused", "reason": reason})),
        )
            .into_response(),
    }
}

/// `GET /admin/logging`: the log filter in force.
async fn logging(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(refused) = authorize(&state, &headers) {
        return refused.into_response();
    }
    axum::Json(json!({"filter": crate::logging::filter()})).into_response()
}

/// `POST /admin/logging` `{"filter": "info,pixguard::server=debug"}`: replaces the log filter
/// until the next one or the restart (config.yaml is not changed); 400 and nothing changes when
/// it is not one.
async fn set_logging(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(refused) = authorize(&state, &headers) {
        return refused.into_response();
    }
    let text = match text_field(&body, "filter") {
        Ok(text) => text,
        Err(reason) => return malformed(reason),
    };
    // Said under the filter being replaced, so a filter that turns logging down still leaves
    // the change on record.
    tracing::info!(filter = %text, "the log filter is being changed through the admin API");
    match crate::logging::set_filter(&text) {
        Ok(was) => {
            axum::Json(json!({"filter": crate::logging::filter(), "was": was})).into_response()
        }
        Err(crate::logging::FilterError::Invalid(reason)) => malformed(format!("filter: {reason}")),
        Err(e @ crate::logging::FilterError::NotInstalled) => conflict(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::{fraction_field, text_field};

    #[test]
    fn a_canary_share_is_a_number_from_0_to_1() {
        assert_eq!(fraction_field(br#"{"fraction": 0.05}"#), Ok(0.05));
        assert_eq!(fraction_field(br#"{"fraction": 0}"#), Ok(0.0));
        assert_eq!(fraction_field(br#"{"fraction": 1}"#), Ok(1.0));
        for (body, says) in [
            (
                &br#"{"fraction": 1.5}"#[..],
                "fraction: 1.5 is not between 0 and 1",
            ),
            (
                br#"{"fraction": -0.1}"#,
                "fraction: -0.1 is not between 0 and 1",
            ),
            (
                br#"{"fraction": "0.1"}"#,
                "fraction: expected a number from 0 to 1, got \"0.1\"",
            ),
            (
                br#"{"share": 0.1}"#,
                "body: unknown field `share` (expected {\"fraction\": 0.05})",
            ),
            (b"0.1", "body: expected {\"fraction\": 0.05}"),
        ] {
            let err = fraction_field(body).unwrap_err();
            assert!(err.contains(says), "{body:?}: {err}");
        }
    }

    #[test]
    fn an_admin_body_is_an_object_holding_one_text() {
        assert_eq!(
            text_field(br#" {"source": "models:/pix-fraud/7"}"#, "source"),
            Ok("models:/pix-fraud/7".to_string())
        );
        for (body, says) in [
            (
                &br#"["models:/pix-fraud/7"]"#[..],
                "body: expected {\"source\"",
            ),
            (b"", "body: expected {"),
            (b"{", "body: EOF while parsing an object"),
            (br#"{}"#, "body: missing field `source`"),
            (br#"{"sourse": "x"}"#, "body: unknown field `sourse`"),
            (br#"{"source": 7}"#, "source: expected text, got 7"),
        ] {
            let err = text_field(body, "source").unwrap_err();
            assert!(err.contains(says), "{body:?}: {err}");
        }
    }
}
