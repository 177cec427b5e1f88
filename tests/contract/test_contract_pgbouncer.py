"""The whole contract suite again, on PostgreSQL through PgBouncer in transaction pooling mode
(``?pooler=transaction``, wake-ups on a direct ``listen_url``): nothing jobq does may rely on
session state, since consecutive transactions of one client land on different server connections
(the bouncer has fewer of them than the clients' pools)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pgbouncer import Bouncer, through_pgbouncer

from jobq.testing.contract import *  # noqa: F403 - every contract test, collected here

pytestmark = pytest.mark.postgres


@pytest.fixture
def backend_url(pgbouncer_server: Bouncer, postgres_url: str) -> Iterator[str]:  # replaces conftest's
    yield through_pgbouncer(pgbouncer_server, postgres_url)
    pgbouncer_server.let_go(postgres_url)  # its database can then be scrubbed for the next test
