//! Log output on stderr: human-readable text, or JSON lines that Google Cloud Logging parses
//! (`severity`, `message`, `time`, plus the event's fields), as GKE collects container stderr.

use std::fmt;
use std::io::IsTerminal;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

/// Cloud Logging's severity for a tracing level.
fn severity(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        Level::DEBUG | Level::TRACE => "DEBUG",
    }
}

/// Collects an event's fields into a JSON object.
struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(
            field.name().to_string(),
            Value::String(format!("{value:?}")),
        );
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().to_string(), Value::String(value.to_string()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
}

/// One JSON object per event in Cloud Logging's structured-logging shape.
pub struct CloudJson;

impl<S, N> FormatEvent<S, N> for CloudJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields(Map::new());
        event.record(&mut fields);
        let mut line = Map::new();
        line.insert("severity".into(), severity(event.metadata().level()).into());
        line.insert(
            "message".into(),
            fields
                .0
                .remove("message")
                .unwrap_or(Value::String(String::new())),
        );
        line.insert(
            "time".into(),
            chrono::Utc::now()
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                .into(),
        );
        line.insert("target".into(), event.metadata().target().into());
        line.extend(fields.0);
        writeln!(writer, "{}", Value::Object(line))
    }
}

/// The filter of the logger `init` installed, changed at run time by `/admin/logging`.
static FILTER: std::sync::OnceLock<reload::Handle<EnvFilter, Registry>> =
    std::sync::OnceLock::new();

/// Sets up logging to stderr: `filter` in tracing's EnvFilter syntax, text or Cloud Logging JSON.
pub fn init(filter: &str, json: bool) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let text = (!json).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
    });
    let json = json.then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .event_format(CloudJson)
    });
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(json)
        .try_init();
    // A subscriber already installed (a test running commands in-process) is fine: that one's
    // filter is not this process's to change.
    if installed.is_ok() {
        let _ = FILTER.set(handle);
    }
}

/// The log filter now in force (`None`: this process did not install its logger).
pub fn filter() -> Option<String> {
    FILTER.get()?.with_current(|f| f.to_string()).ok()
}

/// Replaces the log filter; the one it replaced, or why `text` is not a filter.
pub fn set_filter(text: &str) -> Result<String, FilterError> {
    if text.trim().is_empty() {
        return Err(FilterError::Invalid(
            "empty (\"off\" turns logging off)".into(),
        ));
    }
    let filter = EnvFilter::try_new(text).map_err(|e| FilterError::Invalid(e.to_string()))?;
    let handle = FILTER.get().ok_or(FilterError::NotInstalled)?;
    let was = handle
        .with_current(|f| f.to_string())
        .map_err(|_| FilterError::NotInstalled)?;
    handle
        .reload(filter)
        .map_err(|_| FilterError::NotInstalled)?;
    Ok(was)
}

/// Why `set_filter` changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// Not in tracing's EnvFilter syntax.
    #[error("{0}")]
    Invalid(String),
    /// Another logger was installed first (only in a test running commands in-process).
    #[error("this process's logger is not pixguard's own")]
    NotInstalled,
}
