"""Loss functions as pure tensor functions: ILRec (paper Sections 2.2-2.4), the DPO family
(``preference``) and GRPO (``policy``)."""

from ilrec.losses.ilrec import (
    ENSEMBLE_STRATEGIES,
    PENALTIES,
    cpd_loss,
    cpo_loss,
    crr_loss,
    ensemble_logits,
    extract_negatives,
    penalty_weights,
)
from ilrec.losses.policy import grpo_advantages, grpo_loss, k3_kl
from ilrec.losses.preference import dpo_loss, implicit_rewards, sdpo_loss

__all__ = [
    "ENSEMBLE_STRATEGIES",
    "PENALTIES",
    "cpd_loss",
    "cpo_loss",
    "crr_loss",
    "dpo_loss",
    "ensemble_logits",
    "extract_negatives",
    "grpo_advantages",
    "grpo_loss",
    "implicit_rewards",
    "k3_kl",
    "penalty_weights",
    "sdpo_loss",
]
