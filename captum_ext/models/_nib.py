"""No-implicit-bias (NIB) models of the GxSI paper: NIB batch norm and NIB VGGs."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import torch
from captum._utils.common import _format_additional_forward_args
from torch import Tensor, nn

from captum_ext._utils.validation import check_positive_int

# Table 1 of Lee & Chang: integers are 3x3 convolutions (output channels),
# "M" a 2x2 max-pool with stride 2.
_CONFIGS: dict[str, tuple[int | str, ...]] = {
    "vgg13-6": (64, 64, "M", 128, 128, "M"),
    "vgg13-4": (64, 64, "M", 128, 128, "M", 256, 256, "M"),
    "vgg13-2": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M"),
    "vgg13": (
        *(64, 64, "M", 128, 128, "M", 256, 256, "M"),
        *(512, 512, "M", 512, 512, "M"),
    ),
    "vgg16": (
        *(64, 64, "M", 128, 128, "M", 256, 256, 256, "M"),
        *(512, 512, 512, "M", 512, 512, 512, "M"),
    ),
}


class NIBBatchNorm2d(nn.Module):
    r"""Batch normalisation without mean subtraction and without shift.

    The normalisation of the no-implicit-bias (NIB) VGGs of Lee & Chang
    ("Attribution Mask: Filtering Out Irrelevant Features By Recursively
    Focusing Attention on Inputs of DNNs", section 2.2): a per-channel
    *scaling* only, so the layer is linear in its input and adds no bias.

    In training mode (or when ``track_running_stats=False``) each channel is
    divided by the square root of its batch variance:

    .. math::

        y = \gamma \, \frac{x}{\sqrt{\operatorname{Var}_B[x] + \epsilon}},

    where :math:`\operatorname{Var}_B` is the biased variance over the batch and
    spatial positions (the same statistic :class:`torch.nn.BatchNorm2d`
    normalises with; the mean is used to *measure* the spread but is never
    subtracted from the activations). In eval mode the layer multiplies by a
    fixed per-channel factor:

    .. math::

        y = \frac{\gamma}{\sqrt{\mathrm{running\_var} + \epsilon}} \, x .

    ``running_var`` is tracked exactly as :class:`torch.nn.BatchNorm2d` does it
    (unbiased batch variance, exponential average with ``momentum``, or a
    cumulative average when ``momentum=None``), and ``num_batches_tracked``
    counts the updates; both are buffers saved in the ``state_dict``. There is
    no ``bias`` parameter and no ``running_mean`` buffer, since neither is
    used.

    The authors' code zeroes BatchNorm's mean buffer and shift but calls
    ``F.batch_norm`` in training mode, which still subtracts the *batch* mean
    while training; here training and evaluation use the same mean-free
    function, so the eval-mode network is what was trained.

    Args:
        num_features (int): Number of channels ``C`` of the ``(N, C, H, W)``
            input.
        eps (float): Added to the variance for numerical stability.
            Default: 1e-5.
        momentum (float or None): Weight of the newest batch in the running
            variance; None gives a cumulative moving average. Default: 0.1.
        affine (bool): Whether the layer has a learnable per-channel scale
            ``weight`` (:math:`\gamma`, initialised to 1). Default: True.
        track_running_stats (bool): Whether to track ``running_var``; without
            it the batch variance is used in eval mode too. Default: True.

    Examples::

        >>> bn = NIBBatchNorm2d(16)
        >>> y = bn(torch.randn(8, 16, 4, 4))  # train mode: batch variance
        >>> bn.eval()(2 * x) == 2 * bn.eval()(x)  # positively homogeneous
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
    ) -> None:
        super().__init__()
        if isinstance(num_features, bool) or not isinstance(num_features, int):
            raise TypeError(
                f"`num_features` must be an int, got {type(num_features).__name__}."
            )
        if num_features < 1:
            raise ValueError(f"`num_features` must be positive, got {num_features}.")
        if eps <= 0:
            raise ValueError(f"`eps` must be positive, got {eps}.")
        if momentum is not None and not 0.0 <= momentum <= 1.0:
            raise ValueError(f"`momentum` must be in [0, 1] or None, got {momentum}.")
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        self.weight: nn.Parameter | None
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features))
        else:
            self.register_parameter("weight", None)
        self.running_var: Tensor | None
        self.num_batches_tracked: Tensor | None
        if track_running_stats:
            self.register_buffer("running_var", torch.ones(num_features))
            self.register_buffer(
                "num_batches_tracked", torch.tensor(0, dtype=torch.long)
            )
        else:
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def reset_running_stats(self) -> None:
        """Reset ``running_var`` to ones and ``num_batches_tracked`` to zero."""
        if self.running_var is not None and self.num_batches_tracked is not None:
            self.running_var.fill_(1.0)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        """Reset the running statistics and the scale ``weight`` to ones."""
        self.reset_running_stats()
        if self.weight is not None:
            nn.init.ones_(self.weight)

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, track_running_stats={self.track_running_stats}"
        )

    def forward(self, input: Tensor) -> Tensor:
        """Scale each channel (see the class docstring)."""
        if input.dim() != 4:
            raise ValueError(
                f"NIBBatchNorm2d expects a 4-D input (N, C, H, W), got "
                f"{input.dim()}-D input of shape {tuple(input.shape)}."
            )
        if input.shape[1] != self.num_features:
            raise ValueError(
                f"NIBBatchNorm2d({self.num_features}) got an input with "
                f"{input.shape[1]} channels."
            )
        use_batch_stats = self.training or self.running_var is None
        if use_batch_stats:
            count = input.numel() // input.shape[1]
            if self.training and count <= 1:
                raise ValueError(
                    "Expected more than 1 value per channel when training, got "
                    f"input of shape {tuple(input.shape)}."
                )
            var = input.var(dim=(0, 2, 3), unbiased=False)
            if (
                self.training
                and self.running_var is not None
                and self.num_batches_tracked is not None
            ):
                with torch.no_grad():
                    self.num_batches_tracked.add_(1)
                    if self.momentum is None:
                        factor = 1.0 / float(self.num_batches_tracked)
                    else:
                        factor = self.momentum
                    unbiased = var.detach() * (count / max(count - 1, 1))
                    self.running_var.mul_(1.0 - factor).add_(
                        unbiased.to(self.running_var.dtype), alpha=factor
                    )
            scale = torch.rsqrt(var + self.eps)
        else:
            assert self.running_var is not None
            scale = torch.rsqrt(self.running_var + self.eps)
        if self.weight is not None:
            scale = scale * self.weight
        return input * scale.to(input.dtype).view(1, -1, 1, 1)


