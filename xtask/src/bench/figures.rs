//! The figures blynk-load prints, and how a cell of the table summarises a row's runs
//! (median, min and max, and the ratio to the baseline).

use super::*;

/// One `figure:` line of blynk-load: `row`, `system` and `name=value` pairs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Figure {
    pub(crate) fields: BTreeMap<String, String>,
}

impl Figure {
    pub(crate) fn parse(line: &str) -> Option<Figure> {
        let rest = line.trim().strip_prefix("figure: ")?;
        let fields = rest
            .split_whitespace()
            .filter_map(|pair| pair.split_once('='))
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect();
        Some(Figure { fields })
    }

    /// The table row this figure belongs to.
    pub(crate) fn letter(&self) -> Option<&'static str> {
        Some(match self.get("row")? {
            "device-to-app" => "a",
            "device-to-app-rate" if self.number("rate") == Some(20_000.0) => "b",
            "device-to-app-rate" => "h",
            "app-to-device" => "c",
            "reconnect-storm" => "d",
            "history-writes" => "e",
            "idle-classic" => "f",
            "watch-memory" => "g",
            "protocol-device-to-app" | "protocol-app-to-device" => "i",
            _ => return None,
        })
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }

    pub(crate) fn number(&self, name: &str) -> Option<f64> {
        self.get(name)?
            .parse::<f64>()
            .ok()
            .filter(|value| value.is_finite())
    }
}

/// Which figures a cell of the table reads.
#[derive(Clone, Copy)]
pub(crate) struct Select {
    pub(crate) row: &'static str,
    pub(crate) system: &'static str,
    pub(crate) durability: Option<&'static str>,
    /// A field that tells runs of one row apart, and its value (`rate`, `history_rows`).
    pub(crate) keyed: Option<(&'static str, u64)>,
    /// The devices' protocol, for rows that measure each in turn.
    pub(crate) protocol: Option<&'static str>,
}

impl Select {
    pub(crate) fn matches(&self, figure: &Figure) -> bool {
        figure.get("row") == Some(self.row)
            && figure.get("system") == Some(self.system)
            && self
                .durability
                .is_none_or(|durability| figure.get("durability") == Some(durability))
            && self
                .keyed
                .is_none_or(|(name, value)| figure.number(name) == Some(value as f64))
            && self
                .protocol
                .is_none_or(|protocol| figure.get("protocol") == Some(protocol))
    }
}

/// How a metric is summarized over runs.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Summary {
    /// Median (min-max) of the runs.
    Median,
    /// How many runs had a non-zero value.
    RunsWith,
}

/// One figure of a cell: `label value unit`.
#[derive(Clone, Copy)]
pub(crate) struct Metric {
    pub(crate) label: &'static str,
    pub(crate) select: Select,
    pub(crate) field: &'static str,
    pub(crate) unit: &'static str,
    pub(crate) summary: Summary,
}

pub(crate) fn metric(
    label: &'static str,
    select: Select,
    field: &'static str,
    unit: &'static str,
) -> Metric {
    Metric {
        label,
        select,
        field,
        unit,
        summary: Summary::Median,
    }
}

pub(crate) fn runs_with(label: &'static str, select: Select, field: &'static str) -> Metric {
    Metric {
        label,
        select,
        field,
        unit: "",
        summary: Summary::RunsWith,
    }
}

/// A cell of the table: its metrics' figures, `-` when it has none.
pub(crate) fn cells(metrics: &[Metric], figures: &[Figure]) -> String {
    if metrics.is_empty() {
        return "-".to_owned();
    }
    metrics
        .iter()
        .map(|metric| metric.cell(figures))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The figures most rows show, under their usual label (`labelled` gives another).
pub(crate) fn p50(select: Select) -> Metric {
    metric("p50", select, "p50_ms", " ms")
}

pub(crate) fn p99(select: Select) -> Metric {
    metric("p99", select, "p99_ms", " ms")
}

pub(crate) fn ack_p99(select: Select) -> Metric {
    metric("ack p99", select, "ack_p99_ms", " ms")
}

pub(crate) fn cpu_per_msg(select: Select) -> Metric {
    metric("CPU", select, "cpu_us_per_msg", " us/msg")
}

pub(crate) fn cpu_per_write(select: Select) -> Metric {
    metric("CPU", select, "cpu_us_per_write", " us/write")
}

/// Median, min and max of some numbers.
pub(crate) fn spread(values: &mut [f64]) -> Option<(f64, f64, f64)> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    let median = if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    };
    Some((median, values[0], values[values.len() - 1]))
}

/// A number with a sensible precision.
pub(crate) fn show(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude >= 1000.0 {
        let whole = format!("{:.0}", value.abs());
        let mut grouped = String::new();
        for (index, digit) in whole.chars().enumerate() {
            if index > 0 && (whole.len() - index) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(digit);
        }
        if value < 0.0 {
            format!("-{grouped}")
        } else {
            grouped
        }
    } else if magnitude >= 100.0 || value.fract() == 0.0 {
        format!("{value:.0}")
    } else if magnitude >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

impl Metric {
    /// The same figure under another label.
    pub(crate) fn labelled(self, label: &'static str) -> Metric {
        Metric { label, ..self }
    }

    pub(crate) fn values(&self, figures: &[Figure]) -> (Vec<f64>, usize) {
        let chosen: Vec<&Figure> = figures.iter().filter(|f| self.select.matches(f)).collect();
        let values = chosen.iter().filter_map(|f| f.number(self.field)).collect();
        (values, chosen.len())
    }

    pub(crate) fn median(&self, figures: &[Figure]) -> Option<f64> {
        let (mut values, _) = self.values(figures);
        spread(&mut values).map(|(median, _, _)| median)
    }

    /// `label median unit (min-max, N runs)`, or what is missing.
    pub(crate) fn cell(&self, figures: &[Figure]) -> String {
        let (mut values, runs) = self.values(figures);
        if runs == 0 {
            return format!("{}: not run", self.label);
        }
        if self.summary == Summary::RunsWith {
            let with = values.iter().filter(|value| **value != 0.0).count();
            return format!("{} {with}/{runs} runs", self.label);
        }
        match spread(&mut values) {
            None => format!("{}: none ({runs} runs)", self.label),
            // Runs without this figure (a watcher closed early, say) are counted apart.
            Some((median, _, _)) if values.len() == 1 => {
                let only = if runs > 1 {
                    format!(" (1 of {runs} runs)")
                } else {
                    String::new()
                };
                format!("{} {}{}{only}", self.label, show(median), self.unit)
            }
            Some((median, min, max)) => format!(
                "{} {}{} ({}-{}, {} runs)",
                self.label,
                show(median),
                self.unit,
                show(min),
                show(max),
                if values.len() == runs {
                    runs.to_string()
                } else {
                    format!("{} of {runs}", values.len())
                }
            ),
        }
    }
}
