//! The soak's figures: what the device processes report, the loss counters, the server's memory
//! over the run, the verdict and the printed report.

use super::Options;

/// The figures of one run.
#[derive(Debug, Default)]
pub struct Report {
    /// The sums over every device process of each `result` field.
    pub totals: Vec<(String, u64)>,
    /// Processes that did not settle (a device without the server's state at the end).
    pub unsettled: u64,
    /// The server's RSS in KiB: (seconds since the writing began, KiB).
    pub rss: Vec<(f64, u64)>,
    /// The size of the server's data directory (the database and its write-ahead log) at the
    /// same moments, KiB.
    pub data: Vec<(f64, u64)>,
    /// Packets seen and dropped by the loss rules, towards the devices and from them:
    /// `[(seen, dropped); 2]`.
    pub packets: [(u64, u64); 2],
}

impl Report {
    pub fn total(&self, name: &str) -> u64 {
        self.totals
            .iter()
            .find(|(field, _)| field == name)
            .map_or(0, |(_, value)| *value)
    }

    /// First, last and largest sample during the writing, KiB.
    fn rss_figures(&self) -> (u64, u64, u64) {
        let first = self.rss.first().map_or(0, |(_, kib)| *kib);
        let last = self.rss.last().map_or(0, |(_, kib)| *kib);
        let max = self.rss.iter().map(|(_, kib)| *kib).max().unwrap_or(0);
        (first, last, max)
    }

    /// Flat: the last fifth of the run's samples stay within 15% (or 16 MiB) of the largest
    /// sample of its second fifth, once connections, caches and buffers have grown.
    pub fn rss_flat(&self) -> bool {
        let fifth = self.rss.len() / 5;
        if fifth == 0 {
            return true;
        }
        let warmed = self.rss[fifth..2 * fifth]
            .iter()
            .map(|(_, kib)| *kib)
            .max()
            .unwrap_or(0);
        let late = self.rss[4 * fifth..]
            .iter()
            .map(|(_, kib)| *kib)
            .max()
            .unwrap_or(0);
        late <= (warmed + warmed * 15 / 100).max(warmed + 16 * 1024)
    }

    pub fn passed(&self) -> bool {
        self.unsettled == 0
            && ["state_differs", "app_lost", "device_lost", "unreadable"]
                .iter()
                .all(|field| self.total(field) == 0)
            && self.total("devices") == self.total("connected")
            && self.rss_flat()
    }
}

/// The packet counters of `nft list table inet chaos`: per chain (`in`, then `out`), the first
/// counter (every packet) and the second (those dropped).
pub fn packet_counts(listing: &str) -> [(u64, u64); 2] {
    let mut counts = [(0, 0); 2];
    let mut chain = None;
    let mut seen_in_chain = 0;
    for line in listing.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix("chain ") {
            chain = match name.trim_end_matches(" {") {
                "in" => Some(0),
                "out" => Some(1),
                _ => None,
            };
            seen_in_chain = 0;
        }
        let (Some(chain), Some(rest)) = (chain, line.split("counter packets ").nth(1)) else {
            continue;
        };
        let packets: u64 = rest
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        if seen_in_chain == 0 {
            counts[chain].0 = packets;
        } else {
            counts[chain].1 = packets;
        }
        seen_in_chain += 1;
    }
    counts
}

/// The first sample of each minute, in MiB: `19.3, 24.0, 25.5`.
fn by_minute(samples: &[(f64, u64)]) -> String {
    let mut minute = None;
    let mut figures = Vec::new();
    for (at, kib) in samples {
        let this = (*at / 60.0) as u64;
        if minute != Some(this) {
            minute = Some(this);
            figures.push(format!("{:.1}", *kib as f64 / 1024.0));
        }
    }
    figures.join(", ")
}

pub fn print_report(options: &Options, report: &Report, processes: usize) {
    let total = |name: &str| report.total(name);
    let (first, last, max) = report.rss_figures();
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!("\nsoak report");
    println!(
        "  devices            {} in {processes} processes, {}% loss each way, {} s of writes",
        options.devices, options.loss, options.seconds
    );
    let share = |(seen, dropped): (u64, u64)| {
        format!(
            "{dropped} of {seen} dropped ({:.1}%)",
            dropped as f64 * 100.0 / seen.max(1) as f64
        )
    };
    println!(
        "  packets            to the devices {}; from them {}",
        share(report.packets[0]),
        share(report.packets[1])
    );
    println!(
        "  connected at end   {} of {}",
        total("connected"),
        total("devices")
    );
    println!(
        "  logins             {} (reconnects under loss: {})",
        total("logins"),
        total("logins").saturating_sub(total("devices"))
    );
    println!(
        "  app writes         {} tried, {} acknowledged, {} unanswered (timeouts, resets)",
        total("app_tried"),
        total("app_acknowledged"),
        total("app_unanswered")
    );
    println!(
        "  device writes      {} acknowledged, {} refused, {} queue overflows",
        total("device_acknowledged"),
        total("refused"),
        total("overflow")
    );
    println!(
        "  state differs      {} devices (device vs server), {} processes unsettled",
        total("state_differs"),
        report.unsettled
    );
    println!(
        "  lost acknowledged  {} app writes, {} device writes ({} devices unreadable)",
        total("app_lost"),
        total("device_lost"),
        total("unreadable")
    );
    println!(
        "  server RSS         first {:.1} MiB, last {:.1} MiB, max {:.1} MiB ({} samples, {})",
        mib(first),
        mib(last),
        mib(max),
        report.rss.len(),
        if report.rss_flat() { "flat" } else { "GROWING" }
    );
    println!("  server RSS by min   {} MiB", by_minute(&report.rss));
    println!("  database by min     {} MiB", by_minute(&report.data));
    println!(
        "  writes per second  {:.0} by apps, {:.0} by devices",
        total("app_acknowledged") as f64 / options.seconds as f64,
        total("device_acknowledged") as f64 / options.seconds as f64
    );
    println!(
        "  verdict            {}",
        if report.passed() { "pass" } else { "FAIL" }
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loss_counters_are_read_per_direction() {
        let listing = "table inet chaos {
	chain in {
		type filter hook input priority filter; policy accept;
		counter packets 1000 bytes 64000
		numgen random mod 100 < 20 counter packets 201 bytes 12000 drop
	}
	chain out {
		type filter hook output priority filter; policy accept;
		counter packets 900 bytes 64000
		numgen random mod 100 < 20 counter packets 180 bytes 12000 drop
	}
}";
        assert_eq!(packet_counts(listing), [(1000, 201), (900, 180)]);
    }

    #[test]
    fn memory_that_keeps_growing_is_not_flat() {
        let flat = Report {
            rss: (0..50)
                .map(|i| (f64::from(i), 100_000 + (i % 3) as u64))
                .collect(),
            ..Report::default()
        };
        assert!(flat.rss_flat());
        let growing = Report {
            rss: (0..50)
                .map(|i| (f64::from(i), 100_000 + i as u64 * 2_000))
                .collect(),
            ..Report::default()
        };
        assert!(!growing.rss_flat());
    }
}
