//! Scenario files: a header of `key: value` lines, then one step per line.
//!
//! ```text
//! # comments start with '#'
//! title: an app write reaches the online device
//! spec: 3.2
//! needs: reconnect, offline-queue     (capabilities a device kind must have; optional)
//!
//! start the device
//! app writes V0=1
//! expect device LED on within 2s
//! ```
//!
//! Devices are named: `device` alone is the demo device `A`; `device B` is another one (created
//! by `create device B`, on the demo's template, or `create device B on template T` after
//! `create template T {"datastreams": [...]}`). Every step is listed in [`Step`].

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// One parsed scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The file name without extension.
    pub name: String,
    /// What it shows, one line.
    pub title: String,
    /// The SPEC items it covers.
    pub spec: String,
    /// Capabilities a device kind must have to run it.
    pub needs: Vec<String>,
    /// The steps, with their line numbers.
    pub steps: Vec<(usize, String, Step)>,
}

/// An expectation about a value or a state.
#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    /// The device's light is on (`true`) or off.
    Led(bool),
    /// The device reported being connected (since the last link or process change).
    Connected,
    /// The device reported the end of an automatic sync, with this many values if given.
    SyncComplete(Option<u32>),
    /// The device received this value of this pin (since its start).
    Received(String, String),
    /// The device received no value of this pin (since its start).
    NotReceived(String),
    /// The app reads this value of this pin.
    AppValue(String, String),
    /// The app sees the device online (`true`) or offline.
    AppOnline(bool),
    /// The pin's history (through the app API) holds this value; with the time it was
    /// measured when a `measured ... ago` step wrote it.
    AppHistory(String, String),
    /// The device got the answer to its time request `utc <what>`.
    TimeAnswer(String),
}

/// One step.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Starts a device process (of the kind under test) for this device.
    StartDevice(String),
    /// Kills the device process and starts it again (a reset: it keeps nothing).
    RestartDevice(String),
    /// Creates another device on the demo's template.
    CreateDevice(String, String),
    /// Creates a template: its name and its JSON (as the app API takes it, without the name).
    CreateTemplate(String, String),
    /// An app write through the app API (`PUT /api/devices/D/values/PIN`).
    /// The status the answer must carry if given (`, expecting delivered`: the server then
    /// waits up to 1 s for the device to get it; `expecting expired`: up to 5 s; otherwise it
    /// answers at once).
    AppWrites {
        device: String,
        pin: String,
        value: String,
        status: Option<String>,
    },
    /// The device's button: toggles the light and reports V0 (and V1).
    PressButton(String),
    /// The device writes a pin.
    DeviceWrites {
        device: String,
        pin: String,
        value: String,
    },
    /// The device asks for pins (`sync_virtual`).
    DeviceSyncs { device: String, pins: Vec<String> },
    /// The device writes a pin in a group stamped with the time it was measured (classic
    /// `GROUP`: `beginGroup(t)`, `virtualWrite`, `endGroup()`), `age` before now.
    DeviceWritesMeasured {
        device: String,
        pin: String,
        value: String,
        age: Duration,
    },
    /// The device writes a pin of another device through a classic Bridge channel.
    DeviceBridges {
        device: String,
        target: String,
        pin: String,
        value: String,
    },
    /// The device sends the time request `utc <what>`.
    DeviceAsksTime { device: String, what: String },
    /// Drops the device's connections through the proxy and refuses new ones.
    CutLink(String),
    /// Stops forwarding the device's bytes, connections kept open (a silent link).
    StallLink(String),
    /// Lets the device connect again (ends a cut or a stall).
    RestoreLink(String),
    /// Stops the server (SIGTERM) and starts it again on the same data.
    RestartServer,
    /// SIGKILL.
    KillServer,
    /// Starts the server after `kill the server`.
    StartServer,
    /// Cuts every device's link at random, `percent` of the time in 500 ms slots, in the
    /// background for `duration`.
    PacketLoss { percent: u32, duration: Duration },
    /// Waits until the background packet loss has ended.
    EndPacketLoss,
    /// Sleeps.
    Wait(Duration),
    /// Waits until the expectation holds, failing after the duration.
    ExpectWithin {
        device: String,
        what: Expect,
        within: Duration,
    },
    /// Fails if the expectation stops holding during the duration.
    ExpectFor {
        device: String,
        what: Expect,
        during: Duration,
    },
}

