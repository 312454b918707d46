"""``fscale profile --frontier`` and ``--png``: the frontier the engine computed, as a table
on stdout or a picture (matplotlib, the ``[plot]`` extra, imported only for ``--png``)."""

from __future__ import annotations

from typing import Any

from ..engine.base.errors import UsageError

KIND_NAMES = {"single": "single model", "majority": "top-k majority", "router": "router",
              "auto": "-k auto", "calibrated": "calibrated"}
#: Marker and colour per kind (the PNG); the default -k auto plan gets a star.
STYLE = {"single": ("o", "#7f7f7f"), "majority": ("s", "#9467bd"), "router": ("^", "#1f77b4"),
         "auto": ("D", "#d62728"), "calibrated": ("P", "#2ca02c")}


def cost_text(cost: float, unit: str) -> str:
    return f"${cost:.3g}" if unit == "usd" else f"{cost:.2f} calls"


def print_frontier(data: dict[str, Any], console: Any) -> None:
    """One row per point, cheapest first: kind, what, cost per item, × the best single
    model's cost, accuracy; the default ``-k auto`` plan marked ``*``."""
    from rich.table import Table

    unit = data["unit"]
    base = float(data["best_single"]["cost"]) or None
    table = Table(box=None, pad_edge=False)
    for col in ("", "kind", "what", "cost / item", "× best single", "accuracy"):
        table.add_column(col)
    for p in sorted(data["points"], key=lambda p: (p["cost"], -p["accuracy"])):
        mark = "*" if p.get("default") else ("=" if p.get("best_single") else "")
        rel = "-" if base is None else f"{p['cost'] / base:.2f}x"
        table.add_row(mark, KIND_NAMES.get(p["kind"], p["kind"]), p["label"],
                      cost_text(p["cost"], unit), rel, f"{p['accuracy']:.1%}")
    console.print(table)
    best = data["best_single"]
    console.print(f"* the default -k auto plan ({data['default']}); = the best single model "
                  f"({best['model']}, {best['accuracy']:.1%} at {cost_text(best['cost'], unit)}). "
                  f"On {data['items']} jointly profiled items; router and -k auto cross-fitted.")
    for note in data.get("notes", []):
        console.print(note)


def write_png(data: dict[str, Any], path: str) -> str:
    """Plot accuracy against cost per item (log scale) into ``path``; -> the path."""
    try:
        import matplotlib
    except ImportError:
        raise UsageError("--png needs matplotlib: pip install 'fscale[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    unit = data["unit"]
    fig, ax = plt.subplots(figsize=(8, 5.2), dpi=120)
    for kind in ("single", "majority", "router", "auto", "calibrated"):
        pts = sorted((p for p in data["points"] if p["kind"] == kind), key=lambda p: p["cost"])
        if not pts:
            continue
        marker, colour = STYLE[kind]
        xs = [max(p["cost"], 1e-12) for p in pts]
        ys = [100 * p["accuracy"] for p in pts]
        line = "-" if kind in ("router", "auto") else ""
        ax.plot(xs, ys, marker=marker, linestyle=line, color=colour, label=KIND_NAMES[kind],
                alpha=0.85, markersize=6)
        for p in pts:
            if kind == "single" and p.get("best_single"):
                ax.annotate(p["label"], (max(p["cost"], 1e-12), 100 * p["accuracy"]),
                            textcoords="offset points", xytext=(4, -10), fontsize=8)
            if p.get("default"):
                ax.plot([max(p["cost"], 1e-12)], [100 * p["accuracy"]], marker="*", color="gold",
                        markeredgecolor="black", markersize=18, linestyle="", zorder=5,
                        label="default -k auto")
                ax.annotate("default", (max(p["cost"], 1e-12), 100 * p["accuracy"]),
                            textcoords="offset points", xytext=(6, 6), fontsize=8)
    if all(p["cost"] > 0 for p in data["points"]):
        ax.set_xscale("log")
    ax.set_xlabel("cost per item (USD)" if unit == "usd" else "calls per item")
    ax.set_ylabel("accuracy on the profile (%)")
    ax.set_title("fscale frontier: accuracy vs price")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    try:
        fig.savefig(path)
    except OSError as exc:
        raise UsageError(f"--png {path!r}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
    return path
