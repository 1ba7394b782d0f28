"""Captum 0.9's riemann_trapezoid weights, and how ours differ.

Captum pairs the points ``linspace(0, 1, n)`` with weights ``1/n`` (halved at
the ends), which sum to ``(n - 1)/n``; captum-ext uses the trapezoid rule's
weights ``1/(n - 1)`` on the same points. Every other method is identical.
"""

from __future__ import annotations


def captum_scale(method: str, n_steps: int) -> float:
    """Factor turning a Captum result into ours (same points)."""
    return n_steps / (n_steps - 1) if method == "riemann_trapezoid" else 1.0
