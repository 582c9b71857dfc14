"""Shared test configuration: the test bed's fixtures are plugins, one module per part.

Each line of `pytest_plugins` names a module of fixtures (see `tests/fixtures/__init__.py`).
Warnings are errors (pyproject `filterwarnings`); `tests.fixtures.hygiene` fails tests that leak
asyncio tasks.
"""

pytest_plugins = [
    "pytester",
    "tests.fixtures.hygiene",
    "tests.fixtures.postgres",
    "tests.fixtures.store",
    "tests.fixtures.mcp_servers",
    "tests.fixtures.moto_server",
    "tests.fixtures.shim",
    "tests.fixtures.gateway",
    "tests.fixtures.cluster",
    "tests.fixtures.operator",
]
