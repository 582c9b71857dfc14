"""Access-policy semantics, as pure code shared by the shim and the gateway.

Public interface (everything else in this package is private):

    index = PolicyIndex.build(access_policies)          # compile once per policy change
    decision = index.decide(Request(caller, server, "tools/call", "search", args))
    decision.allowed, decision.policy, decision.rule_index, decision.reason
    visible = index.filter_list(caller, server, "tool", tools, key=lambda t: t["name"])
    index.may_access(caller, server)                     # could any rule let this caller in?
    errors = validate_policy(access_policy)              # for the ConfigValid condition

Semantics are documented in `corral.api.policy.index` (decisions) and `corral.api.policy.names`
(globs, case and Unicode folding), and `corral.api.policy.expressions` (CEL).
"""

from corral.api.policy.expressions import VARIABLES as CEL_VARIABLES
from corral.api.policy.index import CallerDecisions, PolicyIndex
from corral.api.policy.model import (
    CALL_METHODS,
    SESSION_METHODS,
    USE_METHOD,
    Caller,
    Decision,
    ItemKind,
    Request,
    ServerRef,
)
from corral.api.policy.names import GlobSet, ItemSubset, fold
from corral.api.policy.validation import validate_policy

__all__ = [
    "CALL_METHODS",
    "CEL_VARIABLES",
    "SESSION_METHODS",
    "USE_METHOD",
    "Caller",
    "CallerDecisions",
    "Decision",
    "GlobSet",
    "ItemKind",
    "ItemSubset",
    "PolicyIndex",
    "Request",
    "ServerRef",
    "fold",
    "validate_policy",
]
