"""Path safety and idempotent, fenced stamping of the demo's file jobs (``jobq.demo.paths``, ``stamps``, ``files``)."""

from __future__ import annotations

import fcntl
import io
import os
import re
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jobq
from jobq.demo import files, stamps
from jobq.demo.files import StampBusy, new_job_file, stamp_file
from jobq.demo.paths import FileMissing, UnsafePath, job_path_text, resolve_job_path
from jobq.demo.stamps import stamp_line, stamps_in

DB_URL = "sqlite:///data/queue.db"


class Guard:
    """A stand-in for JobContext.ensure_lease: counts calls, may refuse."""

    def __init__(self, lost: bool = False) -> None:
        self.calls = 0
        self.lost = lost

    def ensure_lease(self) -> None:
        self.calls += 1
        if self.lost:
            raise jobq.LeaseLost(1, "heartbeat")


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A working directory with ``data/files/a.txt`` inside the root and ``outside/secret.txt`` beside it."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "files").mkdir(parents=True)
    (tmp_path / "data" / "files" / "a.txt").write_text("hello\n")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_text("secret\n")
    yield tmp_path


def refused(path: object, *, kind: type[Exception] = UnsafePath, url: str | None = DB_URL) -> str:
    with pytest.raises(kind) as info:
        resolve_job_path("data", path, database_url=url)
    message = str(info.value)
    assert "\n" not in message and message, "errors are one readable line"
    return message


# -- accepted paths ---------------------------------------------------------------------------


def test_accepts_the_seed_form_root_relative_and_absolute(site: Path) -> None:
    real = (site / "data" / "files" / "a.txt").resolve()
    assert resolve_job_path("data", "data/files/a.txt") == real
    assert resolve_job_path("data", "files/a.txt") == real
    assert resolve_job_path("data", str(real)) == real
    assert resolve_job_path("data", "./data/files/./a.txt") == real
    assert job_path_text("data", real) == "data/files/a.txt"


def test_a_symlink_that_stays_inside_is_followed(site: Path) -> None:
    (site / "data" / "files" / "alias.txt").symlink_to("a.txt")
    assert resolve_job_path("data", "data/files/alias.txt") == (site / "data" / "files" / "a.txt").resolve()


def test_a_symlinked_data_root_is_fine(site: Path) -> None:
    (site / "link").symlink_to(site / "data")
    assert resolve_job_path("link", "link/files/a.txt") == (site / "data" / "files" / "a.txt").resolve()
    assert job_path_text("link", resolve_job_path("link", "files/a.txt")) == "link/files/a.txt"


# -- refused paths ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("../outside/secret.txt", "'..'"),
        ("data/../outside/secret.txt", "'..'"),
        ("data/files/../../outside/secret.txt", "'..'"),
        ("files/../../outside/secret.txt", "'..'"),
        ("/etc/passwd", "outside the data directory"),
        ("/dev/zero", "outside the data directory"),
        ("data/files/a.txt\x00.png", "NUL byte"),
        ("data/files/a.txt\n2026-01-01T00:00:00Z job=1", "control character"),
        ("data/files/\ta.txt", "control character"),
        ("data/files/" + "x" * 256, "file name too long"),
        ("data/" + "/".join(["d"] * 600), "path is too long"),
        ("", "empty"),
        ("data", "data directory itself"),
        ("data/files", "is a directory"),
        ("data/files/", "is a directory"),
        ("data/queue.db", "database file"),
        ("data/queue.db-wal", "database file"),
        ("data/queue.db-shm", "database file"),
        ("data/queue.db-journal", "database file"),
        ("files/other.db", "database file"),
    ],
)
def test_refuses_bad_paths_with_one_line(site: Path, path: str, words: str) -> None:
    (site / "data" / "queue.db").write_text("")
    assert words in refused(path)


def test_refuses_a_database_named_by_the_url_whatever_its_name(site: Path) -> None:
    for name in ("store", "store-wal", "store-shm", "store-journal"):
        (site / "data" / name).write_text("")
        assert "database file" in refused(f"data/{name}", url="sqlite:///data/store")
        assert resolve_job_path("data", f"data/{name}", database_url="postgresql://db/jobs")  # not a DB there


