"""Unit tests for netsense/landing.py: atomic, durable, no-clobber writes into real directories."""
from __future__ import annotations

import os

import pytest

from netsense import landing
from netsense.errors import AlreadyLanded, LandingError
from netsense.landing import TEMP_PREFIX, atomic_write, remove_stale_temps, temp_name, write_text


def names(d) -> list[str]:
    return sorted(os.listdir(d))


def test_atomic_write_creates_file_with_content(tmp_path):
    data = bytes(range(256)) * 1000
    out = atomic_write(tmp_path / "a.nsw", data)
    assert out == tmp_path / "a.nsw"
    assert out.read_bytes() == data
    assert names(tmp_path) == ["a.nsw"]  # no temp file left behind
    assert oct(out.stat().st_mode & 0o777) == oct(0o644 & ~current_umask())


def current_umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def test_atomic_write_accepts_str_path_and_empty_data(tmp_path):
    out = atomic_write(str(tmp_path / "empty"), b"")
    assert out.read_bytes() == b"" and names(tmp_path) == ["empty"]


def test_atomic_write_never_clobbers(tmp_path):
    final = tmp_path / "w.nsw"
    atomic_write(final, b"original")
    with pytest.raises(AlreadyLanded):
        atomic_write(final, b"intruder")
    assert final.read_bytes() == b"original"
    assert names(tmp_path) == ["w.nsw"]
    assert issubclass(AlreadyLanded, LandingError)  # callers catching LandingError see it too


def test_atomic_write_does_not_clobber_a_directory_or_symlink(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(AlreadyLanded):
        atomic_write(tmp_path / "d", b"x")
    target = tmp_path / "target"
    target.write_bytes(b"keep")
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(AlreadyLanded):
        atomic_write(tmp_path / "link", b"x")
    assert target.read_bytes() == b"keep"
    assert names(tmp_path) == ["d", "link", "target"]


def test_replace_true_replaces(tmp_path):
    final = tmp_path / "report.json"
    atomic_write(final, b"v1", replace=True)  # creates when absent
    ino1 = final.stat().st_ino
    atomic_write(final, b"version two", replace=True)
    assert final.read_bytes() == b"version two"
    assert final.stat().st_ino != ino1  # a new file renamed over the old one, not rewritten in place
    assert names(tmp_path) == ["report.json"]


def test_write_text_replaces_utf8(tmp_path):
    final = tmp_path / "s.json"
    write_text(final, "first")
    write_text(final, "zweite Größe ✓\n")
    assert final.read_text(encoding="utf-8") == "zweite Größe ✓\n"
    assert names(tmp_path) == ["s.json"]


def test_error_when_parent_is_a_regular_file(tmp_path):
    (tmp_path / "plain").write_bytes(b"i am a file")
    with pytest.raises(LandingError) as ei:
        atomic_write(tmp_path / "plain" / "w.nsw", b"x")
    assert not isinstance(ei.value, AlreadyLanded)
    assert isinstance(ei.value.__cause__, OSError)
    assert names(tmp_path) == ["plain"]
    assert (tmp_path / "plain").read_bytes() == b"i am a file"


def test_error_when_parent_is_missing(tmp_path):
    with pytest.raises(LandingError):
        atomic_write(tmp_path / "nope" / "w.nsw", b"x")
    assert names(tmp_path) == []


def test_temp_file_removed_when_rename_fails(tmp_path):
    # the temp file is written, then replacing a non-empty directory fails
    d = tmp_path / "occupied"
    d.mkdir()
    (d / "inside").write_bytes(b"1")
    with pytest.raises(LandingError):
        atomic_write(d, b"data", replace=True)
    assert names(tmp_path) == ["occupied"] and names(d) == ["inside"]


def test_temp_file_removed_on_non_os_error(tmp_path):
    # fails after the temp file was created (data is not bytes-like): nothing may be left behind
    with pytest.raises(TypeError):
        atomic_write(tmp_path / "w.nsw", 12345)  # type: ignore[arg-type]
    assert names(tmp_path) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_error_in_read_only_directory(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(LandingError):
            atomic_write(ro / "w.nsw", b"x")
        assert names(ro) == []
    finally:
        ro.chmod(0o755)


def test_temp_names_are_hidden_unique_and_in_the_same_directory(tmp_path):
    final = tmp_path / "x.nsw"
    a, b = temp_name(final), temp_name(final)
    assert a != b
    assert a.parent == b.parent == tmp_path
    assert a.name.startswith(TEMP_PREFIX + "x.nsw.") and a.name.startswith(".")


def test_remove_stale_temps_removes_only_temp_files(tmp_path):
    keep = ["a.nsw", ".hidden", "tmp-x", "x.tmp-1", ".tmp", "..tmp-x"]
    for n in keep:
        (tmp_path / n).write_bytes(b"k")
    stale = [".tmp-a.nsw.123.deadbeef", ".tmp-b.nsw.9.00ff00ff", ".tmp-"]
    for n in stale:
        (tmp_path / n).write_bytes(b"s")
    (tmp_path / ".tmp-dir").mkdir()  # not a file: kept
    (tmp_path / ".tmp-link").symlink_to(tmp_path / "a.nsw")  # symlink: kept, target untouched
    assert remove_stale_temps(tmp_path) == len(stale)
    assert names(tmp_path) == sorted(keep + [".tmp-dir", ".tmp-link"])
    assert (tmp_path / "a.nsw").read_bytes() == b"k"
    assert remove_stale_temps(tmp_path) == 0


def test_remove_stale_temps_missing_directory(tmp_path):
    assert remove_stale_temps(tmp_path / "absent") == 0


def test_remove_stale_temps_after_a_crashed_writer(tmp_path):
    # simulate the state a crash leaves: a temp file next to its final name
    final = tmp_path / "w.nsw"
    t = temp_name(final)
    t.write_bytes(b"half")
    atomic_write(final, b"whole")
    assert remove_stale_temps(tmp_path) == 1
    assert names(tmp_path) == ["w.nsw"] and final.read_bytes() == b"whole"

