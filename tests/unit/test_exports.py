"""The package's public surface is a fixed list (trio's test_exports idea)."""

import subprocess
import sys

import chaosrun

PUBLIC = [
    "Inventory",
    "Plan",
    "RunOptions",
    "RunReport",
    "Scenario",
    "ScenarioError",
    "ScenarioErrors",
    "Span",
    "build_plan",
    "load_inventory",
    "load_scenario",
    "run_plan",
]


def test_the_public_names_are_exactly_these_and_all_resolve() -> None:
    assert sorted(chaosrun.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(chaosrun, name) is not None


def test_importing_chaosrun_for_lint_does_not_load_the_ssh_runtime() -> None:
    code = "import sys, chaosrun, chaosrun.cli; print('asyncssh' in sys.modules, 'trio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


TESTING_PUBLIC = [
    "LocalAsyncsshServer",
    "LocalSshd",
    "LocalSshdError",
    "local_asyncssh_server",
    "local_sshd",
    "send_callback",
    "write_known_hosts",
]


def test_the_test_support_exports_exactly_these_and_all_resolve() -> None:
    import chaosrun.testing

    assert sorted(chaosrun.testing.__all__) == TESTING_PUBLIC
    for name in TESTING_PUBLIC:
        assert getattr(chaosrun.testing, name) is not None


def test_importing_the_test_support_for_an_sshd_does_not_load_asyncssh_or_trio() -> None:
    code = "import sys, chaosrun.testing; print('asyncssh' in sys.modules, 'trio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
