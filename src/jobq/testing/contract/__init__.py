"""The backend contract: every backend must pass these tests unchanged (River ships the same
idea as ``riverdrivertest``).

They go through the public facade (``jobq.Queue``) with a fake clock: FakeClock, so lease expiry and
backoff need no sleeping. A behaviour change extends this suite.

To run it against a backend of your own, import its tests into a test module and provide three
pytest fixtures: ``clock`` (a :class:`jobq.testing.FakeClock`), ``queue`` (a ``jobq.Queue`` on a
fresh, empty store, driven by that clock: FakeClock) and ``open_queue`` (a function opening more handles on
the same store, as other processes would); the tests of ``conn=`` (``transactions.py``) also
need ``app_connect`` (application connections of every kind the backend accepts, see there)::

    # tests/test_my_backend.py
    from jobq.testing.contract import *  # noqa: F403

    @pytest.fixture
    def queue(clock: FakeClock): ...
"""

from jobq.testing.contract.due_history import *  # noqa: F403
from jobq.testing.contract.flow import *  # noqa: F403
from jobq.testing.contract.jobs import *  # noqa: F403
from jobq.testing.contract.observability import *  # noqa: F403
from jobq.testing.contract.operators import *  # noqa: F403
from jobq.testing.contract.policies import *  # noqa: F403
from jobq.testing.contract.schedules import *  # noqa: F403
from jobq.testing.contract.transactions import *  # noqa: F403
from jobq.testing.contract.uniqueness import *  # noqa: F403
from jobq.testing.contract.waiting import *  # noqa: F403
from jobq.testing.contract.workers import *  # noqa: F403
