"""jobq as its users get it: the wheel, installed into a fresh virtualenv outside the repository.

The session builds a wheel and an sdist with ``python -m build`` (which builds the wheel from the
unpacked sdist, so the sdist is proven complete too), then installs the wheel with its
``postgres``, ``web``, ``metrics`` and ``otel`` extras into two virtualenvs in a temporary directory:

- ``locked``: every version as ``uv.lock`` pins it (what the development environment tested);
- ``oldest``: jobq's direct dependencies at the lower bounds its metadata declares (read from the
  wheel, so a changed bound is tested as it changes), everything else at its newest.

Every command runs from a directory outside the repository, without ``PYTHONPATH``, and the tests
check that ``jobq`` is imported from the virtualenv: nothing may come from the checkout.
Installing needs the package index (uv's cache makes it take seconds).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tomllib
import urllib.request
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from packaging.version import Version
from pg import PgServer
from polling import wait_for

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src" / "jobq"
TESTS = REPO / "tests"
pytestmark = pytest.mark.slow

RUN_TIMEOUT_SECONDS = 300
EXTRAS = "postgres,web,metrics,otel"
#: What jobq's core may depend on, and what each extra may pull in (by project name).
ALLOWED_REQUIREMENTS = {
    None: {"apsw", "cronsim"},
    "postgres": {"psycopg", "psycopg-pool"},
    "web": {"streamlit", "pandas", "altair"},
    "metrics": {"prometheus-client"},
    "otel": {"opentelemetry-api"},
}


def _uv() -> str:
    found = Path(sys.executable).with_name("uv")
    uv = str(found) if found.exists() else shutil.which("uv")
    if uv is None:
        if os.environ.get("CI") == "true":
            pytest.fail("uv is required in CI (scripts/install-python.sh installs it)")
        pytest.skip("uv not available")
    return uv


def run(cmd: Sequence[str | Path], *, cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run ``cmd``; fail the test with its output unless it exits 0. Returns stdout."""
    done = subprocess.run(
        [str(c) for c in cmd],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECONDS,
        check=False,
    )
    assert done.returncode == 0, f"{' '.join(map(str, cmd))} -> {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@dataclasses.dataclass
class Dist:
    wheel: Path
    sdist: Path


