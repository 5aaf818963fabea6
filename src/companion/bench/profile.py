"""Where a compiled step's time goes, by kind of operation, from JAX's own profiler.

``profile(fn, *args)`` runs an already-jitted function a few times under ``jax.profiler.trace``,
reads the trace it writes (``*.trace.json.gz``, Chrome's trace-event format: one complete event
per executed XLA operation and thread), and sums each operation's time into a category found from
the compiled program's HLO: its fusion's name and operations, and the JAX operation it came from
(the ``op_name`` metadata). The categories are those the LoRA step's profile needs
(``CATEGORIES``); anything else is "other elementwise".

Times are summed over the threads XLA ran them on, so on 2 cores they add up to about twice the
wall time when both are busy; the shares are what the step is made of.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import re
import tempfile
import time
from typing import Any, Callable

import jax

CATEGORIES = (
    "dense products",  # dot_general (on XLA:CPU, YNNPACK's or Eigen's kernels)
    "dropout random bits",  # Threefry (its xor and shifts; fold_in per position, bernoulli's bits),
    # with whatever XLA fused into the same loop (often the select that applies the mask)
    "selects",  # where(): masks applied on their own
    "softmax exp",
    "GELU erf",
    "layer norm rsqrt",
    "embedding gathers",
    "copies and transposes",
    "other elementwise",
)
_RANDOM = ("threefry", "_bernoulli", "_uniform", "random_bits", "random_split", "fold_in")
_MOVES = {"copy", "transpose", "bitcast", "broadcast", "reshape", "parameter", "tuple",
          "get-tuple-element", "slice", "concatenate", "iota", "constant"}
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = .*? ([a-z][\w\-]*)\(")


def _computations(hlo: str) -> dict[str, str]:
    """{computation name: its body} of an HLO module's text."""
    out, name, body = {}, None, []
    for line in hlo.splitlines():
        head = re.match(r"^(?:ENTRY )?%([\w.\-]+) .*\{\s*$", line)
        if head:
            name, body = head.group(1), []
        elif line.startswith("}") and name is not None:
            out[name], name = "\n".join(body), None
        elif name is not None:
            body.append(line)
    return out


def categorize(hlo: str) -> dict[str, str]:
    """{instruction name: category} for every instruction of a compiled HLO module's text.

    The rules, first match wins: a fusion that YNNPACK runs or any dot/convolution inside →
    "dense products"; Threefry's rounds inside (xor and logical right shifts) or an ``op_name``
    from JAX's random module → "dropout random bits"; then by the operations inside:
    exponential, erf, rsqrt, gather/scatter, select, only data movement.
    """
    bodies = _computations(hlo)
    out = {}
    for line in hlo.splitlines():
        m = _INSTRUCTION.match(line)
        if not m:
            continue
        name, opcode = m.groups()
        ops = {opcode}
        for called in re.findall(r"(?:calls|to_apply|body|condition)=%([\w.\-]+)", line):
            ops |= set(re.findall(r"= .*? ([a-z][\w\-]*)\(", bodies.get(called, "")))
        op_name = (re.search(r'op_name="([^"]*)"', line) or [None, ""])[1]
        if name.startswith("ynn_fusion") or ops & {"dot", "convolution"}:
            category = "dense products"
        elif {"xor", "shift-right-logical"} <= ops or any(r in op_name for r in _RANDOM):
            category = "dropout random bits"
        elif "exponential" in ops:
            category = "softmax exp"
        elif ops & {"erf", "erfc"} or "erf" in op_name:
            category = "GELU erf"
        elif "rsqrt" in ops:
            category = "layer norm rsqrt"
        elif ops & {"gather", "scatter"}:
            category = "embedding gathers"
        elif "select" in ops:
            category = "selects"
        elif ops <= _MOVES | {"fusion"}:
            category = "copies and transposes"
        else:
            category = "other elementwise"
        out[name] = category
    return out


def _events(trace_dir: str) -> list[dict]:
    paths = glob.glob(f"{trace_dir}/**/*.trace.json.gz", recursive=True)
    if not paths:
        raise RuntimeError(f"jax.profiler wrote no *.trace.json.gz under {trace_dir}; this JAX cannot be profiled here")
    with gzip.open(paths[0]) as f:
        return [e for e in json.load(f)["traceEvents"] if e.get("ph") == "X"]


def profile(fn: Callable, *args: Any, steps: int = 3, step: Callable | None = None) -> dict[str, Any]:
    """Time by category of a jitted function's operations, averaged over ``steps`` calls.

    Args:
      fn: a ``jax.jit``-wrapped function (``fn.lower(*args)`` gives its program).
      args: its arguments for ``lower`` (and for the calls, unless ``step`` is given).
      steps: calls traced after one warm-up call.
      step: what one call is, when it must thread state (e.g. donated parameters); it must block
        until the result is ready. Default: ``jax.block_until_ready(fn(*args))``.

    Returns:
      {"wall_s_per_step", "op_s_per_step" (summed over threads), "threads",
       "by_category": {category: {"s_per_step", "share"}}, "top": the 8 costliest operations}.
    """
    call = step or (lambda: jax.block_until_ready(fn(*args)))
    names = categorize(fn.lower(*args).compile().as_text())
    call()
    with tempfile.TemporaryDirectory() as trace_dir:
        start = time.perf_counter()
        with jax.profiler.trace(trace_dir):
            for _ in range(steps):
                call()
        wall = (time.perf_counter() - start) / steps
        events = _events(trace_dir)
    seconds, per_op, threads = collections.Counter(), collections.Counter(), set()
    for e in events:
        category = names.get(e["name"])
        if category is None:  # the runtime's own events (thunk executor, dispatch), not operations
            continue
        seconds[category] += e["dur"] * 1e-6 / steps
        per_op[e["name"]] += e["dur"] * 1e-6 / steps
        threads.add(e["tid"])
    total = sum(seconds.values())
    return {"wall_s_per_step": wall, "op_s_per_step": total, "threads": len(threads),
            "by_category": {c: {"s_per_step": seconds[c], "share": seconds[c] / total if total else 0.0}
                            for c in CATEGORIES if seconds[c]},
            "top": [{"op": n, "category": names[n], "s_per_step": s} for n, s in per_op.most_common(8)]}
