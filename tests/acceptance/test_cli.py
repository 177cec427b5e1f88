"""The real ``jobq`` command, run in subprocesses against a temporary SQLite database per test.

Set-up that the CLI cannot do in one step (a job that failed, a lease that expired, a job that
finished ten days ago) goes through the public Python API on the same database file.
Long-running commands (worker, producer, consumer) are stopped with SIGTERM by PID in a
finalizer, also when the test fails.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest
from polling import wait_for

import jobq
from jobq.demo.stamps import stamps_in
from jobq.job import JobStatus

JOBQ = Path(sys.executable).with_name("jobq")
if not JOBQ.exists():  # an installed console script elsewhere on PATH
    JOBQ = Path(shutil.which("jobq") or "jobq")

RUN_TIMEOUT_SECONDS = 60


class Cli:
    """Runs ``jobq`` in ``root`` with ``JOBQ_DATABASE_URL`` pointing at the test's own database."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = f"sqlite:///{root}/queue.db"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("JOBQ_")}
        self.env.update(JOBQ_DATABASE_URL=self.url, PYTHONUNBUFFERED="1", JOBQ_LOG_LEVEL="WARNING")
        self.started: list[subprocess.Popen[bytes]] = []
        #: How the command is run (``python -m jobq`` works too).
        self.command = [str(JOBQ)]

    def run(self, *args: str, stdin: str | bytes | None = None) -> subprocess.CompletedProcess[str]:
        data = stdin.decode() if isinstance(stdin, bytes) else stdin
        return subprocess.run(
            [*self.command, *args],
            cwd=self.root,
            env=self.env,
            input=data,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_SECONDS,
            check=False,
        )

    def ok(self, *args: str, stdin: str | None = None) -> str:
        """Run a command that must succeed quietly on stderr; return its stdout."""
        done = self.run(*args, stdin=stdin)
        assert done.returncode == 0, f"jobq {' '.join(args)} -> {done.returncode}: {done.stderr}"
        assert done.stderr == "", done.stderr
        return done.stdout

    def fails(self, *args: str, code: int = 1, stdin: str | None = None) -> str:
        """Run a command that must fail with ``code`` and ONE ``jobq: error:`` line; return it."""
        done = self.run(*args, stdin=stdin)
        assert done.returncode == code, f"jobq {' '.join(args)} -> {done.returncode}: {done.stderr}"
        assert "Traceback" not in done.stderr
        lines = done.stderr.splitlines()
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith("jobq: error: "), lines[0]
        return lines[0]

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json"))

    def start(self, *args: str, log: str = "proc.log") -> subprocess.Popen[bytes]:
        """Start a long-running command; its output goes to ``root/log`` (no pipe to fill up)."""
        with open(self.root / log, "wb") as out:
            proc = subprocess.Popen(
                [*self.command, *args], cwd=self.root, env=self.env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
            )
        self.started.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        proc.send_signal(sig)
        return proc.wait(timeout=timeout)

    def cleanup(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)

    def queue(self, **kwargs: Any) -> jobq.Queue:
        return jobq.Queue(self.url, settings=jobq.Settings(database_url=self.url), **kwargs)

    def status(self, job_id: int) -> str:
        with self.queue() as q:
            return q.get(job_id).status.value


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    runner = Cli(tmp_path)
    yield runner
    runner.cleanup()


def enqueue(cli: Cli, payload: object, *args: str) -> int:
    return int(cli.ok("enqueue", "--json", json.dumps(payload), *args).strip())


# -- enqueue ----------------------------------------------------------------------------------------
def test_enqueue_prints_the_id_and_list_json_shows_every_option(cli: Cli) -> None:
    first = enqueue(cli, {"a": 1})
    second = enqueue(
        cli, {"b": "ü"}, "--queue", "mail", "--task", "send", "--priority", "-3", "--delay", "1h",
        "--key", "k-1", "--max-attempts", "7", "--timeout", "90s",
    )  # fmt: skip
    assert (first, second) == (1, 2)
    jobs = {j["id"]: j for j in cli.json("list")}
    assert jobs[1]["payload"] == {"a": 1}
    assert (jobs[1]["queue"], jobs[1]["task"], jobs[1]["status"]) == ("default", "", "PENDING")
    b = jobs[2]
    assert b["payload"] == {"b": "ü"}
    assert (b["queue"], b["task"], b["priority"], b["max_attempts"], b["timeout"]) == ("mail", "send", -3, 7, 90.0)
    assert b["idempotency_key"] == "k-1"
    assert 3500 < b["run_at"] - b["created_at"] <= 3600
    assert "lease_token" not in b


def test_python_dash_m_jobq_is_the_same_command(cli: Cli) -> None:
    """For an environment whose scripts are not on PATH: same parser, name, exit codes."""
    cli.command = [sys.executable, "-m", "jobq"]
    assert cli.ok("enqueue", "--json", '{"via": "module"}').strip() == "1"
    assert [j["payload"] for j in cli.json("list")] == [{"via": "module"}]
    assert cli.ok("--help").startswith("usage: jobq ")
    cli.fails("show", "99")  # code 1, one "jobq: error:" line, no traceback


def test_enqueue_same_key_returns_the_existing_job(cli: Cli) -> None:
    first = enqueue(cli, {"n": 1}, "--key", "once")
    again = cli.run("enqueue", "--json", '{"n": 2}', "--key", "once")
    assert (again.returncode, int(again.stdout)) == (0, first)  # a script reads the holder's id
    assert again.stderr == (  # and a person learns that {"n": 2} was not enqueued
        f"jobq: note: key 'once' is held by job {first}, nothing new was enqueued "
        f"(a finished job runs again with jobq retry {first})\n"
    )
    assert [j["payload"] for j in cli.json("list")] == [{"n": 1}]


def test_enqueue_reads_the_payload_from_stdin(cli: Cli) -> None:
    job_id = int(cli.ok("enqueue", "--json", "-", stdin='{"from": "stdin", "n": [1, 2]}\n'))
    assert cli.json("show", str(job_id))["job"]["payload"] == {"from": "stdin", "n": [1, 2]}


