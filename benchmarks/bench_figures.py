"""Benchmark: drawing and saving the figures of the bundled trials, against an earlier version.

Usage: python benchmarks/bench_figures.py [--baseline REV] [--repeats N] [trial ...]

Draws every figure of each trial (default: the bundled ``exercise_education`` and
``weightbearing``) from its workflow results under ``results/<trial>/`` (run
``snakemake --cores 2`` first) and writes its PNG and SVG into a temporary folder. Each figure
is timed from the end of the previous file written to the end of its own SVG: building the
figure, drawing and saving both files; Python imports and reading the tables are not timed.

The baseline is :mod:`trialflow.figures` as of git revision REV (default ``9efefb7``: constrained
layout, SVG text as glyph paths, no seaborn), exported from this repository and timed on the
same inputs in the same run. Baseline and current code run in separate processes (the package
has one name), alternating, each drawing every figure once per repeat after an untimed warm-up
round; the table keeps each figure's fastest repeat. It gives wall-clock seconds per figure by
kind, the ratio baseline / current (the speed-up) and the average per figure, then the same
average in CPU seconds of the drawing process (steadier on a shared machine).

The last row, ``floor``, is not a trial figure: one axes with a line, a title, axis labels and
a legend, saved by each version's ``save_figure``, the least any figure costs.
Set OPENBLAS_NUM_THREADS=1 for stable timings.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ["exercise_education", "weightbearing"]
TRIAL_WIDE = ("consort", "forest", "forest_all_analyses", "missingness")
FLOOR = "floor"
SIDES = ("baseline", "current")
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def kind_of(key: str) -> str:
    """Figure kind of a timed figure: ``exercise_education/pain_vas_trajectory`` ->
    ``trajectory``."""
    stem = key.split("/", 1)[1]
    return stem if stem in (*TRIAL_WIDE, FLOOR) else stem.rsplit("_", 1)[1]


def _inputs(name: str) -> dict[str, Any]:
    """The keyword arguments of ``write_trial_figures`` for one trial, read as the workflow does."""
    from trialflow.config import load_trial
    from trialflow.derive import read_analysis_datasets
    from trialflow.io import read_result_csv
    from trialflow.labels import display_frame, display_trial

    trial = load_trial(ROOT / "config" / "trials" / f"{name}.yaml", name=name)
    res = ROOT / "results" / name

    def shown(path: Path, **dtype: Any) -> Any:
        return display_frame(read_result_csv(path, dtype=dtype or None), trial)

    _, adeff = read_analysis_datasets(
        adsl=res / "analysis" / "adsl.csv",
        adeff=res / "analysis" / "adeff.csv",
        meta=res / "analysis" / "covariates.json",
    )
    flow = read_result_csv(res / "analysis" / "flow.csv", dtype={"visit": str})
    return {
        "trial": display_trial(trial),
        "adeff": display_frame(adeff, trial),
        "flow": display_frame(flow.fillna({"visit": ""}), trial),
        "effects": shown(res / "tables" / "effects.csv", note=str),
        "lsmeans": shown(res / "tables" / "lsmeans.csv"),
        "residuals": {
            p.name.removesuffix(".residuals.csv"): shown(p, subject_id=str)
            for p in sorted((res / "models").glob("*.residuals.csv"))
        },
        "subgroups": shown(res / "tables" / "subgroups.csv", level=str, note=str, subgroup=str),
        "sensitivity": shown(res / "tables" / "sensitivity.csv", note=str, visit=str),
        "tipping": shown(res / "tables" / "tipping_point.csv", note=str, visit=str),
    }


def _floor_figure() -> Any:
    """The least figure: one axes with a line, a title, axis labels and a legend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 4.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot([0, 6, 12], [0.0, -0.5, -1.0], marker="o", label="Exercise: LS mean (95% CI)")
    ax.set_title("Pain intensity (VAS): MMRM LS-mean change from baseline", loc="left")
    ax.set_xlabel("Time since randomization (weeks)")
    ax.set_ylabel("Change from baseline (cm)")
    fig.legend(loc="lower center")
    return fig


def _timed_round(inputs: dict[str, dict[str, Any]], folder: Path) -> dict[str, dict[str, float]]:
    """Wall and CPU seconds per figure ("trial/stem"), from the previous save to its own end."""
    import trialflow.figures as fg
    from trialflow.plots import write_trial_figures

    spent: dict[str, dict[str, float]] = {clock: {} for clock in CLOCKS}
    save: Callable[..., list[Path]] = fg.save_figure
    last = {clock: 0.0 for clock in CLOCKS}

    def timed_save(fig: Any, stem: Path) -> list[Path]:
        written = save(fig, stem)
        for clock, now in CLOCKS.items():
            t = now()
            spent[clock][f"{stem.parent.name}/{stem.name}"] = t - last[clock]
            last[clock] = t
        return written

    def start() -> None:
        last.update({clock: now() for clock, now in CLOCKS.items()})

    fg.save_figure = timed_save  # type: ignore[assignment]
    try:
        for name, kwargs in inputs.items():
            start()
            write_trial_figures(folder=folder / name, **kwargs)
        start()
        fg.save_figure(_floor_figure(), folder / FLOOR / FLOOR)
    finally:
        fg.save_figure = save  # type: ignore[assignment]
    return spent