def _scaled(n: int, width: float) -> int:
    return max(1, round(n * width))


def _sizes(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, bool):
        raise TypeError("`image_size` must be an int or a pair of ints, got bool.")
    if isinstance(image_size, int):
        h = w = image_size
    else:
        sizes = tuple(image_size)
        if len(sizes) != 2 or not all(
            isinstance(s, int) and not isinstance(s, bool) for s in sizes
        ):
            raise TypeError(
                f"`image_size` must be an int or a pair of ints, got {image_size!r}."
            )
        h, w = sizes
    if h < 1 or w < 1:
        raise ValueError(f"`image_size` must be positive, got {image_size!r}.")
    return h, w


def nib_vgg(
    config: str = "vgg16",
    num_classes: int = 10,
    in_channels: int = 3,
    width: float = 1.0,
    *,
    image_size: int | Sequence[int] = 32,
    batch_norm: bool = True,
    dropout: float = 0.5,
    layer_bias: bool = False,
    bn_bias: bool = False,
) -> nn.Sequential:
    r"""A no-implicit-bias (NIB) VGG of the GxSI paper (table 1).

    Lee & Chang, "Attribution Mask: Filtering Out Irrelevant Features By
    Recursively Focusing Attention on Inputs of DNNs", section 4.1: VGG with
    3x3 convolutions (padding 1) without bias, :class:`NIBBatchNorm2d` (no mean
    subtraction, no shift), ReLU, 2x2 max-pooling, and a classifier
    ``FC-4096, ReLU, dropout, FC-4096, ReLU, dropout, FC-num_classes`` without
    biases. Every layer is positively homogeneous, so in eval mode

    .. math::

        f(a x) = a f(x) \quad (a > 0), \qquad
        f_k(x) = \nabla_x f_k(x) \cdot x ,

    and Integrated Gradients with a zero baseline, Gradient * Input and
    DeepLift with a zero baseline coincide (the paper's table 2).

    Configurations (convolutions + linear layers): ``"vgg13-6"`` (7 layers),
    ``"vgg13-4"`` (9), ``"vgg13-2"`` (11), ``"vgg13"`` (13), ``"vgg16"`` (16).

    Small inputs: the network is built for ``image_size``; a max-pool that
    would shrink a side below 1 pixel is left out, so the deep configurations
    also run on 8x8 digits (``"vgg16"`` on 8x8 keeps three of its five pools).
    The classifier's input size follows.

    The paper's bias ablation (table 5) is built with the same function:
    ``layer_bias=True`` adds biases to every convolution and linear layer
    ("LB"), ``bn_bias=True`` uses ordinary :class:`torch.nn.BatchNorm2d`
    (mean subtraction and shift, "BNB"). Either breaks the NIB property.

    Weights are initialised as torchvision's VGG (Kaiming-normal convolutions,
    ``N(0, 0.01)`` linear layers, unit batch-norm scales, zero biases), from
    the global random number generator.

    Args:
        config (str): One of ``"vgg16"``, ``"vgg13"``, ``"vgg13-2"``,
            ``"vgg13-4"``, ``"vgg13-6"``. Default: ``"vgg16"``.
        num_classes (int): Number of output logits. Default: 10.
        in_channels (int): Channels of the input images. Default: 3.
        width (float): Multiplies every channel count and the hidden width
            4096 (rounded, at least 1). 0.25 or less gives models that train
            on a CPU in seconds on small images. Default: 1.0.
        image_size (int or tuple[int, int]): Input height and width (or one
            size for square images). Default: 32 (CIFAR).
        batch_norm (bool): Whether a batch norm follows every convolution (the
            paper's NIB VGGs have one). Default: True.
        dropout (float): Dropout probability in the classifier (0 leaves the
            dropout layers out). Default: 0.5.
        layer_bias (bool): Add biases to convolutions and linear layers
            (ablation, not NIB). Default: False.
        bn_bias (bool): Use ordinary :class:`torch.nn.BatchNorm2d` instead of
            :class:`NIBBatchNorm2d` (ablation, not NIB). Default: False.

    Returns:
        nn.Sequential: ``features`` (convolutional part), ``flatten`` and
        ``classifier``; layers are addressable by name (e.g.
        ``model.features[0]``), handy for layer attributions.

    Examples::

        >>> model = nib_vgg("vgg13-6", num_classes=10, in_channels=3)
        >>> model.eval()(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 10])
        >>> digits = nib_vgg("vgg13-6", in_channels=1, width=0.125, image_size=8)
        >>> ablation = nib_vgg("vgg16", layer_bias=True, bn_bias=True)  # table 5
    """
    if config not in _CONFIGS:
        raise ValueError(f"`config` must be one of {list(_CONFIGS)}, got {config!r}.")
    for name, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        check_positive_int(value, name)
    if isinstance(width, bool) or not isinstance(width, (int, float)) or width <= 0:
        raise ValueError(f"`width` must be a positive number, got {width!r}.")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"`dropout` must be in [0, 1), got {dropout!r}.")
    h, w = _sizes(image_size)

    features: list[nn.Module] = []
    channels = in_channels
    for item in _CONFIGS[config]:
        if item == "M":
            if h >= 2 and w >= 2:
                features.append(nn.MaxPool2d(kernel_size=2, stride=2))
                h, w = h // 2, w // 2
            continue
        out = _scaled(int(item), width)
        features.append(
            nn.Conv2d(channels, out, kernel_size=3, padding=1, bias=layer_bias)
        )
        if batch_norm:
            features.append(nn.BatchNorm2d(out) if bn_bias else NIBBatchNorm2d(out))
        features.append(nn.ReLU(inplace=False))
        channels = out

    hidden = _scaled(4096, width)
    classifier: list[nn.Module] = []
    fan_in = channels * h * w
    for _ in range(2):
        classifier += [nn.Linear(fan_in, hidden, bias=layer_bias), nn.ReLU()]
        if dropout > 0:
            classifier.append(nn.Dropout(dropout))
        fan_in = hidden
    classifier.append(nn.Linear(fan_in, num_classes, bias=layer_bias))

    model = nn.Sequential(
        OrderedDict(
            features=nn.Sequential(*features),
            flatten=nn.Flatten(),
            classifier=nn.Sequential(*classifier),
        )
    )
    _initialise(model)
    return model


