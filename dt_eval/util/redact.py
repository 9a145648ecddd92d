"""Keep credentials out of everything dt-eval writes or prints.

One helper for every sink (config.json's stored command line, backend descriptions, sample and
cot records, error messages, stderr, leaderboard JSON):

- URLs lose their `user:password@` (shown as `***@host`) and the values of secret-looking query
  parameters (`?key=...`, `api_key`, `token`, `sig`, ...);
- `Authorization` values (`Bearer ...`, `Basic ...`) become `***`;
- command lines lose the values of secret flags (`--api-key X`, `--auth=X`, `--hf-token X`)
  and of `api_key=...`-style pairs inside an argument (lm-eval's `--model_args`);
- literal secrets a caller knows (an API key, a URL's password) are replaced wherever they occur.

`split_credentials` gives the other half: a URL without its userinfo plus the credentials, so
clients can send them as HTTP basic auth instead of leaving them in the URL.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

MASK = "***"
# Names of query parameters and `name=value` pairs whose value is a credential.
_SECRET_NAME = r"(?:api[-_]?key|apikey|key|access[-_]?token|token|auth|secret|client[-_]?secret|password|passwd|pwd|sig|signature)"
_SECRET_NAME_RE = re.compile(rf"(?i)^(?:x[-_])?{_SECRET_NAME}$")
# A secret flag: --api-key, --hf-token, --auth, --judge-api-key ... (not --max-tokens, --no-auth).
_SECRET_FLAG_RE = re.compile(rf"(?i)^--?(?!no-)(?:[a-z0-9]+[-_])*{_SECRET_NAME}$")
_PAIR_RE = re.compile(rf"(?i)(?<![\w-])((?:[a-z0-9]+[-_])*{_SECRET_NAME})=([^\s,&|'\"]+)")
# A URL runs to whitespace, a quote or a list separator (, |): a password may hold ()[]{}.
_URL_RE = re.compile(r"(?i)\b[a-z][a-z0-9+.\-]*://[^\s'\"<>,|]+")
_AUTH_RE = re.compile(r"(?i)\b(bearer|basic)(\s+)([A-Za-z0-9._~+/=\-]+)")
_MIN_LITERAL = 4  # shorter "secrets" are not worth mangling every message for


def split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """(`url` without `user:password@`, (user, password) percent-decoded, or None)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, host = parts.netloc.rsplit("@", 1)
    user, _, password = userinfo.partition(":")
    return urlunsplit(parts._replace(netloc=host)), (unquote(user), unquote(password))


def basic_auth_header(credentials: tuple[str, str]) -> str:
    """The `Authorization` value for HTTP basic auth (RFC 7617, UTF-8)."""
    user, password = credentials
    return "Basic " + base64.b64encode(f"{user}:{password}".encode("utf-8")).decode("ascii")


def redact_url(url: str) -> str:
    """`url` with its userinfo and secret query values masked; anything unparsable is masked whole."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            netloc = MASK + "@" + netloc.rsplit("@", 1)[1]
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            if any(_SECRET_NAME_RE.match(k) for k, _ in pairs):
                query = urlencode([(k, MASK if _SECRET_NAME_RE.match(k) else v) for k, v in pairs], safe="*")
        return urlunsplit(parts._replace(netloc=netloc, query=query))
    except ValueError:  # e.g. an invalid port or IPv6 literal: show nothing of it
        return MASK


def redact_text(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Free text (an error message, a log line) with every credential in it masked."""
    if not text:
        return text
    text = _URL_RE.sub(lambda m: redact_url(m.group(0)), text)
    text = _AUTH_RE.sub(_mask_auth, text)
    for s in sorted({s for s in secrets if s and len(s) >= _MIN_LITERAL}, key=len, reverse=True):
        text = text.replace(s, MASK)
    return text


def _mask_auth(m: re.Match[str]) -> str:
    scheme, space, token = m.group(1), m.group(2), m.group(3)
    if scheme.lower() == "basic":  # only a real user:password token ("basic auth failed" stays)
        try:
            if b":" not in base64.b64decode(token + "=" * (-len(token) % 4), validate=True):
                return m.group(0)
        except ValueError:
            return m.group(0)
    return scheme + space + MASK


def redact_argv(argv: Sequence[str], secrets: Iterable[str | None] = ()) -> list[str]:
    """A command line fit to store or print: secret flag values and credentials masked."""
    secrets = list(secrets)
    out: list[str] = []
    mask_next = False
    for arg in argv:
        arg = str(arg)
        if mask_next:
            out.append(MASK)
            mask_next = False
            continue
        flag, eq, _ = arg.partition("=")
        if flag.startswith("-") and _SECRET_FLAG_RE.match(flag):
            if eq:
                out.append(f"{flag}={MASK}")
            else:
                out.append(arg)
                mask_next = True
            continue
        arg = _PAIR_RE.sub(lambda m: f"{m.group(1)}={MASK}", arg)
        out.append(redact_text(arg, secrets))
    return out


def redact_obj(obj: Any, secrets: Iterable[str | None] = ()) -> Any:
    """A copy of a JSON-like value (dicts, lists, strings) with every string passed through
    `redact_text`; other values unchanged."""
    secrets = list(secrets)
    if isinstance(obj, str):
        return redact_text(obj, secrets)
    if isinstance(obj, dict):
        return {k: redact_obj(v, secrets) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact_obj(v, secrets) for v in obj]
    return obj
