"""Shared plumbing of the device drivers run by server/tests/all/python_clients.rs.

Importing this module first moves `sys.stdout` to stderr, so that whatever the Blynk libraries
print (their logo, their logs) stays out of the protocol: `emit` alone writes to the real
stdout, one JSON object per line, flushed. `commands` reads JSON commands from stdin in a
thread, so the library's loop never blocks on stdin; end of input reads as `{"cmd": "quit"}`.
"""

import json
import queue
import sys
import threading

_out = sys.stdout
sys.stdout = sys.stderr


def emit(**event):
    """Writes one event line, e.g. emit(event="write", pin="V0", value=["1"])."""
    _out.write(json.dumps(event) + "\n")
    _out.flush()


def log(*parts):
    """The libraries' log callback: to stderr, which the test shows when it fails."""
    print(*parts, file=sys.stderr, flush=True)


def arguments():
    """host, port, token and heartbeat (seconds, 10 unless given) from the command line."""
    if len(sys.argv) not in (4, 5):
        sys.exit("usage: %s HOST PORT TOKEN [HEARTBEAT]" % sys.argv[0])
    heartbeat = int(sys.argv[4]) if len(sys.argv) == 5 else 10
    return sys.argv[1], int(sys.argv[2]), sys.argv[3], heartbeat


def commands():
    """A queue of the commands read from stdin."""
    inbox = queue.Queue()

    def read():
        for line in sys.stdin:
            if line.strip():
                inbox.put(json.loads(line))
        inbox.put({"cmd": "quit"})

    threading.Thread(target=read, daemon=True).start()
    return inbox


def pending(inbox):
    """The commands waiting in the queue, without blocking."""
    while True:
        try:
            yield inbox.get_nowait()
        except queue.Empty:
            return
