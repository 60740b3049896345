"""Behaviour policies: batched observations in, batched actions out (see :class:`Policy`).

``load_policy(spec, env)`` builds one from a spec string (``"random"``, ``"sb3:<zip>"``, ``"cs285:<pkl>"``,
``"pyseqrl:<checkpoint>"``); other modules add schemes with :func:`register_policy_loader`.
"""

from pyseqrl.policies.base import Policy
from pyseqrl.policies.cs285 import CS285Policy, load_cs285
from pyseqrl.policies.registry import builtin_policies, load_policy, register_policy_loader, registered_schemes
from pyseqrl.policies.sb3 import SB3Policy, load_sb3
from pyseqrl.policies.simple import EpsilonRandom, GaussianNoise, PolicyWrapper, RandomPolicy

__all__ = [
    "CS285Policy",
    "EpsilonRandom",
    "GaussianNoise",
    "Policy",
    "PolicyWrapper",
    "RandomPolicy",
    "SB3Policy",
    "builtin_policies",
    "load_cs285",
    "load_policy",
    "load_sb3",
    "register_policy_loader",
    "registered_schemes",
]
