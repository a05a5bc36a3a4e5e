"""Derived optimizers in bert4keras style (kexue.fm/archives/7094) for Keras 3.

Each `extend_with_*(BaseOptimizer, name=None)` returns a registered subclass of any Keras
optimizer class with extra constructor arguments; factories compose in any order
(recommended: weight decay → layer adaptation → piecewise lr → parameter-wise lr → lazy →
EG step size → gradient accumulation → lookahead → EMA). See docs/optimizers.md.
"""

from bert4x.optimizers.accumulation import extend_with_gradient_accumulation
from bert4x.optimizers.averaging import (
    extend_with_exponential_moving_average,
    extend_with_lookahead,
)
from bert4x.optimizers.base import Adam, DerivedOptimizer
from bert4x.optimizers.eg import extend_with_exponentiated_gradient_step_size
from bert4x.optimizers.extensions import (
    extend_with_layer_adaptation,
    extend_with_lazy_optimization,
    extend_with_weight_decay,
)
from bert4x.optimizers.presets import (
    SGDEG,
    AdamEG,
    AdamEMA,
    AdamGA,
    AdamLA,
    AdamLAMB,
    AdamLazy,
    AdamLookahead,
    AdamLR,
    AdamParamwiseLR,
    AdamW,
    AdamWLR,
)
from bert4x.optimizers.schedules import (
    PiecewiseLinear,
    extend_with_parameter_wise_lr,
    extend_with_piecewise_linear_lr,
)

__all__ = [
    "Adam",
    "AdamEG",
    "AdamEMA",
    "AdamGA",
    "AdamLA",
    "AdamLAMB",
    "AdamLR",
    "AdamLazy",
    "AdamLookahead",
    "AdamParamwiseLR",
    "AdamW",
    "AdamWLR",
    "DerivedOptimizer",
    "PiecewiseLinear",
    "SGDEG",
    "extend_with_exponential_moving_average",
    "extend_with_exponentiated_gradient_step_size",
    "extend_with_gradient_accumulation",
    "extend_with_layer_adaptation",
    "extend_with_lazy_optimization",
    "extend_with_lookahead",
    "extend_with_parameter_wise_lr",
    "extend_with_piecewise_linear_lr",
    "extend_with_weight_decay",
]
