"""Mutation check: plant each deliberate bug of ``mutants.toml`` and run the tests that guard it.

Every promise of the README's analysis plan, estimand and safety sections has at least one
mutant in ``mutants.toml``: a small, realistic bug in the code that keeps the promise, with the
tests that should catch it. This script copies the project (the files git tracks or would
track, uncommitted edits included) to a temporary folder, applies one mutant at a time there,
runs its tests with ``PYTHONPATH`` pointing at the copy's ``workflow/``, and puts the file
back. The working tree is never touched, so an interrupted run leaves no bug behind.

Each mutant ends as one of:

- ``killed``: a selected test failed, and that test passes without the mutant;
- ``survived``: every selected test passed with the bug in place (a gap in the tests);
- ``stale``: the original snippet is not in the file exactly once, the replacement is not
  valid Python, or the documentation no longer holds the quoted promise (the list must be
  updated);
- ``error``: the tests could not judge the mutant (the failing test also fails without it, no
  test was selected, or pytest could not run);
- ``timeout``: the tests ran longer than ``--timeout`` seconds (not counted as killed).

The script also lists README bullets of the guarded sections that no mutant quotes. It exits
with 1 when any mutant is not killed or a bullet is uncovered.

Usage (from the project root; not part of CI, 20 to 40 minutes on two cores)::

    OPENBLAS_NUM_THREADS=1 python tests/mutation/run.py            # every mutant
    python tests/mutation/run.py --list                            # the list, checked
    python tests/mutation/run.py --only fallback-order-library --only smd-n-weighted
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from queue import Empty, SimpleQueue

ROOT = Path(__file__).resolve().parents[2]
MUTANTS = Path(__file__).with_name("mutants.toml")
README = ROOT / "README.md"
# The README sections whose every bullet (and table row) must be guarded by a mutant.
GUARDED = (
    "The analysis plan",
    "Estimand and missing-data sensitivity analyses",
    "Safety and reproducibility",
)
FIELDS = {"id", "section", "quote", "file", "original", "replacement", "tests"}


@dataclass(frozen=True)
class Mutant:
    """One deliberate bug: where it goes, the promise it breaks and the tests that guard it."""

    id: str
    section: str
    quote: str
    file: str
    original: str
    replacement: str
    tests: tuple[str, ...]
    k: str = ""
    doc: str = "README.md"

    def pytest_args(self) -> list[str]:
        return [*self.tests, *(["-k", self.k] if self.k else [])]


@dataclass(frozen=True)
class Outcome:
    """What the tests said about one mutant."""

    mutant: Mutant
    status: str
    seconds: float
    detail: str


def load_mutants(path: Path = MUTANTS) -> list[Mutant]:
    """The mutants of the list, checked for missing or unknown fields and repeated ids."""
    entries = tomllib.loads(path.read_text(encoding="utf-8"))["mutant"]
    mutants: list[Mutant] = []
    for i, entry in enumerate(entries):
        keys = set(entry)
        if not keys >= FIELDS or not keys <= FIELDS | {"k", "doc"}:
            raise SystemExit(f"{path}: mutant {i + 1} needs {sorted(FIELDS)} (k, doc optional)")
        mutants.append(Mutant(**{**entry, "tests": tuple(entry["tests"])}))
    ids = [m.id for m in mutants]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise SystemExit(f"{path}: repeated ids {', '.join(repeated)}")
    return mutants


def _words(text: str) -> str:
    """Text with markup-free, single-spaced words, so quotes survive re-wrapping."""
    return " ".join(text.replace("**", "").replace("`", "").split())


@cache
def doc_sections(path: Path) -> dict[str, str]:
    """The text of every ``## `` section of a Markdown file, by heading (markup removed)."""
    sections: dict[str, str] = {}
    heading = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            heading = _words(line[3:])
            sections[heading] = ""
        elif heading:
            sections[heading] += line + "\n"
    return sections


def promises(section: str) -> list[str]:
    """The bullets and table rows of a section (a bullet runs until the next one)."""
    items: list[str] = []
    for line in section.splitlines():
        if line.startswith(("- ", "| ")) and not line.startswith("|---"):
            items.append(line)
        elif line.startswith("  ") and items and items[-1].startswith("- "):
            items[-1] += " " + line.strip()
    return [_words(item) for item in items if not item.startswith("| analysis |")]


