import pytest

from tests import factories


@pytest.fixture
def sandbox(db):
    return factories.environment(name="sandbox")


@pytest.fixture
def production(db):
    return factories.environment(name="production")


@pytest.fixture
def api(sandbox):
    """A client with a sandbox key holding every scope."""
    return factories.api_client(sandbox)


@pytest.fixture
def live_api(production):
    return factories.api_client(production)
