"""Run an attribution method and metrics over a data set, optionally data-parallel."""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
import torch.distributed as dist
from captum._utils.progress import progress
from captum.attr import Attribution
from captum.log import log_usage
from torch import Tensor, nn
from torch.utils.data import (
    DataLoader,
    DistributedSampler,
    IterableDataset,
    RandomSampler,
)

from captum_ext._utils.model_state import preserves_model_state
from captum_ext._utils.validation import validate_target

#: Keyword arguments a metric may name; it receives those it names.
METRIC_ARGUMENTS = (
    "forward_func",
    "inputs",
    "attributions",
    "masks",
    "target",
    "labels",
    "explanation_func",
    "generator",
)

_TARGET_MODES = ("label", "predicted")

#: Version of the checkpoint file layout (a batch file of another version is
#: refused).
_CHECKPOINT_FORMAT = 1
_BATCH_FILE = re.compile(r"^batch_(\d{8})\.pt$")


@dataclass
class EvaluationResult:
    """Per-example metric values over a data set, in the data's order.

    Attributes:
        scores (dict[str, Tensor]): Metric name -> the metric's per-example
            output stacked over the data set, ``(n_examples, ...)`` (a scalar
            metric gives ``(n_examples,)``, a curve ``(n_examples, n_points)``),
            on the CPU.
        targets (Tensor): ``(n_examples,)`` the class each example was explained
            and scored for.
        labels (Tensor or None): ``(n_examples, ...)`` the labels the data
            carried, or None when its batches had none.
    """

    scores: dict[str, Tensor]
    targets: Tensor
    labels: Tensor | None

    @property
    def n_examples(self) -> int:
        """Number of examples evaluated."""
        return int(self.targets.shape[0])

    @property
    def mean(self) -> dict[str, Tensor]:
        """Mean over examples of every metric (a mean curve for curves)."""
        return {k: v.double().mean(dim=0) for k, v in self.scores.items()}

    @property
    def sem(self) -> dict[str, Tensor]:
        """Standard error of each mean (sample std / sqrt(n); NaN when n < 2)."""
        out = {}
        for k, v in self.scores.items():
            v = v.double()
            n = v.shape[0]
            if n < 2:
                out[k] = torch.full(v.shape[1:], math.nan, dtype=torch.float64)
            else:
                out[k] = v.std(dim=0, correction=1) / math.sqrt(n)
        return out


class EvaluationBatchError(RuntimeError):
    """A batch of :func:`evaluate_attributions` failed.

    Raised from the original exception (``__cause__``), with the batch's
    index in the message. The batches finished before it are kept: in
    ``checkpoint_dir`` when one was given (rerun the same call to resume),
    and in :attr:`partial`.

    Attributes:
        batch_index (int): Index of the failing batch in ``data``.
        checkpoint_dir (pathlib.Path or None): Where the finished batches are.
        partial (EvaluationResult or None): The batches this process finished
            before the failure (all of them in a one-process run; in data
            order), or None when none had finished.
    """

    def __init__(
        self,
        message: str,
        batch_index: int,
        checkpoint_dir: Path | None,
        partial: EvaluationResult | None,
    ) -> None:
        super().__init__(message)
        self.batch_index = batch_index
        self.checkpoint_dir = checkpoint_dir
        self.partial = partial


class _BatchInputError(ValueError):
    """A batch's own content is wrong (raised as is, naming the batch)."""


@dataclass(frozen=True)
class _MetricCall:
    name: str
    fn: Callable[..., Any]
    takes: frozenset[str]
    explanation_kwargs: bool


