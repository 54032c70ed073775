"""The promotion gate: is the candidate worth serving?"""

from components.gate.gate import GateConfig, GateDecision, decide

__all__ = ["GateConfig", "GateDecision", "decide"]