def test_refuses_non_text(site: Path) -> None:
    assert "must be text" in refused(42)
    assert "must be text" in refused(None)


def test_refuses_a_symlink_leading_out(site: Path) -> None:
    (site / "data" / "files" / "out.txt").symlink_to(site / "outside" / "secret.txt")
    (site / "data" / "files" / "outdir").symlink_to(site / "outside")
    (site / "data" / "files" / "passwd").symlink_to("/etc/passwd")
    (site / "data" / "files" / "dangling").symlink_to(site / "outside" / "nothing-yet.txt")
    assert "outside the data directory" in refused("data/files/out.txt")
    assert "outside the data directory" in refused("data/files/outdir/secret.txt")
    assert "outside the data directory" in refused("files/passwd")
    assert "outside the data directory" in refused("data/files/dangling")


def test_refuses_fifo_device_and_hard_link(site: Path) -> None:
    os.mkfifo(site / "data" / "files" / "pipe")
    assert "is a FIFO" in refused("data/files/pipe")
    (site / "data" / "files" / "zero").symlink_to("/dev/zero")
    assert "outside the data directory" in refused("data/files/zero")
    os.link(site / "data" / "files" / "a.txt", site / "data" / "files" / "hard.txt")
    assert "hard links" in refused("data/files/hard.txt")


