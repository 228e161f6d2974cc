"""Run one process in a rootfs: namespaces, mounts, user, env, workdir, network mode.

    run(snapshot, argv, env=..., workdir=..., user=..., network="host"|"none", on_output=...)

See runner.py for how it is contained, init.py for what happens inside, users.py for USER.
"""
from builder.sandbox.runner import DEFAULT_PATH, Bind, run
from builder.sandbox.users import ResolvedUser, UserError, resolve_user

__all__ = ["Bind", "DEFAULT_PATH", "ResolvedUser", "UserError", "resolve_user", "run"]