/// Reads every `*.scn` file of `dir`, sorted by name.
pub fn load_all(dir: &Path) -> Result<Vec<Scenario>> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "scn"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let name = path
                .file_stem()
                .map(|stem| stem.to_string_lossy().into_owned())
                .unwrap_or_default();
            parse(&name, &text).with_context(|| format!("in {}", path.display()))
        })
        .collect()
}

/// Parses one scenario.
pub fn parse(name: &str, text: &str) -> Result<Scenario> {
    let mut scenario = Scenario {
        name: name.to_string(),
        title: String::new(),
        spec: String::new(),
        needs: Vec::new(),
        steps: Vec::new(),
    };
    for (index, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let number = index + 1;
        if scenario.steps.is_empty()
            && let Some((key, value)) = line.split_once(':')
            && matches!(key.trim(), "title" | "spec" | "needs")
        {
            let value = value.trim().to_string();
            match key.trim() {
                "title" => scenario.title = value,
                "spec" => scenario.spec = value,
                _ => {
                    scenario.needs = value
                        .split(',')
                        .map(|need| need.trim().to_string())
                        .filter(|need| !need.is_empty())
                        .collect()
                }
            }
            continue;
        }
        let step = parse_step(line).with_context(|| format!("line {number}: `{line}`"))?;
        scenario.steps.push((number, line.to_string(), step));
    }
    if scenario.steps.is_empty() {
        bail!("no steps");
    }
    if scenario.title.is_empty() {
        bail!("no `title:` line");
    }
    Ok(scenario)
}

/// `2s`, `500ms`.
fn duration(text: &str) -> Result<Duration> {
    let text = text.trim();
    if let Some(ms) = text.strip_suffix("ms") {
        return Ok(Duration::from_millis(ms.trim().parse()?));
    }
    if let Some(s) = text.strip_suffix('s') {
        return Ok(Duration::from_secs_f64(s.trim().parse()?));
    }
    bail!("`{text}` is not a duration such as 2s or 500ms")
}

/// `V0=1` to `("V0", "1")`.
fn assignment(text: &str) -> Result<(String, String)> {
    let Some((pin, value)) = text.split_once('=') else {
        bail!("`{text}` is not PIN=VALUE");
    };
    Ok((pin.trim().to_uppercase(), value.trim().to_string()))
}

/// Splits `device B rest` / `device rest` into the device name and the rest.
fn device_and_rest(text: &str) -> Option<(String, &str)> {
    let rest = text.strip_prefix("device")?.trim_start();
    let mut words = rest.splitn(2, ' ');
    let first = words.next().unwrap_or("");
    if first.len() == 1 && first.chars().all(|c| c.is_ascii_uppercase()) {
        Some((first.to_string(), words.next().unwrap_or("").trim()))
    } else {
        Some(("A".to_string(), rest))
    }
}

/// `... on device B` at the end of an app step.
fn on_device(text: &str) -> (String, &str) {
    match text.rsplit_once(" on device ") {
        Some((rest, device)) => (device.trim().to_string(), rest.trim()),
        None => ("A".to_string(), text.trim()),
    }
}

