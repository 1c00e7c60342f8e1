"""SaaSOdoo Runbooks: list, run and chain the project's runbooks from Python or the command line.

    from saasodoo_runbooks import run_chain
    chain = run_chain(["platform_down:check", "platform_down", "platform_down:check"])
    chain.outcome, chain.exit_code      # ('remediated', 10)

The command line is ``saasodoo-runbooks`` (or ``python -m saasodoo_runbooks``); see ``--help``.
"""

from saasodoo_runbooks.api import (
    EXIT_CODES,
    EXIT_FAILED,
    EXIT_HEALTHY,
    EXIT_NEEDS_HUMAN,
    EXIT_REMEDIATED,
    EXIT_USAGE,
    ChainResult,
    Runbook,
    Step,
    StepResult,
    UsageError,
    chain_outcome,
    junit_xml,
    list_runbooks,
    parse_step,
    run_chain,
    run_runbook,
    step_result,
)

__version__ = "0.1.0"

__all__ = [
    "EXIT_CODES", "EXIT_FAILED", "EXIT_HEALTHY", "EXIT_NEEDS_HUMAN", "EXIT_REMEDIATED", "EXIT_USAGE",
    "ChainResult", "Runbook", "Step", "StepResult", "UsageError", "chain_outcome", "junit_xml",
    "list_runbooks", "parse_step", "run_chain", "run_runbook", "step_result", "__version__",
]