def stale_reason(mutant: Mutant, root: Path) -> str:
    """Why the mutant no longer fits the code or the documentation ("" if it still does)."""
    path = root / mutant.file
    if not path.is_file():
        return f"{mutant.file} does not exist"
    text = path.read_text(encoding="utf-8")
    count = text.count(mutant.original)
    if count != 1:
        return f"original snippet found {count} times in {mutant.file} (must be once)"
    if path.suffix == ".py":
        # A bug that does not even compile would be "killed" by any test: refuse it.
        try:
            compile(text.replace(mutant.original, mutant.replacement), str(path), "exec")
        except SyntaxError as exc:
            return f"the replacement is not valid Python ({exc.msg}, line {exc.lineno})"
    sections = doc_sections(root / mutant.doc)
    if mutant.section not in sections:
        return f"{mutant.doc} has no section {mutant.section!r}"
    if _words(mutant.quote) not in _words(sections[mutant.section]):
        return f"{mutant.doc} section {mutant.section!r} does not say {mutant.quote!r}"
    return ""


def uncovered(mutants: Sequence[Mutant]) -> list[str]:
    """Bullets and table rows of the README's guarded sections that no mutant quotes."""
    sections = doc_sections(README)
    quotes = [_words(m.quote) for m in mutants if m.doc == "README.md"]
    return [
        f"{name}: {item[:90]}"
        for name in GUARDED
        for item in promises(sections.get(name, ""))
        if not any(q in item for q in quotes)
    ]


