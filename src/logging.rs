//! Log lines on stderr: env_logger's text for people, or with `log_format = "json"` one JSON
//! object per line for log collectors (`time`, `level`, `target`, `message`), which then need
//! no pattern to split a line, and never see a message's own newline start a new record.

use std::io::Write as _;

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

/// Installs the logger: `level` (`log_level`) first, then `FANFARE_LOG` overrides it.
pub fn init(level: &str, format: LogFormat) {
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
    builder.init();
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