@log_usage(part_of_slo=True)
@preserves_model_state
def evaluate_attributions(
    attribution_method: Attribution | Callable[..., Any],
    data: Iterable[Any],
    metrics: Mapping[str, Callable[..., Tensor]],
    target: str | int | Callable[[Any, Tensor | None], Any] = "label",
    forward_func: Callable[..., Tensor] | None = None,
    attribute_kwargs: Mapping[str, Any] | None = None,
    device: torch.device | str | None = None,
    seed: int | None = None,
    show_progress: bool = False,
    process_group: Any = "auto",
    checkpoint_dir: str | os.PathLike[str] | None = None,
) -> EvaluationResult:
    r"""Evaluate an attribution method with one or more metrics over a data set.

    For every batch of ``data``: choose the target class (``target``), compute
    the attributions with ``attribution_method``, and call every metric; the
    per-example outputs are concatenated in the data's order. Nothing is
    averaged away: :class:`EvaluationResult` keeps every example's value and
    offers means and standard errors.

    **Metrics.** Each metric is a callable that receives, by keyword, those of
    the arguments below that its signature names (bind anything else with
    :func:`functools.partial`):

    - ``forward_func``: the model; ``inputs``: the batch's inputs (a Tensor,
      or a tuple when the batch holds several input tensors);
    - ``attributions`` (alias ``masks``): the method's output for the batch;
    - ``target``: ``(bsz,)`` class indices; ``labels``: the batch's labels;
    - ``explanation_func``: the method's ``attribute`` (or the callable given).
      A metric that takes it and ``**kwargs`` (Captum's ``sensitivity_max``)
      also receives ``target`` and ``attribute_kwargs`` through ``**kwargs``,
      which Captum forwards to the explanation;
    - ``generator``: only when ``seed`` is given (see below).

    It returns a Tensor whose first dimension is the batch size. So
    captum-ext's and Captum's metrics plug in directly::

        metrics = {
            "degradation": partial(image_degradation, patch_size=2, n_steps=None),
            "infidelity": partial(captum.metrics.infidelity, perturb_func=noise),
            "sensitivity": captum.metrics.sensitivity_max,
        }

    and so does any ``(forward_func, inputs, masks, labels)`` metric.

    **Data.** ``data`` is a :class:`~torch.utils.data.DataLoader` or any
    iterable of batches; a batch is an input Tensor, or a sequence
    ``(inputs, labels)`` (``inputs`` a Tensor or a tuple/list of Tensors),
    or ``(inputs,)``.

    **Data-parallel runs.** When ``torch.distributed`` is initialised
    (``process_group="auto"``, or an explicit group), the batches are dealt
    to the ranks in turn (batch ``i`` to rank ``i mod world_size``), each rank
    evaluates its batches, and the results are gathered with
    ``all_gather_object`` and put back in batch order, so **every rank returns
    the same result as a single process would**, in the same order. Whole
    batches are dealt, not single examples: every batch is evaluated exactly
    as in the single-process run (same composition, so the same
    floating-point numbers), uneven shards need no padding, and no example is
    duplicated (unlike :class:`~torch.utils.data.DistributedSampler`, which
    pads shards with repeated examples). A map-style
    :class:`~torch.utils.data.DataLoader` is rebuilt per rank so that each rank
    loads only its own batches; it must not shuffle. Any other iterable is
    iterated in full on every rank (each rank skips the others' batches). Use
    enough batches for all ranks to have work.

    **Randomness.** Random metrics (``order="random"``, Captum's infidelity)
    and random methods (SmoothGrad) draw from the global RNG, whose stream a
    data-parallel run splits differently. With ``seed`` given, each batch runs
    with the global RNG seeded from ``(seed, batch index)`` (restored
    afterwards), and metrics or methods that take a ``generator`` argument get
    a generator seeded the same way (on the batch's device), so results do not
    depend on how the data are sharded.

    The model is used as given (put it in eval mode first) and never
    modified; metrics run their own ``torch.no_grad()``. A model that needs
    extra forward arguments can be wrapped in a module that supplies them.
    With sharding active the call is collective: make it on every rank of the
    group (to evaluate on one rank alone, pass ``process_group=None``).

    **Checkpoints and resuming.** With ``checkpoint_dir``, every finished
    batch is written to ``checkpoint_dir/batch_<index>.pt`` atomically (a
    temporary file, flushed and fsynced, then renamed over the final name,
    so a killed process never leaves a partial file). Calling again with the
    same arguments and the same directory after an interruption, a crash or
    a failing batch loads the finished batches instead of recomputing them
    and evaluates the rest; the result equals an uninterrupted run bit for
    bit, provided the methods and metrics are deterministic or ``seed`` is
    given (each batch then draws from its own seeded stream, whichever
    batches were skipped). Each file records a fingerprint of the
    evaluation (the method's class, a hash of the model's parameters and
    buffers, the metrics with their bound arguments, ``target``,
    ``attribute_kwargs``, ``seed``) and a hash of its batch's inputs and
    labels; a file that does not match (another evaluation, changed data,
    another file layout), or a directory holding batches past the end of
    ``data``, is refused with a ``ValueError`` before its batch is used. In a
    data-parallel run every rank writes and resumes its own batches (one
    file per batch, so no two ranks write the same file), and a rerun may use
    another number of ranks. Files are read with
    ``torch.load(weights_only=True)``. Data are still iterated on a resume
    (to check each batch's hash); only the attributions and metrics are
    skipped.

    **Failures.** An exception raised while evaluating batch ``i`` (by the
    method, the model or a metric) is re-raised as
    :class:`EvaluationBatchError` naming ``i``, from the original exception;
    the finished batches are kept (on disk and in its ``partial``). A
    batch whose own content is malformed gives a ``ValueError`` naming it. A
    ``KeyboardInterrupt`` propagates unchanged (the finished batches are on
    disk). In a data-parallel run a failure stops only the failing rank; the
    others wait in the collective gather until the job is stopped, as with
    any collective call.

    Args:
        attribution_method (Attribution or Callable): A Captum / captum-ext
            attribution instance (its ``attribute`` is called), or any callable
            ``(inputs, target=..., **attribute_kwargs) -> attributions``.
        data (Iterable): A DataLoader or iterable of batches (see above).
        metrics (Mapping[str, Callable]): Metric name -> metric callable.
        target (str, int or Callable): The class explained and scored:
            ``"label"`` (default; the batch's labels), ``"predicted"`` (the
            model's arg-max on the input), an int (the same class for every
            example), or a callable ``(inputs, labels) -> (bsz,) class
            indices``.
        forward_func (Callable, optional): The model; default: the
            attribution method's ``forward_func``.
        attribute_kwargs (Mapping, optional): Extra keyword arguments for the
            attribution call (``n_steps``, ``baselines``, ...).
        device (torch.device or str, optional): Move each batch there.
            Default: None (leave batches where they are).
        seed (int, optional): Seed per-batch randomness (see above).
            Default: None.
        show_progress (bool): Show a progress bar over batches (on rank 0).
        process_group: ``"auto"`` (default): shard when
            ``torch.distributed`` is initialised; None: never shard; or a
            ``torch.distributed`` process group to shard over.
        checkpoint_dir (str or os.PathLike, optional): A directory for
            per-batch checkpoints (created when missing); rerun with the same
            directory to resume (see above). Default: None (nothing written).

    Returns:
        EvaluationResult: per-example scores in data order, targets, labels,
        and their means and standard errors.

    Raises:
        EvaluationBatchError: A batch failed (its index in the message).
        ValueError: Bad arguments, a malformed batch, or a checkpoint that
            belongs to another evaluation or other data.

    Examples::

        >>> from functools import partial
        >>> from captum.attr import IntegratedGradients
        >>> res = evaluate_attributions(
        ...     IntegratedGradients(model),
        ...     test_loader,
        ...     {"morf": partial(image_degradation, patch_size=2, n_steps=None)},
        ...     target="predicted",
        ...     show_progress=True,
        ...     checkpoint_dir="runs/ig_morf",  # rerun to resume after a crash
        ... )
        >>> aopc(res.scores["morf"]).mean()
    """
    explain, model = _resolve_method(attribution_method, forward_func)
    calls = _prepare_metrics(metrics, seed is not None)
    if isinstance(target, str):
        valid_target = target in _TARGET_MODES
    else:
        valid_target = not isinstance(target, bool) and (
            isinstance(target, int) or callable(target)
        )
    if not valid_target:
        raise ValueError(
            f"`target` must be one of {_TARGET_MODES}, an int or a callable "
            f"(inputs, labels) -> class indices; got {_describe(target)}."
        )
    if isinstance(target, int) and target < 0:
        raise ValueError(f"`target` must be a non-negative class index, got {target}.")
    if attribute_kwargs is not None and not isinstance(attribute_kwargs, Mapping):
        raise TypeError(
            "`attribute_kwargs` must be a mapping of keyword arguments, got "
            f"{type(attribute_kwargs).__name__}."
        )
    kwargs = dict(attribute_kwargs or {})
    if "target" in kwargs:
        raise ValueError(
            "`attribute_kwargs` must not hold `target`; use the `target` argument."
        )
    for call in calls:
        if call.explanation_kwargs:
            clash = set(kwargs) & set(inspect.signature(call.fn).parameters)
            if clash:
                raise ValueError(
                    f"`attribute_kwargs` {sorted(clash)} clash with arguments of "
                    f"metric {call.name!r}."
                )
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"`seed` must be an int or None, got {seed!r}.")
    group, rank, world = _resolve_group(process_group)
    method_takes_generator = _takes(explain, "generator") and "generator" not in kwargs
    dev = torch.device(device) if device is not None else None
    store = (
        None
        if checkpoint_dir is None
        else _Checkpoint(
            checkpoint_dir,
            _fingerprint(attribution_method, model, calls, target, kwargs, seed),
        )
    )

    batches, n_local = _local_batches(data, rank, world)
    local: list[tuple[int, dict[str, Any]]] = []
    bar = progress(
        batches,
        desc="evaluate_attributions",
        total=n_local,
        disable=not show_progress or rank != 0,
    )
    seen: set[int] = set()
    for index, batch in bar:
        inputs, labels = _split_batch(batch, index)
        seen.add(index)
        data_hash = _hash_batch(inputs, labels) if store is not None else ""
        saved = store.load(index, data_hash) if store is not None else None
        if saved is not None:
            local.append((index, saved))
            continue
        if dev is not None:
            inputs = tuple(x.to(dev) for x in inputs)
            labels = labels.to(dev) if labels is not None else None
        try:
            with _batch_rng(seed, index, inputs[0].device) as generator:
                payload = _evaluate_batch(
                    explain,
                    model,
                    calls,
                    inputs,
                    labels,
                    target,
                    kwargs,
                    generator,
                    method_takes_generator,
                    index,
                )
        except (_BatchInputError, KeyboardInterrupt):
            raise
        except Exception as err:
            done = len(local)
            where = (
                f"; the {done} finished batch(es) are kept in `checkpoint_dir` "
                f"{store.path} (call again with it to resume)"
                if store is not None
                else f"; the {done} finished batch(es) are in the error's `partial`"
            )
            raise EvaluationBatchError(
                f"batch {index} of `data` failed: {type(err).__name__}: {err}{where}.",
                index,
                store.path if store is not None else None,
                _result(calls, [p for _, p in local]) if local else None,
            ) from err
        if store is not None:
            store.save(index, data_hash, payload)
        local.append((index, payload))
    if store is not None:
        store.check_no_stale(seen, rank, world)
    if world > 1:
        gathered: list[Any] = [None] * world
        dist.all_gather_object(gathered, local, group=group)
        local = sorted(
            (item for part in gathered for item in part), key=lambda item: item[0]
        )
    if not local:
        raise ValueError("`data` yielded no batches.")
    if store is not None and rank == 0:
        store.remove_temporary_files()
    return _result(calls, [p for _, p in local])