def test_db_flag_before_or_after_the_command_beats_the_environment(cli: Cli) -> None:
    other = f"sqlite:///{cli.root}/other.db"
    enqueue(cli, {"where": "env"})
    cli.ok("--db", other, "enqueue", "--json", '{"where": "before"}')
    cli.ok("enqueue", "--db", other, "--json", '{"where": "after"}')
    assert [j["payload"]["where"] for j in cli.json("list", "--db", other, "--asc")] == ["before", "after"]
    assert [j["payload"]["where"] for j in cli.json("list")] == ["env"]


# -- bad input: one line, no traceback --------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "code", "fragment"),
    [
        (("--db", "mysql://x", "list"), 1, "unsupported database URL scheme 'mysql'"),
        (("show", "999"), 1, "job 999 not found"),
        (("worker", "--import=", "-H", "json:loads"), 1, "cannot import '': Empty module name"),
        (("worker", "--import=..x", "-H", "json:loads"), 1, "cannot import '..x'"),
        (("worker", "-H", "..x:f"), 1, "cannot import handler module '..x'"),
        (("metrics", "--metrics-host", "a" * 70 + ".com", "--port", "19998"), 1, "cannot serve metrics on aaa"),
        (("enqueue", "--json", "{bad"), 1, "malformed JSON payload"),
        (("retry", "1"), 1, "job 1: cannot resubmit a job that is PENDING"),
        (("cancel", "999"), 1, "job 999 not found"),
        (("purge", "--older-than", "7x"), 2, "not a duration: '7x'"),
        (("enqueue", "--json", "{}", "--delay", "soon"), 2, "not a duration: 'soon'"),
        (("--db", "sqlite:///missing.db", "list"), 1, "no database at"),
        (("--db", "sqlite:///a-directory", "enqueue", "--json", "{}"), 1, "a-directory"),
        (("list", "--status", "DONE"), 2, "unknown status 'DONE'"),
        (("enqueue", "--json", "{}", "--max-attempts", "0"), 2, "must be at least 1"),
        (("nonsense",), 2, "invalid choice: 'nonsense'"),
        (("worker", "--handler", "no_such_module:run"), 1, "cannot import handler module 'no_such_module'"),
        (("worker",), 1, "no handlers"),
        # A queue of no name held jobs that `list` showed in a blank column.
        (("enqueue", "--json", "{}", "--queue", ""), 1, "queue must not be empty or begin or end with a space"),
        (("enqueue", "--json", "{}", "--queue", "mail "), 1, "queue must not be empty or begin or end with a space"),
        (("producer", "--queue", " "), 1, "queue must not be empty or begin or end with a space"),
        (
            ("worker", "-H", "json:loads", "-q", "mail", "-q", " mail"),
            1,
            "a queue name must not be empty or begin or end",
        ),
        (("pause", " mail"), 1, "queue name must not be empty or begin or end with a space"),
        (("worker", "-H", "json:loads", "--queue", "mail", "--queue", ""), 1, "a queue name must not be empty"),
    ],
)
def test_bad_input_is_one_clear_line(cli: Cli, argv: tuple[str, ...], code: int, fragment: str) -> None:
    (cli.root / "a-directory").mkdir()
    enqueue(cli, {"pending": True})
    assert fragment in cli.fails(*argv, code=code)


BIG = "99999999999999999999"  # 10**20 - 1: more than any 64-bit integer


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (("show", BIG), "not a job id"),
        (("retry", BIG), "not a job id"),
        (("cancel", "1", f"#{BIG}"), "not a job id"),
        (("list", "--offset", BIG), "must be at most 2147483647"),
        (("list", "--limit", str(2**31)), "must be at most 2147483647"),
        (("enqueue", "--json", "{}", "--priority", str(2**31)), "must be at most 2147483647"),
        (("enqueue", "--json", "{}", "--priority", f"-{BIG}"), "must be at least -2147483648"),
        (("enqueue", "--json", "{}", "--max-attempts", BIG), "must be at most 2147483647"),
        (("worker", "-H", "m:f", "--concurrency", BIG), "must be at most 1024"),
        (("consumer", "--concurrency", BIG), "must be at most 1024"),
        (("ops", "--port", BIG), "between 1 and 65535"),
    ],
)
def test_out_of_range_integers_are_one_usage_line_and_write_nothing(
    cli: Cli, argv: tuple[str, ...], fragment: str
) -> None:
    done = cli.run(*argv)
    assert done.stdout == ""
    assert fragment in cli.fails(*argv, code=2)
    assert list(cli.root.iterdir()) == [], "no database or file created"
    enqueue(cli, {"before": True})
    before = cli.json("list")
    cli.fails(*argv, code=2)
    assert cli.json("list") == before


@pytest.mark.parametrize("kind", ["another program's", "empty"])
def test_commands_on_existing_jobs_leave_a_file_without_jobqs_tables_as_it_was(cli: Cli, kind: str) -> None:
    """A mistyped ``--db`` naming another program's SQLite file: ``jobq list`` created jobq's two
    dozen tables in it (and switched it to WAL); an empty file became a jobq database."""
    path = cli.root / "other.db"
    if kind == "empty":
        path.touch()
    else:
        conn = apsw.Connection(str(path))
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO users VALUES (1, 'ann')")
        conn.close()
    before = path.read_bytes()
    for args in (["list"], ["stats"], ["show", "1"], ["cancel", "1"], ["purge", "--older-than", "1d"], ["limits"]):
        line = cli.fails("--db", f"sqlite:///{path}", *args)
        assert line == f"jobq: error: no jobq queue in {path} (start a producer or worker to create it)", args
    assert path.read_bytes() == before
    assert sorted(p.name for p in cli.root.iterdir()) == ["other.db"]  # no -wal or -shm beside it