@pytest.mark.skipif(os.geteuid() != 0, reason="creating a device node needs root")
def test_refuses_a_device_node_inside_the_root(site: Path) -> None:
    os.mknod(site / "data" / "files" / "null", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    assert "is a device" in refused("data/files/null")


def test_missing_file_is_its_own_error(site: Path) -> None:
    message = refused("data/files/nope.txt", kind=FileMissing)
    assert message == "file not found: data/files/nope.txt"
    assert refused("data/files/nodir/x.txt", kind=FileMissing).startswith("file not found")
    assert not issubclass(FileMissing, UnsafePath)
    assert issubclass(UnsafePath, jobq.InvalidPayload) and issubclass(FileMissing, jobq.InvalidPayload)


def test_control_characters_are_shown_escaped(site: Path) -> None:
    assert "a\\nb" in refused("data/a\nb")


# -- stamping ---------------------------------------------------------------------------------


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_stamp_is_written_once_per_job_and_run(site: Path) -> None:
    target = site / "data" / "files" / "a.txt"
    guard = Guard()
    assert stamp_file(guard, "data/files/a.txt", 7, 1, data_root="data") is True
    assert stamp_file(guard, "files/a.txt", 7, 1, data_root="data") is False  # a retry after a crash
    assert stamp_file(guard, "data/files/a.txt", 7, 2, data_root="data") is True  # an operator resubmit
    assert stamp_file(guard, "data/files/a.txt", 8, 1, data_root="data") is True
    assert guard.calls == 4, "the lease is checked before every decision"
    text = lines(target)
    assert text[0] == "hello"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z job=7", text[1])
    assert text[2].endswith(" job=7 run=2") and text[3].endswith(" job=8")
    assert stamps_in(target.read_bytes()) == [(7, 1), (7, 2), (8, 1)]


def test_stamp_line_format() -> None:
    assert stamp_line(3, now=86400.5) == "1970-01-02T00:00:00.500Z job=3\n"
    assert stamp_line(3, 4, now=0) == "1970-01-01T00:00:00.000Z job=3 run=4\n"


def test_text_that_merely_mentions_a_job_is_not_a_stamp(site: Path) -> None:
    target = site / "data" / "files" / "a.txt"
    target.write_text("see job=5 here\nnotes 2026-01-01T00:00:00Z job=5 extra\n")
    assert stamp_file(Guard(), "data/files/a.txt", 5, data_root="data") is True
    assert stamps_in(target.read_bytes()) == [(5, 1)]


def test_a_partial_last_line_keeps_the_stamp_on_its_own_line(site: Path) -> None:
    target = site / "data" / "files" / "a.txt"
    target.write_text("no newline at the end")
    assert stamp_file(Guard(), "data/files/a.txt", 1, data_root="data")
    assert lines(target)[0] == "no newline at the end" and lines(target)[1].endswith(" job=1")


def test_a_worker_that_lost_its_lease_writes_nothing(site: Path) -> None:
    target = site / "data" / "files" / "a.txt"
    with pytest.raises(jobq.LeaseLost):
        stamp_file(Guard(lost=True), "data/files/a.txt", 1, data_root="data")
    assert target.read_text() == "hello\n"


def test_a_plain_callable_can_guard(site: Path) -> None:
    called: list[int] = []
    assert stamp_file(lambda: called.append(1), "data/files/a.txt", 1, data_root="data")
    assert called == [1]


def test_unsafe_and_missing_paths_are_refused_before_any_write(site: Path) -> None:
    guard = Guard()
    (site / "data" / "files" / "out.txt").symlink_to(site / "outside" / "secret.txt")
    with pytest.raises(UnsafePath):
        stamp_file(guard, "data/files/out.txt", 1, data_root="data")
    with pytest.raises(FileMissing):
        stamp_file(guard, "data/files/none.txt", 1, data_root="data")
    assert guard.calls == 0
    assert (site / "outside" / "secret.txt").read_text() == "secret\n"


def swap_after_check(monkeypatch: pytest.MonkeyPatch, swap: Callable[[], None]) -> None:
    """Run ``swap`` right after stamp_file's path check passed: the race an attacker would win."""
    real_resolve = files.resolve_job_path

    def resolve_then_swap(*args: object, **kwargs: object) -> Path:
        result = real_resolve(*args, **kwargs)  # type: ignore[arg-type]
        swap()
        return result

    monkeypatch.setattr(files, "resolve_job_path", resolve_then_swap)


def test_a_symlink_swapped_in_after_the_check_is_not_followed(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = site / "data" / "files" / "a.txt"

    def swap() -> None:
        target.unlink()
        target.symlink_to(site / "outside" / "secret.txt")

    swap_after_check(monkeypatch, swap)
    with pytest.raises(UnsafePath, match="symlink"):
        stamp_file(Guard(), "data/files/a.txt", 1, data_root="data")
    assert (site / "outside" / "secret.txt").read_text() == "secret\n"


def test_a_directory_swapped_for_a_symlink_after_the_check_is_not_followed(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (site / "outside" / "a.txt").write_text("outside a\n")

    def swap() -> None:
        (site / "data" / "files").rename(site / "data" / "files.old")
        (site / "data" / "files").symlink_to(site / "outside")

    swap_after_check(monkeypatch, swap)
    with pytest.raises(UnsafePath, match="symlink"):
        stamp_file(Guard(), "data/files/a.txt", 1, data_root="data")
    assert (site / "outside" / "a.txt").read_text() == "outside a\n"


def test_a_fifo_swapped_in_after_the_check_is_not_opened(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = site / "data" / "files" / "a.txt"

    def swap() -> None:
        target.unlink()
        os.mkfifo(target)

    swap_after_check(monkeypatch, swap)
    with pytest.raises(UnsafePath, match="FIFO"):
        stamp_file(Guard(), "data/files/a.txt", 1, data_root="data")


def test_concurrent_stampers_write_exactly_one_stamp(site: Path) -> None:
    target = site / "data" / "files" / "a.txt"
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def stamper() -> None:
        barrier.wait()
        results.append(stamp_file(Guard(), "data/files/a.txt", 11, 1, data_root="data"))

    threads = [threading.Thread(target=stamper) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == [False] * 7 + [True]
    assert stamps_in(target.read_bytes()) == [(11, 1)]


def test_a_lock_held_too_long_is_a_retryable_error(site: Path) -> None:
    target = site / "data" / "files" / "a.txt"
    guard = Guard()
    with open(target, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(StampBusy, match="locked by another process"):
            stamp_file(guard, "data/files/a.txt", 1, data_root="data", lock_timeout=0.1)
    assert guard.calls == 0 and target.read_text() == "hello\n"
    assert not isinstance(StampBusy("x"), jobq.InvalidPayload), "a busy file is retried, not failed for good"


# -- fuzzing: nothing outside the root is ever written ---------------------------------------

SEGMENTS = st.sampled_from(
    [
        "..", ".", "", "data", "files", "a.txt", "out.txt", "outdir", "secret.txt", "outside", "queue.db",
        "pipe", "etc", "passwd", "tmp", "\n", "\x00", "x" * 300, "é", "*", "~",
    ]
)  # fmt: skip


@pytest.fixture
def fuzz_site(site: Path) -> Path:
    (site / "data" / "files" / "out.txt").symlink_to(site / "outside" / "secret.txt")
    (site / "data" / "files" / "outdir").symlink_to(site / "outside")
    (site / "data" / "queue.db").write_text("")
    os.mkfifo(site / "data" / "files" / "pipe")
    return site


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file() and not p.is_symlink()}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(SEGMENTS, min_size=1, max_size=6), absolute=st.booleans())
def test_fuzz_nothing_outside_the_root_is_written(fuzz_site: Path, parts: list[str], absolute: bool) -> None:
    before = snapshot(fuzz_site / "outside")
    db_before = (fuzz_site / "data" / "queue.db").read_bytes()
    path = ("/" if absolute else "") + "/".join(parts)
    try:
        written = stamp_file(Guard(), path, 1, data_root="data", database_url=DB_URL)
    except (UnsafePath, FileMissing):
        written = False
    assert snapshot(fuzz_site / "outside") == before
    assert (fuzz_site / "data" / "queue.db").read_bytes() == db_before
    if written:  # only ever a regular file under the root
        real = resolve_job_path("data", path)
        assert str(real).startswith(str((fuzz_site / "data").resolve()) + os.sep)


# -- producing files --------------------------------------------------------------------------


def test_new_job_files_are_unique_complete_and_leave_no_temp(site: Path) -> None:
    made = [new_job_file("data") for _ in range(50)]
    assert len({p.name for p in made}) == 50
    for p in made:
        assert p.parent == Path("data") / "files"
        assert re.fullmatch(r"\d{8}T\d{6}\.\d{6}Z-[A-Za-z0-9._]+-\d+-[0-9a-f]{16}\.txt", p.name)
        text = p.read_text()
        assert text.startswith(f"jobq demo file {p.name}\n") and len(text.splitlines()) == 4
        assert stamps_in(p.read_bytes()) == []
        assert os.stat(p).st_nlink == 1
    assert not [p for p in (site / "data" / "files").iterdir() if p.name.startswith(".")]


# -- the stamp check reads the file in bounded memory -----------------------------------------

SPARSE_FILE_BYTES = 3 * 1024**3  # 3 GiB of NULs (the reported case): one "line" with no end
ADDRESS_SPACE_LIMIT_BYTES = 512 * 1024**2  # the check runs in this, far below the file's size

_STAMP_TWICE = """
import resource, sys
limit = int(sys.argv[3])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))  # reading the file whole is a MemoryError
from jobq.demo.files import stamp_file
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
first = stamp_file(lambda: None, sys.argv[1], 7, 1, data_root=sys.argv[2])
second = stamp_file(lambda: None, sys.argv[1], 7, 1, data_root=sys.argv[2])
grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(first, second, grown_kib)
"""


def test_a_huge_sparse_file_is_stamped_once_in_bounded_memory(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "files").mkdir(parents=True)
    target = root / "files" / "huge.txt"
    with open(target, "wb") as f:
        os.truncate(f.fileno(), SPARSE_FILE_BYTES)  # no blocks on disk: a hole of NULs
    done = subprocess.run(
        [sys.executable, "-c", _STAMP_TWICE, str(target), str(root), str(ADDRESS_SPACE_LIMIT_BYTES)],
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    first, second, grown_kib = done.stdout.split()
    assert (first, second) == ("True", "False"), "stamped once; the second check found it after 3 GiB"
    assert int(grown_kib) < 64 * 1024, f"peak memory grew by {grown_kib} KiB"
    with open(target, "rb") as f:
        f.seek(SPARSE_FILE_BYTES)
        tail = f.read()
    assert tail.startswith(b"\n") and stamps_in(tail) == [(7, 1)]  # after the partial "line" of NULs


def _stamps_by_lines(data: bytes) -> list[tuple[int, int]]:
    """The stamp check as it was: every line of the whole content against STAMP_RE (numbers of 21
    digits and more, never a job's, are now all reported as 10**21 - 1)."""

    def capped(digits: bytes) -> int:
        value = int(digits)
        return value if value < 10**20 else 10**21 - 1

    found = []
    for line in data.splitlines():
        m = stamps.STAMP_RE.match(line)
        if m:
            found.append((capped(m.group(1)), capped(m.group(2) or b"1")))
    return found


def _digits(low: int, high: int) -> st.SearchStrategy[str]:
    return st.text("0123456789", min_size=low, max_size=high)


_stamp_lines = st.builds(
    lambda date, frac, tz, zeros, job, run: (
        f"{date}{frac}{tz} job={'0' * zeros}{job}" + ("" if run is None else f" run={'0' * zeros}{run}")
    ),
    st.sampled_from(["2026-11-30T09:28:32", "1970-01-01T00:00:00", "2026-1-30T09:28:32", "x026-11-30T09:28:32"]),
    st.one_of(st.just(""), _digits(0, 30).map(lambda d: "." + d)),
    st.sampled_from(["Z", "+01:00", "-11:30", "+1:00", ""]),
    st.integers(0, 40),
    st.integers(0, 2**63 - 1),
    st.none() | st.integers(0, 2**31),
)
_noise = st.text("0123456789-:TZ.+ jobrun=\x00", max_size=60)
_separators = st.sampled_from(["\n", "\r", "\r\n", "\n\n", ""])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    parts=st.lists(st.tuples(st.one_of(_stamp_lines, _noise), _separators), max_size=12),
    piece=st.integers(1, 64),
)
def test_the_chunked_scan_finds_exactly_what_the_line_by_line_check_found(
    parts: list[tuple[str, str]], piece: int
) -> None:
    data = "".join(text + sep for text, sep in parts).encode()
    stream = io.BytesIO(data)
    # Pieces as small as one byte: every line, digit run and \r\n split across reads somewhere.
    assert list(stamps.scan_stamps(lambda n: stream.read(min(n, piece)))) == _stamps_by_lines(data)
    assert stamps_in(data) == _stamps_by_lines(data)


def test_long_lines_and_digit_runs_in_bounded_memory() -> None:
    junk = b"\x00" * (3 * stamps.STAMP_SCAN_CHUNK_BYTES + 5)  # one line of several chunks, skipped
    padded = b"2026-11-30T09:28:32." + b"5" * 10_000 + b"Z job=" + b"0" * 10_000 + b"42 run=" + b"0" * 9_000 + b"3"
    huge_id = b"2026-11-30T09:28:32Z job=" + b"1" * 5_000  # not a job id: beyond 64 bits
    edge = b"2026-11-30T09:28:32Z job=" + str(10**20 - 1).encode() + b" run=0" + str(10**20).encode()
    lines = [junk, padded, huge_id, junk + b"2026-11-30T09:28:32Z job=1", edge, b"2026-11-30T09:28:32Z job=9"]
    data = b"\n".join(lines)
    # Leading zeros and long fractions keep their meaning (the old check raised ValueError past
    # Python's 4,300-digit int() limit); a number of 10**20 or more is reported as 10**21 - 1.
    expected = [(42, 3), (10**21 - 1, 1), (10**20 - 1, 10**21 - 1), (9, 1)]
    assert stamps_in(data) == expected
    stream = io.BytesIO(data)
    assert list(stamps.scan_stamps(lambda n: stream.read(min(n, 4093)))) == expected
