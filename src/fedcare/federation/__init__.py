"""Federation layer: the transport-free round engine. Imports numpy, never torch."""

from fedcare.federation.engine import EngineResult, EngineSettings, QuorumError, RoundEngine, RoundRecord
from fedcare.federation.transport import Transport

__all__ = ["EngineResult", "EngineSettings", "QuorumError", "RoundEngine", "RoundRecord", "Transport"]
