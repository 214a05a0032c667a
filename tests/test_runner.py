"""Script jobs: storage problems (full, read-only or forbidden disk) are named, not "a bug"."""

from __future__ import annotations

import errno
from types import SimpleNamespace

import pytest

from trialflow.errors import TrialflowError
from trialflow.runner import run_script, storage_problem
from trialflow.setup import check_writable


def _smk(tmp_path):
    return SimpleNamespace(log=[str(tmp_path / "job.log")], config={}, rule="report", threads=1)


@pytest.mark.parametrize(
    ("code", "words"),
    [(errno.ENOSPC, "the disk is full"), (errno.EROFS, "read-only"),
     (errno.EACCES, "permission denied"), (errno.EDQUOT, "quota")],
)  # fmt: skip
def test_a_storage_error_says_what_happened_and_where(tmp_path, capsys, code, words) -> None:
    target = str(tmp_path / "results" / "report.html")

    def main(_smk):
        raise OSError(code, "os message", target)

    with pytest.raises(SystemExit) as info:
        run_script(_smk(tmp_path), main)
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert words in err and target in err and "What to do" in err
    assert "a bug" not in err


def test_other_os_errors_are_not_disguised() -> None:
    assert storage_problem(OSError(errno.ENOENT, "gone")) is None
    assert storage_problem(ValueError("x")) is None


def test_a_read_only_results_folder_stops_the_run(tmp_path, monkeypatch) -> None:
    results = tmp_path / "results"
    (results / "trial_a").mkdir(parents=True)
    check_writable(results, ["trial_a"])  # writable: nothing to say
    # Running as root, permissions are not enforced; ask as the user would be answered.
    monkeypatch.setattr("trialflow.setup.os.access", lambda path, mode: False)
    with pytest.raises(TrialflowError, match="read-only for you") as info:
        check_writable(results, ["trial_a"])
    assert "results_dir" in info.value.fix


def test_a_storage_error_names_the_absolute_folder_of_a_relative_path(
    tmp_path, monkeypatch
) -> None:
    """README, "Safety and reproducibility": a full disk or a read-only file system "stop the
    run with that reason and the folder" -- also when the file was named relative to the
    working directory."""
    monkeypatch.chdir(tmp_path)
    problem = storage_problem(OSError(errno.ENOSPC, "No space left", "results/t/report.html"))
    assert problem is not None
    assert f"(in {tmp_path / 'results' / 't'})" in problem.message


@pytest.mark.parametrize("threads", [1, 2])
def test_a_job_runs_one_blas_thread_whatever_its_threads(tmp_path, threads: int) -> None:
    """README, "Speed: jobs, threads and resources": every process runs one BLAS thread (a
    job's threads are worker processes), whatever the BLAS would start on its own (3 here, or
    as many as it can) and whatever the job was given."""
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas_threads() -> int:
        return max(p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas")

    seen: list[int] = []
    with threadpool_limits(limits=3):
        if blas_threads() < 2:
            pytest.skip("this BLAS cannot run more than one thread here")
        smk = _smk(tmp_path)
        smk.threads = threads
        run_script(smk, lambda _smk: seen.append(blas_threads()))
    assert seen == [1]
