"""KFP components: one per pipeline stage, each a thin shell over ``taigimed.pipeline.steps``.

Lightweight Python components: KFP ships each function's source into the pod (or a local
subprocess), so imports sit inside the function bodies. The image already has taigimed
installed; locally ``kfp.local.SubprocessRunner(use_venv=False)`` runs them in this venv.
"""

from components.build_index import build_index
from components.deploy_canary import deploy_canary
from components.evaluate import evaluate
from components.gate import gate, mark_rejected
from components.prepare import prepare
from components.register import register
from components.train import train_stage1, train_stage2

__all__ = [
    "build_index",
    "deploy_canary",
    "evaluate",
    "gate",
    "mark_rejected",
    "prepare",
    "register",
    "train_stage1",
    "train_stage2",
]
