#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# Copyright (c) 2026 The smax authors
"""Markdown tables of median throughput from a softmax_benchmark JSON file.

Usage: summarize.py [--cv] results/<date>-<cpu>.json > tables.md
(--cv adds the coefficient of variation of the repetitions to every cell.)

Benchmarks are named <op>/<contender>/<rows>/<cols>. For each op this prints the median
items_per_second in G elements/s per contender and shape, then smax's ratio to the best
safe peer (every non-smax contender except the overflow-prone naive_eigen_unsafe), to
oneDNN, to the copy roof of the same shape (roof/memcpy for forward ops, roof/add3 for
backward ops, roof_f64/memcpy for fp64; each the faster of plain stores and non-temporal
ones, the _nt variants), to the throughput of smax's own exp on
cache-resident data (forward ops), and, for column-major storage, smax's strided path to
the best peer on the same layout.
"""

import json
import sys
from collections import OrderedDict


def load(path):
    with open(path) as f:
        doc = json.load(f)
    med, cv = {}, {}
    for b in doc["benchmarks"]:
        if b.get("run_type") != "aggregate":
            continue
        name = b["run_name"]
        if b["aggregate_name"] == "median":
            med[name] = b["items_per_second"] / 1e9
        elif b["aggregate_name"] == "cv":
            cv[name] = b.get("cpu_time", 0.0)
    return doc["context"], med, cv


def split(name):
    """<op...>/<contender>/<rows>/<cols>[/real_time] -> (op, contender, "rowsxcols"); the op
    may have several parts (short/softmax, masked/log_softmax)."""
    parts = [p for p in name.split("/") if p != "real_time"]
    n = len(parts)
    while n > 0 and parts[n - 1].isdigit():
        n -= 1
    return "/".join(parts[:n - 1]), parts[n - 1], "x".join(parts[n:])


def fmt(x):
    if x is None:
        return "-"
    return f"{x:.3g}" if x < 10 else f"{x:.0f}"


def main():
    args = sys.argv[1:]
    show_cv = "--cv" in args
    args = [a for a in args if a != "--cv"]
    if len(args) != 1:
        sys.exit(__doc__)
    _, med, cv = load(args[0])
    ops = OrderedDict()
    for name in med:
        op, who, shape = split(name)
        ops.setdefault(op, OrderedDict()).setdefault(who, {})[shape] = name
    op_order = ["softmax", "softmax_t0.7", "log_softmax", "logsumexp", "softmax_backward",
                "log_softmax_backward", "softmax_f64", "log_softmax_f64", "logsumexp_f64",
                "softmax_backward_f64", "log_softmax_backward_f64", "roof", "roof_f64"]
    who_order = ["smax_rowmajor", "smax_colmajor_strided", "smax_colwise", "smax_fixed3",
                 "onednn", "onednn_colmajor_strided", "xnnpack", "torch", "eigen_loop",
                 "naive_eigen", "naive_eigen_safe", "naive_eigen_safe_colmajor",
                 "naive_eigen_unsafe"]

    def rank(order, key):
        return (order.index(key) if key in order else len(order), key)

    for op in sorted(ops, key=lambda o: rank(op_order, o)):
        table = OrderedDict(sorted(ops[op].items(), key=lambda kv: rank(who_order, kv[0])))
        shapes = sorted({s for cells in table.values() for s in cells},
                        key=lambda s: (s.count("x") == 0, [int(v) for v in reversed(s.split("x"))]))
        note = "; cv of the repetitions in brackets" if show_cv else ""
        print(f"\n#### {op} (median G elements/s{note})\n")
        print("| contender | " + " | ".join(shapes) + " |")
        print("|---|" + "---|" * len(shapes))
        for who, cells in table.items():
            row = []
            for s in shapes:
                n = cells.get(s)
                if n is None:
                    row.append("-")
                elif show_cv:
                    row.append(f"{fmt(med[n])} ({cv.get(n, 0) * 100:.0f}%)")
                else:
                    row.append(fmt(med[n]))
            print(f"| {who} | " + " | ".join(row) + " |")
        if op.startswith("roof"):
            continue
        smax = table.get("smax_rowmajor")
        if not smax:
            continue
        backward = "backward" in op
        roof_op = "roof_f64" if op.endswith("_f64") else "roof"
        # The copy roof of a shape: the faster of plain and non-temporal stores.
        kind = "add3" if backward else "memcpy"
        roofs = [ops.get(roof_op, {}).get(k, {}) for k in (kind, kind + "_nt")]
        roof_of = lambda s: max([med[r[s]] for r in roofs if s in r and r[s] in med],
                                default=None)
        exp_roof = med.get(f"{roof_op}/exp_smax/1024")
        # The roofline: the lower of the copy roof and Eigen's exp throughput (an op
        # without an exp, softmax_backward, has only the copy roof).
        eigen_exp = med.get(f"{roof_op}/exp_eigen/1024")
        has_exp = not op.startswith("softmax_backward")
        picks = [("smax_rowmajor / roofline", "roofline"),
                 ("smax_rowmajor / best safe peer", "best"), ("smax_rowmajor / onednn", "onednn"),
                 ("smax_rowmajor / copy roof", "roof")]
        if not backward:
            picks.append(("smax_rowmajor / smax exp roof", "exp"))
        if "smax_colmajor_strided" in table:
            picks.append(("smax_colmajor_strided / best strided peer", "strided"))
            # The layout target: rowwise on column-major within 1.3x of contiguous.
            picks.append(("column-major time / row-major time", "layout"))
        lines = []
        for label, pick in picks:
            row = []
            for s in shapes:
                n = (table["smax_colmajor_strided"] if pick in ("strided", "layout") else
                     smax).get(s)
                if n is None:
                    row.append("-")
                    continue
                if pick == "roof":
                    ref = roof_of(s)
                    who = None
                elif pick == "roofline":
                    refs = [roof_of(s)] + ([eigen_exp] if has_exp else [])
                    refs = [r for r in refs if r is not None]
                    ref = min(refs) if refs else None
                    who = None
                elif pick == "exp":
                    ref = exp_roof
                    who = None
                elif pick == "strided":
                    best = [(med[c[s]], w) for w, c in table.items()
                            if w.endswith("colmajor") or w.endswith("colmajor_strided")
                            if not w.startswith("smax") and s in c]
                    ref, who = max(best) if best else (None, None)
                elif pick == "layout":
                    # Row-major throughput over column-major: the time ratio, col / row.
                    row.append(f"{med[smax[s]] / med[n]:.2f}" if s in smax else "-")
                    continue
                elif pick == "onednn":
                    ref = med.get(table.get("onednn", {}).get(s, ""))
                    who = None
                else:
                    best = [(med[c[s]], w) for w, c in table.items()
                            if not w.startswith("smax") and w != "naive_eigen_unsafe" and s in c]
                    ref, who = max(best) if best else (None, None)
                if ref is None:
                    row.append("-")
                else:
                    row.append(f"{med[n] / ref:.2f}" + (f" ({who})" if who else ""))
            if any(cell != "-" for cell in row):
                lines.append(f"| {label} | " + " | ".join(row) + " |")
        print("\n| ratio | " + " | ".join(shapes) + " |")
        print("|---|" + "---|" * len(shapes))
        print("\n".join(lines))


if __name__ == "__main__":
    main()
