"""Errors the command line reports as one line, exit code 2 (130 for an interruption), rather than a traceback."""


class SrsoupError(Exception):
    """Bad input or an unusable environment: the message names the bad value and the valid choices."""


class BudgetExceeded(RuntimeError):
    """A reward query would go past ``budget.max_reward_queries``; the plan check should make this unreachable."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run; the message says how many groups are committed and how to resume.

    A KeyboardInterrupt, so that Hydra's launchers let it through and a multirun sweep stops as a whole.
    """
