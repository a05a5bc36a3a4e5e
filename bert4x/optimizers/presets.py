"""Ready-made combinations on bert4keras's `Adam` (and one on Keras's SGD)."""

import keras

from bert4x.optimizers.accumulation import extend_with_gradient_accumulation
from bert4x.optimizers.averaging import (
    extend_with_exponential_moving_average,
    extend_with_lookahead,
)
from bert4x.optimizers.base import Adam
from bert4x.optimizers.eg import extend_with_exponentiated_gradient_step_size
from bert4x.optimizers.extensions import (
    extend_with_layer_adaptation,
    extend_with_lazy_optimization,
    extend_with_weight_decay,
)
from bert4x.optimizers.schedules import (
    extend_with_parameter_wise_lr,
    extend_with_piecewise_linear_lr,
)

AdamW = extend_with_weight_decay(Adam, name="AdamW")
"""Adam with decoupled weight decay (`weight_decay_rate`, `exclude_from_weight_decay`)."""
AdamLA = extend_with_layer_adaptation(Adam, name="AdamLA")
"""Adam with the LAMB trust ratio per tensor (`exclude_from_layer_adaptation`)."""
AdamLAMB = extend_with_layer_adaptation(AdamW, name="AdamLAMB")
"""LAMB: Adam with weight decay and layer adaptation (arXiv 1904.00962)."""
AdamLR = extend_with_piecewise_linear_lr(Adam, name="AdamLR")
"""Adam with a piecewise-linear learning-rate schedule (`lr_schedule={step: factor}`)."""
AdamWLR = extend_with_piecewise_linear_lr(AdamW, name="AdamWLR")
"""AdamW with a piecewise-linear learning-rate schedule (the usual BERT fine-tuning choice)."""
AdamGA = extend_with_gradient_accumulation(Adam, name="AdamGA")
"""Adam updating once every `grad_accum_steps` mini-batches (gradient accumulation)."""
AdamLookahead = extend_with_lookahead(Adam, name="AdamLookahead")
"""Adam with lookahead slow weights (`steps_per_slow_update`, `slow_step_size`)."""
AdamLazy = extend_with_lazy_optimization(Adam, name="AdamLazy")
"""Adam that leaves rows without a gradient untouched (e.g. unused token embeddings)."""
AdamEMA = extend_with_exponential_moving_average(Adam, name="AdamEMA")
"""Adam keeping an exponential moving average of the weights (`ema_momentum`)."""
AdamParamwiseLR = extend_with_parameter_wise_lr(Adam, name="AdamParamwiseLR")
"""Adam with per-variable learning-rate multipliers matched by name (`paramwise_lr_schedule`)."""
AdamEG = extend_with_exponentiated_gradient_step_size(Adam, name="AdamEG")
"""Adam with exponentiated-gradient step-size adaptation (EGDD, arXiv 2202.00145)."""
SGDEG = extend_with_exponentiated_gradient_step_size(keras.optimizers.SGD, name="SGDEG")
"""Keras SGD with exponentiated-gradient step-size adaptation (EGDD, arXiv 2202.00145)."""
