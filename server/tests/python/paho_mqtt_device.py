"""A device on `paho-mqtt` 2.1.0 (PyPI) over the server's MQTT device API, driven by the
conformance runner like the classic Python drivers.

Usage: paho_mqtt_device.py HOST PORT TOKEN [KEEPALIVE]. Prints one JSON line per event
({"event": "connected"}, {"event": "write", "pin": "V0", "value": ["1"]},
{"event": "sync_complete", "count": 2}) and takes one JSON command per stdin line:
virtual_write {pin, value: [..]}, sync_virtual {pins: [..]}, sync_all, quit.

Like a real MQTT firmware, it knows its template's datastream names (the demo light's): it
publishes `ds/<name>`, subscribes to `downlink/#`, asks `get/ds/all` or `get/ds`, and reads the
end of a sync on `downlink/get/ds/done`. paho reconnects by itself after a lost connection.
"""

import driver  # first: keeps anything the library prints off stdout
import paho.mqtt.client as mqtt

NAMES = {"Power": 0, "LED": 1, "Uptime": 2, "Mode": 3, "Identify": 4}
PINS = {pin: name for name, pin in NAMES.items()}

host, port, token, keepalive = driver.arguments()
client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="conformance-light")
client.username_pw_set("device", token)
client.reconnect_delay_set(min_delay=1, max_delay=2)


def pin_of(name):
    return "V%d" % NAMES[name] if name in NAMES else name


def topic_of(pin):
    return PINS.get(int(pin), "V%d" % int(pin))


def on_connect(client, _userdata, _flags, reason, _properties):
    if reason.is_failure:
        driver.log("connection refused:", reason)
        return
    client.subscribe("downlink/#", qos=1)
    driver.emit(event="connected")


def on_disconnect(_client, _userdata, _flags, reason, _properties):
    driver.emit(event="disconnected", reason=str(reason))


def on_message(_client, _userdata, message):
    payload = message.payload.decode("utf-8", "replace")
    if message.topic == "downlink/get/ds/done":
        driver.emit(event="sync_complete", count=int(payload or 0))
    elif message.topic.startswith("downlink/ds/"):
        name = message.topic[len("downlink/ds/"):]
        driver.emit(event="write", pin=pin_of(name), value=payload.split("\0"))
    elif message.topic == "downlink/error":
        driver.log("server error:", payload)


client.on_connect = on_connect
client.on_disconnect = on_disconnect
client.on_message = on_message
client.connect_async(host, port, keepalive=keepalive)
client.loop_start()

inbox = driver.commands()
while True:
    command = inbox.get()
    name = command["cmd"]
    if name == "virtual_write":
        payload = "\0".join(str(part) for part in command["value"])
        client.publish("ds/" + topic_of(command["pin"]), payload, qos=1)
    elif name == "sync_virtual":
        client.publish("get/ds", ",".join(topic_of(pin) for pin in command["pins"]), qos=1)
    elif name == "sync_all":
        client.publish("get/ds/all", "", qos=1)
    elif name == "quit":
        client.loop_stop()
        raise SystemExit(0)
    else:
        driver.emit(event="error", message="unknown command %r" % name)
