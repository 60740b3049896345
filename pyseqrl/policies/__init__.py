"""Behaviour policies: batched observations in, batched actions out (see :class:`Policy`).

``load_policy(spec, env)`` builds one from a spec string (``"random"``, ``"sb3:<zip>"``, ``"cs285:<pkl>"``,
``"pyseqrl:<checkpoint>"``); other modules add schemes with :func:`register_policy_loader`.
"""

from pyseqrl.policies.base import Policy
from pyseqrl.policies.registry import load_policy, register_policy_loader, registered_schemes
from pyseqrl.policies.simple import EpsilonRandom, GaussianNoise, PolicyWrapper, RandomPolicy

__all__ = [
    "EpsilonRandom",
    "GaussianNoise",
    "Policy",
    "PolicyWrapper",
    "RandomPolicy",
    "load_policy",
    "register_policy_loader",
    "registered_schemes",
]
