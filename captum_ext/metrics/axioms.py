"""Attribution axioms as executable checks.

The axioms by which attribution methods are judged, from Lundstrom, Huang &
Razaviyayn, *A Rigorous Study of Integrated Gradients Method and Extensions to
Internal Neuron Attributions* (ICML 2022, `arXiv:2202.11912
<https://arxiv.org/abs/2202.11912>`_; section 2.2 and appendix A after
Sundararajan, Taly & Yan 2017, `arXiv:1703.01365
<https://arxiv.org/abs/1703.01365>`_), non-decreasing positivity (section 4),
the Lipschitz result (theorem 4) and the distributional axioms (section 5,
appendix K), measured on any Captum-style method and any model.

Each check takes the method (an Attribution instance or class, a
:class:`PerModel` factory, or a callable), the model, inputs, baselines (or a
reference distribution, ``references``, for the distributional forms),
target and ``additional_forward_args``, and returns an :class:`AxiomResult`:
the measured violation of each example (a tensor, not a boolean) and details;
a tolerance turns it into pass / fail (:func:`passes`). The variants a check
needs are stacked along the batch and attributed in one call per method
(chunked by ``max_examples_per_batch``, with results independent of the
chunking for deterministic methods); the user's model is never modified (the
checks wrap it).
"""

from captum_ext.metrics._axioms._checks import (
    completeness_violation,
    dummy_violation,
    implementation_invariance_violation,
    linearity_violation,
    ndp_violation,
    sensitivity_violation,
    symmetry_violation,
)
from captum_ext.metrics._axioms._common import AxiomResult, passes
from captum_ext.metrics._axioms._equivalents import equivalent_model
from captum_ext.metrics._axioms._lipschitz import ig_lipschitz_bound, local_lipschitz
from captum_ext.metrics._axioms._methods import PerModel
from captum_ext.metrics._axioms._report import (
    AxiomReport,
    axiom_report,
    plot_axiom_report,
)

__all__ = [
    "AxiomReport",
    "AxiomResult",
    "PerModel",
    "axiom_report",
    "completeness_violation",
    "dummy_violation",
    "equivalent_model",
    "ig_lipschitz_bound",
    "implementation_invariance_violation",
    "linearity_violation",
    "local_lipschitz",
    "ndp_violation",
    "passes",
    "plot_axiom_report",
    "sensitivity_violation",
    "symmetry_violation",
]
