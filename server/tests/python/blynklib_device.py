"""A device on `blynklib` 0.2.6 (PyPI), driven by server/tests/all/python_clients.rs.

Usage: blynklib_device.py HOST PORT TOKEN [HEARTBEAT]. Prints one JSON line per event
({"event": "connected"}, {"event": "write", "pin": "V0", "value": ["1"]}) and takes one JSON
command per stdin line: virtual_write {pin, value: [..]}, sync_virtual {pins: [..]}, sync_all,
raw {command, parts: [..]} (any classic frame through the library's own packing; a GROUP frame
with message id 0, as the C++ library may send it), quit. INTERNAL answers are printed as
{"event": "internal", "parts": ["utc", "time", "..."]}. blynklib has no sync_all: `virtual_sync()` without pins sends "vr" alone, so sync_all
sends an empty HARDWARE_SYNC frame through the library's own `send` and `_pack_msg`.
"""

import driver  # first: keeps the library's prints off stdout
import blynklib

host, port, token, heartbeat = driver.arguments()
blynk = blynklib.Blynk(token, server=host, port=port, heartbeat=heartbeat, log=driver.log)


@blynk.handle_event("connect")
def connected():
    driver.emit(event="connected")


@blynk.handle_event("disconnect")
def disconnected():
    driver.emit(event="disconnected")


@blynk.handle_event("write V*")
def written(pin, values):
    driver.emit(event="write", pin="V%d" % pin, value=values)


@blynk.handle_event("internal_utc")
def utc_answer(values):
    driver.emit(event="internal", parts=["utc"] + list(values))


@blynk.handle_event("internal_rtc")
def rtc_answer(values):
    driver.emit(event="internal", parts=["rtc", "time"] + list(values))


GROUP = 21
inbox = driver.commands()
while True:
    blynk.run()
    for command in driver.pending(inbox):
        name = command["cmd"]
        if name == "virtual_write":
            blynk.virtual_write(command["pin"], *command["value"])
        elif name == "sync_virtual":
            blynk.virtual_sync(*command["pins"])
        elif name == "sync_all":
            blynk.send(blynk._pack_msg(blynk.MSG_HW_SYNC))
        elif name == "raw":
            code = command["command"]
            if code == GROUP:
                blynk.send(blynk._pack_msg(code, *command["parts"], msg_id=0))
            else:
                blynk.send(blynk._pack_msg(code, *command["parts"]))
        elif name == "quit":
            raise SystemExit(0)
        else:
            driver.emit(event="error", message="unknown command %r" % name)
