"""Modules: the ZebraLayer and prepare/remove, which insert it into any traceable CNN."""

from .config import ZebraConfig
from .coverage import ActivationCalls
from .layer import ZebraLayer
from .modegraph import ModeGraphModule
from .modes import eval_mode, training_mode
from .prepare import prepare
from .state import (
                    PreparedState,
                    is_prepared,
                    model_device,
                    plain_model,
                    prepared_module,
                    prepared_state,
                    remove,
                    set_masking,
                    set_penalty,
                    zebra_layers,
)

__all__ = ["ActivationCalls", "ModeGraphModule", "PreparedState", "ZebraConfig", "ZebraLayer", "eval_mode",
           "is_prepared", "model_device", "plain_model", "prepare", "prepared_module", "prepared_state", "remove",
           "set_masking", "set_penalty", "training_mode", "zebra_layers"]
