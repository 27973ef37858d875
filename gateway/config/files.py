"""Files a config names (`template_file`): read only from inside the config's own folder.

The config is trusted, but a path in it must not reach outside its folder: not by `../`, not by
an absolute path, not through a symlink (it is followed first), and only regular files are read,
so `/proc/self/environ`, devices and FIFOs are refused rather than read or waited on.
"""

from __future__ import annotations

import stat
from pathlib import Path

MAX_FILE_BYTES = 1024 * 1024


def read_beside(base_dir: Path, name: str) -> str:
    """The UTF-8 text of `name` inside `base_dir`; raise ValueError saying why it cannot be used."""
    if Path(name).is_absolute():
        raise ValueError("is an absolute path; write it relative to the config's folder")
    folder = base_dir.resolve()
    target = (folder / name).resolve()  # symlinks followed: where the file really is
    if not target.is_relative_to(folder):
        raise ValueError(f"resolves to {target}, outside the config's folder {folder}")
    try:
        if not stat.S_ISREG(target.stat().st_mode):
            raise ValueError("is not a regular file")
        with target.open("rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ValueError("not found") from None
    except OSError as exc:
        raise ValueError(f"cannot be read ({exc.strerror or exc})") from None
    if len(data) > MAX_FILE_BYTES:
        raise ValueError(f"is larger than {MAX_FILE_BYTES // 1024} KiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("is not UTF-8 text") from None
