"""Run one process in a rootfs: namespaces, mounts, user, env, workdir, network mode.

    run(snapshot, argv, env=..., workdir=..., user=..., network="default"|"host"|"none",
        on_output=..., extra_binds=[Bind | Tmpfs | SecretFile, ...])

See runner.py for how it is contained, init.py for what happens inside, users.py for USER.
"""
from builder.sandbox.runner import BUILDKIT_RUN_ETC, CONTAINER_ETC, DEFAULT_PATH, Bind, EtcFiles, SecretFile, Tmpfs, run
from builder.sandbox.users import ResolvedUser, UserError, resolve_user

__all__ = ["BUILDKIT_RUN_ETC", "Bind", "CONTAINER_ETC", "DEFAULT_PATH", "EtcFiles", "ResolvedUser", "SecretFile",
           "Tmpfs", "UserError", "resolve_user", "run"]
