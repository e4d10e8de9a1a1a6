"""Output of ``fastconv bench``: rich tables, JSON, CSV and a matplotlib plot."""
from __future__ import annotations

import csv
import json
from collections import OrderedDict

__all__ = ["print_tables", "totals", "write_json", "write_csv", "plot", "CSV_FIELDS"]

CSV_FIELDS = ["suite", "layer", "shape", "count", "pass", "impl", "backend", "algo", "status",
              "ms", "ms_min", "reps", "gflops", "pct_peak", "vs_torch", "flops", "max_err",
              "auto", "note", "N", "C", "H", "W", "K", "R", "S", "stride", "pad"]
PASS_TITLES = {"fwd": "forward", "bwd_data": "backward (data)",
               "bwd_weight": "backward (weight)"}


def _fmt(v, spec, empty="-"):
    return empty if v is None else format(v, spec)


def totals(rows) -> list[dict]:
    """Network totals per (suite, pass, impl): sum of ms x count over the suite's layers,
    only where the implementation ran every layer (else None, with how many it missed)."""
    groups = OrderedDict()
    layers = {}
    for r in rows:
        layers.setdefault((r["suite"], r["pass"]), set()).add(r["layer"])
        groups.setdefault((r["suite"], r["pass"], r["impl"]), []).append(r)
    out = []
    for (suite, pass_, impl), rs in groups.items():
        done = [r for r in rs if r["ms"] is not None]
        missing = len(layers[(suite, pass_)]) - len(done)
        ms = sum(r["ms"] * r["count"] for r in done) if not missing else None
        flops = sum(r["flops"] * r["count"] for r in done)
        out.append({"suite": suite, "pass": pass_, "impl": impl, "ms": ms, "missing": missing,
                    "gflops": flops / (ms * 1e-3) / 1e9 if ms else None})
    ref = {(t["suite"], t["pass"]): t["ms"] for t in out if t["impl"] == "torch" and t["ms"]}
    for t in out:
        r = ref.get((t["suite"], t["pass"]))
        t["vs_torch"] = r / t["ms"] if (r and t["ms"]) else None
    return out


def print_tables(rows, meta, console=None) -> None:
    """One table per (suite, pass) and a network-totals table, to ``console``."""
    from rich.console import Console
    from rich.markup import escape  # notes quote user text and extras such as fastconv[gpu]
    from rich.table import Table

    console = console or Console()
    peak = meta.get("peak_gflops")
    by = OrderedDict()
    for r in rows:
        by.setdefault((r["suite"], r["pass"]), []).append(r)
    hidden = 0
    for (suite, pass_), rs in by.items():
        t = Table(title=f"{suite} - {PASS_TITLES.get(pass_, pass_)} ({meta.get('dtype')}, "
                        f"{meta.get('threads')} threads)", title_justify="left")
        for col, just in (("layer", "left"), ("shape", "left"), ("impl", "left"),
                          ("ms", "right"), ("GFLOP/s", "right"), ("% peak", "right"),
                          ("vs torch", "right"), ("", "left")):
            t.add_column(col, justify=just, no_wrap=col in ("impl", "ms"))
        last = None
        for r in rs:
            if r["status"] == "skip":
                hidden += 1  # kept in JSON/CSV with the reason; a table row says nothing
                continue
            first = r["layer"] != last
            last = r["layer"]
            if r["status"] == "ok":
                status = "auto" if r.get("auto") else ""
                style = None
            else:
                note = r["note"] if len(r["note"]) <= 70 else r["note"][:67] + "..."
                status = f"{r['status']}: {note}"
                style = "red"
            vs = r["vs_torch"]
            t.add_row(r["layer"] if first else "", r["shape"] if first else "", r["impl"],
                      _fmt(r["ms"], ".3f"), _fmt(r["gflops"], ".1f"),
                      _fmt(r["pct_peak"], ".0f"),
                      "-" if vs is None else f"{vs:.2f}x", escape(status), style=style,
                      end_section=False)
        console.print(t)
    ran = {(r["suite"], r["pass"], r["impl"]) for r in rows if r["ms"] is not None}
    tot = [x for x in totals(rows) if (x["suite"], x["pass"], x["impl"]) in ran
           and len({r["layer"] for r in by[(x["suite"], x["pass"])]}) > 1]
    if tot:
        t = Table(title="network totals (sum of ms x layer count)", title_justify="left")
        for col in ("suite", "pass", "impl", "ms", "GFLOP/s", "vs torch"):
            t.add_column(col, justify="left" if col in ("suite", "pass", "impl") else "right")
        for x in tot:
            ms = _fmt(x["ms"], ".1f") if x["ms"] is not None else f"({x['missing']} missing)"
            t.add_row(x["suite"], x["pass"], x["impl"], ms, _fmt(x["gflops"], ".1f"),
                      "-" if x["vs_torch"] is None else f"{x['vs_torch']:.2f}x")
        console.print(t)
    if hidden:
        console.print(f"({hidden} measurements not applicable, e.g. SciPy on big layers; "
                      "reasons in --json/--csv)")
    if peak:
        gemm = meta.get("gemm_gflops")
        gemm = f"; for reference, a 256^3 GEMM: {gemm:.1f} GFLOP/s" if gemm else ""
        console.print(f"peak: {peak:.1f} GFLOP/s ({meta.get('peak_method')}{gemm}); 'vs torch' = "
                      "PyTorch ms / this ms in the same run (>1: faster than PyTorch); "
                      "'auto' marks the heuristic's choice.")


