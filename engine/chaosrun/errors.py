"""The root of every error chaosrun raises on purpose, and the exit code each kind means.

Every exception class chaosrun defines derives from :class:`ChaosrunError`, so a caller
(the CLI, the demo, a script) catches that one class and shows ``str(err)``: one line,
or one line per position for scenario errors. This module imports nothing of chaosrun's,
so any module may import it.

The classes themselves live beside the code that raises them (``ScenarioError`` in
``_source``, ``BuildError`` in ``build``, ``SshError`` in ``run.ssh``...); the tree::

    ChaosrunError
    ├── ScenarioError, ScenarioErrors   a file's content, at file:line:col   (exit 1)
    │   └── ExprError                   an expression that does not compile
    ├── UsageError                      a bad command line                     (exit 2)
    ├── EvalError                       an expression could not be evaluated
    ├── BuildError                      a module could not be compiled
    ├── CallbackRejected                a callback connection was dropped
    ├── TargetError                     an operation on a target failed, naming the host
    │   └── SshError, SshTimeout          ... over SSH
    ├── AuditError                      the audit log could not be written
    ├── MonitorKeyError                 the monitor's signing key is unusable
    │   └── KeyMismatchError            a key file and the .pub beside it differ  (exit 2)
    ├── RunError                        the run as a whole cannot go on
    ├── StepFailed                      one step attempt failed (stays inside the run)
    ├── ProbeError                      a probe from the monitor could not run (stays inside the step)
    ├── LabError                        a lab VM could not be built, booted or stopped
    │   └── ToolMissingError, ImageBuildError, VmBootError, PortTakenError, ResourceError
    └── LocalSshdError                  the demo's / tests' local sshd did not start
"""

from __future__ import annotations

from typing import ClassVar

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_UNTRUSTED", "EXIT_USAGE", "ChaosrunError", "UsageError"]

EXIT_OK = 0
EXIT_FAILED = 1  # the scenario, the run or the check failed
EXIT_USAGE = 2  # the command line was wrong
# `audit verify`: the log is intact, but sealed by a key nobody said to trust (no --key,
# no local monitor key, no --trust-embedded): anyone can re-seal a log they rewrote
EXIT_UNTRUSTED = 3
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM


class ChaosrunError(Exception):
    """Something chaosrun cannot do, said in words for the person who asked.

    ``exit_code`` is what the command line exits with when this reaches it.
    """

    exit_code: ClassVar[int] = EXIT_FAILED


class UsageError(ChaosrunError):
    """A bad command line, or a bad argument to the API (exit 2)."""

    exit_code = EXIT_USAGE
