"""What to generate: stages plan deterministic requests and turn answers into rows."""

from sdg.stages.base import RECORD_SCHEMA, GenerationStage, Task
from sdg.stages.qa_multilingual import QAMultilingualSyntheticStage

__all__ = ["RECORD_SCHEMA", "GenerationStage", "QAMultilingualSyntheticStage", "Task"]
