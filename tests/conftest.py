"""Shared fixtures: presets loaded once, and a small helper to run the CLI."""
from __future__ import annotations

import pytest

from planner.loading import load_cluster, load_model


@pytest.fixture(scope="session")
def llama70b():
    return load_model("llama3-70b")


@pytest.fixture(scope="session")
def gpt175b():
    return load_model("gpt3-175b")


@pytest.fixture(scope="session")
def dgx_h100_8n():
    return load_cluster("dgx-h100-8n")
