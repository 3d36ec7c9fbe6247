"""ILRec losses (paper Sections 2.2-2.4): negatives from intermediate layers, CPO, CPD, CRR."""

from ilrec.losses.ilrec import (
    ENSEMBLE_STRATEGIES,
    cpd_loss,
    cpo_loss,
    crr_loss,
    ensemble_logits,
    extract_negatives,
    penalty_weights,
)

__all__ = [
    "ENSEMBLE_STRATEGIES",
    "cpd_loss",
    "cpo_loss",
    "crr_loss",
    "ensemble_logits",
    "extract_negatives",
    "penalty_weights",
]
