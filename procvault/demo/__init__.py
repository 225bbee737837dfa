"""``procvault demo``: the confidential pipeline end to end on bundled data, self-checked.

:mod:`.bundle` finds the shipped model, rules and policies, :mod:`.stream` simulates the
three organizations' stream, :mod:`.run` orchestrates the processes, :mod:`.view` shows what
the organizations and the public receive, :mod:`.check` is the self-check.
"""
