from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import ClientSession

from router.testing import Backend, run_backend
from tests.support.backends import echo_app


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    async with run_backend(echo_app()) as running:
        yield running


@pytest.fixture
async def client() -> AsyncIterator[ClientSession]:
    async with ClientSession(auto_decompress=False) as session:
        yield session
