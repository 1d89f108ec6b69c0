"""env.example names every setting, and loads as a .env file as it is."""

from __future__ import annotations

import re
from pathlib import Path

from callqueue.config import Settings

ENV_EXAMPLE = Path(__file__).resolve().parents[2] / "env.example"


def test_every_setting_is_listed_with_a_comment() -> None:
    text = ENV_EXAMPLE.read_text()
    listed = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", text, flags=re.MULTILINE))
    assert {name.upper() for name in Settings.model_fields} <= listed
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^[A-Z][A-Z0-9_]+=", line):  # an active line follows a comment
            assert lines[i - 1].startswith("#"), line


def test_loads_as_a_dotenv_file() -> None:
    settings = Settings(_env_file=ENV_EXAMPLE)
    assert settings.redis_url is None  # embedded server by default
    assert settings.carrier_name == "simulator"
    assert settings.api_key_list == []
    assert (settings.queue_workers, settings.max_concurrent_calls) == (10, 100)
    assert settings.rate_limit_per_second == 10
    assert settings.agent_server_url == "http://localhost:8765"
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
