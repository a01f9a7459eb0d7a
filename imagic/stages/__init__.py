"""The three stages as stored, tracked, restartable units of work over an artifact store.

`run_optimize` -> K_A, `run_finetune(K_A)` -> K_B, `run_generate(K_B)` -> K_C. Each returns a
`StageResult` (its key and URIs); the containers in `steps/` and the Prefect flows call these.
"""

from imagic.stages.common import StageRequest, StageResult
from imagic.stages.finetune import FinetuneRequest, run_finetune
from imagic.stages.generate import GenerateRequest, run_generate
from imagic.stages.optimize import OptimizeRequest, run_optimize

__all__ = [
    "FinetuneRequest",
    "GenerateRequest",
    "OptimizeRequest",
    "StageRequest",
    "StageResult",
    "run_finetune",
    "run_generate",
    "run_optimize",
]
