"""A device on `blynk-library-python` 0.2.0 (PyPI, module BlynkLib), driven by
server/tests/all/python_clients.rs.

Usage: blynk_library_python_device.py HOST PORT TOKEN [HEARTBEAT]. Prints one JSON line per
event ({"event": "connected"}, {"event": "write", "pin": "V0", "value": ["1"]}) and takes one
JSON command per stdin line: virtual_write {pin, value: [..]}, sync_virtual {pins: [..]},
sync_all, raw {command, parts: [..]} (any classic frame through the library's own `_send`),
quit. INTERNAL answers are printed as {"event": "internal", "parts": ["utc", "time", "..."]}:
the library hands them over as `int_<second part>` events, so the `utc` answers are listened to
by name. BlynkLib has no sync_all: it sends an empty HARDWARE_SYNC frame through the
library's own `_send`. The library connects and sends its login in the constructor.
"""

import driver  # first: keeps the library's prints (its logo at import) off stdout
import BlynkLib

host, port, token, heartbeat = driver.arguments()
blynk = BlynkLib.Blynk(token, server=host, port=port, heartbeat=heartbeat, log=driver.log)


@blynk.ON("connected")
def connected(**_timing):
    driver.emit(event="connected")


@blynk.ON("disconnected")
def disconnected():
    driver.emit(event="disconnected")


@blynk.ON("V*")
def written(pin, values):
    driver.emit(event="write", pin="V" + pin, value=values)


def utc_answer(what):
    def answer(values):
        driver.emit(event="internal", parts=["utc", what] + list(values))
    return answer


for what in ("time", "iso", "tz", "tz_name", "tz_rule", "dst_next"):
    blynk.ON("int_" + what)(utc_answer(what))

inbox = driver.commands()
while True:
    blynk.run()
    for command in driver.pending(inbox):
        name = command["cmd"]
        if name == "virtual_write":
            blynk.virtual_write(command["pin"], *command["value"])
        elif name == "sync_virtual":
            blynk.sync_virtual(*command["pins"])
        elif name == "sync_all":
            blynk._send(BlynkLib.MSG_HW_SYNC)
        elif name == "raw":
            blynk._send(command["command"], *command["parts"])
        elif name == "quit":
            raise SystemExit(0)
        else:
            driver.emit(event="error", message="unknown command %r" % name)
