"""``GET /metrics`` of a real relay, scraped over HTTP and parsed with prometheus-client's
own text parser: the counters move for a real publish, delivery, ack, nak and refusal;
two relays in one process count apart; ``--metrics-listen`` moves the endpoint off the
main port; JSON log lines carry the request id and no secret.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from relay_support import (  # noqa: F401  (fixtures: alice, relay_config)
    SOON,
    alice_fixture,
    edge_link,
    item_id,
    relay_config_fixture,
    send_drafts,
)
from tests_support import NatsServer, free_port, mailslot, wait_until

from relay.config import RelayConfig
from relay.server import RelayServer
from shared.frames import Ack, Nak
from shared.host.logs import JsonFormatter

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(url: str) -> Samples:
    async with httpx.AsyncClient(base_url=url) as client:
        response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every label set that includes ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


async def test_counters_move_for_publish_delivery_ack_nak_and_refusal(relay, alice):
    before = await scrape(relay.url)
    assert value(before, "mailslot_relay_interrupts_accepted_total", account="acme") == 0
    ids = await send_drafts(relay, alice, 3)
    async with httpx.AsyncClient(base_url=relay.url) as client:
        refused = await client.post("/v1/interrupts", json={"to": alice.id, "type": "x"},
                                    headers={"Authorization": "Bearer msp_not_a_token"})
    assert refused.status_code == 401, refused.text
    code = refused.json()["error"]

    after = await scrape(relay.url)
    assert value(after, "mailslot_relay_interrupts_accepted_total", account="acme") == 3
    assert value(after, "mailslot_relay_http_requests_total", route="/v1/interrupts",
                 method="POST", status="202", code="") == 3
    assert value(after, "mailslot_relay_http_requests_total", route="/v1/interrupts",
                 method="POST", status="401", code=code) == 1
    assert value(after, "mailslot_relay_publish_seconds_count") == 3
    assert value(after, "mailslot_relay_http_request_seconds_count",
                 route="/v1/interrupts") == 4
    # The enrollment in the fixture was counted under its template, not its raw path.
    assert value(after, "mailslot_relay_http_requests_total", route="/v1/enroll",
                 method="POST", status="201", code="") == 1

    async with edge_link(relay, alice, credit=3) as link:
        connected = await scrape(relay.url)
        assert value(connected, "mailslot_relay_connected_edges") == 1
        assert value(connected, "mailslot_relay_jetstream_consumers") == 3  # one per priority
        items = await link.items(3)
        assert [item_id(i) for i in items] == ids
        await link.send(Nak(id=ids[0]))
        await link.credit(1)
        again = await link.items(1)
        assert item_id(again[0]) == ids[0]
        await link.send(Ack(ids=ids))

        async def settled() -> bool:
            s = await scrape(relay.url)
            return value(s, "mailslot_relay_acks_total") == 3

        await wait_until(settled, SOON, "acks counted")
        done = await scrape(relay.url)
        assert value(done, "mailslot_relay_deliveries_total", priority="next") == 4
        assert value(done, "mailslot_relay_redeliveries_total") == 1
        assert value(done, "mailslot_relay_naks_total") == 1

    async def disconnected() -> bool:
        return value(await scrape(relay.url), "mailslot_relay_connected_edges") == 0

    await wait_until(disconnected, SOON, "edge disconnect counted")


async def test_unmatched_paths_share_one_label(relay):
    async with httpx.AsyncClient(base_url=relay.url) as client:
        for path in ("/nope", "/v1/nope/abc", "/v1/identities/x/y/z"):
            assert (await client.get(path)).status_code == 404
    samples = await scrape(relay.url)
    assert value(samples, "mailslot_relay_http_requests_total", route="unmatched",
                 method="GET", status="404", code="not_found") == 3
    assert not any("/nope" in dict(ls).get("route", "") for _, ls in samples)


async def test_two_relays_in_one_process_count_apart(relay, relay_config, alice, tmp_path):
    other = RelayServer(relay_config.model_copy(update={"data_dir": tmp_path / "relay2"}))
    await other.start()
    try:
        await send_drafts(relay, alice, 2)
        assert value(await scrape(relay.url),
                     "mailslot_relay_interrupts_accepted_total", account="acme") == 2
        assert value(await scrape(other.url),
                     "mailslot_relay_interrupts_accepted_total", account="acme") == 0
    finally:
        await other.stop()


async def test_nats_reconnect_is_counted(relay, nats_server: NatsServer, alice):
    nats_server.restart()

    async def reconnected() -> bool:
        return value(await scrape(relay.url), "mailslot_relay_nats_reconnects_total") >= 1

    await wait_until(reconnected, 30, "reconnect counted")


async def test_metrics_listen_moves_metrics_off_the_main_port(
    relay_config: RelayConfig, tmp_path: Path
):
    config = relay_config.model_copy(update={"metrics_listen": "127.0.0.1:0",
                                             "data_dir": tmp_path / "relay-m"})
    server = RelayServer(config)
    await server.start()
    try:
        assert server.metrics_url and server.metrics_url != server.url
        async with httpx.AsyncClient() as client:
            main = await client.get(server.url + "/metrics")
            assert main.status_code == 404
            assert main.json()["error"] == "not_found"
            assert (await client.get(server.url + "/healthz")).status_code == 200
            elsewhere = await client.get(server.metrics_url + "/healthz")
            assert elsewhere.status_code == 404
        samples = await scrape(server.metrics_url)
        # The refused scrape on the main port was counted like any other request.
        assert value(samples, "mailslot_relay_http_requests_total", route="/metrics",
                     method="GET", status="404", code="not_found") == 1
    finally:
        await server.stop()
    assert server.metrics_url  # kept for the report; the socket itself is closed
    async with httpx.AsyncClient() as client:
        try:
            await client.get(server.metrics_url + "/metrics", timeout=2)
        except httpx.TransportError:
            pass
        else:
            raise AssertionError("the metrics address still answers after stop")


async def test_json_log_lines_carry_the_request_id_and_no_secret(relay, alice):
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("mailslot.relay")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        async with httpx.AsyncClient(base_url=relay.url) as client:
            # The access line of each request is written inside it (DEBUG).
            response = await client.post(
                "/v1/interrupts", json={"to": alice.id, "type": "t"},
                headers={"Authorization": f"Bearer {alice.token}", "X-Request-Id": "req-42"})
            assert response.status_code == 202
            assert response.headers["x-request-id"] == "req-42"
        logging.getLogger("mailslot.relay.test").info(
            "outside a request, token %s and nats://secret@host", alice.token)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    lines = [json.loads(line) for line in buffer.getvalue().splitlines()]
    assert lines, "nothing was logged"
    for line in lines:
        assert {"ts", "level", "logger", "message"} <= set(line)
        assert alice.token not in json.dumps(line)
    outside = [line for line in lines if line["logger"] == "mailslot.relay.test"]
    assert outside and "request_id" not in outside[0]
    assert "nats://[redacted]@host" in outside[0]["message"]
    inside = [line for line in lines if line.get("request_id") == "req-42"]
    assert [line["logger"] for line in inside] == ["mailslot.relay.access"], lines
    assert inside[0]["message"].startswith("POST /v1/interrupts 202 -")


async def test_a_real_relay_process_logs_json_with_request_ids_and_no_secret(
    nats_server: NatsServer, tmp_path: Path
):
    """``mailslot relay serve --log-format json --metrics-listen``: every stderr line is a
    JSON object; the access line of a request carries its id; a token sent is never in
    the log; /metrics answers on its own address and 404 on the main port."""
    port, metrics_port = free_port(), free_port()
    url, metrics_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}"
    log_file = tmp_path / "relay.log"
    with log_file.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "edge", "relay", "serve", "--listen", f"127.0.0.1:{port}",
             "--metrics-listen", f"127.0.0.1:{metrics_port}", "--log-format", "json",
             "--nats", nats_server.url, "--data-dir", str(tmp_path / "relay")],
            env={**os.environ, "MAILSLOT_LOG": "DEBUG"}, stdout=subprocess.DEVNULL,
            stderr=log,
        )
    secret = "msp_" + "s3cr3t" * 6
    try:
        async def ready() -> bool:
            async with httpx.AsyncClient() as client:
                try:
                    return (await client.get(url + "/readyz")).status_code == 200
                except httpx.HTTPError:
                    return False

        await wait_until(ready, 30, "relay process ready")
        async with httpx.AsyncClient() as client:
            refused = await client.post(
                url + "/v1/interrupts", json={"to": "x", "type": "t"},
                headers={"Authorization": f"Bearer {secret}", "X-Request-Id": "probe-7"})
            assert refused.status_code == 401
            assert (await client.get(url + "/metrics")).status_code == 404
        samples = await scrape(metrics_url)
        assert value(samples, "mailslot_relay_http_requests_total", route="/v1/interrupts",
                     method="POST", status="401", code=refused.json()["error"]) == 1

        def access_line() -> bool:
            return "probe-7" in log_file.read_text()

        await wait_until(access_line, SOON, "access line written")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(20)
    text = log_file.read_text()
    assert secret not in text and "s3cr3t" not in text
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert all({"ts", "level", "logger", "message"} <= set(line) for line in lines)
    probe = [line for line in lines if line.get("request_id") == "probe-7"]
    assert [line["logger"] for line in probe] == ["mailslot.relay.access"], probe
    assert probe[0]["message"].startswith("POST /v1/interrupts 401 invalid_token")


def test_a_bad_metrics_listen_is_a_usage_error(tmp_path: Path):
    result = mailslot(tmp_path, "relay", "serve", "--metrics-listen", "nowhere")
    assert result.returncode == 2, result.stderr
    assert "--metrics-listen" in result.stderr
    result = mailslot(tmp_path, "relay", "serve", "--log-format", "xml")
    assert result.returncode == 2, result.stderr
    assert not (tmp_path / "relay").exists()  # nothing started, nothing written
