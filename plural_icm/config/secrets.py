"""Secrets are never written anywhere: one test of what a secret looks like, one scrubber.

A config key *looks like a secret* when one of its words (split at ``.``, ``_``, ``-`` and
camelCase) is ``key``, ``token``, ``secret``, ``password`` (and a few spellings of those), or ends
in one (``hftoken``, ``accesskey``). Whole words only: ``inference.max_new_tokens`` is a
length, not a secret. A key whose last word is ``env`` (``model.api_key_env``) holds the *name* of
an environment variable, which is where secrets belong, and is not hidden.

:func:`scrub_secrets` (nested dicts and lists), :func:`scrub_overrides` (Hydra override strings,
e.g. ``hydra.overrides.task``) and :func:`scrub_argv` (a command line, for the W&B run's argv
metadata) are the only scrubbers; the W&B logger, the cell's ``config.yaml`` and the ``.hydra/``
files all use them. The command line refuses secret-looking keys outright
(:mod:`plural_icm.config.guard`), so these are the second line of defence, e.g. for a secret put in
``hydra.job.env_set`` by a local config file.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

#: Words that make a key secret-looking.
SECRET_WORDS = frozenset({"key", "apikey", "token", "secret", "secrets", "password", "passwd",
                          "pwd", "passphrase", "credential", "credentials", "bearer", "cookie"})
#: Word endings that do too (``hftoken``, ``clientsecret``, ``accesskey``); a bare ``key`` ending
#: is not one of them (``monkey``).
SECRET_ENDINGS = ("apikey", "accesskey", "secretkey", "privatekey", "token", "secret", "password")
#: The placeholder written instead of a secret value.
REDACTED = "<redacted>"

_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")


def key_words(key: str) -> list[str]:
    """The lower-cased words of a (dotted) key: ``model.apiKey_env`` -> model, api, key, env."""
    return [w.lower() for w in _WORDS.findall(str(key))]


def is_secret_key(key: Any) -> bool:
    """True when the key's name looks like it holds a secret (see the module docstring)."""
    words = key_words(str(key))
    if not words or words[-1] == "env":
        return False
    return any(w in SECRET_WORDS or w.endswith(SECRET_ENDINGS) for w in words)


def scrub_secrets(obj: Any) -> Any:
    """Copy of a nested dict/list with every secret-looking key's value dropped."""
    if isinstance(obj, Mapping):
        return {k: scrub_secrets(v) for k, v in obj.items() if not is_secret_key(k)}
    if isinstance(obj, (list, tuple)):
        return [scrub_secrets(v) for v in obj]
    return obj


def _override_key(text: str) -> str:
    key = str(text).split("=", 1)[0]
    return key.lstrip("+~").split("@", 1)[0]


def scrub_overrides(overrides: Iterable[str]) -> list[str]:
    """Hydra override strings with the value of every secret-looking key replaced."""
    return [f"{str(o).split('=', 1)[0]}={REDACTED}" if "=" in str(o) and
            is_secret_key(_override_key(o)) else str(o) for o in overrides]


def scrub_argv(argv: Iterable[str]) -> list[str]:
    """A command line with the values of secret-looking overrides (``key=value``) replaced;
    options such as ``-m`` or ``--config-name x`` pass through."""
    return [a if a.startswith("-") else scrub_overrides([a])[0] for a in map(str, argv)]


__all__ = ["SECRET_WORDS", "REDACTED", "is_secret_key", "key_words", "scrub_secrets",
           "scrub_overrides", "scrub_argv"]
