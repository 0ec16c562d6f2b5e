"""The physical floor of the hot path on this machine: the load bench's load, a minimal consumer.

``bench_hot_path_load.py`` drives ``risk-monitor serve``; this bench keeps everything else of it
(the same publisher, 200 instruments, rate, price path and ground truth, the Binance REST
simulator, the Slack simulator in its own process, a fresh PostgreSQL database, the same scoring
and table) and puts in the service's place the least a correct design has to do per tick, in one
process of its own:

- one websocket client (``websockets``) subscribed to the 200 ``@miniTicker`` streams, each raw
  Binance-style message parsed with orjson;
- a threshold decision per tick (the position's notional against the limit, a status change
  when the instrument's side of the level changes);
- for a status change, one durable PostgreSQL transaction (psycopg2, ``synchronous_commit`` on):
  an outbox-like row and an audit-like row (hash-chained to the previous one), then COMMIT;
- after the commit, a ``chat.postMessage`` to the Slack simulator with the real slack-sdk client
  the service uses (``KeepAliveWebClient``), carrying the same metadata the scoring reads.

With ``--post-thread`` the post is handed to a thread (the decision loop goes on with the next
tick while it is sent); without it the loop posts inline. No evaluation of other limits, no audit
seals or lineage, no compliance history, no metrics: the figures are what the machine, the
interpreter, PostgreSQL's fsync and the Slack round trip cost at the least, i.e. how far the
service is from the floor, not a design to ship. Reported with the load bench's columns (tick →
decision is the outbox row's ``detected_at`` minus the crossing tick's send time; CPU, CPU per
tick received and RSS are the consumer's; the publisher's CPU is its thread's; ``--verbose``
adds the consumer's INSERTs + COMMIT and post round trips). Run from the repository root::

    python bench/bench_hot_path_floor.py --rates 1000 --runs 3 --seconds 20 --drain 5 [--post-thread]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: the consumer's tables: what a status change durably records before it is paged
SCHEMA = """
CREATE TABLE IF NOT EXISTS floor_outbox (
    id bigserial PRIMARY KEY, idempotency_key text NOT NULL UNIQUE, scope text NOT NULL,
    status text NOT NULL, detected_at timestamptz NOT NULL, payload jsonb NOT NULL);
CREATE TABLE IF NOT EXISTS floor_audit (
    seq bigserial PRIMARY KEY, at timestamptz NOT NULL, payload jsonb NOT NULL,
    prev_hash text NOT NULL, hash text NOT NULL);
