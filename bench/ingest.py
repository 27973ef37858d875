"""Signed ingest throughput: the full gateway path against a bare aiohttp handler, same run.

Each server runs pinned to core 0 and wrk to core 1 (when taskset exists), 32 connections,
POSTing a signed ~3 KB Missive payload. "gateway ingest" verifies the signature, parses,
dedupes, matches two routes, renders three requests, logs the event and commits it and its
deliveries durably before each 200 (its worker is off: this measures ingest alone).
"gateway, 1 route" does the least a durable gateway does: one field rule, one small
request, logging at warning.

    .venv/bin/python bench/ingest.py [--seconds 10] [--connections 32]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from common import FIXTURES, PYTHON, ROOT, free_port, pinned, running, wrk, wrk_post_script

from gateway.ingest.signature import sign

SECRET = "bench-secret"
CONFIG = """\
storage: {path: gateway.db}
sources:
  missive:
    secrets: ["bench-secret"]
    dedupe_window: 0s        # wrk repeats one body; every request must be routed and stored
destinations:
  slack: {type: slack, url: "http://127.0.0.1:9/slack", rate_limit: 1/s}
  crm: {url: "http://127.0.0.1:9/crm", headers: {Authorization: "Bearer bench-token"}}
routes:
  - name: vip
    when:
      all:
        - {path: $.rule.type, in: [incoming_email, label_change]}
        - {path: "$.conversation.shared_labels[*].name", equals: VIP}
        - not: {path: $.message.from_field.address, matches: '@support\\.example\\.com$'}
    send:
      - to: slack
        body: {text: "VIP mail from {{ message.from_field.name }}: {{ conversation.latest_message_subject }}"}
  - name: crm-note
    when: {path: $.rule.type, equals: incoming_email}
    send:
      - to: crm
        body:
          email: "{{ message.from_field.address }}"
          preview: "{{ message.preview }}"
          at: "{{ message.delivered_at | datetime }}"
          labels: "{{ conversation.shared_labels | map(attribute='name') | list }}"
      - to: slack
        body: {text: "{{ conversation.web_url }}"}
"""


# The least a durable gateway does: signature, parse, one field rule, one small rendered request, commit.
MINIMAL_CONFIG = """\
storage: {path: minimal.db}
sources:
  missive: {secrets: ["bench-secret"], dedupe_window: 0s}
destinations:
  crm: {url: "http://127.0.0.1:9/crm"}
routes:
  - name: incoming
    when: {path: $.rule.type, equals: incoming_email}
    send: [{to: crm, body: {id: "{{ conversation.id }}"}}]
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    body = (FIXTURES / "incoming-email-with-labels.json").read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "config.yaml").write_text(CONFIG)
        (work / "minimal.yaml").write_text(MINIMAL_CONFIG)
        lua = wrk_post_script(work / "post.lua", body, {
            "Content-Type": "application/json", "X-Hook-Signature": sign(SECRET.encode(), body),
        })
        results = {}
        for name, command in {
            "bare aiohttp handler": [PYTHON, str(ROOT / "bench" / "bare_server.py")],
            "gateway, 1 route": [PYTHON, "-m", "gateway", "serve", "-c", str(work / "minimal.yaml"),
                                 "--no-worker", "--log-level", "warning", "--port"],
            "gateway ingest": [PYTHON, "-m", "gateway", "serve", "-c", str(work / "config.yaml"),
                               "--no-worker", "--port"],
        }.items():
            port = free_port()
            health = f"http://127.0.0.1:{port}/healthz"
            with running(pinned(0, [*command, str(port)]), health):
                url = f"http://127.0.0.1:{port}/hooks/missive"
                wrk(url, lua, 2, args.connections, core=1)  # warm-up
                results[name] = wrk(url, lua, args.seconds, args.connections, core=1)
    base = results["bare aiohttp handler"]
    print(f"{'server':<24}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'non-2xx':>10}")
    for name, result in results.items():
        print(f"{name:<24}{result.requests_per_s:>10.0f}{result.p50_ms:>10.2f}{result.p99_ms:>10.2f}"
              f"{result.non_2xx:>10}")
    for name in ("gateway, 1 route", "gateway ingest"):
        print(f"ratio {name} / bare: {results[name].requests_per_s / base.requests_per_s:.2f}")


if __name__ == "__main__":
    main()