fn parse_step(line: &str) -> Result<Step> {
    let words: Vec<&str> = line.split_whitespace().collect();
    Ok(match words.as_slice() {
        ["start", "the", "device"] => Step::StartDevice("A".into()),
        ["start", "device", name] => Step::StartDevice(name.to_string()),
        ["restart", "the", "device"] => Step::RestartDevice("A".into()),
        ["restart", "device", name] => Step::RestartDevice(name.to_string()),
        ["create", "device", name] => Step::CreateDevice(name.to_string(), "light".into()),
        ["create", "device", name, "on", "template", template] => {
            Step::CreateDevice(name.to_string(), template.to_string())
        }
        ["create", "template", name, json, ..] if json.starts_with('{') => {
            let json = line.split_once('{').map(|(_, rest)| rest).unwrap_or("");
            Step::CreateTemplate(name.to_string(), format!("{{{json}"))
        }
        ["cut", "the", "device's", "link"] => Step::CutLink("A".into()),
        ["cut", "device", name, "link"] => Step::CutLink(name.trim_end_matches("'s").into()),
        ["stall", "the", "device's", "link"] => Step::StallLink("A".into()),
        ["stall", "device", name, "link"] => Step::StallLink(name.trim_end_matches("'s").into()),
        ["restore", "the", "device's", "link"] => Step::RestoreLink("A".into()),
        ["restore", "device", name, "link"] => {
            Step::RestoreLink(name.trim_end_matches("'s").into())
        }
        ["restart", "the", "server"] => Step::RestartServer,
        ["kill", "the", "server"] => Step::KillServer,
        ["start", "the", "server"] => Step::StartServer,
        ["packet", "loss", percent, "for", time] => Step::PacketLoss {
            percent: percent.trim_end_matches('%').parse()?,
            duration: duration(time)?,
        },
        ["end", "of", "packet", "loss"] => Step::EndPacketLoss,
        ["wait", time] => Step::Wait(duration(time)?),
        ["app", "writes", ..] => {
            let rest = line.trim_start_matches("app writes");
            let (rest, status) = match rest.split_once(", expecting ") {
                Some((rest, status)) => (rest, Some(status.trim().to_string())),
                None => (rest, None),
            };
            let (device, rest) = on_device(rest);
            let (pin, value) = assignment(rest)?;
            Step::AppWrites {
                device,
                pin,
                value,
                status,
            }
        }
        ["expect", ..] => parse_expect(line.trim_start_matches("expect").trim())?,
        _ => {
            let Some((device, rest)) = device_and_rest(line) else {
                bail!("unknown step");
            };
            if rest == "presses button" || rest == "presses the button" {
                Step::PressButton(device)
            } else if let Some((assign, age)) = rest
                .strip_prefix("writes ")
                .and_then(|rest| rest.split_once(" measured "))
            {
                let (pin, value) = assignment(assign)?;
                let Some(age) = age.strip_suffix(" ago") else {
                    bail!("a measured write ends with `measured 60s ago`");
                };
                Step::DeviceWritesMeasured {
                    device,
                    pin,
                    value,
                    age: duration(age)?,
                }
            } else if let Some(assign) = rest.strip_prefix("writes ") {
                let (pin, value) = assignment(assign)?;
                Step::DeviceWrites { device, pin, value }
            } else if let Some(bridged) = rest.strip_prefix("bridges ") {
                let Some((assign, target)) = bridged.split_once(" to device ") else {
                    bail!("a bridge step reads `device bridges V0=1 to device B`");
                };
                let (pin, value) = assignment(assign)?;
                Step::DeviceBridges {
                    device,
                    target: target.trim().to_string(),
                    pin,
                    value,
                }
            } else if let Some(what) = rest.strip_prefix("asks for utc ") {
                Step::DeviceAsksTime {
                    device,
                    what: what.trim().to_string(),
                }
            } else if let Some(pins) = rest.strip_prefix("syncs ") {
                let pins = pins
                    .split(',')
                    .map(|pin| pin.trim().to_uppercase())
                    .collect();
                Step::DeviceSyncs { device, pins }
            } else {
                bail!("unknown step")
            }
        }
    })
}