def write_json(path, rows, meta) -> None:
    """``{"meta": {...}, "results": [...], "totals": [...]}``."""
    with open(path, "w") as f:
        json.dump({"meta": meta, "results": rows, "totals": totals(rows)}, f, indent=1,
                  default=str)


def write_csv(path, rows) -> None:
    """One row per (suite, layer, pass, impl); empty cells where not measured."""
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in CSV_FIELDS})


def plot(path, rows, meta) -> None:
    """GFLOP/s per layer per implementation (grouped bars), one panel per (suite, pass),
    with the measured peak as a horizontal line. Uses the Agg backend (no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = OrderedDict()
    for r in rows:
        by.setdefault((r["suite"], r["pass"]), []).append(r)
    n = max(1, len(by))
    fig, axes = plt.subplots(n, 1, figsize=(max(8, 0.9 * _max_layers(by) + 4), 3.6 * n),
                             squeeze=False)
    peak = meta.get("peak_gflops")
    for ax, ((suite, pass_), rs) in zip(axes[:, 0], by.items()):
        layers = list(OrderedDict.fromkeys(r["layer"] for r in rs))
        impls = list(OrderedDict.fromkeys(r["impl"] for r in rs))
        width = 0.8 / max(1, len(impls))
        for j, impl in enumerate(impls):
            vals = {r["layer"]: r["gflops"] or 0.0 for r in rs if r["impl"] == impl}
            xs = [i + (j - (len(impls) - 1) / 2) * width for i in range(len(layers))]
            ax.bar(xs, [vals.get(lay, 0.0) for lay in layers], width, label=impl)
        if peak:
            ax.axhline(peak, color="k", linestyle="--", linewidth=1,
                       label=f"peak {peak:.0f} GFLOP/s")
        ax.set_xticks(range(len(layers)))
        ax.set_xticklabels(layers, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("GFLOP/s")
        ax.set_title(f"{suite} - {PASS_TITLES.get(pass_, pass_)} ({meta.get('dtype')}, "
                     f"{meta.get('threads')} threads)")
        ax.legend(fontsize=7, ncol=min(4, len(impls) + 1))
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)


def _max_layers(by):
    return max((len({r["layer"] for r in rs}) for rs in by.values()), default=1)