def test_a_payload_piped_in_is_read_no_further_than_its_limit(cli: Cli) -> None:
    """``--json - < /dev/zero`` read the stream whole (7 GB of memory in 10 s); with stdin closed
    it ended in AttributeError; JSON nested 60,000 deep or a 5,000-digit number in RecursionError
    and ValueError tracebacks. Each is one line now, and nothing is stored."""
    kept = enqueue(cli, {"kept": True})
    with open("/dev/zero", "rb") as zeros:
        done = subprocess.run(
            [str(JOBQ), "enqueue", "--json", "-"], cwd=cli.root, env=cli.env, stdin=zeros,
            capture_output=True, text=True, timeout=RUN_TIMEOUT_SECONDS, check=False,
        )  # fmt: skip
    assert (done.returncode, done.stderr) == (
        1,
        "jobq: error: payload is over the limit of 65536 bytes (read from standard input)\n",
    )
    closed = subprocess.run(
        f"exec {JOBQ} enqueue --json - <&-", shell=True, cwd=cli.root, env=cli.env,
        capture_output=True, text=True, timeout=RUN_TIMEOUT_SECONDS, check=False,
    )  # fmt: skip
    assert closed.stderr == "jobq: error: --json -: there is no standard input to read the payload from\n"
    assert "deeper than 64 levels" in cli.fails("enqueue", "--json", "-", stdin="[" * 30_000 + "]" * 30_000)
    assert "4300 digits" in cli.fails("enqueue", "--json", "1" + "0" * 5_000)
    assert "deeper than 64 levels" in cli.fails("schedules", "add", "s", "--task", "t", "--every", "1m",
                                                "--payload", "[" * 60_000 + "]" * 60_000)  # fmt: skip
    assert [j["id"] for j in cli.json("list")] == [kept] and cli.json("schedules") == []


@pytest.mark.parametrize(
    "argv",
    [
        [b"list", b"--queue=\xff"],
        [b"schedules", b"add", b"\xff", b"--task", b"t", b"--every", b"1m"],
        [b"cancel", b"--actor", b"\xff", b"1"],
        [b"worker", b"--queue=\xff", b"--exit-when-idle", b"-H", b"json:loads"],
        [b"--db", b"sqlite:///\xff/q.db", b"enqueue", b"--json", b"1"],
    ],
)
def test_arguments_that_are_not_utf8_are_one_line_and_touch_nothing(cli: Cli, argv: list[bytes]) -> None:
    """Bytes that are not UTF-8 reach Python as lone surrogates: each ended in a
    UnicodeEncodeError traceback wherever it was first encoded (a worker looped on it, and a
    --db path created its directory first)."""
    kept = enqueue(cli, {"kept": True})
    done = subprocess.run([os.fsencode(JOBQ), *argv], cwd=cli.root, env=cli.env, capture_output=True, timeout=60)
    assert done.returncode == 2 and done.stdout == b""
    assert done.stderr.startswith(b"jobq: error: argument ") and done.stderr.endswith(b" is not UTF-8 text\n")
    assert done.stderr.count(b"\n") == 1 and b"\\xff" in done.stderr
    assert [j["id"] for j in cli.json("list")] == [kept] and cli.json("schedules") == []
    assert sorted(p.name for p in cli.root.iterdir()) == ["queue.db"]  # no directory named by --db


def test_a_jobq_variable_that_is_not_utf8_is_one_line(cli: Cli) -> None:
    env = {os.fsencode(k): os.fsencode(v) for k, v in cli.env.items()}
    env[b"JOBQ_OPERATOR"] = b"\xff"
    done = subprocess.run([os.fsencode(JOBQ), b"resume", b"q"], cwd=cli.root, env=env, capture_output=True, timeout=60)
    assert (done.returncode, done.stderr) == (
        2,
        b"jobq: error: the environment variable JOBQ_OPERATOR is not UTF-8 text\n",
    )


def test_output_that_cannot_be_written_is_one_line(cli: Cli) -> None:
    enqueue(cli, {"x": 1})
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [str(JOBQ), "list"], cwd=cli.root, env=cli.env, stdout=full, stderr=subprocess.PIPE, text=True, timeout=60
        )
    assert (done.returncode, done.stderr) == (1, "jobq: error: cannot write the output: No space left on device\n")


def test_a_schema_version_written_by_hand_is_one_line(cli: Cli) -> None:
    """A version that is not a number in jobq_schema failed every command with ValueError."""
    enqueue(cli, {"x": 1})
    conn = apsw.Connection(str(cli.root / "queue.db"))
    conn.execute("INSERT INTO jobq_schema VALUES ('abc', 0)")
    conn.close()
    line = cli.fails("list")
    assert line.endswith("queue.db: jobq_schema holds version 'abc', not a number (edited by hand?)"), line


def test_the_largest_limit_and_offset_the_parser_takes_run(cli: Cli) -> None:
    """The parser's bounds are the API's (an offset of 2**63-1 parsed, then ended in a traceback)."""
    job_id = enqueue(cli, {"x": 1})
    top = str(2**31 - 1)
    assert [j["id"] for j in cli.json("list", "--limit", top)] == [job_id]
    assert cli.json("list", "--offset", top) == []
    assert cli.ok("list", "--offset", top).strip() == "no jobs (of 1 matching)"


def test_out_of_range_integers_in_settings_and_urls_are_one_line(cli: Cli) -> None:
    env = dict(cli.env)
    cli.env["JOBQ_MAX_ATTEMPTS"] = BIG
    assert "max_attempts must be between 1 and 2147483647" in cli.fails("enqueue", "--json", "{}")
    cli.env = env
    url = f"sqlite:///{cli.root}/other.db?busy_timeout={BIG}"
    assert "busy_timeout must be at most 2147483647" in cli.fails("--db", url, "enqueue", "--json", "{}")
    assert list(cli.root.iterdir()) == []


