"""Text and JSON files replaced atomically: written to a temporary file beside the target,
then renamed over it, so a reader (or a crash) never sees a partial file."""
import json
import os
from typing import Any


def write_text(path: str, text: str) -> str:
    """Writes ``text`` to ``path`` atomically (parent folders are created); returns ``path``."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


def write_json(path: str, obj: Any) -> str:
    """Writes ``obj`` as indented JSON atomically (NaN stays NaN, as Python's json writes it);
    returns ``path``."""
    return write_text(path, json.dumps(obj, indent=2))
