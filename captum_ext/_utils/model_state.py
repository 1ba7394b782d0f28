"""Leave the user's model exactly as it was: buffers restored after every call.

A forward pass in training mode changes a model's buffers: BatchNorm updates
``running_mean``, ``running_var`` and ``num_batches_tracked``. Every public
entry point of captum-ext runs inside :func:`preserved_model_state`, which
snapshots the buffers of the modules it can find behind ``forward_func`` and
writes them back afterwards, on success and on any exception (also
``KeyboardInterrupt``), so that the model is bit-identical after the call.
It also says, once per call, when the model is in training mode with active
Dropout (its output, and so every attribution, is random) or with BatchNorm
using batch statistics (an example's result depends on the rest of its batch).
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, TypeVar

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd

F = TypeVar("F", bound=Callable[..., Any])

# ids of the modules whose buffers an enclosing call restores (per thread)
_ACTIVE = threading.local()


def modules_behind(obj: Any, _depth: int = 0) -> list[nn.Module]:
    """The ``nn.Module`` objects a forward function or attribution runs.

    Finds a module itself, the module of a bound method, the function of a
    :func:`functools.partial`, the ``forward_func`` (and an inner
    ``attribution_method``) of a Captum-style attribution object, and the
    items of a list, tuple or dict of those.
    """
    if obj is None or _depth > 4:
        return []
    if isinstance(obj, nn.Module):
        return [obj]
    found: list[nn.Module] = []
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, (list, tuple)):
        for item in obj:
            found += modules_behind(item, _depth + 1)
        return found
    owner = getattr(obj, "__self__", None)
    if owner is not None and owner is not obj:
        found += modules_behind(owner, _depth + 1)
    if isinstance(obj, functools.partial):
        found += modules_behind(obj.func, _depth + 1)
    for name in ("forward_func", "attribution_method", "layer"):
        inner = getattr(obj, name, None)
        if inner is not None and not isinstance(inner, type):
            found += modules_behind(inner, _depth + 1)
    return found


def _unique(modules: list[nn.Module]) -> list[tuple[str, nn.Module]]:
    """Every submodule once, with its qualified name in the first top module."""
    seen: set[int] = set()
    out = []
    for top in modules:
        for name, m in top.named_modules(remove_duplicate=False):
            if id(m) not in seen:
                seen.add(id(m))
                out.append((name or "<root>", m))
    return out


def _names(named: list[str]) -> str:
    shown = ", ".join(repr(n) for n in named[:3])
    return shown + (f" and {len(named) - 3} more" if len(named) > 3 else "")


def _training_mode_warning(named: list[tuple[str, nn.Module]]) -> str | None:
    dropout = [
        n for n, m in named if isinstance(m, _DropoutNd) and m.training and m.p > 0
    ]
    batchnorm = [n for n, m in named if isinstance(m, _BatchNorm) and m.training]
    if not dropout and not batchnorm:
        return None
    parts = []
    if dropout:
        parts.append(
            f"Dropout module(s) {_names(dropout)} make its output, and so every "
            "attribution or score, random"
        )
    if batchnorm:
        parts.append(
            f"BatchNorm module(s) {_names(batchnorm)} normalise with batch "
            "statistics, so an example's result depends on the rest of its batch "
            "(and pattern rules, which assume BatchNorm's fixed affine map, do "
            "not hold)"
        )
    return (
        "`model` is in training mode: "
        + "; ".join(parts)
        + ". Its buffers are restored afterwards. Call model.eval() first to "
        "explain the deployed model."
    )


@contextmanager
def preserved_model_state(*objs: Any) -> Iterator[None]:
    """Restore every buffer of the modules behind ``objs`` on exit.

    Buffers are snapshotted on entry and written back in place on exit (after
    success and after any exception), so the tensors the user holds keep their
    identity and their values are bit-identical. A buffer whose values the
    call did not change is left alone (BatchNorm's kernel updates running
    statistics without moving the version counter, so values are compared).
    A buffer replaced by a new tensor object during the call is put back too.
    Warns once when a module is in training mode with Dropout or BatchNorm
    (see the module docstring). Nested calls (a metric calling an attribution
    method) snapshot, restore and warn only for modules no enclosing call
    already covers.
    """
    guarded: set[int] = getattr(_ACTIVE, "ids", set())
    named = [
        (n, m)
        for n, m in _unique([m for obj in objs for m in modules_behind(obj)])
        if id(m) not in guarded  # an enclosing call already restores these
    ]
    modules = [m for _, m in named]
    message = _training_mode_warning(named)
    if message is not None:
        warnings.warn(message, UserWarning, stacklevel=5)
    _ACTIVE.ids = guarded | {id(m) for m in modules}
    saved: list[tuple[nn.Module, str, Tensor, Tensor]] = []
    with torch.no_grad():
        for m in modules:
            for name, buf in m._buffers.items():
                if buf is not None:
                    saved.append((m, name, buf, buf.detach().clone()))
    try:
        yield
    finally:
        _ACTIVE.ids = guarded
        with torch.no_grad():
            for m, name, buf, copy in saved:
                if m._buffers.get(name) is not buf:
                    m._buffers[name] = buf
                elif buf.shape == copy.shape and torch.equal(buf, copy):
                    continue  # unchanged: leave it (and its version counter) alone
                if buf.shape != copy.shape:  # resized in place
                    buf.resize_(copy.shape)
                buf.copy_(copy)


def preserves_model_state(func: F) -> F:
    """Decorate a public entry point: model state restored, no silent NaN.

    The call runs inside :func:`preserved_model_state`, and a result with
    NaN / inf entries gets a :class:`RuntimeWarning` naming the function
    (never a silent non-finite result).

    Works on ``attribute`` methods (the model is found behind ``self``) and on
    metric functions (behind their ``forward_func`` / ``model`` argument).
    Put it directly under ``@log_usage(...)``, so that
    ``attribute.__wrapped__`` (which :class:`captum.attr.NoiseTunnel` calls)
    is guarded too.
    """
    signature = inspect.signature(func)
    names = [
        n
        for n in (
            "self",
            "forward_func",
            "model",
            "attribution_method",
            "explanation_func",
            "method",
            "methods",
            "other_forward_func",
            "other_method",
            "equivalent",
        )
        if n in signature.parameters
    ]

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            bound = signature.bind_partial(*args, **kwargs).arguments
        except TypeError:  # let the function raise its own error
            return func(*args, **kwargs)
        caller = _user_frame(sys._getframe(1))
        with _warnings_at(caller):
            with preserved_model_state(*(bound.get(n) for n in names)):
                result = func(*args, **kwargs)
            bad = count_nonfinite(result)
            if bad:
                owner = bound.get("self")
                where = (
                    func.__qualname__
                    if owner is None
                    else f"{type(owner).__name__}.{func.__name__}"
                )
                warnings.warn(
                    f"{where} returned {bad} non-finite value(s) (NaN or "
                    "inf). Check the inputs and the model's output for NaN / "
                    "inf, and the method's numerical knobs (its documentation "
                    "says which).",
                    RuntimeWarning,
                    stacklevel=2,
                )
        return result

    return wrapper  # type: ignore[return-value]


def _is_wrapper_file(filename: str) -> bool:
    """This file, or Captum's ``log_usage`` wrapper."""
    return filename == __file__ or filename.replace(os.sep, "/").endswith(
        "captum/log/dummy_log.py"
    )