@pytest.mark.parametrize(
    ("script", "argv", "fragment"),
    [
        ("src/consumer/consumer.py", ("--concurrency", BIG), "argument --concurrency/-c: must be at most 1024"),
        ("src/consumer/consumer.py", ("--concurrency", "0"), "argument --concurrency/-c: must be at least 1, not 0"),
        ("src/producer/producer.py", ("--interval", BIG), "argument --interval: duration must be between"),
    ],
)
def test_seed_scripts_refuse_out_of_range_integers_in_one_line(
    cli: Cli, script: str, argv: tuple[str, ...], fragment: str
) -> None:
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, str(repo / script), *argv],
        cwd=cli.root, env=cli.env, capture_output=True, text=True, timeout=RUN_TIMEOUT_SECONDS, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr  # the CLI's exit code for bad usage
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"jobq: error: {Path(script).stem}: {fragment}")
    assert list(cli.root.iterdir()) == []


# -- the database password is never printed --------------------------------------------------------
SECRET = "Sup3rSECRETpw"
SECRET_URLS = [
    f"postgresql://ann:{SECRET}@127.0.0.1:1/jobq",  # nothing listens on port 1: refused at once
    f"postgresql://ann:p@ss:{SECRET}@127.0.0.1:1/jobq",  # an unescaped "@": libpq reads a host of "ss"
    f"postgresql://ann@127.0.0.1:1/jobq?password={SECRET}",
    f"sqlite://ann:{SECRET}@host/queue.db",  # a SQLite URL with a network location is refused
]


@pytest.mark.parametrize("url", SECRET_URLS)
@pytest.mark.parametrize(
    "argv",
    [
        ("stats",),
        ("list", "--status", "failed"),
        ("enqueue", "--json", "{}"),
        ("worker", "--import", "mytasks", "--exit-when-idle"),
        ("producer", "--interval", "1s"),
        ("consumer", "--delay", "0-0"),
    ],
)
def test_the_database_password_is_never_printed(cli: Cli, url: str, argv: tuple[str, ...]) -> None:
    (cli.root / "mytasks.py").write_text(HANDLERS)
    for how in ("flag", "env"):
        args = [*argv, "--db", url] if how == "flag" else list(argv)
        if how == "env":
            cli.env["JOBQ_DATABASE_URL"] = url
        done = cli.run(*args)
        assert done.returncode != 0, done.stdout
        assert SECRET not in done.stdout + done.stderr, f"{how}: {done.stdout}{done.stderr}"
        assert "Traceback" not in done.stderr
        lines = done.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("jobq: error: "), done.stderr


@pytest.mark.parametrize("script", ["src/producer/producer.py", "src/consumer/consumer.py"])
@pytest.mark.parametrize("url", SECRET_URLS)
def test_the_seed_scripts_never_print_the_database_password(cli: Cli, script: str, url: str) -> None:
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, str(repo / script), "--db", url],
        cwd=cli.root, env=cli.env, capture_output=True, text=True, timeout=RUN_TIMEOUT_SECONDS, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr  # the CLI's exit code for a failed command
    assert SECRET not in done.stdout + done.stderr, done.stdout + done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith("jobq: error: ")


def test_payload_too_large_is_one_line(cli: Cli) -> None:
    kept = enqueue(cli, {"kept": True})
    big = json.dumps({"blob": "x" * 70_000})
    assert "over the limit of 65536 bytes" in cli.fails("enqueue", "--json", "-", stdin=big)
    assert "over the limit of 65536 bytes" in cli.fails("enqueue", "--json", big)
    assert [j["id"] for j in cli.json("list")] == [kept]


def test_bad_setting_in_the_environment_is_one_line(cli: Cli) -> None:
    cli.env["JOBQ_LEASE"] = "forever"
    assert "not a duration: 'forever'" in cli.fails("worker", "--handler", "m:f")


