#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# Copyright (c) 2026 The smax authors
"""performance.svg: softmax throughput vs row length, from a softmax_benchmark JSON file.

Usage:
  python3 docs/pictures/performance.py benchmarks/results/<date>-<cpu>.json \\
      [-o docs/pictures/performance.svg] [--op softmax] [--data FILE] [--gnuplot gnuplot]

Needs python3 (standard library only) and gnuplot. Writes the table it plots to --data
(default: the output's name with .dat, in build/docs/pictures/ under the repository) and
runs gnuplot on a script it generates, which loads docs/pictures/style.gp.

Which benchmarks it reads (names are <op>/<contender>/<rows>/<cols>, see
benchmarks/README.md); every other name in the file is ignored, so new contenders or ops
do not break it:
  <op>/smax_rowmajor/R/C        smax (row-major batch)
  <op>/eigen_loop/R/C           competent Eigen loop
  <op>/naive_eigen_safe/R/C     naive Eigen one-liner, max-shifted
  <op>/naive_eigen_unsafe/R/C   naive Eigen one-liner exp(z) / sum exp(z) (overflows)
  <op>/naive_eigen/R/C          naive Eigen expression (the backward ops' baseline)
  <op>/onednn/R/C               oneDNN
  <op>/xnnpack/R/C              XNNPACK
  roof/memcpy/R/C               copy roof of the same shape (roof_f64/... for an _f64 op;
                                roof/add3 for a backward op)
  roof/exp_eigen/1024           Eigen's vectorised exp on cache-resident data
  roof/exp_smax/1024            smax's accurate exp on cache-resident data
A contender or roof missing from the file is left out of the picture (with a note on
stderr); at least smax must be there. The x axis is the row length C; each shape's row
count R is printed under its tick. The roofline is, per shape, the lower of the copy roof
and Eigen's exp throughput (benchmarks/summarize.py's definition; a backward op, which
has no exp, gets the copy roof alone).

Throughput is the median items_per_second (elements of the input per second) of the
repetitions; without repetitions, the mean of the runs of that name.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

# (contender name in the benchmark, legend, colour variable of style.gp, line style)
CONTENDERS = [
    ("smax_rowmajor", "smax", "c_smax", "lw 3 pt 7 ps 1.1"),
    ("eigen_loop", "Eigen loop (competent, max-shifted)", "c_green", "lw 2 pt 5 ps 0.9"),
    ("onednn", "oneDNN", "c_orange", "lw 2 pt 9 ps 1.1"),
    ("xnnpack", "XNNPACK", "c_purple", "lw 2 pt 11 ps 1.1"),
    ("naive_eigen_safe", "naive Eigen one-liner, max-shifted", "c_naive", "lw 2 pt 13 ps 1.0"),
    ("naive_eigen", "naive Eigen expression", "c_naive", "lw 2 pt 13 ps 1.0"),  # backward ops
    ("naive_eigen_unsafe", "naive Eigen exp(z)/sum (overflows, not safe)", "c_brown",
     "lw 1.5 dt (4, 3) pt 6 ps 0.9"),
]


def load(path):
    """{run_name: G elements/s} and the file's context."""
    with open(path) as f:
        doc = json.load(f)
    median, runs = {}, {}
    for b in doc.get("benchmarks", []):
        if "items_per_second" not in b:
            continue
        name = b.get("run_name", b["name"])
        if b.get("run_type") == "aggregate":
            if b.get("aggregate_name") == "median":
                median[name] = b["items_per_second"] / 1e9
        else:
            runs.setdefault(name, []).append(b["items_per_second"] / 1e9)
    rate = {n: statistics.mean(v) for n, v in runs.items()}
    rate.update(median)
    return rate, doc.get("context", {})


def esc(text):
    """text for a gnuplot enhanced-mode string in double quotes: no sub/superscripts."""
    for ch in "\\_^@&~{}":
        text = text.replace(ch, "\\\\" + ch)
    return text.replace('"', '\\"')