def copy_project(target: Path) -> Path:
    """Copy the files git tracks or would track (uncommitted edits included) to ``target``."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def _pytest(
    copy: Path, args: Sequence[str], timeout: float, *, first_failure: bool = True
) -> tuple[int | None, list[str], str]:
    """Run pytest in the copy: exit code (None on timeout), failed test ids, last output line.

    Bytecode is not written, so no stale ``.pyc`` of a mutated module can outlive it; pytest's
    cache and Hypothesis' example database are cleared first, and the cache is read for the
    failures.
    """
    for folder in (".pytest_cache", ".hypothesis"):
        shutil.rmtree(copy / folder, ignore_errors=True)
    env = {
        **os.environ,
        "PYTHONPATH": str(copy / "workflow"),
        "PYTHONDONTWRITEBYTECODE": "1",
        "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS", "1"),
    }
    command = [sys.executable, "-m", "pytest", "-q", "--no-header", "-p", "no:warnings"]
    with subprocess.Popen(
        [*command, *(["-x"] if first_failure else []), *args],
        cwd=copy,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    ) as process:
        try:
            output = process.communicate(timeout=timeout)[0]
            code: int | None = process.returncode
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            output = process.communicate()[0]
            code = None
    lastfailed = copy / ".pytest_cache" / "v" / "cache" / "lastfailed"
    failed = list(json.loads(lastfailed.read_text())) if lastfailed.is_file() else []
    lines = [line for line in output.splitlines() if line.strip()]
    return code, failed, lines[-1] if lines else ""


@contextmanager
def planted(path: Path, original: str, replacement: str) -> Iterator[None]:
    """The file with the snippet replaced, put back on leaving (even on an error)."""
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace(original, replacement), encoding="utf-8")
    try:
        yield
    finally:
        path.write_text(text, encoding="utf-8")


def judge(mutant: Mutant, copy: Path, timeout: float) -> Outcome:
    """Plant the mutant in the copy and run its tests; a kill is confirmed later."""
    start = time.monotonic()
    why = stale_reason(mutant, copy)
    if why:
        return Outcome(mutant, "stale", 0.0, why)
    with planted(copy / mutant.file, mutant.original, mutant.replacement):
        code, failed, last = _pytest(copy, mutant.pytest_args(), timeout)
    seconds = time.monotonic() - start
    if code is None:
        return Outcome(mutant, "timeout", seconds, f"over {timeout:g} s")
    if code == 0:
        return Outcome(mutant, "survived", seconds, "every selected test passed")
    if code not in (1, 2) or not failed:
        return Outcome(mutant, "error", seconds, f"pytest exit code {code}: {last}")
    return Outcome(mutant, "killed", seconds, failed[0])


def confirm_kills(outcomes: list[Outcome], copy: Path, timeout: float) -> list[Outcome]:
    """Rerun every killing test without any mutant, in one run: a kill by a test that fails
    anyway is no kill."""
    killers = sorted({o.detail for o in outcomes if o.status == "killed"})
    if not killers:
        return outcomes
    code, failed, _ = _pytest(copy, killers, timeout * 2, first_failure=False)
    broken = set(failed) if code is not None else set(killers)
    return [
        Outcome(o.mutant, "error", o.seconds, f"fails without the mutant too: {o.detail}")
        if o.status == "killed" and o.detail in broken
        else o
        for o in outcomes
    ]


def run_all(mutants: Sequence[Mutant], jobs: int, timeout: float) -> list[Outcome]:
    """Judge every mutant, on ``jobs`` copies of the project side by side."""
    with tempfile.TemporaryDirectory(prefix="trialflow-mutation-") as tmp:
        copies = [copy_project(Path(tmp) / f"copy{i}") for i in range(jobs)]
        todo: SimpleQueue[Mutant] = SimpleQueue()
        for mutant in mutants:
            todo.put(mutant)
        results: list[Outcome] = []

        def drain(copy: Path) -> None:
            while True:
                try:
                    mutant = todo.get_nowait()
                except Empty:
                    return
                outcome = judge(mutant, copy, timeout)
                results.append(outcome)
                print(f"{mutant.id:<36} {outcome.status:<8} {outcome.seconds:5.0f} s")
                sys.stdout.flush()

        with ThreadPoolExecutor(jobs) as pool:
            list(pool.map(drain, copies))
        results = confirm_kills(results, copies[0], timeout)
    order = {m.id: i for i, m in enumerate(mutants)}
    return sorted(results, key=lambda o: order[o.mutant.id])


def print_table(outcomes: Sequence[Outcome], seconds: float) -> None:
    """The table of outcomes, then the kill rate."""
    print("\n| mutant | status | seconds | failing test or reason |\n|---|---|---|---|")
    for o in outcomes:
        print(f"| {o.mutant.id} | {o.status} | {o.seconds:.0f} | {o.detail} |")
    caught = sum(o.status == "killed" for o in outcomes)
    rate = 100.0 * caught / len(outcomes) if outcomes else 0.0
    print(
        f"\nkill rate: {caught} of {len(outcomes)} mutants ({rate:.0f}%); "
        + ", ".join(
            f"{s} {sum(o.status == s for o in outcomes)}"
            for s in ("killed", "timeout", "survived", "stale", "error")
        )
        + f"; {seconds / 60:.1f} min"
    )


def list_mutants(mutants: Sequence[Mutant]) -> int:
    """Print the list with each mutant's staleness; 1 if any is stale."""
    bad = 0
    for m in mutants:
        why = stale_reason(m, ROOT)
        bad += bool(why)
        print(f"{m.id:<36} {m.file}  [{m.section}] {m.quote}")
        print(f"{'':<36} pytest {shlex.join(m.pytest_args())}")
        if why:
            print(f"{'':<36} STALE: {why}")
    return 1 if bad else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--only", action="append", default=[], metavar="ID", help="run these")
    parser.add_argument("--list", action="store_true", help="list and check the mutants only")
    parser.add_argument("--jobs", type=int, default=1, help="copies run side by side (1)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per mutant (900)")
    args = parser.parse_args(argv)
    mutants = load_mutants()
    unknown = sorted(set(args.only) - {m.id for m in mutants})
    if unknown:
        parser.error(f"unknown mutant id(s): {', '.join(unknown)}")
    chosen = [m for m in mutants if not args.only or m.id in args.only]
    gaps = uncovered(mutants)
    for gap in gaps:
        print(f"README promise without a mutant: {gap}")
    if args.list:
        return max(list_mutants(chosen), int(bool(gaps)))
    start = time.monotonic()
    outcomes = run_all(chosen, max(1, args.jobs), args.timeout)
    print_table(outcomes, time.monotonic() - start)
    caught = all(o.status == "killed" for o in outcomes)
    return 0 if caught and not gaps else 1


if __name__ == "__main__":
    sys.exit(main())
