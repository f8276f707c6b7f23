//! One function per command: a request to the app API, then human or JSON output.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Result, bail};
use serde_json::{Value, json};

use crate::cli::{Cli, Command, DeviceCommand, SetArgs};
use crate::client::encode_component;
use crate::client::{Client, device_path};
use crate::config;
use crate::output::{self, cell, provenance, relative_field, table};

/// The exit code of a command write whose ttl passed before its device connected.
const EXIT_EXPIRED: u8 = 3;

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> Result<ExitCode> {
    let settings = config::resolve(&cli.global)?;
    let client = Client::new(&settings)?;
    let json = cli.global.json;
    match cli.command {
        Command::Devices => devices(&client, json).await,
        Command::Get { device, pin } => get(&client, &device, pin.as_deref(), json).await,
        Command::Set(args) => set(&client, &args, json).await,
        Command::Watch(args) => crate::watch::watch(&client, &args, json).await,
        Command::Templates => templates(&client, json).await,
        Command::Device(DeviceCommand::Add { template, name }) => {
            device_add(&client, &template, &name, json).await
        }
        Command::Device(DeviceCommand::Show { device }) => {
            device_show(&client, &device, json).await
        }
        Command::Device(DeviceCommand::Delete { device }) => {
            device_delete(&client, &device, json).await
        }
        Command::History(args) => crate::history::history(&client, &args, json).await,
    }
}

/// Prints a JSON document (pretty, one per command).
fn print_json(value: &Value) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => outln!("{text}"),
        Err(_) => outln!("{value}"),
    }
}

/// "online", "online (classic)", "offline".
fn presence(device: &Value) -> String {
    if device.get("online").and_then(Value::as_bool) == Some(true) {
        match device.get("protocol").and_then(Value::as_str) {
            Some(protocol) => format!("online ({protocol})"),
            None => "online".to_string(),
        }
    } else {
        "offline".to_string()
    }
}

/// When the device was last seen: "now" while online, "never" if it never connected.
fn last_seen(device: &Value) -> String {
    if device.get("online").and_then(Value::as_bool) == Some(true) {
        return "now".to_string();
    }
    device
        .get("last_seen")
        .and_then(relative_field)
        .unwrap_or_else(|| "never".to_string())
}

async fn devices(client: &Client, json: bool) -> Result<ExitCode> {
    let list = client.get("/api/devices").await?;
    if json {
        print_json(&list);
        return Ok(ExitCode::SUCCESS);
    }
    let devices = list.as_array().cloned().unwrap_or_default();
    if devices.is_empty() {
        outln!("no devices (`blynk device add --template T --name N` creates one)");
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = devices
        .iter()
        .map(|device| {
            vec![
                cell(&device["id"]),
                cell(&device["name"]),
                cell(&device["template"]),
                presence(device),
                last_seen(device),
            ]
        })
        .collect();
    outln!(
        "{}",
        table(&["ID", "NAME", "TEMPLATE", "STATUS", "LAST SEEN"], &rows)
    );
    Ok(ExitCode::SUCCESS)
}

/// The datastream of `pin` in a device's details.
fn datastream<'a>(details: &'a Value, pin: &str) -> Option<&'a Value> {
    details["datastreams"].as_array()?.iter().find(|d| {
        d["pin"]
            .as_str()
            .is_some_and(|p| p.eq_ignore_ascii_case(pin))
    })
}

