"""What to generate: stages plan deterministic requests and turn answers into rows; filters clean them."""

from sdg.stages.base import RECORD_SCHEMA, GenerationStage, Task
from sdg.stages.factory import build_stages
from sdg.stages.filters import FilterStage
from sdg.stages.qa_multilingual import QAMultilingualSyntheticStage
from sdg.stages.structured import StructuredOutput
from sdg.stages.template import PromptTemplateStage

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
