"""Names that users choose (upload file names, archive entries, query values): no control
characters, valid UTF-8, and no longer than a filesystem or an object key allows. A name that
breaks a rule is the caller's mistake, so it is an InvalidInput naming the field, never a 5xx
from the filesystem, the object store or Postgres further down."""

from __future__ import annotations

import re

from shared.errors import InvalidInput

# C0 controls (NUL, tab, newline, ...), DEL and the C1 controls: Unicode category Cc.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
MAX_NAME_BYTES = 255  # one path component: NAME_MAX of ext4, XFS, btrfs and APFS
# A whole name or relative path: uploads.filename holds 500 characters, and an S3 key (at most
# 1,024 bytes) has room for it after the longest key prefix (uploads/<tenant>/<upload>/, 82 bytes).
MAX_PATH_BYTES = 500
SHOWN_CHARS = 60


def control_character(text: str) -> str | None:
    """The first control character in ``text``, written U+XXXX, or None."""
    found = CONTROL_CHARACTERS.search(text)
    return None if found is None else f"U+{ord(found.group()):04X}"


def shown(name: str) -> str:
    """A name as an error message quotes it: repr, cut to SHOWN_CHARS."""
    return repr(name[:SHOWN_CHARS]) + ("…" if len(name) > SHOWN_CHARS else "")


def check_name(name: str, *, field: str, what: str = "file name") -> str:
    """``name`` if it is a usable name or relative path; InvalidInput naming ``field`` if not."""
    bad = control_character(name)
    if bad is not None:
        raise InvalidInput(f"{field}: {what} {shown(name)} contains the control character {bad}", field=field)
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidInput(f"{field}: {what} {shown(name)} is not valid UTF-8", field=field) from exc
    if size > MAX_PATH_BYTES:
        raise InvalidInput(
            f"{field}: {what} {shown(name)} is {size} bytes in UTF-8; the limit is {MAX_PATH_BYTES}", field=field
        )
    for part in name.split("/"):
        part_size = len(part.encode("utf-8"))
        if part_size > MAX_NAME_BYTES:
            raise InvalidInput(
                f"{field}: {what} {shown(name)} has a name of {part_size} bytes in UTF-8; "
                f"each name in a path is limited to {MAX_NAME_BYTES} bytes",
                field=field,
            )
    return name
