from __future__ import annotations

import pytest

pytest.importorskip("olive", reason="integration tests need the [olive] extra")
pytest.importorskip("onnxruntime_genai")


def pytest_collection_modifyitems(items):
    for item in items:
        item.add_marker(pytest.mark.integration)
