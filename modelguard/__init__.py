"""modelguard: model supply-chain security.

>>> import modelguard
>>> modelguard.__version__
'0.1.0'
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "open_session"]


def __getattr__(name: str) -> Any:
    # modelguard.open_session without importing ONNX Runtime on every `import modelguard`
    if name == "open_session":
        from modelguard.runtime import open_session

        return open_session
    raise AttributeError(f"module 'modelguard' has no attribute {name!r}")
