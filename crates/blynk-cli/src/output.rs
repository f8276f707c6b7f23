//! Human output: values, relative times and aligned tables.

use std::io::Write;

use serde_json::Value;

/// Prints a line on standard output; see [`line`].
macro_rules! outln {
    () => {
        $crate::output::line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::output::line(format_args!($($arg)*))
    };
}

/// Writes one line to standard output. When the reader went away (`blynk watch | head -1`) the
/// process ends quietly instead of panicking as `println!` does; other write errors end it with
/// a message and exit code 1.
pub fn line(text: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(error) = writeln!(out, "{text}").and_then(|()| out.flush()) {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("blynk: cannot write to standard output: {error}");
        std::process::exit(1);
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// A time (ms since the epoch) relative to `now`: "just now", "12 s ago", "3 min ago", ...
pub fn relative(at_ms: i64, now_ms: i64) -> String {
    let seconds = now_ms.saturating_sub(at_ms) / 1000;
    match seconds {
        ..=1 => "just now".to_string(),
        2..=59 => format!("{seconds} s ago"),
        60..=3599 => format!("{} min ago", seconds / 60),
        3600..=86_399 => format!("{} h ago", seconds / 3600),
        _ => {
            let days = seconds / 86_400;
            if days == 1 {
                "1 day ago".to_string()
            } else {
                format!("{days} days ago")
            }
        }
    }
}

/// A JSON time field (ms since the epoch), relative to now; `None` when absent.
pub fn relative_field(value: &Value) -> Option<String> {
    value.as_i64().map(|at| relative(at, now_ms()))
}

/// One value part: a number as is, a string as is unless it would be ambiguous (empty, or with
/// white space or quotes), then JSON-quoted.
fn part(value: &Value) -> String {
    match value {
        Value::String(text)
            if text.is_empty()
                || text
                    .chars()
                    .any(|c| c.is_whitespace() || c == '"' || c.is_control()) =>
        {
            Value::String(text.clone()).to_string()
        }
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// A value: one part, or several separated by spaces (as `blynk set` takes them).
pub fn value(value: &Value) -> String {
    match value {
        Value::Array(parts) => parts.iter().map(part).collect::<Vec<_>>().join(" "),
        single => part(single),
    }
}

/// Text of a JSON field for a table cell: strings bare, null as "-".
pub fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".to_string(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Prints rows as columns aligned by the header's widths; the last column is not padded.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, text) in widths.iter_mut().zip(row) {
            *width = (*width).max(text.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (index, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if index + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(cell);
                text.push_str(&" ".repeat(width - cell.chars().count() + 2));
            }
        }
        text.trim_end().to_string()
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push('\n');
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// "version 7, app, 2 min ago" for a stored value's JSON (`version`, `origin`, `at`).
pub fn provenance(stored: &Value) -> String {
    if stored.get("default").and_then(Value::as_bool) == Some(true) {
        return "default, never set".to_string();
    }
    let mut parts = Vec::new();
    if let Some(version) = stored.get("version").and_then(Value::as_u64) {
        parts.push(format!("version {version}"));
    }
    if let Some(origin) = stored.get("origin").and_then(Value::as_str) {
        parts.push(format!("set by {origin}"));
    }
    if let Some(when) = stored.get("at").and_then(relative_field) {
        parts.push(when);
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn relative_times() {
        let now = 1_000_000_000;
        assert_eq!(relative(now, now), "just now");
        assert_eq!(relative(now + 5000, now), "just now");
        assert_eq!(relative(now - 12_000, now), "12 s ago");
        assert_eq!(relative(now - 180_000, now), "3 min ago");
        assert_eq!(relative(now - 7_200_000, now), "2 h ago");
        assert_eq!(relative(now - 86_400_000, now), "1 day ago");
        assert_eq!(relative(now - 3 * 86_400_000, now), "3 days ago");
    }

    #[test]
    fn values() {
        assert_eq!(value(&json!(5)), "5");
        assert_eq!(value(&json!(2.5)), "2.5");
        assert_eq!(value(&json!("auto")), "auto");
        assert_eq!(value(&json!("a b")), "\"a b\"");
        assert_eq!(value(&json!("")), "\"\"");
        assert_eq!(value(&json!([1, 2.5, "abc"])), "1 2.5 abc");
    }

    #[test]
    fn tables_align() {
        let text = table(
            &["ID", "NAME", "LAST"],
            &[
                vec!["1".into(), "demo".into(), "now".into()],
                vec!["12".into(), "x".into(), "-".into()],
            ],
        );
        assert_eq!(text, "ID  NAME  LAST\n1   demo  now\n12  x     -");
    }
}
