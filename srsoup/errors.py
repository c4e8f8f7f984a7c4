"""Errors the command line reports as one line and exit code 2, rather than a traceback."""


class SrsoupError(Exception):
    """Bad input or an unusable environment: the message names the bad value and the valid choices."""


class BudgetExceeded(RuntimeError):
    """A reward query would go past ``budget.max_reward_queries``; the plan check should make this unreachable."""
