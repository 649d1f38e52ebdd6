"""Atomic writes: a crash mid-write leaves the previous file (or no file) and no temporary behind."""

import os

import numpy as np
import pytest

import engine.io.ply as ply_module
from engine.io import GaussianArrays, atomic_directory, atomic_write, read_gaussian_ply, write_gaussian_ply


class Crash(RuntimeError):
    pass


def test_atomic_write_creates_file_with_content_and_normal_permissions(tmp_path):
    target = tmp_path / "out.txt"
    with atomic_write(target, "w") as file:
        file.write("hello\n")
        assert not target.exists()  # nothing under the final name until the end
    assert target.read_text() == "hello\n"
    assert os.listdir(tmp_path) == ["out.txt"]
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize("existing", [True, False])
def test_atomic_write_crash_keeps_old_content_and_removes_temp(tmp_path, existing):
    target = tmp_path / "out.bin"
    if existing:
        target.write_bytes(b"old")
    with pytest.raises(Crash):
        with atomic_write(target) as file:
            file.write(b"new partial data")
            raise Crash()
    assert os.listdir(tmp_path) == (["out.bin"] if existing else [])
    if existing:
        assert target.read_bytes() == b"old"


def test_atomic_write_rejects_other_modes(tmp_path):
    with pytest.raises(ValueError, match=r"mode must be 'wb' or 'w', got 'a'"):
        with atomic_write(tmp_path / "x", "a"):
            pass
    assert os.listdir(tmp_path) == []


def test_gaussian_ply_crash_mid_write_keeps_previous_file(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)

    def gaussians(n):
        return GaussianArrays(
            rng.standard_normal((n, 3)), rng.standard_normal((n, 3)), np.zeros((n, 0, 3)), rng.standard_normal(n),
            rng.standard_normal((n, 3)), rng.standard_normal((n, 4)),
        )  # fmt: skip

    target = tmp_path / "scene.ply"
    old = gaussians(3)
    write_gaussian_ply(target, old)
    old_bytes = target.read_bytes()

    class FailingFile:
        """Passes the header through, then dies while the body is written (as a full disk would)."""

        def __init__(self, file):
            self.file, self.writes = file, 0

        def write(self, data):
            self.writes += 1
            if self.writes == 2:
                self.file.write(bytes(data)[:10])
                raise OSError(28, "No space left on device")
            return self.file.write(data)

    real_atomic_write = ply_module.atomic_write

    def failing_atomic_write(path, mode="wb"):
        import contextlib

        @contextlib.contextmanager
        def manager():
            with real_atomic_write(path, mode) as file:
                yield FailingFile(file)

        return manager()

    monkeypatch.setattr(ply_module, "atomic_write", failing_atomic_write)
    with pytest.raises(OSError, match="No space left"):
        write_gaussian_ply(target, gaussians(100))
    assert os.listdir(tmp_path) == ["scene.ply"]
    assert target.read_bytes() == old_bytes
    assert len(read_gaussian_ply(target)) == 3


def test_atomic_directory_success_and_failure(tmp_path):
    final = tmp_path / "run_001"
    with atomic_directory(final) as building:
        assert building.parent == tmp_path and building.name.startswith(".run_001.")
        (building / "scene.ply").write_bytes(b"ply")
        (building / "sub").mkdir()
        (building / "sub" / "frames.txt").write_text("1 2 3")
        assert not final.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run_001"]
    assert (final / "sub" / "frames.txt").read_text() == "1 2 3"

    with pytest.raises(Crash):
        with atomic_directory(tmp_path / "run_002") as building:
            (building / "scene.ply").write_bytes(b"half")
            raise Crash()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run_001"]  # no run_002, no temporary
    assert (final / "scene.ply").read_bytes() == b"ply"  # earlier results intact


def test_atomic_directory_existing_target(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with pytest.raises(FileExistsError, match=r"already exists \(pass replace=True"):
        with atomic_directory(final):
            pytest.fail("the body must not run")
    with pytest.raises(Crash):
        with atomic_directory(final, replace=True) as building:
            (building / "new.txt").write_text("new")
            raise Crash()
    assert [p.name for p in final.iterdir()] == ["old.txt"]
    with atomic_directory(final, replace=True) as building:
        (building / "new.txt").write_text("new")
    assert [p.name for p in final.iterdir()] == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_directory_target_appearing_meanwhile_is_an_error(tmp_path):
    final = tmp_path / "out"
    with pytest.raises(FileExistsError, match=r"appeared while it was being built"):
        with atomic_directory(final) as building:
            (building / "a").write_text("a")
            final.mkdir()
            (final / "theirs").write_text("theirs")
    assert [p.name for p in final.iterdir()] == ["theirs"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
