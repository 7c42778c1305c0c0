"""Development harness shared by `tests` and `bench`: starting and stopping real processes.

Nothing in `app`, `proxy`, `workers` or `scheduler` imports it.
"""
