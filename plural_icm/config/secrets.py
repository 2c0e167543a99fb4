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


#: Shapes of well-known credentials, found in any value (a token passed where no key says so).
TOKEN_PATTERNS = re.compile(
    r"\bhf_[A-Za-z0-9]{30,}|\bsk-[A-Za-z0-9_\-]{20,}|\bgh[pousr]_[A-Za-z0-9]{30,}"
    r"|\bxox[abposr]-[A-Za-z0-9-]{10,}|\bAKIA[0-9A-Z]{16}\b|-----BEGIN [A-Z ]*PRIVATE KEY-----")
#: ``${oc.env:NAME}`` interpolations: resolved, they would write the variable's value.
_ENV_INTERPOLATION = re.compile(r"oc\.env\s*:\s*['\"]?([A-Za-z_][A-Za-z0-9_]*)")


def secret_environment_values(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The values of the environment variables whose names look like secrets (``HF_TOKEN``,
    ``WANDB_API_KEY``, ``OPENAI_API_KEY``...), at least 8 characters long, by name."""
    import os

    env = os.environ if environ is None else environ
    return {k: v for k, v in env.items()
            if is_secret_key(k) and k not in NOT_SECRET_ENV and len(v.strip()) >= 8}


#: Shell variables whose names hold a secret word (``pwd``) but whose values are the working
#: directory: every path under it would otherwise look like a secret (a SLURM sweep's
#: ``hydra.searchpath`` did).
NOT_SECRET_ENV = frozenset({"PWD", "OLDPWD"})


def secret_in_text(text: str, environ: Mapping[str, str] | None = None) -> str | None:
    """Why ``text`` (an override, a config value) holds a secret, or None: a credential's shape
    (``hf_...``, ``sk-...``), the value of a secret environment variable, or an ``oc.env``
    interpolation of one."""
    text = str(text)
    for name, value in secret_environment_values(environ).items():
        if value in text:
            return f"it contains the value of the environment variable {name}"
    found = TOKEN_PATTERNS.search(text)
    if found:
        return f"it contains something shaped like a credential ({found.group(0)[:4]}...)"
    for name in _ENV_INTERPOLATION.findall(text):
        if is_secret_key(name):
            return f"it reads the secret environment variable {name} (oc.env:{name})"
    return None


def secret_key_in(obj: Any, prefix: str = "") -> str | None:
    """The dotted path of the first secret-looking key inside nested dicts/lists, or None
    (``{HF_TOKEN: x}`` under ``hydra.job.env_set`` -> ``hydra.job.env_set.HF_TOKEN``)."""
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            path = f"{prefix}.{k}" if prefix else str(k)
            if is_secret_key(k):
                return path
            inner = secret_key_in(v, path)
            if inner:
                return inner
    elif isinstance(obj, (list, tuple)):
        for k, v in enumerate(obj):
            inner = secret_key_in(v, f"{prefix}[{k}]")
            if inner:
                return inner
    return None


def scrub_secrets(obj: Any) -> Any:
    """Copy of a nested dict/list with every secret-looking key's value dropped, and every string
    that holds a secret (:func:`secret_in_text`: a credential's shape, a secret environment
    variable's value) replaced by :data:`REDACTED`."""
    if isinstance(obj, Mapping):
        return {k: scrub_secrets(v) for k, v in obj.items() if not is_secret_key(k)}
    if isinstance(obj, (list, tuple)):
        return [scrub_secrets(v) for v in obj]
    if isinstance(obj, str) and secret_in_text(obj):
        return REDACTED
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
           "secret_in_text", "secret_key_in", "secret_environment_values",
           "scrub_overrides", "scrub_argv"]
