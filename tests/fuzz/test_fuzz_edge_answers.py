"""Property: whatever a judge or a runtime answers, the edge turns it into something it
records, and never crashes.

- A judge may print any bytes and exit with any status: the answer is a ``Judgment``
  (a failure for anything but ``{"wake": bool, …}``) whose fields can be written to the
  activity log; run for real, through the real engine, the interrupt is woken or
  suppressed and the log still verifies.
- An exec runtime may print any bytes and exit with any status, and a webhook receiver
  may answer any status, reason, headers and body (or garbage that is not HTTP): the
  attempt is a ``ChannelResult`` with a known outcome, whole tokens, and a detail the log
  can record.

Real processes (``sh``), a real HTTP server on 127.0.0.1, real SQLite and a real log. The
pure parser gets the profile's examples; each real-process property is capped at a few
dozen (``tests/fuzz/conftest.py`` holds the profile)."""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ulid
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.delivery.exec import deliver_exec
from edge.delivery.outcome import ChannelResult
from edge.delivery.webhook import deliver_webhook
from edge.engine.decide import Engine
from edge.engine.judge import REASON_MAX_CHARS, TOKENS_MAX, Judgment, parse_answer
from edge.intents.model import ExecRoute, IntentSet, WebhookRoute
from edge.store.activity import ActivityLog, Event
from edge.store.activityline import canonical
from edge.store.deliveries import OUTCOMES
from edge.store.enginestate import EngineState
from edge.store.inbox import Accepted, Inbox
from shared.envelope import Envelope, Priority, Source
from shared.identity import Identity
from shared.signing import sign_envelope

