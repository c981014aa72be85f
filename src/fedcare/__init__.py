"""fedcare: federated learning across hospitals.

`import fedcare` stays light (no torch) so a coordinator can import the core, algorithms and
federation layers without PyTorch; `fedcare.simulate` loads the learning layer on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["FederationConfig", "Run", "load_model", "resume", "simulate", "__version__"]

if TYPE_CHECKING:
    from fedcare.core.config import FederationConfig
    from fedcare.interfaces.api import Run, load_model, resume, simulate


def __getattr__(name: str) -> Any:
    if name in ("simulate", "resume", "Run", "load_model"):
        from fedcare.interfaces import api

        return getattr(api, name)
    if name == "FederationConfig":
        from fedcare.core.config import FederationConfig

        return FederationConfig
    raise AttributeError(f"module 'fedcare' has no attribute {name!r}")