"""
CHANNEL = "#risk-alerts"


class Consumer:
    """The minimal system under test (module doc); runs in its own process."""

    def __init__(self, ws_url: str, dsn: str, slack_base: str, token: str,
                 post_thread: bool) -> None:
        import psycopg2

        from risk_monitor.adapters.slack_transport import KeepAliveWebClient

        self.ws_url = ws_url
        self.conn = psycopg2.connect(dsn)
        with self.conn.cursor() as cur:
            cur.execute(SCHEMA)
            cur.execute("SET synchronous_commit = on")
        self.conn.commit()
        self.slack = KeepAliveWebClient(token=token, base_url=slack_base, timeout=10)
        self.slack.auth_test()  # the keep-alive connection is open before the first alert
        self.above: dict[str, bool] = {}  # the publisher starts every instrument below its level
        self.ticks = 0
        self.commit_s: list[float] = []  # INSERTs + COMMIT per status change
        self.post_s: list[float] = []  # chat.postMessage round trip per status change
        self.prev_hash = "0" * 64
        self.posts: queue.SimpleQueue[dict[str, Any]] | None = None
        if post_thread:
            self.posts = queue.SimpleQueue()
            threading.Thread(target=self._post_loop, daemon=True).start()

    def _post_loop(self) -> None:
        assert self.posts is not None
        while True:
            self._post(self.posts.get())

    def _post(self, payload: dict[str, Any]) -> None:
        started = time.perf_counter()
        self.slack.chat_postMessage(
            channel=CHANNEL, text=f"{payload['status']} {payload['scope']}",
            metadata={"event_type": "risk_limit_status", "event_payload": payload})
        self.post_s.append(time.perf_counter() - started)

    def _change(self, instrument: str, above: bool, notional: float) -> None:
        """Record the status change durably, then page it (never before the commit)."""
        from psycopg2.extras import Json

        detected_at = time.time()
        status = "BREACH" if above else "OK"
        scope = f"venue:binance|instrument:{instrument}"
        payload = {"limit_id": LIMIT_ID, "scope": scope, "status": status,
                   "value": notional, "breach": BREACH, "detected_at": detected_at}
        body = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256((self.prev_hash + body).encode()).hexdigest()
        at = datetime.fromtimestamp(detected_at, UTC)
        started = time.perf_counter()
        with self.conn.cursor() as cur:
            cur.execute("INSERT INTO floor_outbox (idempotency_key, scope, status, detected_at,"
                        " payload) VALUES (%s, %s, %s, %s, %s)",
                        (f"{scope}|{status}|{detected_at:.6f}", scope, status, at, Json(payload)))
            cur.execute("INSERT INTO floor_audit (at, payload, prev_hash, hash) "
                        "VALUES (%s, %s, %s, %s)", (at, body, self.prev_hash, digest))
        self.conn.commit()
        self.commit_s.append(time.perf_counter() - started)
        self.prev_hash = digest
        if self.posts is not None:
            self.posts.put(payload)
        else:
            self._post(payload)

    async def run(self) -> None:
        import orjson
        import websockets

        async with websockets.connect(self.ws_url, max_size=None, ping_interval=None) as ws:
            streams = [f"{n.lower()}usdt@miniTicker" for n in NAMES]
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": streams, "id": 1}))
            print("ready", flush=True)
            async for raw in ws:
                message = orjson.loads(raw)
                if message.get("e") != "24hrMiniTicker":
                    continue  # the subscription's ack
                self.ticks += 1
                symbol = message["s"]
                notional = CONTRACTS * float(message["c"])
                above = notional >= BREACH
                if above != self.above.get(symbol, False):
                    self.above[symbol] = above
                    self._change(f"{symbol[:-4]}/USDT:USDT", above, notional)

    def answer_stats(self) -> None:
        """Each line on stdin asks for the ticks received so far and the commit and post
        times; EOF (the bench left) ends us."""
        for _ in sys.stdin:
            print(json.dumps({"ticks": self.ticks, "commit_s": self.commit_s,
                              "post_s": self.post_s}), flush=True)
        os._exit(0)


# the load's constants, without importing the load bench (and its imports) into the consumer
N, CONTRACTS, BREACH, LIMIT_ID = 200, 10_000, 1_000_000.0, "perp_notional"
NAMES = [f"ZZ{chr(65 + i // 26)}{chr(65 + i % 26)}" for i in range(N)]


def consume(args: argparse.Namespace) -> None:
    consumer = Consumer(args.consume, args.dsn, args.slack_base,
                        os.environ[args.token_env], args.post_thread)
    threading.Thread(target=consumer.answer_stats, daemon=True).start()
    asyncio.run(consumer.run())


def one_run(rate: float, seconds: float, drain_s: float, redis_url: str,
            post_thread: bool) -> dict[str, Any]:
    import bench_hot_path_load as load
    import hot_path_score as scoring
    import psycopg2

    same = (load.N, load.CONTRACTS, load.BREACH, load.LIMIT_ID, load.names())
    assert same == (N, CONTRACTS, BREACH, LIMIT_ID, NAMES), "the floor's load drifted"
    with load.rig(rate, redis_url) as r:
        assert r.sink is not None
        dsn = r.database_url.replace("+psycopg2", "")
        command = [sys.executable, __file__, "--consume", r.publisher.url, "--dsn", dsn,
                   "--slack-base", r.sink.api_base, "--token-env", load.SLACK_TOKEN_ENV]
        consumer = subprocess.Popen(
            command + (["--post-thread"] if post_thread else []), cwd=ROOT,
            env={**os.environ, load.SLACK_TOKEN_ENV: r.sink.token},
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert consumer.stdin is not None and consumer.stdout is not None
        stdin, stdout = consumer.stdin, consumer.stdout

        def stats() -> dict[str, Any]:
            stdin.write("\n")
            stdin.flush()
            return dict(json.loads(stdout.readline()))

        try:
            if stdout.readline().strip() != "ready":
                raise RuntimeError("the floor consumer did not start")
            time.sleep(3.0)  # the first status wave (half the desk above its level) settles
            stats0 = stats()
            window = load.measure(r.publisher, consumer.pid, seconds)
            stats1 = stats()
            time.sleep(drain_s)
            r.publisher.stop()
            slack = r.slack_messages()
            with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
                cur.execute("SELECT scope, status, detected_at FROM floor_outbox")
                fetched = cur.fetchall()
            conn.close()
        finally:
            stdin.close()
            try:
                consumer.wait(10)
            except subprocess.TimeoutExpired:
                consumer.kill()
                consumer.wait()
    rows = [{"fingerprint": scoring.alert_fingerprint(LIMIT_ID, scope), "alert_status": status,
             "detected_at": at} for scope, status, at in fetched]
    intervals = [(scope, status, at.timestamp()) for scope, status, at in fetched]
    cpu_s = window.cpu_s
    return {"rate": rate, "published": window.published,
            "cpu_pct": 100.0 * cpu_s / (window.end - window.start), "rss_mb": window.rss_peak,
            "cpu_us_per_tick": 1e6 * cpu_s / max(1, stats1["ticks"] - stats0["ticks"]),
            "stages": {step: stats1[step][len(stats0[step]):] for step in ("commit_s", "post_s")},
            "publisher_cpu_pct": window.publisher_cpu_pct,
            **scoring.score(window.truth, slack, rows, intervals)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[1000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--drain", type=float, default=5.0)
    parser.add_argument("--redis-url", default=None, help="the load bench's Redis (its REST "
                        "simulator's keys are cleaned up there)")
    parser.add_argument("--verbose", action="store_true",
                        help="print the consumer's commit and Slack post times")
    parser.add_argument("--post-thread", action="store_true",
                        help="post to Slack from a thread, not inline in the decision loop")
    # the consumer's own process (started by the bench, not by hand)
    parser.add_argument("--consume", metavar="WS_URL", help=argparse.SUPPRESS)
    parser.add_argument("--dsn", help=argparse.SUPPRESS)
    parser.add_argument("--slack-base", help=argparse.SUPPRESS)
    parser.add_argument("--token-env", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.consume:
        consume(args)
        return
    import bench_hot_path_load as load
    import hot_path_score as scoring

    redis_url = args.redis_url or load.REDIS_TEST_URL
    print(f"load average before: {os.getloadavg()}, {os.cpu_count()} cores; floor consumer, "
          f"durable commit, Slack post {'from a thread' if args.post_thread else 'inline'}, "
          "Slack simulator in its own process", flush=True)
    print(scoring.HEADER)
    print(scoring.RULE)
    for rate in args.rates:
        for run in range(1, args.runs + 1):
            r = one_run(rate, args.seconds, args.drain, redis_url, args.post_thread)
            print(scoring.table_row(rate, run, r), flush=True)
            if args.verbose:
                for step, times in r["stages"].items():
                    ms = [t * 1000 for t in times]
                    print(f"  {step[:-2]}: n={len(ms)} mean={sum(ms) / max(1, len(ms)):.2f} ms "
                          f"p50 {scoring.pct(ms, .5):.2f} ms p99 {scoring.pct(ms, .99):.2f} ms",
                          flush=True)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
