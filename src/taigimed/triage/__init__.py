"""Emergency triage as a chain of measured parts (normalisation, phrase rules, a learned
detector), shared by the serving guard and the eval safety task. See ``chain``."""

from taigimed.triage.chain import (
    ChainResult,
    TriageChain,
    TriageConfig,
    guard_conversation,
    pre_model_decision,
)
from taigimed.triage.normalise import fold

__all__ = [
    "ChainResult",
    "TriageChain",
    "TriageConfig",
    "fold",
    "guard_conversation",
    "pre_model_decision",
]
