//! Log lines on stderr: env_logger's text for people, or with `log_format = "json"` one JSON
//! object per line for log collectors (`time`, `level`, `target`, `message`), which then need
//! no pattern to split a line, and never see a message's own newline start a new record.

use std::io::Write as _;
use std::sync::{OnceLock, RwLock};

use crate::config::LogFormat;

/// One record as a JSON line's fields, in the order they are written.
#[derive(serde::Serialize)]
struct JsonRecord<'a> {
    /// RFC 3339, UTC, milliseconds: `2025-01-31T12:00:00.123Z`.
    time: &'a str,
    level: &'a str,
    /// The module that logged, e.g. `fanfare::shard`.
    target: &'a str,
    message: &'a str,
}

/// The JSON object of one record, without the newline. serde_json escapes what JSON requires
/// (quotes, backslashes, control characters, newlines included), so a message that holds
/// client input stays one line of valid JSON.
pub fn json_line(time: &str, level: &str, target: &str, message: &str) -> String {
    let record = JsonRecord {
        time,
        level,
        target,
        message,
    };
    serde_json::to_string(&record).expect("a struct of strings always serializes")
}

/// The logger in force; `log_level` can change while the broker runs (SIGHUP).
static LOGGER: OnceLock<Reloadable> = OnceLock::new();

/// env_logger's logger behind a lock, so that a reload swaps its filter. A record takes the
/// read lock once; the `log` crate's max level turns records off before that.
struct Reloadable {
    format: LogFormat,
    inner: RwLock<env_logger::Logger>,
}

impl Reloadable {
    fn inner(&self) -> std::sync::RwLockReadGuard<'_, env_logger::Logger> {
        self.inner
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl log::Log for Reloadable {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.inner().enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        self.inner().log(record)
    }

    fn flush(&self) {
        self.inner().flush()
    }
}

/// A logger for `level` (`log_level`), which `FANFARE_LOG` overrides.
fn build(level: &str, format: LogFormat) -> env_logger::Logger {
    let mut builder = env_logger::Builder::new();
    builder
        .parse_filters(level)
        .parse_env("FANFARE_LOG")
        .format_timestamp_millis();
    if format == LogFormat::Json {
        builder.format(|buf, record| {
            let time = buf.timestamp_millis().to_string();
            let message = record.args().to_string();
            let line = json_line(&time, record.level().as_str(), record.target(), &message);
            writeln!(buf, "{line}")
        });
    }
    builder.build()
}

/// Installs the logger: `level` (`log_level`) first, then `FANFARE_LOG` overrides it.
pub fn init(level: &str, format: LogFormat) {
    let logger = build(level, format);
    log::set_max_level(logger.filter());
    let logger = LOGGER.get_or_init(|| Reloadable {
        format,
        inner: RwLock::new(logger),
    });
    // Only a second `init` fails here, which keeps the first logger.
    let _ = log::set_logger(logger);
}

/// Applies a reloaded `log_level`; `FANFARE_LOG` still overrides it, as at start-up.
pub fn set_level(level: &str) {
    let Some(logger) = LOGGER.get() else { return };
    let new = build(level, logger.format);
    log::set_max_level(new.filter());
    *logger
        .inner
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = new;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_one_json_object_with_the_four_fields_in_order() {
        assert_eq!(
            json_line("2025-01-31T12:00:00.123Z", "INFO", "fanfare", "ready"),
            r#"{"time":"2025-01-31T12:00:00.123Z","level":"INFO","target":"fanfare","message":"ready"}"#
        );
    }

    #[test]
    fn quotes_backslashes_newlines_and_control_characters_are_escaped() {
        let message = "client \"a\\b\"\nsent \u{1}\u{7f} é";
        let line = json_line("t", "WARN", "fanfare::shard", message);
        assert!(!line.contains('\n'));
        let parsed: serde_json::Value = serde_json::from_str(&line).expect("valid JSON");
        assert_eq!(parsed["message"], message);
        assert_eq!(parsed["target"], "fanfare::shard");
    }
}
