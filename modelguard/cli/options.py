"""One flag vocabulary for every command (docs/policy.md lists it).

=====================================  ===============================================
what                                   flag (hidden old spellings in parentheses)
=====================================  ===============================================
private key that signs                 ``--sign-key`` (``--key`` on sign, eval, harden)
its passphrase                         ``--sign-passphrase-env`` / ``--sign-passphrase-file``
                                       (``--passphrase-env`` / ``--passphrase-file`` there)
trusted public keys                    ``--trust-key``, repeatable (``--key`` on verify, run,
                                       recertify)
X25519 identity and its passphrase     ``--identity``, ``--identity-passphrase-env`` /
                                       ``--identity-passphrase-file``
ledger, trusted ledger key             ``--ledger``, ``--ledger-key``
quiet, JSON                            ``-q/--quiet``, ``--json`` (every command)
=====================================  ===============================================

>>> import click
>>> @click.command()
... @trust_key_option(dest="keys", legacy_key_alias=True)
... def check(keys): ...
>>> [p.opts for p in check.params]
[['--trust-key', '--key']]
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from modelguard.errors import BadInputError

if TYPE_CHECKING:
    from modelguard.keys import PrivateKey

F = TypeVar("F", bound=Callable[..., Any])

SIGN_PASSPHRASE_HINT = "--sign-passphrase-env VAR or --sign-passphrase-file FILE"
_PATH = click.Path(path_type=Path)


class AliasOption(click.Option):
    """An option whose old spellings still parse but stay out of ``--help`` and error hints."""

    def __init__(self, *args: Any, hidden_aliases: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hidden_aliases = tuple(hidden_aliases)

    @contextmanager
    def _visible_only(self) -> Iterator[None]:
        saved = self.opts
        self.opts = [o for o in saved if o not in self.hidden_aliases]
        try:
            yield
        finally:
            self.opts = saved

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        with self._visible_only():
            return super().get_help_record(ctx)

    def get_error_hint(self, ctx: click.Context | None) -> str:
        with self._visible_only():
            return super().get_error_hint(ctx)


def _option(names: list[str], dest: str, aliases: Sequence[str], **kwargs: Any) -> Any:
    return click.option(*names, *aliases, dest, cls=AliasOption, hidden_aliases=aliases, **kwargs)


def sign_key_options(*, required: bool, help: str, legacy: bool = False) -> Callable[[F], F]:
    """``--sign-key`` with ``--sign-passphrase-env`` / ``--sign-passphrase-file``.

    Parameters ``sign_key``, ``sign_passphrase_env``, ``sign_passphrase_file``; ``legacy``
    keeps the old ``--key`` / ``--passphrase-env`` / ``--passphrase-file`` spellings."""

    def decorate(func: F) -> F:
        options = [
            _option(
                ["--sign-key"],
                "sign_key",
                ["--key"] if legacy else [],
                required=required,
                type=_PATH,
                help=help,
            ),
            _option(
                ["--sign-passphrase-env"],
                "sign_passphrase_env",
                ["--passphrase-env"] if legacy else [],
                metavar="VAR",
                help="Read the --sign-key passphrase from environment variable VAR.",
            ),
            _option(
                ["--sign-passphrase-file"],
                "sign_passphrase_file",
                ["--passphrase-file"] if legacy else [],
                type=click.Path(path_type=Path, dir_okay=False),
                help="Read the --sign-key passphrase from the first line of FILE.",
            ),
        ]
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


def load_sign_key(path: Path, env: str | None, file: Path | None) -> PrivateKey:
    """The ``--sign-key``, decrypted with the passphrase its flags name."""
    if env is not None and file is not None:
        raise click.UsageError("give the passphrase one way: --sign-passphrase-env or -file")
    from modelguard.keys import load_private_key, read_passphrase  # the key library

    return load_private_key(
        path, read_passphrase(env=env, file=file), passphrase_hint=SIGN_PASSPHRASE_HINT
    )


def trust_key_option(
    *, dest: str, legacy_key_alias: bool = False, help: str | None = None
) -> Callable[[F], F]:
    """``--trust-key PUB`` (repeatable): a public key the command trusts."""
    return _option(
        ["--trust-key"],
        dest,
        ["--key"] if legacy_key_alias else [],
        multiple=True,
        type=_PATH,
        help=help or "Trusted public key (PEM); repeat: every key given must have signed.",
    )


def arch_option(func: F) -> F:
    """``--arch module:function``: the user's own architecture, trusted because they named it."""
    return click.option(
        "--arch",
        help="Your factory module:function, trusted to run (imported from the current directory "
        "first); the model cards that name it may then load (docs/modelcard.md).",
    )(func)


def trust_arch(arch: str, model_dir: Path | None) -> None:
    """Trust ``arch`` for this run; a model directory's card must name that very factory."""
    from modelguard import zoo
    from modelguard.modelcard import CARD_NAME, ModelCard

    factory = zoo.factory_name(arch)
    zoo.resolve_factory(factory, trusted=True)  # fails now, with the import hint, if it cannot load
    zoo.trust_factory(factory)
    if model_dir is not None and (model_dir / CARD_NAME).is_file():
        named = ModelCard.load(model_dir).factory
        if named != factory:
            raise BadInputError(
                f"{CARD_NAME} names architecture {named!r}, --arch names {factory!r}: the card is "
                "part of the signed model, so rewrite it (modelguard card --force) and re-sign",
                path=str(model_dir),
            )


def ledger_trust_options(func: F) -> F:
    """``--ledger-key`` (repeatable) and ``--ledger-state``: what ``--require-ledger`` trusts.

    Parameters ``ledger_keys``, ``ledger_state``; pass them to
    :func:`modelguard.policy.with_ledger_trust`."""
    options = [
        click.option(
            "--ledger-key",
            "ledger_keys",
            multiple=True,
            help="The ledger's checkpoint public key (file or one-line key) that --require-ledger"
            " trusts; else the policy's [ledger] key, else $MODELGUARD_LEDGER_KEY.",
        ),
        click.option(
            "--ledger-state",
            type=click.Path(path_type=Path, file_okay=False),
            help="Directory of the ledger gate's trust state (default: the policy's [ledger]"
            " state, else $MODELGUARD_LEDGER_STATE, else ~/.config/modelguard/ledger-state).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def float_list(text: str | None, flag: str) -> list[float] | None:
    """``"0.1,0.2"`` -> ``[0.1, 0.2]`` for a comma-separated option (None when not given)."""
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise BadInputError(f"{flag} must be comma-separated numbers, got {text!r}") from None


def json_object(text: str, flag: str) -> dict[str, Any]:
    """A JSON-object option such as ``--arch-kwargs``; bad JSON or another type is bad input."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise BadInputError(f"{flag} is not JSON ({error})") from None
    if not isinstance(value, dict):
        raise BadInputError(f"{flag} must be a JSON object")
    return value
