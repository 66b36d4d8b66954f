"""The worker half of `math_grading.MathVerifier`: run as `python -c <this file's text>`.

Never imported by the package. Reads one JSON request a line ({"gold", "pred"}), answers one JSON line.
math-verify's signal-based timeouts are off (they need the main thread of the caller); the parent
enforces the time limit by killing this process. Responses go to the original stdout only: anything a
library prints is sent to stderr, which the parent discards.
"""

import json
import logging
import os
import sys

out = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)
logging.disable(logging.CRITICAL)

from math_verify import parse, verify


def wrap(s):
    s = s.strip()
    return s if ("$" in s or s.startswith(("\\(", "\\["))) else f"${s}$"


def reply(obj):
    out.write(json.dumps(obj) + "\n")
    out.flush()


reply({"ready": True})
for line in sys.stdin:
    try:
        request = json.loads(line)
        gold = parse(wrap(request["gold"]), parsing_timeout=None)
        pred = parse(wrap(request["pred"]), parsing_timeout=None)
        equal = bool(gold) and bool(pred) and verify(gold, pred, timeout_seconds=None)
        reply({"equal": bool(equal), "gold": str(gold[:1]), "pred": str(pred[:1])})
    except Exception as exc:  # noqa: BLE001 - any failure is an answer ("not decided"), never a crash
        reply({"error": repr(exc)[:300]})