@dataclasses.dataclass
class Venv:
    """A virtualenv with the wheel installed, and a working directory outside the repository."""

    root: Path
    work: Path

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    def env(self, **extra: str) -> dict[str, str]:
        """The environment a user's shell would have: this venv first on PATH, no PYTHONPATH, no
        JOBQ_* settings of the outer run."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("JOBQ_", "PYTHON", "VIRTUAL_ENV", "PYTEST", "COV_", "MYPY"))
        }
        env.update(PATH=f"{self.root / 'bin'}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(self.root))
        env.update(JOBQ_LOG_LEVEL="WARNING", PYTHONUNBUFFERED="1", **extra)
        return env

    def run(self, *cmd: str | Path, cwd: Path | None = None, **env: str) -> str:
        """Run a program of this venv (``jobq``, ``python``, ``mypy``, ...) in the work directory."""
        program = self.root / "bin" / str(cmd[0])
        return run([program, *cmd[1:]], cwd=cwd or self.work, env=self.env(**env))

    def python_out(self, code: str, **env: str) -> str:
        return self.run("python", "-c", code, **env).strip()


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    """``python -m build``: an sdist, and a wheel built from it."""
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "build", "--installer", "uv", "--outdir", out, REPO], cwd=REPO)
    (wheel,) = out.glob("jobq-*.whl")
    (sdist,) = out.glob("jobq-*.tar.gz")
    return Dist(wheel, sdist)


def _make_venv(root: Path, requirements: Sequence[str], constraints: Path) -> Venv:
    uv = _uv()
    work = root.with_name(root.name + "-work")
    work.mkdir()
    run([uv, "venv", "-q", "--python", sys.executable, root], cwd=work)
    run([uv, "pip", "install", "-q", "--python", root / "bin" / "python", "-c", constraints, *requirements], cwd=work)
    return Venv(root, work)


def _tool_requirement(name: str) -> str:
    """``name`` at the version the development environment has (uv.lock's)."""
    from importlib.metadata import version

    return f"{name}=={version(name)}"


@pytest.fixture(scope="session")
def locked(dist: Dist, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """The wheel with every dependency at the version uv.lock pins."""
    base = tmp_path_factory.mktemp("locked")
    constraints = base / "constraints.txt"
    export = ["export", "-q", "--frozen", "--no-hashes", "--all-extras", "--all-groups", "--no-emit-project"]
    run([_uv(), *export, "--format", "requirements.txt", "-o", constraints], cwd=REPO)
    return _make_venv(base / "venv", [f"jobq[{EXTRAS}] @ {dist.wheel.as_uri()}", "pytest", "mypy"], constraints)


def lower_bounds(metadata: str) -> dict[str, str]:
    """Each ``Requires-Dist: name[extra]>=X`` of a wheel's METADATA -> ``{name: X}``.

    >>> lower_bounds('Requires-Dist: psycopg[binary]>=3.2.1; extra == "postgres"')
    {'psycopg': '3.2.1'}
    """
    bounds = {}
    for name, version in re.findall(r"(?m)^Requires-Dist: ([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?>=([^,;\s]+)", metadata):
        bounds[name] = version
    return bounds


def _metadata(wheel: Path) -> str:
    with zipfile.ZipFile(wheel) as zf:
        (name,) = (n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        return zf.read(name).decode()


@pytest.fixture(scope="session")
def oldest(dist: Dist, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """The wheel with apsw, psycopg, psycopg-pool, streamlit, pandas, altair at their lower bounds."""
    base = tmp_path_factory.mktemp("oldest")
    bounds = lower_bounds(_metadata(dist.wheel))
    assert {"apsw", "psycopg", "streamlit"} <= bounds.keys(), bounds
    constraints = base / "constraints.txt"
    constraints.write_text("".join(f"{name}=={version}\n" for name, version in sorted(bounds.items())))
    requirements = [f"jobq[{EXTRAS}] @ {dist.wheel.as_uri()}", _tool_requirement("pytest")]
    venv = _make_venv(base / "venv", requirements, constraints)
    installed = json.loads(venv.python_out(_INSTALLED_VERSIONS, NAMES=" ".join(bounds)))
    assert {n: Version(v) for n, v in installed.items()} == {n: Version(v) for n, v in bounds.items()}
    return venv


_INSTALLED_VERSIONS = """
import json, os
from importlib.metadata import version
print(json.dumps({name: version(name) for name in os.environ["NAMES"].split()}))
"""


@pytest.fixture(params=["locked", "oldest"])
def venv(request: pytest.FixtureRequest) -> Venv:
    found: Venv = request.getfixturevalue(request.param)
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- what the wheel and the sdist hold --------------------------------------------------------------
def _package_files() -> set[str]:
    """Every file of src/jobq a running jobq may read (code, SQL, app config, py.typed)."""
    return {
        str(path.relative_to(SRC.parent))
        for path in SRC.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }


def test_the_wheel_and_sdist_hold_every_file_of_the_package(dist: Dist) -> None:
    expected = _package_files()
    assert {"jobq/py.typed", "jobq/web/.streamlit/config.toml", "jobq/backends/sqlite/sql/jobs.sql"} <= expected
    with zipfile.ZipFile(dist.wheel) as zf:
        in_wheel = {n for n in zf.namelist() if ".dist-info/" not in n}
    assert in_wheel == expected  # nothing missing, and no tests, docs or launchers
    import tarfile

    with tarfile.open(dist.sdist) as tf:
        root = tf.getnames()[0].split("/")[0]
        in_sdist = {n.removeprefix(f"{root}/src/") for n in tf.getnames() if n.startswith(f"{root}/src/jobq/")}
    assert expected <= in_sdist


def test_the_core_pulls_only_apsw_and_each_extra_only_its_own(dist: Dist) -> None:
    metadata = _metadata(dist.wheel)
    found: dict[str | None, set[str]] = {}
    for name, extra in re.findall(r"(?m)^Requires-Dist: ([A-Za-z0-9_.-]+)[^;\n]*(?:; extra == \"(\w+)\")?", metadata):
        found.setdefault(extra or None, set()).add(name.lower())
    assert found == ALLOWED_REQUIREMENTS
    assert set(re.findall(r"(?m)^Provides-Extra: (\S+)", metadata)) == {"postgres", "web", "metrics", "otel"}


def test_the_version_lives_in_one_place_and_everyone_agrees(dist: Dist, locked: Venv) -> None:
    source = re.search(r'(?m)^__version__ = "([^"]+)"$', (SRC / "__init__.py").read_text())
    assert source is not None
    version = source.group(1)
    assert "version" not in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert dist.wheel.name.startswith(f"jobq-{version}-") and dist.sdist.name == f"jobq-{version}.tar.gz"
    imported = locked.python_out("import jobq, importlib.metadata as m; print(jobq.__version__, m.version('jobq'))")
    assert imported == f"{version} {version}"
    assert locked.run("jobq", "--version").strip() == f"jobq {version}"
    assert locked.run("jobq", "version").startswith(f"jobq {version} (Python ")


def test_the_changelog_follows_keep_a_changelog() -> None:
    """One section per release (newest first, ``Unreleased`` on top), each with the standard
    subsections in their order, none twice (entries about one kind of change stay together)."""
    changelog = (REPO / "CHANGELOG.md").read_text()
    assert "[Keep a Changelog](https://keepachangelog.com/" in changelog
    releases = re.split(r"(?m)^## ", changelog)[1:]
    assert releases and releases[0].startswith("[Unreleased]")
    kinds = ["Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"]
    for release in releases:
        assert re.match(r"\[(Unreleased|\d+\.\d+\.\d+)\]( - \d{4}-\d{2}-\d{2})?\n", release), release[:40]
        headings = re.findall(r"(?m)^### (.*)$", release)
        assert set(headings) <= set(kinds), headings
        assert headings == sorted(headings, key=kinds.index), f"{release.splitlines()[0]}: {headings}"


def test_jobq_is_imported_from_the_virtualenv_not_the_checkout(venv: Venv) -> None:
    where = Path(venv.python_out("import jobq; print(jobq.__file__)"))
    assert where.is_relative_to(venv.root) and not where.is_relative_to(REPO)


# -- the contract suite, on both backends -----------------------------------------------------------
CONTRACT_CONFTEST = '''
"""What a user of jobq.testing.contract provides: clock, queue, open_queue and app_connect (and
here a backend_url per backend; pg.py, copied from jobq's tests, gives a fresh PostgreSQL database)."""
import pytest

pytest.register_assert_rewrite("jobq.testing.contract")

import jobq
from jobq.testing import FakeClock
from pg import postgres_server, postgres_url  # noqa: F401


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/queue.db"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def queue(backend_url, clock):
    with jobq.Queue(settings=jobq.Settings(database_url=backend_url), clock=clock) as q:
        yield q


@pytest.fixture
def open_queue(backend_url, clock):
    opened = []

    def _open():
        opened.append(jobq.Queue(settings=jobq.Settings(database_url=backend_url), clock=clock))
        return opened[-1]

    yield _open
    for q in opened:
        q.close()


@pytest.fixture
def app_connect(backend_url):
    """The conn= tests' application connections (jobq.testing.appconn ships in the wheel)."""
    from jobq.testing.appconn import app_connections

    opened = []

    def _connect():
        made = app_connections(backend_url)
        opened.extend(made)
        return made

    yield _connect
    for app in opened:
        app.close()
'''

CONTRACT_INI = """[pytest]
addopts = -ra --strict-markers -p no:cacheprovider
filterwarnings = error
markers =
    postgres: runs against PostgreSQL
    slow: multi-process or browser tests
"""


def test_the_contract_suite_passes_on_the_installed_wheel(oldest: Venv, postgres_server: PgServer) -> None:
    """In the ``oldest`` virtualenv only: with the locked versions it is the suite's own contract
    run again (the same code, the wheel's files are checked against the source above, and the
    ``locked`` wheel runs every CLI command and both apps): ~100 s of CI for nothing new."""
    venv = oldest
    suite = venv.work / "contract"
    suite.mkdir(exist_ok=True)
    (suite / "pytest.ini").write_text(CONTRACT_INI)
    (suite / "conftest.py").write_text(CONTRACT_CONFTEST)
    shutil.copy(TESTS / "pg.py", suite / "pg.py")
    (suite / "test_contract.py").write_text("from jobq.testing.contract import *  # noqa: F403\n")
    out = venv.run("python", "-m", "pytest", "-v", cwd=suite, JOBQ_TEST_POSTGRES_URL=postgres_server.url)
    passed = re.findall(r"(?m)^test_contract\.py::\S+\[(sqlite|postgres)\] PASSED", out)
    assert passed.count("sqlite") >= 40 and passed.count("sqlite") == passed.count("postgres"), out[-3000:]
    assert " failed" not in out and " error" not in out


# -- every command of the CLI -----------------------------------------------------------------------
USER_TASKS = '''
"""A user's tasks module, outside jobq's repository."""
import jobq


@jobq.task("shout")
def shout(ctx: jobq.JobContext) -> dict[str, str]:
    return {"text": ctx.payload["text"].upper()}
'''

_COMMANDS = """
import argparse, jobq.cli
parser = jobq.cli.build_parser()
(sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
print(" ".join(sub.choices))
"""


def _listening(port: int) -> set[str]:
    """Local addresses of the LISTEN sockets on ``port`` (/proc/net/tcp*; 127.0.0.1 = 0100007F)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in (line.split() for line in Path(table).read_text().splitlines()[1:]):
            address, hex_port = row[1].split(":")
            if row[3] == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return int(r.status), r.read().decode(errors="replace")
    except OSError:
        return 0, ""


class Served:
    """Long-running commands of a venv, stopped by PID with SIGTERM (killed if they linger)."""

    def __init__(self, venv: Venv) -> None:
        self.venv = venv
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *cmd: str, log: str, **env: str) -> subprocess.Popen[bytes]:
        with open(self.venv.work / log, "wb") as out:
            proc = subprocess.Popen(
                [str(self.venv.root / "bin" / cmd[0]), *cmd[1:]],
                cwd=self.venv.work,
                env=self.venv.env(**env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> int:
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout=60)

    def serve(self, *cmd: str, port: int, log: str) -> subprocess.Popen[bytes]:
        """Start a web app and wait until its health endpoint and its page answer 200."""
        proc = self.start(*cmd, log=log)
        base = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            assert proc.poll() is None, (self.venv.work / log).read_text()
            return _get(f"{base}/_stcore/health")[0] == 200

        wait_for(healthy, 90, f"{' '.join(cmd)} to answer on port {port}")
        status, page = _get(f"{base}/")
        assert status == 200 and "<title>" in page
        return proc

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


@pytest.fixture
def served(locked: Venv) -> Iterator[Served]:
    procs = Served(locked)
    yield procs
    procs.cleanup()


def test_every_cli_command_works_from_the_installed_wheel(locked: Venv, served: Served) -> None:
    venv, covered = locked, set()
    (venv.work / "usertasks.py").write_text(USER_TASKS)
    db = {"JOBQ_DATABASE_URL": f"sqlite:///{venv.work}/queue.db"}

    def jobq(*args: str) -> str:
        covered.add(args[0])
        return venv.run("jobq", *args, **db)

    def show(job_id: int) -> dict[str, object]:
        found: dict[str, object] = json.loads(jobq("show", str(job_id), "--json"))["job"]
        return found

    shouted = int(jobq("enqueue", "--task", "shout", "--json", '{"text": "hi"}'))
    jobq("worker", "--import", "usertasks", "--exit-when-idle")  # the task module lives outside the repo
    assert (show(shouted)["status"], show(shouted)["result"]) == ("COMPLETED", {"text": "HI"})
    assert [job["id"] for job in json.loads(jobq("list", "--json"))] == [shouted]
    assert json.loads(jobq("stats", "--json"))["counts"]["COMPLETED"] == 1
    assert [w["state"] for w in json.loads(jobq("workers", "--all", "--json"))] == ["stopped"]
    later = int(jobq("enqueue", "--delay", "1h", "--json", "{}"))
    jobq("cancel", str(later))
    assert show(later)["status"] == "CANCELLED"
    jobq("retry", str(later))
    assert show(later)["status"] == "PENDING"
    jobq("move", "--to", "elsewhere", str(later))
    assert show(later)["queue"] == "elsewhere"
    assert "no expired leases" in jobq("rescue")
    jobq("purge", "--older-than", "0s")
    assert [job["id"] for job in json.loads(jobq("list", "--json"))] == [later]
    assert jobq("version").startswith("jobq ")
    jobq("schedules", "add", "hourly", "--task", "shout", "--every", "1h")
    assert "hourly" in jobq("schedules")
    # Flow control: a paused queue, a limit, and what `limits` says of them.
    jobq("pause", "default")
    jobq("limit", "default", "--concurrency", "2", "--rate", "10/s")
    limits = jobq("limits", "--json")
    assert '"default"' in limits and '"concurrency": 2' in limits, limits
    jobq("resume", "default")
    # A copy while the queue is open nowhere else, and the copy put back (the replaced file kept).
    assert jobq("backup", "copy.db").startswith("backed up 1 job (newest id ")
    assert "the replaced queue is kept as" in jobq("restore", "copy.db")
    assert [job["id"] for job in json.loads(jobq("list", "--json"))] == [later]

    # The demo's producer and consumer (data files under the work directory).
    demo = {"JOBQ_DATABASE_URL": f"sqlite:///{venv.work}/demo.db"}
    producer = served.start("jobq", "producer", "--interval", "0.1s", "--data-dir", "data", log="producer.log", **demo)
    wait_for(lambda: (venv.work / "demo.db").exists(), 60, "the producer to create its database")
    wait_for(lambda: len(json.loads(venv.run("jobq", "list", "--json", **demo))) >= 2, 60, "two files")
    assert served.stop(producer) == 0
    consumer = served.start("jobq", "consumer", "--delay", "0-0.01", "--data-dir", "data", log="consumer.log", **demo)

    def all_stamped() -> bool:
        return all(j["status"] == "COMPLETED" for j in json.loads(venv.run("jobq", "list", "--json", **demo)))

    wait_for(all_stamped, 60, "the consumer to stamp every file")
    assert served.stop(consumer) == 0
    covered |= {"producer", "consumer"}

    # The web apps, served from the installed package.
    for app in ("manager", "ops"):
        port = _free_port()
        proc = served.serve("jobq", app, "--port", str(port), port=port, log=f"{app}.log")
        assert _listening(port) == {"0100007F"}
        assert served.stop(proc) in (0, -signal.SIGTERM)
        covered.add(app)

    # The Prometheus exporter (extra `metrics`): loopback only, and it answers.
    port = _free_port()
    proc = served.start("jobq", "metrics", "--port", str(port), log="metrics.log", **demo)
    wait_for(lambda: _get(f"http://127.0.0.1:{port}/metrics")[0] == 200, 60, "jobq metrics to answer")
    assert "jobq_jobs_pending" in _get(f"http://127.0.0.1:{port}/metrics")[1]
    assert _listening(port) == {"0100007F"}
    assert served.stop(proc) == 0
    covered.add("metrics")

    assert covered == set(venv.python_out(_COMMANDS).split())  # a new command needs its smoke test here


def test_the_packaged_streamlit_config_applies_from_any_directory(locked: Venv, served: Served) -> None:
    """``streamlit run`` on the installed app, with no flags and no .streamlit/ in the working
    directory: only the config shipped next to the script can make it listen on loopback only."""
    app = locked.python_out("import jobq.web; print(jobq.web.app_path('ops'))")
    assert not (locked.work / ".streamlit").exists()
    config = tomllib.loads((Path(app).parent / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "127.0.0.1"
    port = _free_port()
    proc = served.serve(
        "python", "-m", "streamlit", "run", app, "--server.port", str(port), port=port, log="streamlit.log"
    )
    assert _listening(port) == {"0100007F"}  # without the config: every interface (::)
    assert served.stop(proc) in (0, -signal.SIGTERM)


_RENDER_APPS = """
import os, jobq, jobq.web
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.util import patch_config_options

with jobq.Queue(os.environ["JOBQ_DATABASE_URL"]) as q:
    q.enqueue({"n": 1}, task="a")
    failed = q.claim("w", lease=30)
    q.fail(failed, "boom", retry=False) if failed else None
    q.enqueue({"n": 2}, task="b")
with patch_config_options({"server.address": "127.0.0.1"}):  # AppTest serves nothing: say loopback
    for app in ("manager", "ops"):
        at = AppTest.from_file(str(jobq.web.app_path(app)), default_timeout=60).run()
        assert not at.exception, [e.value for e in at.exception]
        print(app, at.title[0].value)
"""


def test_both_apps_render_with_the_installed_dependencies(venv: Venv) -> None:
    """The apps' scripts run top to bottom (tables, charts: pandas and altair) on a database with
    jobs, with the extras' locked and oldest versions."""
    out = venv.python_out(_RENDER_APPS, JOBQ_DATABASE_URL=f"sqlite:///{venv.work}/apps.db")
    assert out.splitlines() == [
        "manager :material/inventory_2: jobq manager",
        "ops :material/monitoring: jobq ops",
    ]


# -- types, as a user sees them ---------------------------------------------------------------------
def test_a_users_typed_program_passes_mypy_strict_against_the_wheel(locked: Venv) -> None:
    """mypy --strict, run outside the repo (no jobq config, no src/ on its path), on
    tests/typing/user_example.py: jobq's types reach users through py.typed."""
    example = locked.work / "user_example.py"
    shutil.copy(TESTS / "typing" / "user_example.py", example)
    assert "Success" in locked.run("mypy", "--strict", "--no-incremental", example.name)
    done = locked.python_out(f"import user_example; print(user_example.main({str(locked.work / 'ex.db')!r}))")
    assert done == "2"  # and it runs: both jobs done
    # The types are precise: mypy catches a misuse (without py.typed it would see only Any).
    wrong = locked.work / "wrong.py"
    wrong.write_text("import jobq\n\ndef f(q: jobq.Queue) -> str:\n    return q.enqueue({})\n")
    done_wrong = subprocess.run(
        [str(locked.root / "bin" / "mypy"), "--strict", "--no-incremental", wrong.name],
        cwd=locked.work,
        env=locked.env(),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECONDS,
        check=False,
    )
    assert done_wrong.returncode == 1
    assert 'Incompatible return value type (got "int", expected "str")' in done_wrong.stdout
