"""`template_file`: only a regular file inside the config's own folder, symlinks followed, is read."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.config.files import MAX_FILE_BYTES
from gateway.errors import ConfigError
from gateway.routing.compiled import load_config

TEMPLATE = '{"text": {{ message.subject | tojson }}}'


def config_using(folder: Path, template_file: str) -> Path:
    config = folder / "config.yaml"
    config.write_text(
        "sources: {missive: {}}\n"
        "destinations: {d: {url: 'http://127.0.0.1:9/x'}}\n"
        f"routes: [{{name: r, send: [{{to: d, template_file: '{template_file}'}}]}}]\n",
        encoding="utf-8",
    )
    return config


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """The config's folder, with a template inside it and a secret file beside (outside) it."""
    (tmp_path / "outside.j2").write_text("secret beside the config folder", encoding="utf-8")
    inside = tmp_path / "config"
    (inside / "templates").mkdir(parents=True)
    (inside / "templates" / "card.j2").write_text(TEMPLATE, encoding="utf-8")
    return inside


def refusal(config: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(config, environ={})
    problems = [str(problem) for problem in caught.value.problems]
    assert len(problems) == 1, problems
    assert problems[0].startswith("line 3: routes[0].send[0].template_file: template file ")
    return problems[0]


@pytest.mark.parametrize(
    ("make", "name", "reason"),
    [
        pytest.param(None, "../outside.j2", "outside the config's folder", id="dot-dot"),
        pytest.param(None, "templates/../../outside.j2", "outside the config's folder", id="dot-dot-inside"),
        pytest.param(None, "{tmp}/outside.j2", "is an absolute path", id="absolute"),
        pytest.param(None, "/proc/self/environ", "is an absolute path", id="proc-environ"),
        pytest.param(None, "../../../../../../../../proc/self/environ", "outside the config's folder",
                     id="proc-environ-relative"),
        pytest.param(lambda folder: (folder / "link.j2").symlink_to(folder.parent / "outside.j2"), "link.j2",
                     "outside the config's folder", id="symlink-out"),
        pytest.param(lambda folder: (folder / "zero.j2").symlink_to("/dev/zero"), "zero.j2",
                     "outside the config's folder", id="symlink-to-a-device"),
        pytest.param(lambda folder: os.mkfifo(folder / "pipe.j2"), "pipe.j2", "is not a regular file", id="fifo"),
        pytest.param(None, "templates", "is not a regular file", id="folder"),
        pytest.param(None, "nope.j2", "not found", id="missing"),
        pytest.param(lambda folder: (folder / "big.j2").write_bytes(b"x" * (MAX_FILE_BYTES + 1)), "big.j2",
                     "is larger than 1024 KiB", id="too-large"),
    ],
)
def test_a_template_file_outside_the_config_folder_is_refused(
    folder: Path, make: Callable[[Path], object] | None, name: str, reason: str
) -> None:
    if make is not None:
        make(folder)
    problem = refusal(config_using(folder, name.format(tmp=folder.parent)))
    assert reason in problem
    assert "secret beside" not in problem


@pytest.mark.parametrize(
    ("make", "name"),
    [
        pytest.param(None, "templates/card.j2", id="in-a-subfolder"),
        pytest.param(lambda folder: (folder / "link.j2").symlink_to(folder / "templates" / "card.j2"), "link.j2",
                     id="symlink-inside"),
    ],
)
def test_a_template_file_inside_the_config_folder_is_read(
    folder: Path, make: Callable[[Path], object] | None, name: str
) -> None:
    if make is not None:
        make(folder)
    loaded = load_config(config_using(folder, name), environ={})
    request = loaded.routes[0].sends[0].template.render({"message": {"subject": "hi"}, "payload": {}})
    assert request.body == b'{"text": "hi"}'
