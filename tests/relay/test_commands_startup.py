"""``mailslot relay serve`` stops on SIGTERM even while it is still starting: with a
``--nats`` that does not answer yet it keeps dialling, and a supervisor's stop (systemd,
``timeout``) must not be ignored meanwhile."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests_support import free_port, wait_until


async def test_sigterm_while_nats_is_unreachable_stops_the_relay(tmp_path: Path) -> None:
    nowhere = f"nats://127.0.0.1:{free_port()}"  # nothing listens there
    log_file = tmp_path / "relay.log"
    env = {**os.environ, "MAILSLOT_LOG": "INFO", "MAILSLOT_HOME": str(tmp_path / "home")}
    with log_file.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "edge", "relay", "serve", "--listen",
             f"127.0.0.1:{free_port()}", "--nats", nowhere],
            env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        await wait_until(lambda: "NATS error" in log_file.read_text(), 30,
                         "the relay to be dialling NATS")
        assert process.poll() is None  # still starting: NATS never answered
        process.send_signal(signal.SIGTERM)
        await wait_until(lambda: process.poll() is not None, 15, "the relay to stop")
        assert process.returncode == 0, log_file.read_text()
        assert "stopped while starting" in log_file.read_text()
        assert not (tmp_path / "home" / "relay" / "relay.json").exists()  # nothing left
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
