"""Trained artifacts on disk, one way for all of them (the predictor, the learned baselines): a folder with
a JSON manifest and an `arrays.npz`, written atomically, read back without ever unpickling
(`np.load(allow_pickle=False)`), with the format and version checked before anything is built from it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def json_default(o: Any) -> Any:
    """numpy scalars and arrays as plain JSON values."""
    import numpy as np

    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o)}")


def write_artifact(out: Path, manifest_name: str, manifest: dict[str, Any], arrays: dict[str, Any]) -> None:
    """`arrays.npz` then the manifest, each written to a temporary name and moved into place."""
    import numpy as np

    out.mkdir(parents=True, exist_ok=True)
    tmp_npz = out / "arrays.tmp.npz"
    np.savez(tmp_npz, **arrays)
    os.replace(tmp_npz, out / "arrays.npz")
    tmp = out / (manifest_name + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=json_default), encoding="utf-8")
    os.replace(tmp, out / manifest_name)


def read_artifact(path: str | os.PathLike, manifest_name: str, fmt: str, version: int,
                  error: type[Exception], what: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(manifest, arrays) of an artifact folder, or `error` saying what is wrong with it. `what` names the
    artifact for the messages (and how to make one)."""
    import numpy as np

    p = Path(path)
    mf, npz = p / manifest_name, p / "arrays.npz"
    if not mf.is_file() or not npz.is_file():
        raise error(f"{p} is not a {what} (needs {manifest_name} and arrays.npz)")
    try:
        manifest = json.loads(mf.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise error(f"{mf} is not valid JSON: {exc}") from None
    if manifest.get("format") != fmt:
        raise error(f"{p}: unknown artifact format {manifest.get('format')!r}")
    if int(manifest.get("version", 0)) > version:
        raise error(f"{p}: artifact version {manifest['version']} is newer than this shepherd's {version}: "
                    "upgrade llm-shepherd")
    with np.load(npz, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return manifest, arrays


def artifact_id(path: str | os.PathLike) -> str:
    """"<dir>#<12 hex>": the folder and the sha256 of its files (names and bytes), so that a response can name
    the exact artifact that decided it, and a retrained one in the same folder reads differently."""
    import hashlib

    p = Path(path)
    h = hashlib.sha256()
    for f in sorted(x for x in p.iterdir() if x.is_file() and ".tmp" not in x.name):
        h.update(f.name.encode("utf-8") + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda fh=fh: fh.read(1 << 20), b""):
                h.update(block)
        h.update(b"\0")
    return f"{p}#{h.hexdigest()[:12]}"


def prefixed(arrays: dict[str, Any], prefix: str) -> dict[str, Any]:
    """The arrays saved under `prefix.` (the featurizer's, one model's), without the prefix."""
    return {k[len(prefix) + 1:]: v for k, v in arrays.items() if k.startswith(prefix + ".")}