def worker(trials: list[str], out: Path) -> None:
    """Run in a child process: an untimed warm-up round (imports, font cache), then a timed
    round; writes the seconds per figure as JSON."""
    inputs = {name: _inputs(name) for name in trials}
    with tempfile.TemporaryDirectory() as tmp:
        _timed_round(inputs, Path(tmp) / "warm-up")
        spent = _timed_round(inputs, Path(tmp) / "timed")
    out.write_text(json.dumps(spent))


def export_baseline(rev: str, folder: Path) -> Path:
    """Write the ``workflow`` folder (package and schemas) of git revision ``rev`` under
    ``folder`` and return its path."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", rev, "workflow"],
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder / "workflow"


def run_worker(pythonpath: Path, trials: list[str], out: Path) -> dict[str, dict[str, float]]:
    env = {**os.environ, "PYTHONPATH": str(pythonpath), "OPENBLAS_NUM_THREADS": "1"}
    subprocess.run([sys.executable, __file__, "--worker", str(out), *trials], check=True, env=env)
    return dict(json.loads(out.read_text()))


def _row(label: str, values: dict[str, list[float]]) -> str:
    base, cur = (sum(values[s]) / len(values[s]) for s in SIDES)
    n = len(values["current"])
    return f"{label:<22}{n:>4}{base:>16.3f}{cur:>15.3f}{base / cur:>8.1f}"


def table(best: dict[str, dict[str, dict[str, float]]]) -> str:
    """Wall seconds per figure by kind for baseline and current, their ratio, the averages per
    figure (wall, per trial, CPU) and the floor."""
    wall = {side: best[side]["wall"] for side in SIDES}
    figures = {side: {k: v for k, v in wall[side].items() if kind_of(k) != FLOOR} for side in SIDES}
    by_kind: dict[str, dict[str, list[float]]] = defaultdict(lambda: {s: [] for s in SIDES})
    for side in SIDES:
        for key, seconds in figures[side].items():
            by_kind[kind_of(key)][side].append(seconds)
    lines = [f"{'figure kind':<22}{'n':>4}{'baseline s/fig':>16}{'current s/fig':>15}{'ratio':>8}"]
    lines += [_row(kind, by_kind[kind]) for kind in sorted(by_kind)]
    lines.append(_row("average per figure", {s: list(figures[s].values()) for s in SIDES}))
    for trial in sorted({k.split("/", 1)[0] for k in figures["current"]}):
        lines.append(
            _row(f"  {trial}", {s: [v for k, v in figures[s].items()
                                    if k.startswith(f"{trial}/")] for s in SIDES})
        )  # fmt: skip
    cpu = {s: [v for k, v in best[s]["cpu"].items() if kind_of(k) != FLOOR] for s in SIDES}
    lines.append(_row("average, CPU seconds", cpu))
    floor = {s: [v for k, v in wall[s].items() if kind_of(k) == FLOOR] for s in SIDES}
    lines.append(_row(f"{FLOOR} (not a figure)", floor))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trials", nargs="*", default=BUNDLED)
    parser.add_argument("--baseline", default="9efefb7", help="git revision of the baseline")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.trials, args.worker)
        return
    missing = [t for t in args.trials if not (ROOT / "results" / t / "tables").is_dir()]
    if missing:
        sys.exit(f"no workflow results for {', '.join(missing)}: run snakemake --cores 2 first")
    best: dict[str, dict[str, dict[str, float]]] = {s: {c: {} for c in CLOCKS} for s in SIDES}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {
            "baseline": export_baseline(args.baseline, Path(tmp)),
            "current": ROOT / "workflow",
        }
        for repeat in range(args.repeats):
            for side, path in paths.items():
                spent = run_worker(path, args.trials, Path(tmp) / f"{side}{repeat}.json")
                for clock, seconds_of in spent.items():
                    for key, seconds in seconds_of.items():
                        kept = best[side][clock]
                        kept[key] = min(seconds, kept.get(key, seconds))
    print(f"baseline: trialflow.figures at {args.baseline}; current: working tree; fastest of "
          f"{args.repeats} repeats per figure (building, drawing, PNG and SVG)")  # fmt: skip
    print(table(best))


if __name__ == "__main__":
    main()