async fn get(client: &Client, device: &str, pin: Option<&str>, json: bool) -> Result<ExitCode> {
    let path = device_path(device)?;
    let Some(pin) = pin else {
        let details = client.get(&path).await?;
        if json {
            print_json(&details["values"]);
        } else {
            print_values(&details);
        }
        return Ok(ExitCode::SUCCESS);
    };
    let stored = client
        .get(&format!("{path}/values/{}", encode_component(pin)))
        .await?;
    if json {
        print_json(&stored);
    } else {
        outln!(
            "{} = {}  ({})",
            pin.to_ascii_uppercase(),
            output::value(&stored["value"]),
            provenance(&stored)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Every datastream of a device with its value (or default).
fn print_values(details: &Value) {
    let empty = Vec::new();
    let streams = details["datastreams"].as_array().unwrap_or(&empty);
    let values = &details["values"];
    let mut rows = Vec::new();
    for stream in streams {
        let pin = stream["pin"].as_str().unwrap_or("?");
        let (value, when) = match values.get(pin) {
            Some(stored) => (output::value(&stored["value"]), provenance(stored)),
            None if !stream["default"].is_null() => (
                output::value(&stream["default"]),
                "default, never set".to_string(),
            ),
            None => ("-".to_string(), "never set".to_string()),
        };
        rows.push(vec![pin.to_string(), cell(&stream["name"]), value, when]);
    }
    // Values of pins the template does not (or no longer) declare.
    if let Some(values) = values.as_object() {
        for (pin, stored) in values {
            if datastream(details, pin).is_none() {
                rows.push(vec![
                    pin.clone(),
                    "-".into(),
                    output::value(&stored["value"]),
                    provenance(stored),
                ]);
            }
        }
    }
    if rows.is_empty() {
        outln!("no datastreams");
    } else {
        outln!("{}", table(&["PIN", "NAME", "VALUE", "UPDATED"], &rows));
    }
}

/// A command-line value argument as JSON: a number when it reads as a JSON number, else text.
pub fn value_arg(text: &str) -> Value {
    match serde_json::from_str::<serde_json::Number>(text.trim()) {
        Ok(number) if !text.trim().is_empty() => Value::Number(number),
        _ => Value::String(text.to_string()),
    }
}

/// The JSON value of `blynk set`'s arguments: one part, or an array of several.
pub fn value_args(texts: &[String]) -> Value {
    match texts {
        [single] => value_arg(single),
        several => Value::Array(several.iter().map(|text| value_arg(text)).collect()),
    }
}

async fn set(client: &Client, args: &SetArgs, json: bool) -> Result<ExitCode> {
    if args.wait > 30_000 {
        bail!("--wait is at most 30000 ms");
    }
    let value = value_args(&args.values);
    let path = format!(
        "{}/values/{}",
        device_path(&args.device)?,
        encode_component(&args.pin)
    );
    let body = json!({ "value": value, "wait_ms": args.wait });
    let reply = client
        .put(&path, &body, Duration::from_millis(args.wait))
        .await?;
    let status = reply["status"].as_str().unwrap_or("unknown");
    let code = if status == "expired" {
        ExitCode::from(EXIT_EXPIRED)
    } else {
        ExitCode::SUCCESS
    };
    if json {
        print_json(&reply);
        return Ok(code);
    }
    let pin = args.pin.to_ascii_uppercase();
    let shown = output::value(&value);
    let version = cell(&reply["version"]);
    let online = reply["device_online"].as_bool() == Some(true);
    let command = reply["command"].as_bool() == Some(true);
    let device = &args.device;
    let text = match status {
        "delivered" => format!("{pin} = {shown}: delivered to {device} (version {version})"),
        "pending" if !online && command => format!(
            "{pin} = {shown}: pending: {device} is offline; the command is delivered if it \
             connects within the datastream's ttl (version {version})"
        ),
        "pending" if !online => format!(
            "{pin} = {shown}: stored, pending: {device} is offline and gets it when it \
             reconnects (version {version})"
        ),
        "pending" => format!(
            "{pin} = {shown}: stored, pending: {device} did not confirm it within {} ms \
             (version {version})",
            args.wait
        ),
        "expired" => format!(
            "{pin} = {shown}: expired: the command's ttl passed before {device} connected; \
             it was not delivered"
        ),
        "superseded" => format!(
            "{pin} = {shown}: superseded: {device} wrote {pin} itself before receiving it \
             (version {version})"
        ),
        other => format!("{pin} = {shown}: {other} (version {version})"),
    };
    outln!("{text}");
    Ok(code)
}

/// "0..255", "..10", or "" for a datastream's range.
fn range(stream: &Value) -> String {
    match (&stream["min"], &stream["max"]) {
        (Value::Null, Value::Null) => String::new(),
        (min, max) => {
            // Bounds are doubles on the wire; whole ones read better without ".0".
            let bound = |v: &Value| match v.as_f64() {
                Some(number) if number.fract() == 0.0 && number.abs() < 1e15 => {
                    format!("{}", number as i64)
                }
                Some(_) => v.to_string(),
                None => String::new(),
            };
            format!("{}..{}", bound(min), bound(max))
        }
    }
}

/// "sync", "command, ttl 30 s", ...
fn flags(stream: &Value) -> String {
    let mut flags = Vec::new();
    if stream["sync"].as_bool() == Some(true) {
        flags.push("sync".to_string());
    }
    if stream["kind"].as_str() == Some("command") {
        match stream["ttl"].as_u64() {
            Some(ttl) => flags.push(format!("command, ttl {ttl} s")),
            None => flags.push("command".to_string()),
        }
    }
    flags.join(", ")
}

/// The rows of a datastream table.
fn datastream_rows(streams: &[Value]) -> Vec<Vec<String>> {
    streams
        .iter()
        .map(|stream| {
            vec![
                cell(&stream["pin"]),
                cell(&stream["name"]),
                cell(&stream["type"]),
                range(stream),
                if stream["default"].is_null() {
                    String::new()
                } else {
                    output::value(&stream["default"])
                },
                flags(stream),
            ]
        })
        .collect()
}

const DATASTREAM_HEADER: [&str; 6] = ["PIN", "NAME", "TYPE", "RANGE", "DEFAULT", "FLAGS"];

fn indent(text: &str) -> String {
    text.lines()
        .map(|line| format!("  {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

async fn templates(client: &Client, json: bool) -> Result<ExitCode> {
    let list = client.get("/api/templates").await?;
    if json {
        print_json(&list);
        return Ok(ExitCode::SUCCESS);
    }
    let templates = list.as_array().cloned().unwrap_or_default();
    if templates.is_empty() {
        outln!("no templates");
    }
    for (index, template) in templates.iter().enumerate() {
        if index > 0 {
            outln!();
        }
        outln!("{} (id {})", cell(&template["name"]), cell(&template["id"]));
        let streams = template["datastreams"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if streams.is_empty() {
            outln!("  no datastreams");
        } else {
            outln!(
                "{}",
                indent(&table(&DATASTREAM_HEADER, &datastream_rows(&streams)))
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn device_add(client: &Client, template: &str, name: &str, json: bool) -> Result<ExitCode> {
    if name.trim().is_empty() {
        bail!("the device name is empty");
    }
    let device = client
        .post(
            "/api/devices",
            &json!({ "name": name, "template": template }),
        )
        .await?;
    if json {
        print_json(&device);
    } else {
        outln!(
            "created {} (id {}, template {})",
            cell(&device["name"]),
            cell(&device["id"]),
            cell(&device["template"])
        );
        outln!("token: {}", cell(&device["token"]));
    }
    Ok(ExitCode::SUCCESS)
}

async fn device_show(client: &Client, device: &str, json: bool) -> Result<ExitCode> {
    let details = client.get(&device_path(device)?).await?;
    if json {
        print_json(&details);
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "{} (id {}, template {})",
        cell(&details["name"]),
        cell(&details["id"]),
        cell(&details["template"])
    );
    outln!("status:    {}", presence(&details));
    outln!("last seen: {}", last_seen(&details));
    outln!("token:     {}", cell(&details["token"]));
    outln!("version:   {}", cell(&details["version"]));
    let streams = details["datastreams"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    outln!();
    if streams.is_empty() {
        outln!("no datastreams");
    } else {
        outln!("datastreams:");
        outln!(
            "{}",
            indent(&table(&DATASTREAM_HEADER, &datastream_rows(&streams)))
        );
    }
    outln!();
    outln!("values:");
    let mut values = String::new();
    {
        use std::fmt::Write;
        for (pin, stored) in details["values"].as_object().into_iter().flatten() {
            let _ = writeln!(
                values,
                "{pin} = {}  ({})",
                output::value(&stored["value"]),
                provenance(stored)
            );
        }
    }
    if values.is_empty() {
        outln!("  none yet");
    } else {
        outln!("{}", indent(values.trim_end()));
    }
    if let Some(properties) = details["properties"].as_array().filter(|p| !p.is_empty()) {
        outln!();
        outln!("properties:");
        for property in properties {
            outln!(
                "  {} {} = {}",
                cell(&property["pin"]),
                cell(&property["name"]),
                output::value(&property["value"])
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn device_delete(client: &Client, device: &str, json: bool) -> Result<ExitCode> {
    client.delete(&device_path(device)?).await?;
    if json {
        print_json(&json!({ "deleted": device }));
    } else {
        outln!("deleted {device}");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_looking_arguments_are_numbers() {
        assert_eq!(value_arg("5"), json!(5));
        assert_eq!(value_arg("-5"), json!(-5));
        assert_eq!(value_arg("2.5"), json!(2.5));
        assert_eq!(value_arg("1e3"), json!(1000.0));
        assert_eq!(value_arg("auto"), json!("auto"));
        assert_eq!(value_arg("007"), json!("007"));
        assert_eq!(value_arg("nan"), json!("nan"));
        assert_eq!(value_arg("inf"), json!("inf"));
        assert_eq!(value_arg(""), json!(""));
        assert_eq!(value_arg("1e999"), json!("1e999"));
        assert_eq!(
            value_args(&["1".into(), "2.5".into(), "abc".into()]),
            json!([1, 2.5, "abc"])
        );
    }
}
