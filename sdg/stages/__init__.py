"""What to generate: stages plan deterministic requests and turn answers into rows; filters clean them.

Names are imported on first use: a Ray worker that unpickles a QA stage then loads only what that stage
needs, not `datasets` (about a second of start-up per worker).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sdg.stages.base import RECORD_SCHEMA, GenerationStage, Task
    from sdg.stages.factory import build_stages
    from sdg.stages.filters import FilterStage
    from sdg.stages.qa_multilingual import QAMultilingualSyntheticStage
    from sdg.stages.structured import StructuredOutput
    from sdg.stages.template import PromptTemplateStage

_HOMES = {
    "RECORD_SCHEMA": "sdg.stages.base",
    "GenerationStage": "sdg.stages.base",
    "Task": "sdg.stages.base",
    "build_stages": "sdg.stages.factory",
    "FilterStage": "sdg.stages.filters",
    "QAMultilingualSyntheticStage": "sdg.stages.qa_multilingual",
    "StructuredOutput": "sdg.stages.structured",
    "PromptTemplateStage": "sdg.stages.template",
}

__all__ = [
    "RECORD_SCHEMA",
    "FilterStage",
    "GenerationStage",
    "PromptTemplateStage",
    "QAMultilingualSyntheticStage",
    "StructuredOutput",
    "Task",
    "build_stages",
]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'sdg.stages' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