#: Real processes (or deep documents) cost milliseconds each: a third of the profile's
#: examples (20 in ``ci``, hundreds in ``long``).
_REAL_EXAMPLES = max(10, settings().max_examples // 3)

PRODUCER, ME = Identity.generate(), Identity.generate()
#: A program that prints the file named by its first argument and exits with its second.
PRINTER = ["sh", "-c", 'cat "$0"; exit "$1"']

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=10,
)
#: JSON objects shaped like answers, with any field any value.
answer_docs = st.fixed_dictionaries({}, optional={
    "wake": json_values | st.booleans(), "reason": json_values | st.text(),
    "tokens": json_values | st.integers(), "outcome": json_values | st.sampled_from(OUTCOMES),
    "other": json_values,
})
#: Texts JSON reads that other code may choke on: lone surrogates, non-finite numbers,
#: huge numbers, nesting past the parser's depth.
tricky = st.sampled_from([
    b'{"wake": true, "reason": "\\ud800"}', b'{"wake": false, "reason": "\\udfff\\ud800x"}',
    b'{"wake": true, "tokens": NaN}', b'{"wake": true, "tokens": 1e400}',
    b'{"wake": true, "tokens": 100000000000000000000000000000}',
    b'{"wake": true, "reason": Infinity}', b'{"outcome": "ok", "tokens": -Infinity}',
    b'{"wake": true, "reason": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    b"[" * 100_000, b'{"wake": true, "reason": {"a": ' * 400 + b"1" + b"}" * 401,
    b"\xff\xfe{}", b'{"wake": true}\x00', b"", b"   \n", b"null", b'"wake"',
])
outputs = (
    st.binary(max_size=300) | tricky
    | answer_docs.map(lambda d: json.dumps(d).encode())
    | st.tuples(answer_docs, st.binary(max_size=8)).map(
        lambda t: json.dumps(t[0]).encode() + t[1])
)
exit_codes = st.sampled_from([0, 0, 0, 1, 2, 127, 255])


def _recordable(detail: dict[str, Any]) -> None:
    """What the log writes for this detail: canonical JSON, UTF-8."""
    canonical(detail).encode()


def _check_verdict(verdict: Judgment) -> None:
    assert verdict.wake in (True, False, None)
    assert (verdict.failure is None) == (verdict.wake is not None)
    assert type(verdict.tokens) is int and 0 <= verdict.tokens <= TOKENS_MAX
    assert isinstance(verdict.reason, str) and len(verdict.reason) <= REASON_MAX_CHARS
    _recordable(verdict.to_dict())


def _check_result(result: ChannelResult) -> None:
    assert result.outcome in OUTCOMES
    assert type(result.tokens) is int and result.tokens >= 0
    assert not (result.retry and result.outcome != "error")
    _recordable(result.detail)


# -- the judge --------------------------------------------------------------------------


@given(outputs)
def test_any_judge_answer_is_a_verdict_the_log_can_hold(out: bytes) -> None:
    _check_verdict(parse_answer(out, time.monotonic()))


def _signed(at: datetime) -> Accepted:
    envelope = Envelope(
        id=str(ulid.ULID()), to=ME.id, source=Source(kind="producer", name="ci"),
        type="ci.failed", priority=Priority.next, created_at=at, payload={"n": 1},
        signer=PRODUCER.id,
    )
    return Accepted(envelope, sign_envelope(envelope, PRODUCER), None, at)


async def _judge_for_real(folder: Path, answer: bytes, code: int, on_failure: str) -> None:
    (folder / "answer").write_bytes(answer)
    intents = IntentSet.model_validate({"intents": [{
        "id": "i", "match": {"type": "ci.*"},
        "judge": {"command": [*PRINTER, str(folder / "answer"), str(code)], "timeout": "10s",
                  "on_failure": on_failure},
    }]})
    state = EngineState.open(folder / "engine.sqlite3")
    inbox = Inbox.open(folder / "inbox.sqlite3")
    log = ActivityLog.open(folder / "activity.log", folder / "activity.key")
    try:
        engine = Engine(intents, state, log.append, inbox=inbox)
        inbox.commit_batch([_signed(datetime.now(UTC))])
        await engine.decide(inbox.after(state.cursor))
        engine.dispatch_due()  # what the daemon's timer does next: a ready wake is woken
        steps = [e.step for e in log.entries()]
        judged = [e for e in log.entries() if e.step == "judged"]
        assert len(judged) == 1, steps
        verdict = judged[0].detail
        woke = "woken" in steps or "delivered" in steps
        if verdict["failure"] is not None:
            assert woke == (on_failure == "wake"), (steps, verdict)
        else:
            assert woke == verdict["wake"], (steps, verdict)
        assert log.verify().ok
    finally:
        log.close()
        inbox.close()
        state.close()


@settings(max_examples=_REAL_EXAMPLES)
@given(outputs, exit_codes, st.sampled_from(["skip", "wake"]))
def test_a_real_judge_any_answer_any_exit_is_decided_and_recorded(
    answer: bytes, code: int, on_failure: str
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(_judge_for_real(Path(folder), answer, code, on_failure))


# -- exec runtimes ----------------------------------------------------------------------

WAKE = {"v": 1, "intent": "i", "text": "ci.failed", "interrupts": [], "allowed": []}


@settings(max_examples=_REAL_EXAMPLES)
@given(outputs, exit_codes)
def test_an_exec_runtime_any_stdout_any_exit_is_an_outcome(out: bytes, code: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "out").write_bytes(out)
        route = ExecRoute(kind="exec", argv=[*PRINTER, f"{folder}/out", str(code)],
                          timeout=10, cwd=folder)
        result = asyncio.run(deliver_exec(route, WAKE, {"MAILSLOT_DELIVERY": "d1"}))
        _check_result(result)
        assert (result.outcome == "error") >= (code != 0)  # a failed exit is never ok
        with ActivityLog.open(Path(folder) / "activity.log", Path(folder) / "key") as log:
            log.append([Event("outcome", datetime.now(UTC), "01X", "i", None, {
                "outcome": result.outcome, "tokens": result.tokens, **result.detail})])
            assert log.verify().ok


# -- webhook runtimes -------------------------------------------------------------------

statuses = st.integers(min_value=100, max_value=599) | st.sampled_from(
    [200, 201, 204, 301, 400, 401, 408, 410, 429, 500, 503])
header_values = st.binary(max_size=12).filter(lambda b: b"\r" not in b and b"\n" not in b)
responses = st.one_of(
    st.tuples(statuses, st.binary(max_size=20).filter(lambda b: b"\r" not in b and b"\n" not in b),
              st.lists(st.tuples(st.sampled_from([b"Retry-After", b"Content-Type", b"X-Any"]),
                                 st.one_of(header_values, st.sampled_from(
                                     [b"\xb2", b"12", b"-1", b"1e9", b"99999999999999999999"]))),
                       max_size=3),
              outputs).map(lambda t: (
                  b"HTTP/1.1 %d %s\r\n" % (t[0], t[1])
                  + b"".join(k + b": " + v + b"\r\n" for k, v in t[2])
                  + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(t[3]) + t[3])),
    st.binary(max_size=200),  # not HTTP at all
)


async def _post_to(response: bytes) -> ChannelResult:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        await reader.readexactly(length)
        writer.write(response)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        route = WebhookRoute(kind="webhook", url=f"http://127.0.0.1:{port}/hook", timeout=5,
                             bearer_env="HOOK_TOKEN")
        return await deliver_webhook(route, WAKE, "msg_1", {"HOOK_TOKEN": "tok-secret-1"})
    finally:
        server.close()
        await server.wait_closed()


@settings(max_examples=_REAL_EXAMPLES)
@given(responses)
def test_a_webhook_receiver_any_answer_is_an_outcome(response: bytes) -> None:
    result = asyncio.run(_post_to(response))
    _check_result(result)
    assert "tok-secret-1" not in canonical(result.detail)  # an echoed token is scrubbed
