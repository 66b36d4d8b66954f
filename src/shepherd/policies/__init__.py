"""Policies decide, per query: answer with the SLM, buy a hint of n LLM tokens, or ask the LLM."""

from .base import Decision, Policy, PolicyContext
from .registry import make_policy, policy_names, register_policy
from .simple import FixedHint, LLMOnly, SLMOnly

__all__ = ["Decision", "FixedHint", "LLMOnly", "Policy", "PolicyContext", "SLMOnly", "make_policy",
           "policy_names", "register_policy"]
