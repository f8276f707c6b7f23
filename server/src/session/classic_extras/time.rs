//! INTERNAL time requests, answered as the Blynk server does: an INTERNAL frame with the
//! request's message id whose first part names what it answers.
//!
//! - `rtc` (the RTC widget, `Blynk.sendInternal("rtc", "sync")`): `rtc\0<local seconds>`, the
//!   device's local time as seconds since 1970 (UTC plus the zone's offset), what the widget's
//!   `setTime()` expects.
//! - `utc\0<what>` (`Blynk.sendInternal("utc", what)`): `utc\0<what>\0<value>...`, `what` one
//!   of `time` (Unix ms), `iso` (local ISO-8601 with offset), `tz` (standard offset and DST
//!   offset in minutes), `tz_name` (the IANA name), `tz_rule` (the POSIX TZ rule) and
//!   `dst_next` (up to two coming offset changes: Unix seconds and new offset in minutes).
//!
//! The zone is the device's `timezone` property when it names a known zone, else the server's
//! (`timezone` in the configuration, `UTC` by default).

use jiff::Timestamp;
use jiff::tz::{Offset, TimeZone};

use crate::engine::DeviceSlot;

/// The property that sets a device's own timezone (on any pin): an IANA name.
pub const TIMEZONE_PROPERTY: &str = "timezone";

/// How far ahead to look for offset changes: a zone without one in a year keeps its offset.
const ONE_YEAR_SECONDS: i64 = 366 * 24 * 3600;

/// The zone of a device: its `timezone` property when it names a known zone, else `server`.
pub fn device_timezone(slot: &DeviceSlot, server: &TimeZone) -> TimeZone {
    slot.properties()
        .iter()
        .filter(|property| property.name == TIMEZONE_PROPERTY)
        .filter_map(|property| property.value.text_parts().into_iter().next())
        .find_map(|name| TimeZone::get(&name).ok())
        .unwrap_or_else(|| server.clone())
}

/// The parts of the answer to a time request (`rtc ...` or `utc <what>`) at `now_ms`, or
/// `None` for a request this server does not know.
pub fn answer(kind: &str, what: Option<&str>, zone: &TimeZone, now_ms: i64) -> Option<Vec<String>> {
    let now = Timestamp::from_millisecond(now_ms).ok()?;
    let offset = zone.to_offset(now);
    if kind == "rtc" {
        let local = now_ms.div_euclid(1000) + i64::from(offset.seconds());
        return Some(vec!["rtc".into(), local.to_string()]);
    }
    if kind != "utc" {
        return None;
    }
    let what = what?;
    let mut parts = vec!["utc".to_owned(), what.to_owned()];
    match what {
        "time" => parts.push(now_ms.to_string()),
        "iso" => parts.push(iso(now, offset)),
        "tz" => {
            let standard = standard_offset(zone, now);
            parts.push(minutes(standard).to_string());
            parts.push((minutes(offset) - minutes(standard)).to_string());
        }
        "tz_name" => parts.push(zone.iana_name().unwrap_or("UTC").to_owned()),
        "tz_rule" => parts.push(posix_rule(zone, now)),
        "dst_next" => {
            for (at, offset) in changes(zone, now).into_iter().take(2) {
                parts.push(at.as_second().to_string());
                parts.push(minutes(offset).to_string());
            }
        }
        _ => return None,
    }
    Some(parts)
}

fn minutes(offset: Offset) -> i32 {
    offset.seconds() / 60
}

/// `2026-11-30T17:04:05+02:00`.
fn iso(now: Timestamp, offset: Offset) -> String {
    let local = offset.to_datetime(now);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{}",
        local.year(),
        local.month(),
        local.day(),
        local.hour(),
        local.minute(),
        local.second(),
        offset_text(offset.seconds(), true)
    )
}

/// `+02:00` (ISO, `colon`), or POSIX's `[+|-]hh[:mm[:ss]]`.
fn offset_text(seconds: i32, iso: bool) -> String {
    let sign = if seconds < 0 { '-' } else { '+' };
    let total = seconds.unsigned_abs();
    let (hours, mins, secs) = (total / 3600, total / 60 % 60, total % 60);
    if iso {
        return format!("{sign}{hours:02}:{mins:02}");
    }
    let sign = if seconds < 0 { "-" } else { "" };
    match (mins, secs) {
        (0, 0) => format!("{sign}{hours}"),
        (_, 0) => format!("{sign}{hours}:{mins:02}"),
        _ => format!("{sign}{hours}:{mins:02}:{secs:02}"),
    }
}

/// The offset changes of the coming year: when, and the offset from then on.
fn changes(zone: &TimeZone, now: Timestamp) -> Vec<(Timestamp, Offset)> {
    zone.following(now)
        .take(2)
        .filter(|change| change.timestamp().as_second() - now.as_second() <= ONE_YEAR_SECONDS)
        .map(|change| (change.timestamp(), change.offset()))
        .collect()
}

