//! `blynk history DEVICE PIN --since 1d [--csv]`: a pin's past values, printed as the server
//! streams its export, so a long range is never held in memory.

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Result, bail};

use crate::cli::HistoryArgs;
use crate::client::encode_component;
use crate::client::{Client, device_path};

/// `90s`, `30m`, `1h`, `1d`, `2w` as a duration.
pub fn parse_since(text: &str) -> Result<Duration> {
    let text = text.trim();
    let unit_at = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(unit_at);
    let Ok(number) = number.parse::<u64>() else {
        bail!("--since `{text}`: a number and a unit (s, m, h, d, w) expected, like `1d`");
    };
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" | "" => 86_400,
        "w" => 7 * 86_400,
        other => bail!("--since `{text}`: unknown unit `{other}` (s, m, h, d or w)"),
    };
    Ok(Duration::from_secs(number.saturating_mul(seconds)))
}

/// Runs `blynk history`.
pub async fn history(client: &Client, args: &HistoryArgs, json: bool) -> Result<ExitCode> {
    let since = parse_since(&args.since)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let from = now.saturating_sub(since).as_millis();
    let format = if json { "json" } else { "csv" };
    let path = format!(
        "{}/history/{}?from={from}&format={format}",
        device_path(&args.device)?,
        encode_component(&args.pin)
    );
    let raw = json || args.csv;
    let mut rows = 0usize;
    client
        .get_lines(&path, |line| {
            if raw {
                outln!("{line}");
                return;
            }
            // The header first, then `time,at_ms,value,version,origin` rows.
            if rows > 0
                && let Some((time, value, origin)) = human_row(line)
            {
                outln!("{time}  {value:<16} {origin}");
            }
            rows += 1;
        })
        .await?;
    if !raw && rows <= 1 {
        outln!(
            "no values of {} in the last {} (`--since` goes further back)",
            args.pin,
            args.since
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The time, value and origin of a CSV row. The value is the one field that may be quoted and
/// hold commas, so the row is cut from both ends.
fn human_row(line: &str) -> Option<(&str, String, &str)> {
    let (time, rest) = line.split_once(',')?;
    let (_at_ms, rest) = rest.split_once(',')?;
    let (rest, origin) = rest.rsplit_once(',')?;
    let (value, _version) = rest.rsplit_once(',')?;
    let value = match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(quoted) => quoted.replace("\"\"", "\""),
        None => value.to_owned(),
    };
    Some((time, value, origin))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_reads_a_number_and_a_unit() {
        assert_eq!(parse_since("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_since("1d").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_since("2w").unwrap(), Duration::from_secs(14 * 86_400));
        assert!(parse_since("1y").is_err());
        assert!(parse_since("day").is_err());
    }

    #[test]
    fn a_quoted_value_with_commas_stays_whole() {
        assert_eq!(
            human_row("2026-01-01T00:00:00Z,1767225600000,\"a, \"\"b\"\"\",7,app"),
            Some(("2026-01-01T00:00:00Z", "a, \"b\"".to_owned(), "app"))
        );
    }
}
