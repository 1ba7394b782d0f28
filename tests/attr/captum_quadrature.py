"""How captum-ext's ``method="trapezoid"`` relates to Captum 0.9's rules.

Captum pairs the points ``linspace(0, 1, n)`` with ``riemann_trapezoid``
weights ``1/n`` (halved at the ends), which sum to ``(n - 1)/n``. captum-ext
uses Captum's points and weights for every Captum method name, and offers the
trapezoid rule proper (weights ``1/(n - 1)`` on the same points) as
``method="trapezoid"``.
"""

from __future__ import annotations


def captum_scale(method: str, n_steps: int) -> float:
    """Factor turning Captum's ``riemann_trapezoid`` result into ours."""
    return n_steps / (n_steps - 1) if method == "trapezoid" else 1.0


def captum_method(method: str) -> str:
    """The Captum method with ``method``'s points."""
    return "riemann_trapezoid" if method == "trapezoid" else method