def _user_frame(frame: FrameType | None) -> FrameType | None:
    """The first frame outside the decorators' own files."""
    while frame is not None and _is_wrapper_file(frame.f_code.co_filename):
        frame = frame.f_back
    return frame


@contextmanager
def _warnings_at(caller: FrameType | None) -> Iterator[None]:
    """Re-issue warnings that point into the decorators at the user's line.

    A library warning raised with ``stacklevel=2`` inside a decorated function
    would name the decorator's frame; it is re-issued (after the call, also
    when the call raises) at the caller's line, through the user's filters.
    Other warnings keep their location.
    """
    pending: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                yield
            finally:
                pending = list(caught)
    finally:
        for w in pending:
            _reissue(w, caller)


def _reissue(w: warnings.WarningMessage, caller: FrameType | None) -> None:
    filename, lineno, registry = w.filename, w.lineno, None
    if caller is not None and _is_wrapper_file(w.filename):
        filename, lineno = caller.f_code.co_filename, caller.f_lineno
        registry = caller.f_globals.setdefault("__warningregistry__", {})
    # no ``module_globals``: with it, ``warn_explicit`` asks the caller's
    # module loader for the source line, and for code run by ``python -c`` or
    # from standard input that loader raises ImportError instead of warning
    warnings.warn_explicit(w.message, w.category, filename, lineno, registry=registry)


def count_nonfinite(result: Any, _depth: int = 0) -> int:
    """Number of NaN / inf entries in the floating-point tensors of ``result``.

    Looks into tuples, lists, dict values and dataclass / named-tuple fields
    (two levels deep), which covers every return type of captum-ext.
    """
    if _depth > 2:
        return 0
    if isinstance(result, Tensor):
        if not (result.is_floating_point() or result.is_complex()):
            return 0
        return int((~torch.isfinite(result)).sum().item())
    if isinstance(result, dict):
        items: Any = result.values()
    elif isinstance(result, (tuple, list)):
        items = result
    elif hasattr(result, "__dataclass_fields__"):
        items = [getattr(result, f) for f in result.__dataclass_fields__]
    else:
        return 0
    return sum(count_nonfinite(r, _depth + 1) for r in items)
