"""Run stage, integrity: the signals that make an environment's result ``suspect``.

The candidate is root on the target, so an on-target result can lie. chaosrun never
grades a lie silently: whatever it sees that an honest run would not show (a binary killed
or stopped mid-step, a connection to a step's port that failed to authenticate, a step far
slower than the same step elsewhere...) becomes a :class:`Signal` of that environment, in
the audit log, the report and the summary table. Points are still computed; a suspect
environment is flagged for review, and ``chaosrun verify --strict`` scores it 0.

Signal names are stable strings, listed in ``SIGNALS`` and in docs/security.md.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "SIGNALS",
    "Signal",
    "baseline_changes",
    "program_outliers",
    "sensor_baseline",
    "sensor_flags",
    "sensor_trace",
    "timing_outliers",
]

SIGNALS: Mapping[str, str] = {
    "binary_killed": "the module binary was killed by a signal before it reported",
    "binary_lingered": "the module binary was still running seconds after its result",
    "binary_stopped": "the module binary was stopped (SIGSTOP, a tracer) mid-step",
    "binary_watched": "another process had the module binary's executable open while it ran",
    "binary_swapped": "the binary that ran, or was about to run, is not the one uploaded",
    "callback_flooded": "the callback sent more than the monitor's byte limits allow",
    "callback_rejected": "a connection to the step's callback port failed to authenticate",
    "changed_since_baseline": "a startup file, sshd line, program or ld.so.preload changed since the first step",
    "force_command": "sshd forces a command (ForceCommand) on the sessions chaosrun opens",
    "ld_preload": "the dynamic loader is told to load extra code (LD_PRELOAD, LD_AUDIT, /etc/ld.so.preload...)",
    "mount_over": "something is mounted over a /proc/PID, a bin folder, /etc/ssh or a path the step grades",
    "no_sensors": "the module's result carries no tamper sensors (not a binary of this kit)",
    "params_altered": "the binary ran with other parameters than the monitor sent",
    "pipe_watched": "another process had the module binary's stdin pipe (its config) open",
    "proc_faked": "/proc, where the binary looks at itself, is not the kernel's procfs",
    "program_differs": "a program (sh, b2sum, a module's tool) or startup file differs from most environments' one",
    "result_without_binary": "a result came, but the binary chaosrun started did not deliver it",
    "shell_hook": "the shell runs code of the candidate's before the binary (BASH_ENV, sshd SetEnv...)",
    "timing_outlier": "the step took far longer than the same step in the other environments",
    "token_reused": "a second connection proved the step's one-time token (its config was taken)",
    "traced": "a process ptraced the module binary (TracerPid of its /proc status)",
}

# A step is a timing outlier when it took more than FACTOR times the median of the same
# step across environments, and at least SLACK seconds more: a loaded monitor slows
# every environment alike, a candidate holding one binary slows one.
OUTLIER_FACTOR = 4.0
OUTLIER_SLACK = 5.0
OUTLIER_MIN_ENVS = 3


@dataclass(frozen=True)
class Signal:
    """Something seen in one step that an honest run would not show."""

    step: str
    signal: str  # a key of SIGNALS, or a tamper sensor's name
    detail: str

    def as_json(self) -> dict[str, str]:
        return {"step": self.step, "signal": self.signal, "detail": self.detail}


def timing_outliers(
    durations: Mapping[str, Mapping[str, float]], *, from_monitor: Collection[str] = ()
) -> Iterable[tuple[str, Signal]]:
    """``(environment, signal)`` for each step far slower than its median across environments.

    Args:
        durations: environment -> step id -> seconds, for steps that ran (not skipped).
        from_monitor: ids of the steps that ran ``from: monitor``: ignored. No binary of
            theirs was on the target to hold up, and how long a service takes to answer
            (a timeout, a slow DNS server) says nothing about tampering.
    """
    by_step: dict[str, list[float]] = {}
    for steps in durations.values():
        for step, seconds in steps.items():
            if step not in from_monitor:
                by_step.setdefault(step, []).append(seconds)
    # Once per step, not per environment: 5,000 environments made that 7 s of sorting.
    medians = {step: (_median(s), len(s)) for step, s in by_step.items() if len(s) >= OUTLIER_MIN_ENVS}
    for env, steps in durations.items():
        for step, seconds in steps.items():
            if step in from_monitor or step not in medians:
                continue
            median, count = medians[step]
            if seconds > OUTLIER_FACTOR * median and seconds - median > OUTLIER_SLACK:
                detail = f"{seconds:.1f}s against a median of {median:.1f}s over {count} environments"
                yield env, Signal(step, "timing_outlier", detail)


# -- tamper sensors (docs/protocol.md, "sensors") ----------------------------------------

_SHELL_ENV = ("BASH_ENV", "ENV", "PROMPT_COMMAND")
_LOADER_ENV = ("LD_PRELOAD", "LD_AUDIT", "LD_LIBRARY_PATH")
_WATCHED_DIRS = ("/usr/bin", "/usr/sbin", "/bin", "/sbin", "/etc/ssh")


def _error(value: object) -> bool:
    return isinstance(value, str) and value.startswith("error: ")


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _param_paths(params: Mapping[str, Any]) -> list[str]:
    """The absolute paths a step's parameters name, as the kit watches them."""
    found: list[str] = []
    for value in params.values():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and item.startswith("/") and item != "/":
                found.append(posixpath.normpath(item))
    return found


