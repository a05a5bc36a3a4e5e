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
AdamLA = extend_with_layer_adaptation(Adam, name="AdamLA")
AdamLAMB = extend_with_layer_adaptation(AdamW, name="AdamLAMB")
AdamLR = extend_with_piecewise_linear_lr(Adam, name="AdamLR")
AdamWLR = extend_with_piecewise_linear_lr(AdamW, name="AdamWLR")
AdamGA = extend_with_gradient_accumulation(Adam, name="AdamGA")
AdamLookahead = extend_with_lookahead(Adam, name="AdamLookahead")
AdamLazy = extend_with_lazy_optimization(Adam, name="AdamLazy")
AdamEMA = extend_with_exponential_moving_average(Adam, name="AdamEMA")
AdamParamwiseLR = extend_with_parameter_wise_lr(Adam, name="AdamParamwiseLR")
AdamEG = extend_with_exponentiated_gradient_step_size(Adam, name="AdamEG")
SGDEG = extend_with_exponentiated_gradient_step_size(keras.optimizers.SGD, name="SGDEG")