def shape_of(name):
    """(rows, cols) of <op>/<who>/<rows>/<cols>, or None."""
    parts = name.split("/")
    if len(parts) != 4:
        return None
    try:
        return int(parts[2]), int(parts[3])
    except ValueError:
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json", help="Google Benchmark JSON output of softmax_benchmark")
    ap.add_argument("-o", "--output", default=os.path.join(HERE, "performance.svg"))
    ap.add_argument("--op", default="softmax", help="benchmark op to plot (default softmax)")
    ap.add_argument("--data", help="where to write the plotted table")
    ap.add_argument("--gnuplot", default="gnuplot")
    args = ap.parse_args()

    rate, ctx = load(args.json)
    op = args.op
    fp64 = op.endswith("_f64")
    backward = "backward" in op
    roof_op = "roof_f64" if fp64 else "roof"

    # Shapes: every shape any plotted contender was run on, ordered by row length.
    series, missing = {}, []
    for who, *_ in CONTENDERS:
        cells = {}
        for name, v in rate.items():
            if name.startswith(f"{op}/{who}/"):
                s = shape_of(name)
                if s:
                    cells[s] = v
        if cells:
            series[who] = cells
        else:
            missing.append(who)
    if missing:
        print(f"performance.py: not in the file for {op}, left out: {', '.join(missing)}",
              file=sys.stderr)
    if "smax_rowmajor" not in series:
        sys.exit(f"performance.py: no {op}/smax_rowmajor/... benchmarks in {args.json}")
    shapes = sorted({s for cells in series.values() for s in cells}, key=lambda s: (s[1], s[0]))

    copy_name = "add3" if backward else "memcpy"
    copy_roof = {s: rate.get(f"{roof_op}/{copy_name}/{s[0]}/{s[1]}") for s in shapes}
    exp_eigen = None if backward else rate.get(f"{roof_op}/exp_eigen/1024")
    exp_smax = None if backward else rate.get(f"{roof_op}/exp_smax/1024")
    roofline = {}
    for s in shapes:
        refs = [r for r in (copy_roof[s], exp_eigen) if r is not None]
        roofline[s] = min(refs) if refs else None
    if not any(roofline.values()):
        print("performance.py: no roof benchmarks found; no roofline drawn", file=sys.stderr)

    # The table gnuplot reads: one row per shape, "?" where a value is missing.
    data = args.data or os.path.join(
        REPO, "build", "docs", "pictures",
        os.path.splitext(os.path.basename(args.output))[0] + ".dat")
    os.makedirs(os.path.dirname(os.path.abspath(data)), exist_ok=True)
    whos = [c for c in CONTENDERS if c[0] in series]
    with open(data, "w") as f:
        f.write(f"# {op} throughput (G elements/s) from {os.path.basename(args.json)}\n")
        f.write("# cols rows roofline " + " ".join(w[0] for w in whos) + "\n")
        for s in shapes:
            vals = [roofline[s]] + [series[w[0]].get(s) for w in whos]
            f.write(f"{s[1]} {s[0]} " +
                    " ".join("?" if v is None else f"{v:.6g}" for v in vals) + "\n")

    # Annotations from the JSON context, when the benchmark recorded them.
    facts = []
    if ctx.get("cpu"):
        facts.append(ctx["cpu"])
    elif ctx.get("num_cpus") and ctx.get("mhz_per_cpu"):
        facts.append(f"{ctx['num_cpus']} CPUs at {ctx['mhz_per_cpu']} MHz")
    if ctx.get("smax_commit"):
        facts.append(f"smax {ctx['smax_commit'][:7]}")
    if ctx.get("date"):
        facts.append(ctx["date"][:10])
    facts.append(f"data: {os.path.basename(args.json)}")
    subtitle = "; ".join(facts)

    # A handful of shapes (the committed runs have five) sit evenly spaced so that the short
    # rows do not crowd each other; a sweep of many lengths gets a true log axis.
    sweep = len(shapes) > 7
    if sweep:
        xcol, xaxis = "1", "set logscale x\nset xrange [*:*]"
        xtics = 'set xtics auto\nset format x "10^{%L}"'
        xlabel = "row length (entries per softmax row)"
    else:
        xcol, xaxis = "($0)", f"set xrange [-0.4:{len(shapes) - 0.6}]"
        xlabel = "row length (entries per softmax row) and number of rows in the batch"
        xtics = "set xtics (" + ", ".join(
            f'"{c}\\n{r} row{"" if r == 1 else "s"}" {i}' for i, (r, c) in enumerate(shapes)) + ")"
    dtype = "double" if fp64 else "float"
    lines = []
    if any(roofline.values()):
        roof_title = ("copy roof (memory: read y and dy, write out)" if backward else
                      "roofline: min(copy roof, Eigen exp throughput)")
        lines.append(f'data using {xcol}:3 with linespoints lw 8 lc rgb "#d9d9d9" pt 7 ps 0.6 '
                     f'title "{roof_title}"')
    if exp_smax is not None:
        lines.append(f'{exp_smax} with lines dt (2, 3) lw 1.5 lc rgb c_grey '
                     f'title "smax exp on cached data ({exp_smax:.2g} G/s)"')
    for i, (who, title, colour, style) in enumerate(whos):
        lines.append(f'data using {xcol}:{4 + i} with linespoints {style} lc rgb {colour} '
                     f'title "{title}"')
    lo = min(v for cells in series.values() for v in cells.values())
    hi = max([v for cells in series.values() for v in cells.values()] +
             [v for v in roofline.values() if v])
    gp = f"""
load "{os.path.join(HERE, 'style.gp')}"
set terminal svg size 960,520 enhanced font "sans-serif,13" background rgb "white"
set output "{args.output}"
data = "{data}"
set datafile missing "?"
set title "{{/:Bold {esc(op)} throughput vs row length}}: {dtype}, one thread, higher is better" font ",15"
set label 100 "{esc(subtitle)}" at screen 0.01, screen 0.025 left font ",10" textcolor rgb "#555555"
set logscale y
{xaxis}
set yrange [{lo / 2:.3g}:{hi * 2.5:.3g}]
{xtics}
set xtics font ",11" scale 0
set format y "%g"
set ytics add (0.02, 0.05, 0.2, 0.5, 2, 5, 20)
set mytics 1
set xlabel "{xlabel}" offset 0,-0.5
set ylabel "throughput (G elements/s)"
set bmargin 6
set key outside right center Left reverse width -8 samplen 3 font ",11"
plot {", ".join(lines)}
"""
    with tempfile.NamedTemporaryFile("w", suffix=".gp", delete=False) as f:
        f.write(gp)
        script = f.name
    try:
        subprocess.run([args.gnuplot, script], check=True)
    finally:
        os.unlink(script)
    print(f"wrote {args.output} (data in {data})", file=sys.stderr)


if __name__ == "__main__":
    main()