def _initialise(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, NIBBatchNorm2d)):
            if m.weight is not None:
                nn.init.ones_(m.weight)
            bias = getattr(m, "bias", None)
            if isinstance(bias, Tensor):
                nn.init.zeros_(bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def is_positively_homogeneous(
    model: Callable[..., Any],
    example: Tensor | tuple[Tensor, ...],
    additional_forward_args: Any = None,
    scales: Sequence[float] = (0.5, 2.0, 7.0),
    rtol: float = 1e-4,
) -> bool:
    r"""Check numerically that ``f(a x) = a f(x)`` for ``a > 0`` (and ``f(0) = 0``).

    The no-implicit-bias condition of the GxSI paper (section 2.2): a network
    without additive biases whose non-linearities are ReLU / max-pool is
    positively homogeneous of degree 1, which makes Gradient * Input complete
    (:math:`f_k(x) = \nabla_x f_k(x) \cdot x`) and equal to Integrated
    Gradients and DeepLift with zero baselines.

    For every ``a`` in ``scales`` the outputs must satisfy

    .. math::

        \max \left| f(a x) / a - f(x) \right| \le \mathrm{rtol} \cdot
        \max |f(x)| ,

    and :math:`\max |f(0)|` must be at most ``rtol * max |f(x)|``. Runs
    under ``torch.no_grad()`` and changes nothing in the model. Modules in
    training mode are refused (batch statistics and dropout are not
    homogeneous in the input): call ``model.eval()`` first.

    Args:
        model (Callable): The model (an ``nn.Module`` or any forward function).
        example (Tensor or tuple[Tensor, ...]): One or more inputs (a batch; a
            tuple is passed as separate arguments).
        additional_forward_args (Any, optional): Extra arguments passed to the
            model after the inputs; they are not scaled. Default: None.
        scales (Sequence[float]): The positive factors ``a`` tried.
            Default: (0.5, 2.0, 7.0).
        rtol (float): Tolerance relative to the largest output magnitude.
            Default: 1e-4.

    Returns:
        bool: True when every check passes.

    Examples::

        >>> model = nib_vgg("vgg13-6", width=0.25).eval()
        >>> is_positively_homogeneous(model, torch.randn(4, 3, 32, 32))
        True
        >>> biased = nib_vgg("vgg13-6", width=0.25, layer_bias=True).eval()
    """
    if isinstance(model, nn.Module) and any(m.training for m in model.modules()):
        raise ValueError(
            "`model` (or one of its submodules) is in training mode; batch "
            "statistics and dropout make a training-mode network non-homogeneous. "
            "Call model.eval() first."
        )
    inputs = example if isinstance(example, tuple) else (example,)
    if len(inputs) == 0 or not all(isinstance(x, Tensor) for x in inputs):
        raise TypeError("`example` must be a Tensor or a non-empty tuple of Tensors.")
    if len(scales) == 0 or any(not a > 0 for a in scales):
        raise ValueError(f"`scales` must be positive numbers, got {tuple(scales)!r}.")
    if rtol <= 0:
        raise ValueError(f"`rtol` must be positive, got {rtol!r}.")
    afa = _format_additional_forward_args(additional_forward_args) or ()

    def run(xs: tuple[Tensor, ...]) -> Tensor:
        out = model(*xs, *afa)
        if not isinstance(out, Tensor):
            raise TypeError(f"`model` must return a Tensor, got {type(out).__name__}.")
        return out.double()

    with torch.no_grad():
        reference = run(inputs)
        tol = rtol * float(reference.abs().max())
        if float(run(tuple(torch.zeros_like(x) for x in inputs)).abs().max()) > tol:
            return False
        for a in scales:
            scaled = run(tuple(x * a for x in inputs)) / a
            if float((scaled - reference).abs().max()) > tol:
                return False
    return True