def test_ctrl_c_exits_130_quietly(cli: Cli) -> None:
    proc = subprocess.Popen(
        [str(JOBQ), "enqueue", "--json", "-"],
        cwd=cli.root,
        env=cli.env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # Ctrl-C as at a terminal. A suite started in the background by a shell without job
        # control (`make test &`) inherits SIGINT ignored, and Python leaves an ignored SIGINT
        # ignored: the command then never sees it (two fresh-clone runs failed so).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    cli.started.append(proc)

    def blocked_reading_stdin() -> bool:
        # Signal only once it waits in read(0, ...): a SIGINT during interpreter start-up would
        # interrupt an import instead of the command.
        try:
            syscall = Path(f"/proc/{proc.pid}/syscall").read_text()
            wchan = Path(f"/proc/{proc.pid}/wchan").read_text()
        except OSError:
            pytest.skip("cannot see what the process waits for (/proc)")
        on_x86 = platform.machine() in ("x86_64", "AMD64")
        return syscall.startswith("0 0x0 ") if on_x86 else "pipe" in wchan

    wait_for(blocked_reading_stdin, 30, "jobq enqueue to wait on stdin")
    proc.send_signal(signal.SIGINT)
    # Wait with stdin still open: the signal must end the command, not an EOF (communicate()
    # closes stdin at once, and an ignored SIGINT then looked like an empty payload: exit 1).
    proc.wait(timeout=30)
    out, err = proc.communicate(timeout=30)
    assert (proc.returncode, out, err) == (130, b"", b"")


# -- list and show ----------------------------------------------------------------------------------
def test_list_filters_sorts_and_pages(cli: Cli) -> None:
    for i in range(5):
        enqueue(cli, {"n": i, "tag": "even" if i % 2 == 0 else "odd"}, "--queue", "a" if i < 3 else "b")
    cli.ok("cancel", "2")
    ids = lambda *args: [j["id"] for j in cli.json("list", *args)]  # noqa: E731
    assert ids() == [5, 4, 3, 2, 1]
    assert ids("--asc") == [1, 2, 3, 4, 5]
    assert ids("--queue", "b") == [5, 4]
    assert ids("--status", "cancelled") == [2]
    assert ids("--status", "PENDING", "--queue", "a") == [3, 1]
    assert ids("--search", "EVEN") == [5, 3, 1]
    assert ids("--limit", "2", "--offset", "1") == [4, 3]
    lines = cli.ok("list", "--jsonl", "--limit", "2").splitlines()
    assert [json.loads(line)["id"] for line in lines] == [5, 4]


def test_list_table_for_people(cli: Cli) -> None:
    enqueue(cli, {"text": "line one\nline two " + "y" * 100}, "--task", "t")
    out = cli.ok("list").splitlines()
    assert out[0].split() == ["ID", "STATUS", "QUEUE", "TASK", "ATTEMPTS", "CREATED", "PAYLOAD", "LAST", "ERROR"]
    row = out[1]
    assert row.split()[:5] == ["1", "PENDING", "default", "t", "0/3"]
    assert row.rstrip().endswith("...")  # the payload is cut
    assert out[-1] == "1-1 of 1 jobs"
    assert cli.ok("list", "--status", "FAILED").strip() == "no jobs"


def test_list_counts_its_footer_up_to_a_cap(cli: Cli) -> None:
    """The footer's count stops past ``LIST_COUNT_UP_TO`` matches (an exact count read every match:
    0.9 s at 10,000,000 COMPLETED jobs) and says so; at the cap it is exact."""
    from jobq.cli.jobs import LIST_COUNT_UP_TO

    with cli.queue() as q:
        q.enqueue_many([{"n": i} for i in range(LIST_COUNT_UP_TO)])
        assert cli.ok("list", "--limit", "2").splitlines()[-1] == f"1-2 of {LIST_COUNT_UP_TO:,} jobs"
        q.enqueue({"n": "one more"})
    assert cli.ok("list", "--limit", "2").splitlines()[-1] == f"1-2 of {LIST_COUNT_UP_TO:,}+ jobs"
    past = LIST_COUNT_UP_TO - 1
    assert cli.ok("list", "--offset", str(past)).splitlines()[-1] == (
        f"{past + 1:,}-{LIST_COUNT_UP_TO + 1:,} of {LIST_COUNT_UP_TO + 1:,}+ jobs"
    )
    assert (
        cli.ok("list", "--offset", str(LIST_COUNT_UP_TO + 1)).strip() == f"no jobs (of {LIST_COUNT_UP_TO:,}+ matching)"
    )


def test_show_prints_the_job_and_its_events(cli: Cli) -> None:
    job_id = enqueue(cli, {"x": 1})
    cli.ok("cancel", str(job_id), "--actor", "ann")
    text = cli.ok("show", str(job_id))
    assert "CANCELLED" in text
    assert "events (2):" in text
    last = text.splitlines()[-1].split()
    assert last[1:3] == ["cancelled", "ann"]
    data = cli.json("show", str(job_id))
    assert data["job"]["status"] == "CANCELLED"
    assert [e["kind"] for e in data["events"]] == ["enqueued", "cancelled"]
    assert data["events"][1]["actor"] == "ann"


# -- operator actions -------------------------------------------------------------------------------
def test_cancel_and_retry_report_each_id(cli: Cli) -> None:
    a, b = enqueue(cli, {"a": 1}), enqueue(cli, {"b": 2})
    done = cli.run("cancel", str(a), "999", str(b))
    assert done.returncode == 1
    assert done.stdout.splitlines() == [f"job {a}: cancelled (CANCELLED)", f"job {b}: cancelled (CANCELLED)"]
    assert done.stderr.splitlines() == ["jobq: error: job 999 not found"]
    out = cli.ok("retry", str(a), f"#{b}")
    assert out.splitlines() == [f"job {a}: resubmitted (PENDING)", f"job {b}: resubmitted (PENDING)"]
    assert cli.status(a) == cli.status(b) == "PENDING"
    assert "cannot resubmit a job that is PENDING" in cli.fails("retry", str(a))


def test_cancel_of_a_running_job_requests_it(cli: Cli) -> None:
    job_id = enqueue(cli, {})
    with cli.queue() as q:
        assert q.claim("w1") is not None
    assert (
        cli.ok("cancel", str(job_id)).strip()
        == f"job {job_id}: cancellation requested; the worker stops it (PROCESSING)"
    )
    assert cli.json("show", str(job_id))["job"]["cancel_requested"] is True


def test_move_takes_a_mistyped_queues_jobs_to_the_one_meant(cli: Cli) -> None:
    """`jobq pause mial` warns about a queue nothing uses; its jobs, enqueued there by mistake,
    are moved with one command, by filter or by ids, and a worker of `mail` then runs them."""
    a, b = enqueue(cli, {"a": 1}, "--queue", "mial"), enqueue(cli, {"b": 2}, "--queue", "mial")
    other = enqueue(cli, {"c": 3}, "--queue", "other")
    out = cli.ok("move", "--queue", "mial", "--to", "mail", "--actor", "ann")
    assert out.splitlines() == [f"job {i}: moved to queue 'mail' (PENDING)" for i in (a, b)]
    assert [j["queue"] for j in cli.json("list", "--queue", "mail")] == ["mail", "mail"]
    moved = cli.json("show", str(a))["events"][-1]
    assert (moved["kind"], moved["actor"], moved["detail"]) == ("moved", "ann", {"from": "mial", "to": "mail"})
    assert cli.ok("move", "--queue", "mial", "--to", "mail").strip() == "no matching jobs"
    done = cli.run("move", "--to", "mail", str(other), "999")
    assert done.returncode == 1
    assert done.stdout.splitlines() == [f"job {other}: moved to queue 'mail' (PENDING)"]
    assert done.stderr.splitlines() == ["jobq: error: job 999 not found"]
    assert cli.fails("move", "--to", " mail", str(a)).startswith("jobq: error: the queue to move to must not be empty")
    assert "give job ids or filters" in cli.fails("move", "--to", "x", str(a), "--queue", "mail")
    with cli.queue() as q:
        assert {q.claim("w1", queue="mail").id for _ in range(3)} == {a, b, other}  # type: ignore[union-attr]


def test_retry_all_failed(cli: Cli) -> None:
    ids = [enqueue(cli, {"n": i}, "--max-attempts", "1") for i in range(3)]
    with cli.queue() as q:
        for _ in range(2):
            job = q.claim("w1")
            assert job is not None
            assert q.fail(job, "boom") == JobStatus.FAILED
    out = cli.ok("retry", "--all-failed", "--actor", "bob")
    assert out.splitlines() == [f"job {ids[0]}: resubmitted (PENDING)", f"job {ids[1]}: resubmitted (PENDING)"]
    assert cli.ok("retry", "--all-failed").strip() == "no FAILED jobs"
    assert cli.json("show", str(ids[0]))["events"][-1]["actor"] == "bob"


def test_retry_list_and_cancel_take_the_same_filters(cli: Cli) -> None:
    """ "Retry what failed in the last hour in queue y with 'timeout' in its error", in one command."""
    two_hours_ago = time.time() - 7200

    def failed(queue: str, error: str, clock: Callable[[], float] = time.time) -> int:
        with cli.queue(clock=clock) as q:
            job_id = q.enqueue({"e": error}, queue=queue, max_attempts=1)
            job = q.claim("w1", queue=queue)
            assert job is not None and job.id == job_id
            q.fail(job, f"OSError: {error}")
        return job_id

    old = failed("y", "read timeout", lambda: two_hours_ago)
    recent = failed("y", "read Timeout")
    failed("y", "disk full")
    failed("z", "read timeout")
    where = ("--queue", "y", "--error", "TIMEOUT", "--finished-within", "1h")
    assert [j["id"] for j in cli.json("list", "--status", "failed", *where)] == [recent]
    assert cli.ok("retry", *where).splitlines() == [f"job {recent}: resubmitted (PENDING)"]
    assert cli.status(old) == "FAILED"
    assert cli.ok("retry", *where).strip() == "no matching jobs"  # FAILED by default: it is PENDING now
    assert cli.ok("cancel", "--queue", "y", "--status", "pending").splitlines() == [
        f"job {recent}: cancelled (CANCELLED)"
    ]
    assert "not both" in cli.fails("cancel", str(old), "--queue", "y")
    assert "give the ids of the jobs to cancel" in cli.fails("cancel")


def test_a_filtered_action_on_many_jobs_prints_a_line_per_outcome(cli: Cli) -> None:
    """A cancel of 1,000,000 PENDING jobs printed 1,000,000 lines: past ACTION_LINES_MAX jobs, a
    filtered action says how many jobs had each outcome. Ids named one by one are each reported."""
    with cli.queue() as q:
        ids = q.enqueue_many([{"n": n} for n in range(25)])
        running = q.claim("w1")
        assert running is not None
    assert cli.ok("cancel", "--status", "pending,processing").splitlines() == [
        "1 job: cancellation requested; the worker stops it (PROCESSING)",
        "24 jobs: cancelled (CANCELLED)",
    ]
    assert cli.ok("retry", "--status", "cancelled").splitlines() == ["24 jobs: resubmitted (PENDING)"]
    assert cli.ok("cancel", str(ids[1]), str(ids[2])).splitlines() == [
        f"job {ids[1]}: cancelled (CANCELLED)",
        f"job {ids[2]}: cancelled (CANCELLED)",
    ]


def test_purge_deletes_old_finished_jobs_only(cli: Cli) -> None:
    ten_days_ago = time.time() - 10 * 86400
    with cli.queue(clock=lambda: ten_days_ago) as q:  # enqueued and finished ten days ago
        old = q.enqueue({"old": 1})
        job = q.claim("w1")
        assert job is not None and job.id == old
        q.complete(job)
    recent = enqueue(cli, {"recent": 1})
    with cli.queue() as q:
        job = q.claim("w1")
        assert job is not None and job.id == recent
        q.complete(job)
    assert cli.ok("purge", "--older-than", "7d").startswith("purged 1 job (COMPLETED")
    assert [j["id"] for j in cli.json("list")] == [recent]
    assert cli.ok("purge", "--older-than", "7d", "--status", "failed,cancelled").startswith("purged 0 jobs")


def test_purge_stops_at_its_limit_oldest_first(cli: Cli) -> None:
    days_ago = lambda n: time.time() - n * 86400  # noqa: E731
    ids = []
    for age in (12, 10, 11):  # finished 12, 10 and 11 days ago
        with cli.queue(clock=lambda age=age: days_ago(age)) as q:
            ids.append(q.enqueue({"age": age}))
            job = q.claim("w1")
            assert job is not None and job.id == ids[-1]
            q.complete(job)
    assert cli.ok("purge", "--older-than", "7d", "--limit", "2").strip() == (
        "purged 2 jobs (COMPLETED, finished more than 7d ago; the limit: more may be left)"
    )
    assert [j["id"] for j in cli.json("list")] == [ids[1]]  # the two that finished first are gone
    assert cli.ok("purge", "--older-than", "7d", "--limit", "2").strip() == (
        "purged 1 job (COMPLETED, finished more than 7d ago)"
    )
    assert "must be at least 1" in cli.fails("purge", "--older-than", "7d", "--limit", "0", code=2)
    line = cli.fails("purge", "--older-than", "7d", "--status", "pending,completed")
    assert line == "jobq: error: purge deletes finished jobs (COMPLETED, FAILED, CANCELLED), not PENDING"


def test_rescue_moves_expired_leases(cli: Cli) -> None:
    a_minute_ago = time.time() - 60
    with cli.queue(clock=lambda: a_minute_ago) as q:  # claimed a minute ago with a 5 s lease
        job_id = q.enqueue({})
        assert q.claim("dead-worker", lease=5) is not None
    assert cli.json("stats")["expired_leases"] == 1
    assert cli.ok("rescue").strip() == f"job {job_id}: rescued, was held by dead-worker"
    assert cli.status(job_id) == "PENDING"
    assert cli.ok("rescue").strip() == "no expired leases"


def test_stats(cli: Cli) -> None:
    enqueue(cli, {}, "--queue", "a")
    enqueue(cli, {}, "--queue", "b")
    cli.ok("cancel", "2")
    stats = cli.json("stats")
    assert stats["counts"]["PENDING"] == 1 and stats["counts"]["CANCELLED"] == 1
    assert stats["by_queue"]["a"]["PENDING"] == 1 and stats["by_queue"]["b"]["CANCELLED"] == 1
    assert 0 <= stats["oldest_pending_age_seconds"] < 60
    assert (stats["completed_last_minute"], stats["failed_last_minute"], stats["expired_leases"]) == (0, 0, 0)
    text = cli.ok("stats")
    assert "oldest pending:" in text and "expired leases:" in text


# -- worker -----------------------------------------------------------------------------------------
HANDLERS = textwrap.dedent(
    """
    import jobq.worker

    @jobq.worker.task("double")
    def double(ctx):
        return ctx.payload["n"] * 2

    def echo(ctx):
        return {"echo": ctx.payload}

    def boom(ctx):
        raise ValueError("boom")
    """
)


def test_worker_runs_registered_and_dotted_handlers(cli: Cli) -> None:
    (cli.root / "mytasks.py").write_text(HANDLERS)
    d = enqueue(cli, {"n": 21}, "--task", "double")
    e = enqueue(cli, {"hello": 1})
    f = enqueue(cli, {}, "--task", "explode", "--max-attempts", "1")
    done = cli.run(
        "worker", "--import", "mytasks", "-H", "mytasks:echo", "-H", "explode=mytasks:boom", "--exit-when-idle"
    )
    assert done.returncode == 0, done.stderr
    assert f"job {f} failed (FAILED): ValueError: boom" in done.stderr  # the worker logs (JOBQ_LOG_LEVEL)
    jobs = {j["id"]: j for j in cli.json("list")}
    assert (jobs[d]["status"], jobs[d]["result"]) == ("COMPLETED", 42)
    assert (jobs[e]["status"], jobs[e]["result"]) == ("COMPLETED", {"echo": {"hello": 1}})
    assert jobs[f]["status"] == "FAILED"
    assert "ValueError: boom" in jobs[f]["last_error"]
    assert "ValueError: boom" in cli.ok("list", "--status", "failed")


def test_worker_registers_and_stops_on_sigterm(cli: Cli) -> None:
    (cli.root / "mytasks.py").write_text(HANDLERS)
    proc = cli.start("worker", "-H", "mytasks:echo", "--name", "w-test", "--queue", "q1", "--grace", "5s")
    # `workers` refuses a database that does not exist yet: wait for the worker to create it.
    wait_for(lambda: (cli.root / "queue.db").exists(), 30, "the worker to create the database")

    def live() -> list[dict[str, Any]]:
        return [w for w in cli.json("workers") if w["name"] == "w-test"]

    (worker,) = wait_for(live, 30, "the worker to register")
    assert worker["alive"] and worker["queues"] == ["q1"] and worker["pid"] == proc.pid
    job_id = enqueue(cli, {"k": "v"}, "--queue", "q1")
    wait_for(lambda: cli.status(job_id) == "COMPLETED", 30, "the worker to complete the job")
    assert "w-test" in cli.ok("workers")
    assert cli.stop(proc) == 0
    assert live() == []
    (stopped,) = [w for w in cli.json("workers", "--all") if w["name"] == "w-test"]
    assert stopped["state"] == "stopped" and stopped["jobs_done"] == 1


# -- the seed's file jobs, producer and consumer ----------------------------------------------------
def test_enqueue_path_submits_a_file_job(cli: Cli) -> None:
    files = cli.root / "data" / "files"
    files.mkdir(parents=True)
    (files / "a.txt").write_text("hello\n")
    job_id = int(cli.ok("enqueue", "data/files/a.txt"))
    job = cli.json("show", str(job_id))["job"]
    assert (job["task"], job["payload"]) == ("stamp", {"path": "data/files/a.txt"})
    again = cli.run("enqueue", "data/files/a.txt")  # keyed by the file: the same job, and a note
    assert (again.returncode, int(again.stdout)) == (0, job_id)
    assert again.stderr == (
        f"jobq: note: data/files/a.txt is job {job_id} already, nothing new was enqueued "
        f"(a finished job runs again with jobq retry {job_id})\n"
    )
    long_name = "a-file-whose-name-is-longer-than-a-table-cell-of-the-cli.txt"
    (files / long_name).write_text("hello\n")
    long_id = int(cli.ok("enqueue", f"data/files/{long_name}"))
    assert f"data/files/{long_name} is job {long_id} already" in cli.run("enqueue", f"data/files/{long_name}").stderr
    line = cli.fails("enqueue", "/etc/passwd")
    assert "passwd" in line
    (files / "b.txt").write_text("hello\n")
    # What a file job does not take is refused, not dropped (it ran at once, at priority 0).
    line = cli.fails("enqueue", "data/files/b.txt", "--priority", "5", "--delay", "1h", "--key", "k")
    assert (
        line
        == "jobq: error: jobq enqueue PATH takes --queue only, not --priority, --delay, --key (use --json for those)"
    )
    assert [j["id"] for j in cli.json("list")] == [long_id, job_id]
    other = int(cli.ok("enqueue", "data/files/b.txt", "--queue", "other"))
    assert cli.json("show", str(other))["job"]["queue"] == "other"


def test_producer_and_consumer_commands(cli: Cli) -> None:
    producer = cli.start("producer", "--interval", "0.1s", "--data-dir", "data", log="producer.log")
    wait_for(lambda: (cli.root / "queue.db").exists(), 30, "the producer to create the database")
    wait_for(lambda: len(cli.json("list")) >= 2, 30, "the producer to submit two files")
    assert cli.stop(producer) == 0
    submitted = cli.json("list")
    assert all(j["task"] == "stamp" for j in submitted)
    consumer = cli.start("consumer", "--delay", "0-0.01", "--data-dir", "data", "--name", "c-test", log="consumer.log")
    wait_for(lambda: all(j["status"] == "COMPLETED" for j in cli.json("list")), 30, "the consumer to stamp every file")
    assert any(w["name"] == "c-test" for w in cli.json("workers"))
    assert cli.stop(consumer) == 0
    for job in submitted:
        assert stamps_in((cli.root / job["payload"]["path"]).read_bytes()) == [(job["id"], 1)]


@pytest.mark.slow
@pytest.mark.parametrize("app", ["manager", "ops"])
def test_web_commands_serve_the_app_on_loopback(cli: Cli, app: str) -> None:
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cli.ok("enqueue", "--json", "{}")  # ops refuses a database that does not exist yet
    proc = cli.start(app, "--port", str(port), log=f"{app}.log")

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    wait_for(healthy, 60, f"jobq {app} to answer on port {port}")
    # Listening sockets on that port, from the kernel's table: loopback only (127.0.0.1 = 0100007F).
    listening = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in (line.split() for line in Path(table).read_text().splitlines()[1:]):
            address, hex_port = row[1].split(":")
            if row[3] == "0A" and int(hex_port, 16) == port:
                listening.add(address)
    assert listening == {"0100007F"}
    assert cli.stop(proc) in (0, -signal.SIGTERM)


def test_web_commands_check_their_port(cli: Cli) -> None:
    assert "between 1 and 65535" in cli.fails("manager", "--port", "0", code=2)


def test_version(cli: Cli) -> None:
    out = cli.ok("version")
    assert out.startswith(f"jobq {jobq.__version__} ") and "SQLite" in out


def test_python_m_jobq_cli_is_the_jobq_command(cli: Cli) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "jobq.cli", "version"],
        cwd=cli.root,
        env=cli.env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECONDS,
        check=False,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, cli.ok("version"), "")


