"""Fully connected ReLU networks for tabular data."""

from __future__ import annotations

from torch import nn

from captum_ext._utils.validation import check_positive_int


def tabular_mlp(
    in_features: int,
    out_features: int = 1,
    hidden_layers: int = 1,
    width: int = 100,
    bias: bool = True,
) -> nn.Sequential:
    """A feed-forward ReLU network with ``hidden_layers`` hidden layers.

    The architecture of section 4.1 of Liu, Najmi & Sundararajan, "Ablated
    Data Augmentation as Regularization" (2020): hidden layers of ``width``
    units (100 in the paper) with ReLU; ``hidden_layers=0`` is a linear model
    (one ``nn.Linear``, i.e. linear or logistic regression).

    Args:
        in_features (int): Number of input features.
        out_features (int): Outputs (1 for regression, the class count for a
            classifier returning logits).
        hidden_layers (int): Number of hidden layers (0 or more).
        width (int): Units per hidden layer.
        bias (bool): Whether the linear layers have biases.

    Returns:
        nn.Sequential: ``Linear -> ReLU -> ... -> Linear`` (randomly initialised
        from the global RNG).

    Examples::

        >>> model = tabular_mlp(30, 2, hidden_layers=2)
        >>> model(torch.randn(4, 30)).shape
        torch.Size([4, 2])
    """
    for name, value in (
        ("in_features", in_features),
        ("out_features", out_features),
        ("width", width),
    ):
        check_positive_int(value, name)
    if (
        isinstance(hidden_layers, bool)
        or not isinstance(hidden_layers, int)
        or hidden_layers < 0
    ):
        raise ValueError(
            f"`hidden_layers` must be a non-negative int, got {hidden_layers!r}."
        )
    layers: list[nn.Module] = []
    size = in_features
    for _ in range(hidden_layers):
        layers += [nn.Linear(size, width, bias=bias), nn.ReLU()]
        size = width
    layers.append(nn.Linear(size, out_features, bias=bias))
    return nn.Sequential(*layers)
