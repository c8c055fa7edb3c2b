"""Results on disk: ``.npz`` archives written atomically and read without unpickling."""

from __future__ import annotations

import os
import secrets
import zipfile
from collections.abc import Mapping

import numpy as np


def save_npz(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray]) -> None:
    """Writes ``arrays`` to ``path`` atomically, never pickling.

    The archive is written under a temporary name in the same directory, synced,
    then renamed to ``path``: a save that fails (a full disk, an object array)
    leaves a previous file at ``path`` as it was.

    Raises:
      ValueError: an array holds Python objects (they would need pickling).
      OSError: the file cannot be written; the error names ``path``, never the
        temporary file.
    """
    target = os.path.realpath(path)  # through a symlink, as open(path, "w") would
    temporary = f"{target}.{secrets.token_hex(4)}.tmp"
    try:
        with open(temporary, "xb") as f:
            np.savez(f, allow_pickle=False, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, target)
    except BaseException as error:
        if os.path.exists(temporary):
            os.remove(temporary)
        if isinstance(error, OSError) and error.errno is not None:
            raise OSError(error.errno, error.strerror, os.fspath(path)) from None
        raise


def load_npz(path: str | os.PathLike[str], what: str) -> dict[str, np.ndarray]:
    """Every entry of the ``.npz`` archive at ``path`` (``what`` names the expected file).

    Raises:
      FileNotFoundError: no file at ``path``.
      ValueError: not an ``.npz`` archive, damaged, or holding pickled objects
        (never unpickled).
    """

    def not_one(why: str) -> ValueError:
        return ValueError(f"{os.fspath(path)!r} is not a {what} file: {why}")

    with open(path, "rb") as file:  # closed here even when numpy gives up on it
        try:
            archive = np.load(file, allow_pickle=False)
        except ValueError:  # neither .npy nor .npz: numpy would have unpickled it
            raise not_one("not an .npz archive") from None
        except (zipfile.BadZipFile, EOFError):
            raise not_one("a damaged or empty file") from None
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise not_one("an .npy array, not an .npz archive")
        with archive:
            entries = {}
            for name in archive.files:
                try:
                    entries[name] = archive[name]
                except ValueError:  # a bad header, or object arrays (never unpickled)
                    raise not_one(f"entry {name!r} is damaged or holds pickled objects") from None
                except (zipfile.BadZipFile, EOFError):
                    raise not_one("a damaged or empty file") from None
    return entries