def _result(
    calls: list[_MetricCall], payloads: list[dict[str, Any]]
) -> EvaluationResult:
    scores = {c.name: torch.cat([p["scores"][c.name] for p in payloads]) for c in calls}
    has_labels = [p["labels"] is not None for p in payloads]
    labels_all = torch.cat([p["labels"] for p in payloads]) if all(has_labels) else None
    return EvaluationResult(
        scores=scores,
        targets=torch.cat([p["targets"] for p in payloads]),
        labels=labels_all,
    )


# --- checkpoints ---------------------------------------------------------------


class _Checkpoint:
    """One file per finished batch, written atomically, checked on load."""

    def __init__(self, path: Any, fingerprint: str) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(
                "`checkpoint_dir` must be a path (str or os.PathLike), got "
                f"{type(path).__name__}."
            )
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(
                f"`checkpoint_dir` {self.path} exists and is not a directory."
            )
        self.path.mkdir(parents=True, exist_ok=True)
        self.fingerprint = fingerprint

    def _file(self, index: int) -> Path:
        return self.path / f"batch_{index:08d}.pt"

    def load(self, index: int, data_hash: str) -> dict[str, Any] | None:
        file = self._file(index)
        if not file.exists():
            return None
        try:
            saved = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ValueError(
                f"`checkpoint_dir`: cannot read {file} ({type(err).__name__}: {err}); "
                "it was not written by evaluate_attributions. Delete it to "
                "recompute that batch."
            ) from err
        if not isinstance(saved, dict) or saved.get("format") != _CHECKPOINT_FORMAT:
            raise ValueError(
                f"`checkpoint_dir`: {file} is not an evaluate_attributions "
                f"checkpoint of format {_CHECKPOINT_FORMAT}."
            )
        if saved.get("fingerprint") != self.fingerprint:
            raise ValueError(
                f"`checkpoint_dir` {self.path} holds batch {index} of a different "
                "evaluation (the attribution method, model parameters, metrics, "
                "`target`, `attribute_kwargs` or `seed` differ). Use a new "
                "directory, or delete it to start over."
            )
        if saved.get("data") != data_hash:
            raise ValueError(
                f"batch {index} of `data` differs from the one saved in "
                f"`checkpoint_dir` {self.path} (other inputs or labels, or another "
                "batch order). Use a new directory for other data."
            )
        payload = saved["payload"]
        return cast(dict[str, Any], payload)

    def save(self, index: int, data_hash: str, payload: dict[str, Any]) -> None:
        record = {
            "format": _CHECKPOINT_FORMAT,
            "fingerprint": self.fingerprint,
            "index": index,
            "data": data_hash,
            "payload": payload,
        }
        final = self._file(index)
        tmp = self.path / f".{final.name}.{os.getpid()}.tmp"
        try:
            with open(tmp, "wb") as f:
                torch.save(record, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                tmp.unlink()
        _fsync_dir(self.path)

    def check_no_stale(self, seen: set[int], rank: int, world: int) -> None:
        """Refuse batch files of this rank past the end of ``data``."""
        extra = []
        for file in self.path.iterdir():
            match = _BATCH_FILE.match(file.name)
            if match is None:
                continue
            index = int(match.group(1))
            if index % world == rank and index not in seen:
                extra.append(index)
        if extra:
            raise ValueError(
                f"`checkpoint_dir` {self.path} holds batches {sorted(extra)[:10]} that "
                "`data` does not have (it yielded fewer batches than the run that "
                "wrote them). Use a new directory for other data."
            )

    def remove_temporary_files(self) -> None:
        """Temporary files left by killed writers (no writer runs any more)."""
        for file in self.path.glob(".batch_*.tmp"):
            file.unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    """Make a rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - file systems without directory fsync
        pass
    finally:
        os.close(fd)


def _hash_tensor(h: Any, t: Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())


def _hash_batch(inputs: tuple[Tensor, ...], labels: Tensor | None) -> str:
    h = hashlib.sha256()
    for x in inputs:
        _hash_tensor(h, x)
    if labels is not None:
        h.update(b"labels")
        _hash_tensor(h, labels)
    return h.hexdigest()


def _describe_stable(obj: Any, depth: int = 0) -> Any:
    """A description of ``obj`` that is the same in every process (JSON-able)."""
    if depth > 6:
        return type(obj).__qualname__
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, Tensor):
        h = hashlib.sha256()
        _hash_tensor(h, obj)
        return {"tensor": h.hexdigest()}
    if isinstance(obj, nn.Module):
        h = hashlib.sha256(type(obj).__qualname__.encode())
        for name, value in obj.state_dict().items():
            h.update(name.encode())
            _hash_tensor(h, value)
        return {"module": h.hexdigest()}
    if isinstance(obj, torch.dtype | torch.device):
        return str(obj)
    if isinstance(obj, functools.partial):
        return {
            "partial": _describe_stable(obj.func, depth + 1),
            "args": [_describe_stable(a, depth + 1) for a in obj.args],
            "keywords": {
                k: _describe_stable(v, depth + 1)
                for k, v in sorted(obj.keywords.items())
            },
        }
    if isinstance(obj, Mapping):
        return {str(k): _describe_stable(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_describe_stable(v, depth + 1) for v in obj]
    if inspect.ismethod(obj):
        return {
            "method": obj.__func__.__qualname__,
            "of": _describe_stable(obj.__self__, depth + 1),
        }
    if isinstance(obj, Attribution):
        inner = getattr(obj, "attribution_method", None)
        return {
            "attribution": type(obj).__qualname__,
            "inner": None if inner is None else _describe_stable(inner, depth + 1),
        }
    if callable(obj) and hasattr(obj, "__qualname__"):
        return f"{getattr(obj, '__module__', '')}.{obj.__qualname__}"
    return type(obj).__qualname__


def _fingerprint(
    method: Any,
    model: Any,
    calls: list[_MetricCall],
    target: Any,
    attribute_kwargs: dict[str, Any],
    seed: int | None,
) -> str:
    description = {
        "method": _describe_stable(method),
        "model": _describe_stable(model),
        "metrics": {c.name: _describe_stable(c.fn) for c in calls},
        "target": _describe_stable(target),
        "attribute_kwargs": _describe_stable(attribute_kwargs),
        "seed": seed,
    }
    text = json.dumps(description, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _resolve_method(
    method: Any, forward_func: Callable[..., Tensor] | None
) -> tuple[Callable[..., Any], Callable[..., Tensor]]:
    if isinstance(method, Attribution):
        explain = method.attribute
        model = forward_func if forward_func is not None else method.forward_func
    elif callable(method):
        explain = method
        if forward_func is None:
            raise ValueError(
                "`forward_func` is required when `attribution_method` is a plain "
                "callable rather than an Attribution instance."
            )
        model = forward_func
    else:
        raise TypeError(
            "`attribution_method` must be a captum Attribution instance or a "
            f"callable; got {type(method).__name__}."
        )
    if not callable(model):
        raise TypeError(f"`forward_func` must be callable, got {type(model).__name__}.")
    return explain, model


def _takes(fn: Callable[..., Any], name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    p = params.get(name)
    return p is not None and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)


def _prepare_metrics(
    metrics: Mapping[str, Callable[..., Tensor]], seeded: bool
) -> list[_MetricCall]:
    """Check every metric's signature before any work; decide what it receives."""
    if not isinstance(metrics, Mapping):
        raise TypeError(
            "`metrics` must be a mapping of name -> metric callable, got "
            f"{type(metrics).__name__}."
        )
    if len(metrics) == 0:
        raise ValueError("`metrics` is empty; pass at least one metric.")
    calls = []
    for name, fn in metrics.items():
        if not isinstance(name, str):
            raise TypeError(f"metric names must be strings, got {name!r}.")
        if not callable(fn):
            raise TypeError(
                f"metric {name!r} must be callable, got {type(fn).__name__}."
            )
        try:
            params = inspect.signature(fn).parameters.values()
        except (TypeError, ValueError) as err:
            raise TypeError(
                f"metric {name!r}: cannot read its signature ({err}); wrap it in a "
                "function with named parameters."
            ) from err
        named = set()
        var_kw = False
        for p in params:
            if p.kind == p.VAR_KEYWORD:
                var_kw = True
                continue
            if p.kind == p.VAR_POSITIONAL:
                continue
            required = p.default is inspect.Parameter.empty
            if p.kind == p.POSITIONAL_ONLY:
                if required:
                    raise ValueError(
                        f"metric {name!r}: positional-only parameter {p.name!r} "
                        "cannot be passed by keyword; wrap the metric."
                    )
                continue
            if p.name in METRIC_ARGUMENTS:
                named.add(p.name)
            elif required:
                raise ValueError(
                    f"metric {name!r} requires argument {p.name!r}, which "
                    f"evaluate_attributions does not supply (it supplies "
                    f"{', '.join(METRIC_ARGUMENTS)}); bind it with functools.partial."
                )
        takes = frozenset(n for n in named if seeded or n != "generator")
        calls.append(
            _MetricCall(
                name=name,
                fn=fn,
                takes=takes,
                explanation_kwargs="explanation_func" in named
                and var_kw
                and "target" not in named,
            )
        )
    return calls


def _resolve_group(process_group: Any) -> tuple[Any, int, int]:
    """(group, rank, world size); world size 1 means no sharding."""
    if process_group is None:
        return None, 0, 1
    if isinstance(process_group, str):
        if process_group != "auto":
            raise ValueError(
                "`process_group` must be 'auto', None or a torch.distributed "
                f"process group; got {process_group!r}."
            )
        if not (dist.is_available() and dist.is_initialized()):
            return None, 0, 1
        return None, dist.get_rank(), dist.get_world_size()
    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError(
            "`process_group` was given but torch.distributed is not initialised."
        )
    rank = dist.get_rank(process_group)
    if rank < 0:
        raise ValueError("this process is not a member of `process_group`.")
    return process_group, rank, dist.get_world_size(process_group)


def _local_batches(
    data: Iterable[Any], rank: int, world: int
) -> tuple[Iterable[tuple[int, Any]], int | None]:
    """This rank's ``(batch index, batch)`` pairs and how many there are."""
    if world == 1:
        return enumerate(data), _length(data)
    if (
        isinstance(data, DataLoader)
        and data.batch_sampler is not None
        and not isinstance(data.dataset, IterableDataset)
    ):
        if isinstance(data.sampler, (RandomSampler, DistributedSampler)):
            raise ValueError(
                "`data` must be a DataLoader over the whole data set that does not "
                "shuffle (shuffle=False, no DistributedSampler) when evaluating "
                "with torch.distributed; evaluate_attributions shards it itself."
            )
        all_batches = list(data.batch_sampler)
        mine = list(range(rank, len(all_batches), world))
        loader = DataLoader(
            data.dataset,
            batch_sampler=[all_batches[i] for i in mine],
            num_workers=data.num_workers,
            collate_fn=data.collate_fn,
            pin_memory=data.pin_memory,
            timeout=data.timeout,
            worker_init_fn=data.worker_init_fn,
            multiprocessing_context=data.multiprocessing_context,
            generator=data.generator,
            prefetch_factor=data.prefetch_factor if data.num_workers > 0 else None,
            persistent_workers=data.persistent_workers,
            pin_memory_device=data.pin_memory_device,
        )
        return zip(mine, loader), len(mine)
    n = _length(data)
    total = None if n is None else max(0, (n - rank + world - 1) // world)
    return _strided(data, rank, world), total


def _length(data: Iterable[Any]) -> int | None:
    """``len(data)`` when it has one (an IterableDataset's loader may not)."""
    try:
        return len(data)  # type: ignore[arg-type]
    except TypeError:
        return None


def _strided(data: Iterable[Any], rank: int, world: int) -> Iterator[tuple[int, Any]]:
    for index, batch in enumerate(data):
        if index % world == rank:
            yield index, batch


def _split_batch(batch: Any, index: int) -> tuple[tuple[Tensor, ...], Tensor | None]:
    """``(inputs as a tuple, labels or None)`` from one batch."""
    if isinstance(batch, Tensor):
        raw, labels = batch, None
    elif isinstance(batch, (tuple, list)) and len(batch) in (1, 2):
        raw = batch[0]
        labels = batch[1] if len(batch) == 2 else None
    else:
        raise _BatchInputError(
            f"batch {index} of `data` must be an input Tensor, (inputs,) or "
            f"(inputs, labels); got {_describe(batch)}. Wrap the data set so that "
            "it yields that."
        )
    if isinstance(raw, Tensor):
        inputs: tuple[Tensor, ...] = (raw,)
    elif (
        isinstance(raw, (tuple, list))
        and raw
        and all(isinstance(t, Tensor) for t in raw)
    ):
        inputs = tuple(raw)
    else:
        raise _BatchInputError(
            f"batch {index}: inputs must be a Tensor or a tuple of Tensors, got "
            f"{_describe(raw)}."
        )
    if labels is not None and not isinstance(labels, Tensor):
        labels = torch.as_tensor(labels)
    return inputs, labels


def _describe(obj: Any) -> str:
    if isinstance(obj, (tuple, list)):
        return f"a {type(obj).__name__} of {len(obj)} items"
    if isinstance(obj, str):
        return repr(obj)
    return type(obj).__name__


@contextmanager
def _batch_rng(
    seed: int | None, index: int, device: torch.device
) -> Iterator[torch.Generator | None]:
    """Fork the global RNG and seed it (and a generator) for one batch."""
    if seed is None:
        yield None
        return
    batch_seed = (seed * 1_000_003 + index) % (2**63 - 1)
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(batch_seed)
        yield torch.Generator(device=device).manual_seed(batch_seed)


def _evaluate_batch(
    explain: Callable[..., Any],
    model: Callable[..., Tensor],
    calls: list[_MetricCall],
    inputs: tuple[Tensor, ...],
    labels: Tensor | None,
    target_mode: Any,
    attribute_kwargs: dict[str, Any],
    generator: torch.Generator | None,
    method_takes_generator: bool,
    index: int,
) -> dict[str, Any]:
    bsz = inputs[0].shape[0]
    for call in calls:
        if "labels" in call.takes and labels is None:
            raise _BatchInputError(
                f"metric {call.name!r} needs labels, but batch {index} of `data` "
                "has none."
            )
    inp: Any = inputs if len(inputs) > 1 else inputs[0]
    target = _resolve_target(target_mode, model, inp, labels, bsz, index)
    kwargs = dict(attribute_kwargs)
    if generator is not None and method_takes_generator:
        kwargs["generator"] = generator
    attributions = explain(inp, target=target, **kwargs)
    if isinstance(attributions, Tensor):
        attributions = attributions.detach()
    elif isinstance(attributions, tuple):
        attributions = tuple(
            a.detach() if isinstance(a, Tensor) else a for a in attributions
        )
    available: dict[str, Any] = {
        "forward_func": model,
        "inputs": inp,
        "attributions": attributions,
        "masks": attributions,
        "target": target,
        "labels": labels,
        "explanation_func": explain,
        "generator": generator,
    }
    scores = {}
    for call in calls:
        call_kwargs = {k: available[k] for k in call.takes}
        if call.explanation_kwargs:
            call_kwargs["target"] = target
            call_kwargs.update(attribute_kwargs)
        out = call.fn(**call_kwargs)
        if not isinstance(out, Tensor) or out.dim() == 0 or out.shape[0] != bsz:
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise _BatchInputError(
                f"metric {call.name!r} must return a Tensor with one row per "
                f"example (batch size {bsz}); got {shape}."
            )
        scores[call.name] = out.detach().cpu()
    return {
        "scores": scores,
        "targets": target.detach().cpu(),
        "labels": labels.detach().cpu() if labels is not None else None,
    }


def _resolve_target(
    mode: Any,
    model: Callable[..., Tensor],
    inputs: Any,
    labels: Tensor | None,
    bsz: int,
    index: int,
) -> Tensor:
    """The ``(bsz,)`` long tensor of classes explained for one batch."""
    device = (inputs[0] if isinstance(inputs, tuple) else inputs).device
    if isinstance(mode, int):
        return torch.full((bsz,), mode, dtype=torch.long, device=device)
    if mode == "label":
        if labels is None:
            raise _BatchInputError(
                f"`target='label'` but batch {index} of `data` has no labels; "
                "use target='predicted' or yield (inputs, labels) batches."
            )
        raw: Any = labels
    elif mode == "predicted":
        with torch.no_grad():
            out = model(*inputs) if isinstance(inputs, tuple) else model(inputs)
        if not isinstance(out, Tensor) or out.dim() != 2:
            raise _BatchInputError(
                "`target='predicted'` needs a model returning (bsz, n_classes); got "
                f"{tuple(out.shape) if isinstance(out, Tensor) else type(out)}."
            )
        raw = out.argmax(dim=1)
    else:
        raw = cast(Callable[..., Any], mode)(inputs, labels)
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = torch.full((bsz,), raw, dtype=torch.long, device=device)
    elif isinstance(raw, list):
        raw = torch.as_tensor(raw, device=device)
    if (
        not isinstance(raw, Tensor)
        or raw.shape != (bsz,)
        or raw.is_floating_point()
        or raw.is_complex()
        or raw.dtype == torch.bool
    ):
        shape = tuple(raw.shape) if isinstance(raw, Tensor) else type(raw).__name__
        raise _BatchInputError(
            f"the target of batch {index} must be {bsz} integer class indices "
            f"(shape ({bsz},)); got {shape}"
            + (f" of {raw.dtype}" if isinstance(raw, Tensor) else "")
            + "."
        )
    validate_target(raw, bsz)
    return raw.to(device=device, dtype=torch.long)
