"""Where models are: the shipped ones (installed with the package as `vqcodec.shipped`, or `models/`
in a checkout), the folders of $VQCODEC_MODEL_PATH before them, and which one wrote a `.vq` file."""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from . import format as vqformat
from .errors import VQCodecError

RETIRED_MODELS = "retired.json"  # in the shipped models' folder: earlier releases' models and where they are


def shipped_models_dir() -> Path:
    spec = importlib.util.find_spec("vqcodec.shipped")
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return Path(__file__).resolve().parent.parent / "models"


def model_search_path() -> list[Path]:
    extra = [Path(p) for p in os.environ.get("VQCODEC_MODEL_PATH", "").split(os.pathsep) if p]
    return extra + [shipped_models_dir()]


def find_model(name: str) -> Path:
    """A model name (searched in $VQCODEC_MODEL_PATH, then the shipped models) or a path to its files."""
    candidate = Path(name)
    if candidate.suffix in (".safetensors", ".json") or candidate.exists():
        path = candidate.with_suffix(".safetensors") if candidate.suffix != ".safetensors" else candidate
        if candidate.is_dir():
            found = sorted(candidate.glob("*.safetensors"))
            found = [p for p in found if p.with_suffix(".json").exists() and p.stem != "checkpoint"]
            if len(found) != 1:
                raise VQCodecError(f"{candidate}: expected one model (NAME.safetensors + NAME.json) in the folder")
            path = found[0]
        if not path.exists():
            raise VQCodecError(f"model file not found: {path}")
        return path
    for folder in model_search_path():
        path = folder / f"{name}.safetensors"
        if path.exists() and path.with_suffix(".json").exists():
            return path
    available = ", ".join(m["name"] for m in list_models()) or "none"
    raise VQCodecError(f"unknown model {name!r} (installed: {available})")


def list_models(shadowed: bool = False) -> list[dict]:
    """The installed models, in search order. A name found again later in the search path is hidden by
    the first (which `Codec.load(name)` takes); with `shadowed`, those are listed too, marked "shadowed"."""
    models, seen = [], set()
    for folder in model_search_path():
        for meta_path in sorted(folder.glob("*.json")):
            if (meta_path.stem in seen and not shadowed) or not meta_path.with_suffix(".safetensors").exists():
                continue
            try:
                meta = json.loads(meta_path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(meta, dict) and "model_id" in meta and "config" in meta:
                models.append({**meta, "name": meta_path.stem, "path": str(meta_path.with_suffix(".safetensors")),
                               **({"shadowed": True} if meta_path.stem in seen else {})})
                seen.add(meta_path.stem)
    return models


def model_decoding(model_id: str) -> dict | None:
    """The installed model that decodes files of `model_id`: the one of that id, else one that lists it
    under "decodes" (a decoder-only fine-tune of it, which reads the same codes); None if there is none.
    A file names its model by id, so shadowed models (list_models) count too."""
    installed = list_models(shadowed=True)
    return next((m for m in installed if m["model_id"] == model_id), None) \
        or next((m for m in installed if model_id in m.get("decodes", ())), None)


def model_for_file(data: bytes) -> str:
    """Path of the installed model that decodes a `.vq` file (model_decoding of the id its header names)."""
    header = vqformat.parse_header(data)
    wanted = header.model_id.hex()
    found = model_decoding(wanted)
    if found is not None:
        return found["path"]
    prior_id = header.prior_id if header.coding in vqformat.PRIOR_CODINGS else None
    raise VQCodecError(f"no installed model has id {wanted}; pass --model with the model that wrote this file"
                       + retired_model_hint(wanted, prior_id))


def retired_model_hint(model_id: str, prior_id: int | None = None) -> str:
    """Where an earlier release's model (with that prior) can be found, for error messages: models/retired.json
    lists the shipped models later releases replaced. Empty when it is not one of them."""
    try:
        entries = json.loads((shipped_models_dir() / RETIRED_MODELS).read_text())["models"]
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    for entry in entries:
        if entry.get("model_id") == model_id and (prior_id is None or entry.get("prior_id") == f"{prior_id:08x}"):
            name, commit = entry.get("name"), entry.get("commit")
            return (f" (it is {name} as shipped in vqcodec commit {commit}: `git show {commit}:models/{name}.safetensors`"
                    f" and the same for .json give its files)")
    return ""