def sensor_flags(sensors: Mapping[str, Any], params: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(signal, detail)`` for each red flag in one step's sensors report.

    Args:
        sensors: the result's ``sensors`` object, as the binary sent it.
        params: the step's parameters (a mount over one of their paths is a flag).
    """
    flags: list[tuple[str, str]] = []
    tracer = sensors.get("tracer_pid")
    if isinstance(tracer, int) and tracer != 0:
        flags.append(("traced", f"TracerPid {tracer}: process {tracer} ptraces the binary"))
    for key, signal, what in (
        ("stdin_holders", "pipe_watched", "stdin pipe (the step's config)"),
        ("exe_holders", "binary_watched", "executable"),
    ):
        pids = sensors.get(key)
        if isinstance(pids, list) and pids:
            flags.append((signal, f"process(es) {', '.join(str(p) for p in pids[:20])} held the binary's {what}"))
    env = sensors.get("env")
    if isinstance(env, Mapping):
        for name in _SHELL_ENV + _LOADER_ENV:
            if name in env:
                signal = "shell_hook" if name in _SHELL_ENV else "ld_preload"
                flags.append((signal, f"{name}={str(env[name])[:120]} in the binary's environment"))
        if "SSH_ORIGINAL_COMMAND" in env:  # sshd sets it only when a ForceCommand runs instead
            flags.append(
                (
                    "force_command",
                    "SSH_ORIGINAL_COMMAND in the binary's environment: sshd ran a forced command in place of"
                    f" chaosrun's ({str(env['SSH_ORIGINAL_COMMAND'])[:80]})",
                )
            )
    preload = sensors.get("ld_so_preload")
    if isinstance(preload, Mapping):
        flags.append(
            ("ld_preload", f"/etc/ld.so.preload exists ({preload.get('size')} bytes, sha256 {preload.get('sha256')})")
        )
    sshd = sensors.get("sshd")
    if isinstance(sshd, Mapping):
        for line in sshd.get("lines") or []:
            words = str(line).replace("=", " ", 1).split()
            key, value = (words[0].lower(), words[1:]) if words else ("", [])
            if key == "forcecommand" and value and value[0].lower() != "none":
                flags.append(("force_command", f"sshd_config: {line}"))
            elif key == "setenv" or (key == "permituserenvironment" and value and value[0].lower() != "no"):
                flags.append(("shell_hook", f"sshd_config: {line}"))
    if sensors.get("proc_fs") is False:
        flags.append(("proc_faked", "/proc is not a procfs (statfs magic is not 0x9fa0)"))
    mounts = sensors.get("mounts")
    pid = sensors.get("pid")
    own = f"/proc/{pid}" if isinstance(pid, int) else None
    if isinstance(mounts, list):
        watched = [*_WATCHED_DIRS, *_param_paths(params)]
        if own is not None:
            watched.append(own)
        for mount in mounts:
            point = str(mount).split(" ", 1)[0]
            hit = next((w for w in watched if _under(point, w)), None)
            if hit is not None:
                flags.append(("mount_over", f"mounted over {hit}: {mount}"))
    masked = sensors.get("proc_masked")
    if isinstance(masked, list):
        for mount in masked[:20]:
            point = str(mount).split(" ", 1)[0]
            if own is not None and _under(point, own):
                continue  # the binary's own /proc/PID: flagged above
            process = "/".join(point.split("/")[:3])
            flags.append(
                (
                    "mount_over",
                    f"mounted over {process} (that process is hidden from, or faked to, whatever reads /proc): {mount}",
                )
            )
    return flags


def sensor_trace(sensors: object, signals: Iterable[Signal]) -> dict[str, Any]:
    """What a step's result record keeps of its sensors report: its digest, its cost and
    the signals the step raised, so that every report leaves a trace in the audit log (the
    first one also leaves its ``sensor_baseline``).

    ``sha256`` is the hex SHA-256 of the report as canonical JSON (keys sorted, no
    spaces), ``None`` for a result without sensors.
    """
    digest = None
    if isinstance(sensors, Mapping):
        canonical = json.dumps(sensors, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
        digest = hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()
    elapsed = sensors.get("elapsed_us") if isinstance(sensors, Mapping) else None
    return {
        "sha256": digest,
        "elapsed_us": elapsed if isinstance(elapsed, int) else None,
        "signals": sorted({s.signal for s in signals}),
    }


def sensor_baseline(sensors: Mapping[str, Any]) -> dict[str, str]:
    """The fields of a sensors report a later step compares, compact: name -> hash or value.

    Startup files (``login:PATH``), the login shell, the sshd lines' hash, ld.so.preload
    (``"absent"`` when there is none) and each program (``program:LABEL`` -> ``"PATH sha256"``).
    A sensor that reported an error is left out.
    """
    out: dict[str, str] = {}
    login = sensors.get("login")
    if isinstance(login, Mapping):
        out["login_shell"] = str(login.get("shell"))
        files = login.get("files")
        if isinstance(files, Mapping):
            out.update({f"login:{path}": str(digest) for path, digest in files.items()})
    sshd = sensors.get("sshd")
    if isinstance(sshd, Mapping):
        out["sshd"] = str(sshd.get("sha256"))
    preload = sensors.get("ld_so_preload")
    if preload is None and "ld_so_preload" in sensors:
        out["ld_so_preload"] = "absent"
    elif isinstance(preload, Mapping):
        out["ld_so_preload"] = str(preload.get("sha256"))
    programs = sensors.get("programs")
    if isinstance(programs, Mapping):
        for label, found in programs.items():
            if isinstance(found, Mapping):
                out[f"program:{label}"] = f"{found.get('path')} {found.get('sha256')}"
    return out


def baseline_changes(baseline: Mapping[str, str], current: Mapping[str, str]) -> list[tuple[str, str]]:
    """``(field, detail)`` for each field of ``current`` that differs from the baseline.

    A startup file that appeared or went away is a change; a program that the baseline's
    step did not use is not (the caller adds it to the baseline).
    """
    changes: list[tuple[str, str]] = []
    for key in sorted(set(baseline) | set(current)):
        before, after = baseline.get(key), current.get(key)
        if before == after or (before is None and key.startswith("program:")):
            continue
        if after is None and not key.startswith("login:"):
            continue  # a sensor that errored this time, or a tool this step did not use
        changes.append((key, f"{key} changed since the baseline: {before or 'absent'} -> {after or 'absent'}"))
    return changes


def program_outliers(
    programs: Mapping[str, Mapping[str, tuple[str, str]]],
) -> Iterable[tuple[str, Signal]]:
    """``(environment, signal)`` for each program whose hash differs from the majority's.

    Args:
        programs: environment -> program label -> (``"PATH sha256"`` as in the baseline,
            the step that first reported it). Compared across at least 3 environments.
            A login startup file comes as ``login:PATH`` -> (its sha256, step): a hook
            in the ``~/.bashrc`` of one machine among many shows from the first step.
    """
    by_label: dict[str, Counter[str]] = {}
    for found in programs.values():
        for label, (value, _step) in found.items():
            by_label.setdefault(label, Counter())[value.rsplit(" ", 1)[-1]] += 1
    for env, found in programs.items():
        for label, (value, step) in found.items():
            counts = by_label[label]
            total = sum(counts.values())
            if total < OUTLIER_MIN_ENVS:
                continue
            common, count = counts.most_common(1)[0]
            mine = value.rsplit(" ", 1)[-1]
            if count * 2 > total and mine != common:
                detail = f"{label} is {value}; {count} of {total} environments have sha256 {common}"
                yield env, Signal(step, "program_differs", detail)


def _median(values: list[float]) -> float:
    """``statistics.median`` (without importing fractions and decimal into every run)."""
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
