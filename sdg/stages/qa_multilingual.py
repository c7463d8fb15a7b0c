"""NeMo Curator's multilingual Q&A stage, with seeded languages and per-sample request seeds."""

from __future__ import annotations

import pyarrow as pa

from sdg.client.base import AsyncLLMClient
from sdg.client.generation import GenerationConfig
from sdg.seeding import sample_rng
from sdg.stages.base import GenerationStage, Task

__all__ = ["QAMultilingualSyntheticStage"]


class QAMultilingualSyntheticStage(GenerationStage):
    """Sample i asks `prompt` in a language drawn from (run seed, i): reproducible on any number of workers."""

    name = "qa_multilingual"

    def __init__(
        self,
        prompt: str,
        languages: list[str],
        client: AsyncLLMClient,
        model_name: str,
        num_samples: int,
        generation_config: GenerationConfig | None = None,
        system_prompt: str | None = None,
    ) -> None:
        super().__init__(
            client=client, model_name=model_name, num_samples=num_samples, generation_config=generation_config
        )
        if "{language}" not in prompt:
            raise ValueError(
                f"prompt must contain the placeholder {{language}}, e.g. 'Generate a Q&A pair about science "
                f"in {{language}}.'; got {prompt!r}"
            )
        languages = list(languages)
        if not languages or not all(isinstance(lang, str) and lang.strip() for lang in languages):
            raise ValueError("languages must be a non-empty list of language names, e.g. [English, French]")
        self.prompt = prompt
        self.languages = languages
        self.system_prompt = system_prompt

    def columns_schema(self) -> pa.Schema:
        return pa.schema([("language", pa.string()), ("prompt", pa.string())])

    def make_task(self, index: int, run_seed: int) -> Task:
        language = sample_rng(run_seed, index, "language").choice(self.languages)
        prompt = self.prompt.replace("{language}", language)
        messages = [{"role": "user", "content": prompt}]
        if self.system_prompt:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        return Task(
            index=index,
            messages=messages,
            seed=self.request_seed(index, run_seed),
            columns={"language": language, "prompt": prompt},
        )
