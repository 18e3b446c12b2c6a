"""A style model file (model.safetensors of a style.train job): which method made it, and loading it as such.

The method is read from the safetensors header alone (an 8-byte little-endian length, then that many bytes
of JSON whose ``__metadata__`` maps METADATA_KEY to the model's sorted JSON description), so no tensor is
loaded or copied to find out which loader to call; ``load_style_model`` then dispatches to it. Nothing
here unpickles.
"""

from __future__ import annotations

import json
from typing import Any, Final

from torch import nn

from workers.style.johnson import METADATA_KEY

HEADER_LENGTH_BYTES: Final = 8  # safetensors: the header's length, a little-endian u64, comes first
MAX_HEADER_BYTES: Final = 100_000_000  # safetensors' own limit on the header
SAFETENSORS_METADATA: Final = "__metadata__"
JOHNSON: Final = "johnson"
ADAIN: Final = "adain"


def _not_a_model(reason: str) -> ValueError:
    return ValueError(f"not a style model: {reason}")


def model_about(data: bytes) -> dict[str, Any]:
    """The METADATA_KEY description (format, method, ...) of safetensors bytes; ValueError when there is none."""
    if len(data) < HEADER_LENGTH_BYTES:
        raise _not_a_model(f"{len(data)} bytes are too few for a safetensors file")
    length = int.from_bytes(data[:HEADER_LENGTH_BYTES], "little")
    if length > min(MAX_HEADER_BYTES, len(data) - HEADER_LENGTH_BYTES):
        raise _not_a_model(f"the bytes are not a safetensors file (a header of {length} bytes does not fit)")
    try:
        header = json.loads(data[HEADER_LENGTH_BYTES : HEADER_LENGTH_BYTES + length])
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise _not_a_model(f"the bytes are not a safetensors file (its header is not JSON: {exc})") from exc
    metadata = header.get(SAFETENSORS_METADATA) if isinstance(header, dict) else None
    described = metadata.get(METADATA_KEY) if isinstance(metadata, dict) else None
    if not isinstance(described, str):
        raise _not_a_model(f"the safetensors file has no {METADATA_KEY!r} metadata")
    try:
        about = json.loads(described)
    except ValueError as exc:
        raise _not_a_model(f"its {METADATA_KEY!r} metadata is not JSON ({exc})") from exc
    if not isinstance(about, dict) or not isinstance(about.get("method"), str):
        raise _not_a_model(f"its {METADATA_KEY!r} metadata names no method")
    return about


def model_method(data: bytes) -> str:
    """The method (johnson, adain, ...) that made the model file ``data``, read from its header only."""
    method: str = model_about(data)["method"]
    return method


def load_style_model(data: bytes) -> tuple[str, nn.Module]:
    """The method and the network of a model file, by its method's loader; ValueError for anything else."""
    # Imported here: workers/style/adain.py reads headers with this module.
    from workers.style.adain import load_adain_model
    from workers.style.johnson import load_model

    method = model_method(data)
    if method == JOHNSON:
        return method, load_model(data)
    if method == ADAIN:
        return method, load_adain_model(data)
    raise _not_a_model(f"unknown method {method!r} (known: {JOHNSON}, {ADAIN})")
