"""evaluate_attributions with ``checkpoint_dir``: faults, kills and resuming.

An interrupted run (KeyboardInterrupt, a failing batch, SIGKILL of the
process, or two processes interrupted on different batches) resumed with the
same directory must equal an uninterrupted run bit for bit, and recompute only
the batches that were not finished.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from captum.attr import InputXGradient
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

import captum_ext.metrics._evaluate as _evaluate
from captum_ext.metrics import (
    EvaluationBatchError,
    EvaluationResult,
    evaluate_attributions,
    image_degradation,
)
from tests.metrics.test_evaluate import DEGRADE, _data, _free_port, _model

ROOT = Path(__file__).resolve().parents[2]

RANDOM = partial(image_degradation, patch_size=2, n_steps=None, order="random")


class _Explain:
    """InputXGradient that counts its calls and can fail on the n-th one."""

    def __init__(
        self, model: nn.Module, fail_at: int | None = None, error: Any = None
    ) -> None:
        self.ixg = InputXGradient(model)
        self.calls = 0
        self.fail_at = fail_at
        self.error = error

    def __call__(self, inputs: Tensor, target: Tensor) -> Tensor:
        self.calls += 1
        if self.calls == self.fail_at:
            raise self.error
        return self.ixg.attribute(inputs, target=target)


def _metrics() -> dict[str, Any]:
    return {"morf": DEGRADE, "random": RANDOM}


def _run(
    explain: Any, loader: Any, checkpoint: Path | None, **kw: Any
) -> EvaluationResult:
    kw.setdefault("seed", 7)
    return evaluate_attributions(
        explain,
        loader,
        kw.pop("metrics", _metrics()),
        forward_func=kw.pop("forward_func", _model()),
        checkpoint_dir=checkpoint,
        **kw,
    )


def _loader(n: int = 18) -> DataLoader:
    return DataLoader(TensorDataset(*_data(n)), batch_size=4)  # 5 batches


def _assert_equal(a: EvaluationResult, b: EvaluationResult) -> None:
    assert a.scores.keys() == b.scores.keys()
    for name in a.scores:
        assert torch.equal(a.scores[name], b.scores[name]), name
    assert torch.equal(a.targets, b.targets)
    assert (a.labels is None) == (b.labels is None)
    if a.labels is not None:
        assert torch.equal(a.labels, b.labels)  # type: ignore[arg-type]


def _files(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def test_keyboard_interrupt_then_resume_equals_uninterrupted(tmp_path: Path) -> None:
    model = _model()
    whole = _run(_Explain(model), _loader(), None)
    ckpt = tmp_path / "ckpt"
    faulty = _Explain(model, fail_at=3, error=KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        _run(faulty, _loader(), ckpt)
    # batches 0 and 1 finished and are on disk, nothing half-written
    assert _files(ckpt) == ["batch_00000000.pt", "batch_00000001.pt"]
    again = _Explain(model)
    resumed = _run(again, _loader(), ckpt)
    assert again.calls == 3  # only batches 2, 3, 4 were computed
    _assert_equal(resumed, whole)
    done = _Explain(model)
    _assert_equal(_run(done, _loader(), ckpt), whole)
    assert done.calls == 0


def test_failing_batch_names_its_index_and_keeps_the_work(tmp_path: Path) -> None:
    model = _model()
    whole = _run(_Explain(model), _loader(), None)
    boom = RuntimeError("out of memory (simulated)")
    for ckpt in (tmp_path / "ckpt", None):
        with pytest.raises(EvaluationBatchError, match="batch 3 of `data`") as info:
            _run(_Explain(model, fail_at=4, error=boom), _loader(), ckpt)
        err = info.value
        assert err.__cause__ is boom and err.batch_index == 3
        assert err.checkpoint_dir == ckpt
        assert err.partial is not None and err.partial.n_examples == 12
        for name, value in err.partial.scores.items():
            assert torch.equal(value, whole.scores[name][:12]), name
    resumed_with = _Explain(model)
    _assert_equal(_run(resumed_with, _loader(), tmp_path / "ckpt"), whole)
    assert resumed_with.calls == 2

    # a metric that fails is reported the same way
    def bad_metric(inputs: Tensor) -> Tensor:
        raise ZeroDivisionError("metric bug")

    with pytest.raises(EvaluationBatchError, match=r"batch 0 .*ZeroDivisionError"):
        _run(_Explain(model), _loader(), None, metrics={"bad": bad_metric})


def test_interrupted_write_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _model()
    calls = []

    def failing_replace(src: Any, dst: Any) -> None:
        calls.append(dst)
        if len(calls) == 2:
            raise OSError("disk full (simulated)")
        os.rename(src, dst)

    monkeypatch.setattr(_evaluate.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        _run(_Explain(model), _loader(), tmp_path)
    assert _files(tmp_path) == ["batch_00000000.pt"]  # no temporary file left


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted(tmp_path: Path) -> None:
    """A subprocess kills itself (SIGKILL) while loading batch 2, then resumes."""
    script = tmp_path / "run.py"
    script.write_text(
        textwrap.dedent(
            """
            import os, signal, sys
            import torch
            from torch.utils.data import DataLoader, Dataset
            from tests.metrics.test_evaluate import _data, _model
            from tests.metrics.test_evaluate_resume import _Explain, _run

            torch.set_num_threads(1)
            ckpt, kill_at, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]

            class Killing(Dataset):
                def __init__(self):
                    self.x, self.y = _data(18)
                def __len__(self):
                    return 18
                def __getitem__(self, i):
                    if i == kill_at:
                        os.kill(os.getpid(), signal.SIGKILL)
                    return self.x[i], self.y[i]

            def evaluate(path):
                explain = _Explain(_model())
                res = _run(explain, DataLoader(Killing(), batch_size=4), path)
                return {
                    "scores": res.scores, "targets": res.targets, "calls": explain.calls
                }

            resumed = evaluate(ckpt)  # killed in batch 2 when kill_at = 9
            whole = evaluate(None)  # the uninterrupted run, in the same process
            torch.save({"resumed": resumed, "whole": whole}, out)
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}

    def run(ckpt: str, kill_at: int, out: str) -> int:
        proc = subprocess.run(
            [sys.executable, str(script), ckpt, str(kill_at), out],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        assert proc.returncode in (0, -signal.SIGKILL), proc.stderr
        return proc.returncode

    ckpt = tmp_path / "ckpt"
    assert run(str(ckpt), 9, str(tmp_path / "never.pt")) == -signal.SIGKILL
    assert not (tmp_path / "never.pt").exists()
    assert _files(ckpt) == ["batch_00000000.pt", "batch_00000001.pt"]
    assert run(str(ckpt), -1, str(tmp_path / "out.pt")) == 0
    out = torch.load(tmp_path / "out.pt", weights_only=True)
    resumed, whole = out["resumed"], out["whole"]
    assert resumed["calls"] == 3 and whole["calls"] == 5
    for name, value in whole["scores"].items():
        assert torch.equal(resumed["scores"][name], value), name
    assert torch.equal(resumed["targets"], whole["targets"])


def test_checkpoint_of_another_evaluation_is_refused(tmp_path: Path) -> None:
    model = _model()
    _run(_Explain(model), _loader(), tmp_path)
    other_model = _model()
    with torch.no_grad():
        other_model[0].bias.add_(1e-3)
    different = [
        ({"seed": 8}, "different evaluation"),
        ({"forward_func": other_model}, "different evaluation"),
        (
            {
                "metrics": {
                    "morf": partial(DEGRADE, replacement="zero"),
                    "random": RANDOM,
                }
            },
            "different evaluation",
        ),
        ({"metrics": {"morf": DEGRADE}}, "different evaluation"),
        ({"target": "predicted"}, "different evaluation"),
    ]
    for kwargs, match in different:
        with pytest.raises(ValueError, match=f"`checkpoint_dir` .*{match}"):
            _run(_Explain(model), _loader(), tmp_path, **kwargs)
    x, y = _data(18)
    shifted = DataLoader(TensorDataset(x + 1, y), batch_size=4)
    with pytest.raises(ValueError, match="batch 0 of `data` differs"):
        _run(_Explain(model), shifted, tmp_path)
    relabelled = DataLoader(TensorDataset(x, (y + 1) % 5), batch_size=4)
    with pytest.raises(ValueError, match="batch 0 of `data` differs"):
        _run(_Explain(model), relabelled, tmp_path)
    with pytest.raises(ValueError, match=r"batches \[3, 4\] that `data` does not"):
        _run(
            _Explain(model),
            DataLoader(TensorDataset(x[:12], y[:12]), batch_size=4),
            tmp_path,
        )
    with pytest.raises(ValueError, match="not a directory"):
        _run(_Explain(model), _loader(), tmp_path / "batch_00000000.pt")
    with pytest.raises(TypeError, match="checkpoint_dir"):
        _run(_Explain(model), _loader(), 3)  # type: ignore[arg-type]


class _Payload:
    """Not a tensor, container or number: weights_only loading refuses it."""

    def __reduce__(self) -> Any:
        return (print, ("this must never run",))


def test_checkpoint_files_are_read_weights_only(tmp_path: Path) -> None:
    model = _model()
    _run(_Explain(model), _loader(8), tmp_path)
    record = torch.load(tmp_path / "batch_00000001.pt", weights_only=True)
    assert record["index"] == 1 and record["format"] == 1
    assert set(record["payload"]["scores"]) == {"morf", "random"}
    torch.save({"format": 1, "payload": _Payload()}, tmp_path / "batch_00000001.pt")
    with pytest.raises(ValueError, match=r"cannot read .*batch_00000001\.pt"):
        _run(_Explain(model), _loader(8), tmp_path)
    (tmp_path / "batch_00000001.pt").write_bytes(b"truncated")
    with pytest.raises(ValueError, match="cannot read"):
        _run(_Explain(model), _loader(8), tmp_path)
    torch.save({"format": 99}, tmp_path / "batch_00000001.pt")
    with pytest.raises(ValueError, match="format 1"):
        _run(_Explain(model), _loader(8), tmp_path)


# --- two processes -------------------------------------------------------------


def _resume_worker(rank: int, world: int, port: int, ckpt: str, out_dir: str) -> None:
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        model = _model()
        # rank 0 evaluates batches 0, 2, 4 and is interrupted in batch 4;
        # rank 1 evaluates batches 1, 3 and is interrupted in batch 3. Both
        # stop before the collective gather.
        fail_at = 3 if rank == 0 else 2
        interrupted = False
        try:
            _run(_Explain(model, fail_at, KeyboardInterrupt()), _loader(), Path(ckpt))
        except KeyboardInterrupt:
            interrupted = True
        dist.barrier()
        files = _files(Path(ckpt))
        again = _Explain(model)
        resumed = _run(again, _loader(), Path(ckpt))
        whole = _run(_Explain(model), _loader(), None)
        torch.save(
            {
                "interrupted": interrupted,
                "files": files,
                "calls": again.calls,
                "resumed": resumed.scores,
                "whole": whole.scores,
            },
            Path(out_dir) / f"rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_two_processes_interrupted_and_resumed(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    mp.spawn(
        _resume_worker,
        args=(2, _free_port(), str(ckpt), str(tmp_path)),
        nprocs=2,
        join=True,
    )
    results = [
        torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)
    ]
    for res in results:
        assert res["interrupted"] and res["calls"] == 1  # one batch left each
        assert res["files"] == [f"batch_{i:08d}.pt" for i in (0, 1, 2)]
        for name, value in res["whole"].items():
            assert value.shape[0] == 18
            assert torch.equal(res["resumed"][name], value), name
            assert torch.equal(results[0]["whole"][name], value), name
    # one process resumes the two-process checkpoint: nothing left to compute
    here = _Explain(_model())
    loaded = _run(here, _loader(), ckpt, process_group=None)
    assert here.calls == 0
    for name, value in results[0]["whole"].items():
        assert torch.equal(loaded.scores[name], value), name
