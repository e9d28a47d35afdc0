#!/usr/bin/env python3
"""Calls the Fabraix API through `fabraix-sched proxy` with the standard library only.

The proxy holds the key and schedules every call under the quota; this program never sees the
key. Start the proxy, then run this:

    FABRAIX_API_KEY=... fabraix-sched proxy --listen 127.0.0.1:8788 &
    python3 examples/python_client.py --proxy http://127.0.0.1:8788 --events 3

When the proxy's queue is full it answers 429 at once with Retry-After (seconds); this client
waits that long and sends again. A proxy listening beyond loopback needs its client token:
set FABRAIX_PROXY_TOKEN and it is sent as `Authorization: Bearer ...`.
Prints one JSON line per answer; exits 1 if any call failed.
"""

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid


def call(proxy, path, body, priority=None, attempts=5):
    """POSTs `body` to the proxy's /v1`path`; returns (status, parsed JSON body)."""
    headers = {"content-type": "application/json"}
    if priority:
        headers["x-fabraix-priority"] = priority
    token = os.environ.get("FABRAIX_PROXY_TOKEN")
    if token:
        headers["authorization"] = "Bearer " + token
    data = json.dumps(body).encode()
    for _ in range(attempts):
        request = urllib.request.Request(proxy + "/v1" + path, data=data, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as e:
            answer = json.loads(e.read() or b"null")
            retry_after = e.headers.get("retry-after")
            if e.code == 429 and retry_after is not None:
                time.sleep(min(float(retry_after), 60.0))
                continue
            return e.code, answer
    return 429, {"error": {"message": "the proxy stayed full", "type": "rate_limit_error"}}


def event(trace_id, content):
    return {
        "event_type": "user",
        "trace_id": trace_id,
        "timestamp": time.time(),
        "content": json.dumps(content),
        "schema": "{}",
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proxy", default="http://127.0.0.1:8788")
    parser.add_argument("--events", type=int, default=3)
    args = parser.parse_args()
    trace_id = str(uuid.uuid4())
    failed = 0
    for n in range(args.events):
        status, body = call(args.proxy, "/event", event(trace_id, {"n": n}), priority="bulk")
        print(json.dumps({"path": "/event", "status": status, "body": body}))
        failed += status != 200
    check = dict(event(trace_id, {"cmd": "ls"}), event_type="action_check")
    status, body = call(args.proxy, "/check", check)  # /check is always interactive
    print(json.dumps({"path": "/check", "status": status, "body": body}))
    failed += status != 200
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
