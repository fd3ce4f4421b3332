"""Reading JSON a user sent (a landmark file, the labels inside a training zip): bounded in size and nesting.

Python's json module reads any size and recurses once per nesting level, so a 1 MB file of "[[[[…" ends in a
RecursionError deep inside the parser. Here the size is checked first and the nesting depth is measured from
the text itself (brackets outside strings, counted with numpy), before a byte is parsed; whatever is wrong
becomes one plain message that names the file.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from .errors import UserError

MAX_BYTES = 1_000_000  # a landmark or label file is a few KB; a megabyte leaves room for long tag lists
MAX_DEPTH = 32  # our formats nest 3 deep ({"points": {name: [x, y]}}); 32 leaves room for anyone's extras
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


class JsonInputError(UserError, ValueError):
    """JSON from a user that cannot be read, with a message that names the file and the problem."""


def nesting_depth(data: bytes) -> int:
    """How deep arrays and objects nest in JSON text (strings ignored): "[[1], {}]" is 2."""
    import numpy as np  # here, not at the top: the core is imported by light paths (History's discovery)

    structure = np.frombuffer(_STRING.sub(b"", data), dtype=np.uint8)
    opens = (structure == ord("[")) | (structure == ord("{"))
    closes = (structure == ord("]")) | (structure == ord("}"))
    steps = opens.astype(np.int64) - closes.astype(np.int64)
    return int(np.cumsum(steps).max(initial=0))


def parse_json(text: str | bytes, name: str = "The JSON file", *, max_bytes: int = MAX_BYTES,
               max_depth: int = MAX_DEPTH) -> Any:
    """The value of JSON text, or JsonInputError when it is too large, nested too deep, or not JSON."""
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
    if len(data) > max_bytes:
        raise JsonInputError(f"{name} is {len(data) / 1e6:.1f} MB; a JSON file here may be at most "
                             f"{max_bytes / 1e6:g} MB.")
    depth = nesting_depth(data)
    if depth > max_depth:
        raise JsonInputError(f"{name} nests lists or objects {depth} levels deep; at most {max_depth} are read "
                             "(the landmark format needs 3).")
    try:
        return json.loads(data)
    except UnicodeDecodeError:
        raise JsonInputError(f"{name} is not UTF-8 text, so it is not a JSON file.") from None
    except RecursionError:  # belt and braces: the depth check above refuses such files first
        raise JsonInputError(f"{name} nests lists or objects too deeply to be read.") from None
    except ValueError as err:  # JSONDecodeError, and integers longer than Python reads (4300 digits)
        raise JsonInputError(f"{name} is not valid JSON ({err}).") from None


def read_json(path: str | os.PathLike, name: str | None = None, *, max_bytes: int = MAX_BYTES,
              max_depth: int = MAX_DEPTH) -> Any:
    """parse_json of a file, checking its size before reading it."""
    path = Path(path)
    label = name or path.name
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise JsonInputError(f"{label} is {size / 1e6:.1f} MB; a JSON file here may be at most "
                                 f"{max_bytes / 1e6:g} MB.")
        data = path.read_bytes()
    except FileNotFoundError:
        raise JsonInputError(f"{label}: the file does not exist.") from None
    except IsADirectoryError:
        raise JsonInputError(f"{label} is a folder, not a JSON file.") from None
    return parse_json(data, label, max_bytes=max_bytes, max_depth=max_depth)