def test_workers_say_alive_lost_or_stopped_as_the_ops_app_does(cli: Cli) -> None:
    now = time.time()
    cli.ok("enqueue", "--json", "{}")  # creates the database
    with cli.queue() as q:
        q.backend.register_worker(
            jobq.WorkerInfo(id="h-66-x", name="w-gone", host="h", pid=66, queues=("default",),
                            started_at=now - 900, last_seen_at=now - 600)
        )  # fmt: skip
    assert cli.ok("workers") == "no live workers (--all shows stopped, crashed and lost ones)\n"
    (worker,) = cli.json("workers", "--all")
    assert (worker["name"], worker["state"], worker["alive"]) == ("w-gone", "lost", False)
    assert cli.ok("workers", "--all").splitlines()[1].split()[:2] == ["w-gone", "lost"]


def test_schedules_add_list_pause_resume_remove(cli: Cli) -> None:
    assert "schedule nightly: added, next run" in cli.ok(
        "schedules", "add", "nightly", "--task", "report", "--cron", "0 3 * * *", "--zone", "Europe/Paris"
    )
    cli.ok("schedules", "add", "poll", "--task", "poll", "--every", "5m")
    # The same name again replaces it, and says so (it did without a word).
    replaced = cli.ok(
        "schedules", "add", "poll", "--task", "poll", "--every", "30s", "--no-overlap", "--payload", '{"a": 1}'
    )
    assert "schedule poll: replaced (every 300s before), next run" in replaced
    # What only add takes, given to another action, and a name given to list: refused, not ignored.
    assert cli.fails("schedules", "pause", "poll", "--cron", "* * * * *") == (
        "jobq: error: schedules pause: --cron applies to 'schedules add' only"
    )
    assert cli.fails("schedules", "remove", "poll", "--no-overlap").endswith(
        "--no-overlap applies to 'schedules add' only"
    )
    assert cli.fails("schedules", "list", "poll") == (
        "jobq: error: schedules list takes no name (did you mean 'schedules show poll'?)"
    )
    assert cli.ok("schedules", "pause", "nightly", "--actor", "ann") == "schedule nightly: paused\n"
    table = cli.ok("schedules")
    assert table.splitlines()[0].split() == [
        "NAME",
        "EXPRESSION",
        "ZONE",
        "TASK",
        "NEXT",
        "RUN",
        "LAST",
        "RUN",
        "PAUSED",
    ]
    assert "yes (by ann)" in table and "every 30s" in table
    listed = {s["name"]: s for s in cli.json("schedules")}
    assert (listed["poll"]["payload"], listed["poll"]["overlap"], listed["nightly"]["paused"]) == (
        {"a": 1},
        False,
        True,
    )
    cli.ok("schedules", "resume", "nightly", "--actor", "bob")
    assert cli.json("schedules")[0]["paused"] is False
    cli.ok("schedules", "pause", "nightly", "--actor", "cy")
    shown = cli.json("schedules", "show", "nightly")
    assert [(a["action"], a["actor"]) for a in shown["history"]] == [
        ("pause", "cy"),
        ("resume", "bob"),
        ("pause", "ann"),
    ]
    assert (shown["name"], shown["paused_by"]) == ("nightly", "cy")
    text = cli.ok("schedules", "show", "nightly").splitlines()
    assert text[0].split() == ["name:", "nightly"] and text[-4].split() == ["WHEN", "ACTION", "BY"]
    assert [line.split()[-2:] for line in text[-3:]] == [["pause", "cy"], ["resume", "bob"], ["pause", "ann"]]
    assert cli.ok("schedules", "show", "poll").splitlines()[-1] == "never paused or resumed"
    assert cli.fails("schedules", "show", "nope") == "jobq: error: no schedule named 'nope'"
    cli.ok("schedules", "resume", "nightly")
    cli.ok("schedules", "remove", "poll")
    assert [s["name"] for s in cli.json("schedules")] == ["nightly"]
    assert cli.fails("schedules", "pause", "nope") == "jobq: error: no schedule named 'nope'"
    assert "bad cron expression" in cli.fails("schedules", "add", "x", "--task", "t", "--cron", "61 * * * *")
    assert "unknown time zone" in cli.fails("schedules", "add", "x", "--task", "t", "--every", "5", "--zone", "Nowhere")