fn parse_expect(text: &str) -> Result<Step> {
    let (body, timing, within) = if let Some((body, time)) = text.rsplit_once(" within ") {
        (body, time, true)
    } else if let Some((body, time)) = text.rsplit_once(" for ") {
        (body, time, false)
    } else {
        bail!("an expectation ends with `within 2s` or `for 2s`");
    };
    let time = duration(timing)?;
    let (device, what) = if let Some(rest) = body.strip_prefix("app") {
        let (device, rest) = on_device(rest);
        let what = match rest {
            "sees the device online" => Expect::AppOnline(true),
            "sees the device offline" => Expect::AppOnline(false),
            _ if rest.starts_with("history ") => {
                let Some((pin, value)) = rest["history ".len()..].split_once(" has ") else {
                    bail!("a history expectation reads `app history V3 has VALUE`");
                };
                Expect::AppHistory(pin.trim().to_uppercase(), value.trim().to_string())
            }
            _ => {
                let (pin, value) = assignment(rest)?;
                Expect::AppValue(pin, value)
            }
        };
        (device, what)
    } else if let Some((device, rest)) = device_and_rest(body) {
        let what = match rest {
            "LED on" => Expect::Led(true),
            "LED off" => Expect::Led(false),
            "connected" => Expect::Connected,
            "sync complete" => Expect::SyncComplete(None),
            _ => {
                if let Some(count) = rest
                    .strip_prefix("sync complete with ")
                    .and_then(|rest| rest.strip_suffix(" values"))
                {
                    Expect::SyncComplete(Some(count.trim().parse()?))
                } else if let Some(what) = rest.strip_prefix("answered utc ") {
                    Expect::TimeAnswer(what.trim().to_string())
                } else if let Some(pin) = rest.strip_prefix("received nothing on ") {
                    Expect::NotReceived(pin.trim().to_uppercase())
                } else if let Some(assign) = rest.strip_prefix("received ") {
                    let (pin, value) = assignment(assign)?;
                    Expect::Received(pin, value)
                } else {
                    bail!("unknown device expectation `{rest}`")
                }
            }
        };
        (device, what)
    } else {
        bail!("an expectation starts with `expect app` or `expect device`")
    };
    Ok(if within {
        Step::ExpectWithin {
            device,
            what,
            within: time,
        }
    } else {
        Step::ExpectFor {
            device,
            what,
            during: time,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_steps() {
        let scenario = parse(
            "x",
            "title: t\nspec: 3.2\nneeds: reconnect\nstart the device\napp writes V0=1 on device B, expecting pending\n\
             device B presses button\ndevice writes V2=42\nexpect device LED on within 2s\n\
             expect app V0=1 for 500ms\nexpect device B sync complete with 0 values within 3s\n\
             cut the device's link\npacket loss 20% for 30s\n",
        )
        .unwrap();
        assert_eq!(scenario.needs, ["reconnect"]);
        let steps: Vec<Step> = scenario.steps.into_iter().map(|(_, _, s)| s).collect();
        assert_eq!(steps[0], Step::StartDevice("A".into()));
        assert_eq!(
            steps[1],
            Step::AppWrites {
                device: "B".into(),
                pin: "V0".into(),
                value: "1".into(),
                status: Some("pending".into())
            }
        );
        assert_eq!(steps[2], Step::PressButton("B".into()));
        assert_eq!(
            steps[6],
            Step::ExpectWithin {
                device: "B".into(),
                what: Expect::SyncComplete(Some(0)),
                within: Duration::from_secs(3)
            }
        );
        assert_eq!(steps[7], Step::CutLink("A".into()));
    }

    #[test]
    fn parses_the_classic_extras_steps() {
        let scenario = parse(
            "x",
            "title: t\ndevice writes V3=old measured 60s ago\ndevice bridges V0=1 to device B\n\
             device asks for utc time\nexpect app history V3 has old within 5s\n\
             expect device answered utc time within 3s\n",
        )
        .unwrap();
        let steps: Vec<Step> = scenario.steps.into_iter().map(|(_, _, s)| s).collect();
        assert_eq!(
            steps[0],
            Step::DeviceWritesMeasured {
                device: "A".into(),
                pin: "V3".into(),
                value: "old".into(),
                age: Duration::from_secs(60)
            }
        );
        assert_eq!(
            steps[1],
            Step::DeviceBridges {
                device: "A".into(),
                target: "B".into(),
                pin: "V0".into(),
                value: "1".into()
            }
        );
        assert_eq!(
            steps[2],
            Step::DeviceAsksTime {
                device: "A".into(),
                what: "time".into()
            }
        );
        assert_eq!(
            steps[3],
            Step::ExpectWithin {
                device: "A".into(),
                what: Expect::AppHistory("V3".into(), "old".into()),
                within: Duration::from_secs(5)
            }
        );
        assert_eq!(
            steps[4],
            Step::ExpectWithin {
                device: "A".into(),
                what: Expect::TimeAnswer("time".into()),
                within: Duration::from_secs(3)
            }
        );
    }
}
