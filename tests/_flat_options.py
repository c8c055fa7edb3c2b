"""Option fields given flat, as the tests' shorthand: ``run(beta=0.9)``.

:func:`fold` puts every keyword an entry point moved into an option object
(``entry_point.moved_keywords``) into that object, on top of one already given;
without ``val_data`` (or with ``None``) there is no validation, as there was not.
"""

import dataclasses

import clrjax


def fold(entry_point, kwargs):
    """``kwargs`` with the moved keywords of ``entry_point`` folded into option objects."""
    out = dict(kwargs)
    groups = {}
    for keyword, (option, field) in entry_point.moved_keywords.items():
        if keyword in out:
            groups.setdefault(option, {})[field] = out.pop(keyword)
    if (
        "validation" in groups
        and groups["validation"].get("data") is None
        and "validation" not in out
    ):
        del groups["validation"]  # no val_data: no validation, the other fields unused
    for option, fields in groups.items():
        base = out.get(option)
        cls = getattr(clrjax, option.capitalize())
        out[option] = cls(**fields) if base is None else dataclasses.replace(base, **fields)
    return out