/// The zone's offset outside daylight saving time, near `now`.
fn standard_offset(zone: &TimeZone, now: Timestamp) -> Offset {
    let info = zone.to_offset_info(now);
    if !info.dst().is_dst() {
        return info.offset();
    }
    zone.following(now)
        .take(2)
        .find(|change| !change.dst().is_dst())
        .map_or(info.offset(), |change| change.offset())
}

/// A zone abbreviation as POSIX wants it: three or more letters as they are, else `<...>`.
fn posix_name(abbreviation: &str) -> String {
    if abbreviation.len() >= 3 && abbreviation.bytes().all(|b| b.is_ascii_alphabetic()) {
        abbreviation.to_owned()
    } else {
        format!("<{abbreviation}>")
    }
}

/// The POSIX TZ rule of the zone as it stands this year, e.g. `CET-1CEST,M3.5.0/2,M10.5.0/3`
/// (POSIX counts offsets west of Greenwich as positive, so the signs are the ISO ones turned).
fn posix_rule(zone: &TimeZone, now: Timestamp) -> String {
    let info = zone.to_offset_info(now);
    let fixed = || {
        format!(
            "{}{}",
            posix_name(info.abbreviation()),
            offset_text(-info.offset().seconds(), false)
        )
    };
    let coming: Vec<_> = zone
        .following(now)
        .take(2)
        .filter(|change| change.timestamp().as_second() - now.as_second() <= ONE_YEAR_SECONDS)
        .collect();
    let into_dst = coming.iter().find(|change| change.dst().is_dst());
    let out_of_dst = coming.iter().find(|change| !change.dst().is_dst());
    let (Some(into_dst), Some(out_of_dst)) = (into_dst, out_of_dst) else {
        return fixed();
    };
    let standard = out_of_dst.offset();
    let daylight = into_dst.offset();
    let mut rule = format!(
        "{}{}{}",
        posix_name(out_of_dst.abbreviation()),
        offset_text(-standard.seconds(), false),
        posix_name(into_dst.abbreviation())
    );
    if daylight.seconds() - standard.seconds() != 3600 {
        rule.push_str(&offset_text(-daylight.seconds(), false));
    }
    // Each change happens at a wall-clock time of the offset in force before it.
    rule.push_str(&month_rule(into_dst.timestamp(), standard));
    rule.push_str(&month_rule(out_of_dst.timestamp(), daylight));
    rule
}

/// `,Mm.w.d/time`: month, week of the month (5: the last), weekday (0: Sunday), local time.
fn month_rule(at: Timestamp, before: Offset) -> String {
    let local = before.to_datetime(at);
    let week = if local.day() + 7 > local.days_in_month() {
        5
    } else {
        (local.day() - 1) / 7 + 1
    };
    let seconds =
        i32::from(local.hour()) * 3600 + i32::from(local.minute()) * 60 + i32::from(local.second());
    format!(
        ",M{}.{}.{}/{}",
        local.month(),
        week,
        local.weekday().to_sunday_zero_offset(),
        offset_text(seconds, false)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-01-15 12:00:00 UTC.
    const WINTER_MS: i64 = 1_768_478_400_000;

    fn zone(name: &str) -> TimeZone {
        TimeZone::get(name).unwrap()
    }

    fn value(kind: &str, what: &str, name: &str) -> Vec<String> {
        answer(kind, Some(what), &zone(name), WINTER_MS).unwrap()[2..].to_vec()
    }

    #[test]
    fn posix_rules_match_the_zones() {
        assert_eq!(value("utc", "tz_rule", "UTC"), ["UTC0"]);
        assert_eq!(
            value("utc", "tz_rule", "Europe/Berlin"),
            ["CET-1CEST,M3.5.0/2,M10.5.0/3"]
        );
        assert_eq!(
            value("utc", "tz_rule", "America/New_York"),
            ["EST5EDT,M3.2.0/2,M11.1.0/2"]
        );
        assert_eq!(value("utc", "tz_rule", "Asia/Kolkata"), ["IST-5:30"]);
    }

    #[test]
    fn time_iso_tz_and_changes() {
        assert_eq!(value("utc", "time", "UTC"), [WINTER_MS.to_string()]);
        assert_eq!(
            value("utc", "iso", "Europe/Berlin"),
            ["2026-01-15T13:00:00+01:00"]
        );
        assert_eq!(value("utc", "tz", "Europe/Berlin"), ["60", "0"]);
        assert_eq!(value("utc", "tz_name", "Europe/Berlin"), ["Europe/Berlin"]);
        let next = value("utc", "dst_next", "Europe/Berlin");
        // 2026-03-29 01:00 UTC to +120, 2026-10-25 01:00 UTC back to +60.
        assert_eq!(next, ["1774746000", "120", "1792890000", "60"]);
        assert!(value("utc", "dst_next", "UTC").is_empty());
        let rtc = answer("rtc", Some("sync"), &zone("Europe/Berlin"), WINTER_MS).unwrap();
        assert_eq!(rtc, ["rtc", &(WINTER_MS / 1000 + 3600).to_string()]);
        assert_eq!(answer("utc", Some("moon"), &zone("UTC"), WINTER_MS), None);
        assert_eq!(answer("utc", None, &zone("UTC"), WINTER_MS), None);
    }
}
