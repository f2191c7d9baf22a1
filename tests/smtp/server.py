"""A real SMTP server for the tests (aiosmtpd): every message it receives is written to
MAILDIR as NNNN.eml (as received) and NNNN.json (recipients, subject, and the decoded text and
HTML parts), in arrival order. Listens on 127.0.0.1:PORT; prints "ready" once it
accepts connections; stops on SIGTERM or when its stdin closes.

usage: python3 server.py PORT MAILDIR
"""

import email
import email.policy
import json
import os
import signal
import sys
import threading

from aiosmtpd.controller import Controller


class Store:
    def __init__(self, directory):
        self.directory = directory
        self.count = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.count += 1
            name = os.path.join(self.directory, f"{self.count:04d}.eml")
        raw = envelope.original_content or envelope.content
        with open(name, "wb") as f:
            f.write(raw)
        message = email.message_from_bytes(raw, policy=email.policy.default)
        part = lambda kind: (message.get_body((kind,)) or message).get_content()
        summary = {
            "from": envelope.mail_from,
            "to": envelope.rcpt_tos,
            "subject": str(message["subject"]),
            "content_type": message.get_content_type(),
            "text": part("plain"),
            "html": part("html"),
        }
        # Written under a temporary name, then renamed: readers never see half a message.
        target = name[: -len(".eml")] + ".json"
        with open(target + ".tmp", "w") as f:
            json.dump(summary, f)
        os.rename(target + ".tmp", target)
        return "250 OK"


def main():
    port, directory = int(sys.argv[1]), sys.argv[2]
    os.makedirs(directory, exist_ok=True)
    controller = Controller(Store(directory), hostname="127.0.0.1", port=port)
    controller.start()
    print("ready", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    stop.wait()
    controller.stop()


if __name__ == "__main__":
    main()
