"""`homeflex pki`: the operator's commands for the CAs, certificates of services on the CA host,
enrollment codes for boxes, revocation and the CRL."""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
from cryptography import x509

from homeflex.cloud.enroll import flows
from homeflex.cloud.enroll.accounts import AccountStoreError, XmppAccounts, open_accounts
from homeflex.cloud.enroll.registry import Registry, RegistryError
from homeflex.pki.bundle import issue_credentials
from homeflex.pki.ca import CaError, FleetCA, init_fleet, init_root
from homeflex.pki.identity import Identity, Role

MIN_PASSPHRASE = 12

_fleet_option = click.option(
    "--fleet",
    "fleet_dir",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="the fleet CA's directory",
)
_accounts_option = click.option(
    "--xmpp-accounts",
    "accounts_spec",
    default=None,
    help="the XMPP server's account store, NAME[=ARGUMENT], to remove the box's account",
)


@contextmanager
def _fleet(fleet_dir: Path) -> Iterator[tuple[FleetCA, Registry]]:
    try:
        fleet = FleetCA.open(fleet_dir)
    except (CaError, OSError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    registry = Registry.open(fleet_dir)
    try:
        yield fleet, registry
    except (CaError, RegistryError, AccountStoreError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        registry.close()
        fleet.close()


def _accounts(spec: str | None) -> XmppAccounts | None:
    if spec is None:
        return None
    try:
        return open_accounts(spec)
    except AccountStoreError as exc:
        raise click.ClickException(str(exc)) from None


def _passphrase(passphrase_file: Path | None) -> bytes:
    if passphrase_file is not None:
        text = passphrase_file.read_text().rstrip("\r\n")
    else:
        text = getpass.getpass("root key passphrase: ")
        if getpass.getpass("again: ") != text:
            raise click.ClickException("the two passphrases differ")
    if len(text) < MIN_PASSPHRASE:
        raise click.ClickException(
            f"the root key's passphrase must have at least {MIN_PASSPHRASE} characters"
        )
    return text.encode()


@click.command("init")
@click.option(
    "--root",
    "root_dir",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="where the root CA goes (keep it offline afterwards)",
)
@_fleet_option
@click.option(
    "--passphrase-file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    default=None,
    help="read the root key's passphrase from this file, not a prompt",
)
def init_cmd(root_dir: Path, fleet_dir: Path, passphrase_file: Path | None) -> None:
    """Create the root CA (key encrypted with a passphrase) and the fleet CA it certifies."""
    for d in (root_dir, fleet_dir):
        if d.exists() and any(d.iterdir()):
            raise click.ClickException(f"{d}: not empty; a CA is never created over another")
    passphrase = _passphrase(passphrase_file)
    for d in (root_dir, fleet_dir):
        d.mkdir(parents=True, exist_ok=True)
        d.chmod(0o700)
    try:
        root = init_root(root_dir, passphrase)
        fleet = init_fleet(root_dir, passphrase, fleet_dir)
    except (CaError, OSError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    fleet.close()
    click.echo(f"root CA  {root.subject.rfc4514_string()} in {root_dir} (keep it offline)")
    click.echo(f"fleet CA in {fleet_dir}; everybody trusts {fleet_dir / 'ca.pem'}")


@click.command("issue")
@_fleet_option
@click.option("--name", required=True)
@click.option("--role", type=click.Choice([r.value for r in Role]), required=True)
@click.option("--xmpp", default=None, help="XMPP address user@domain")
@click.option("--dns", multiple=True, help="DNS name (repeatable)")
@click.option("--ip", multiple=True, help="IP address (repeatable)")
@click.option("--days", type=click.IntRange(1, 397), default=30, show_default=True)
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False), required=True)
def issue_cmd(
    fleet_dir: Path,
    name: str,
    role: str,
    xmpp: str | None,
    dns: tuple[str, ...],
    ip: tuple[str, ...],
    days: int,
    out_dir: Path,
) -> None:
    """Credentials for a service on the CA's host (boxes enroll instead)."""
    with _fleet(fleet_dir) as (fleet, _):
        identity = Identity(name, Role(role), xmpp, dns, ip)
        try:
            creds = issue_credentials(fleet, identity, out_dir, days)
        except FileExistsError as exc:
            raise click.ClickException(str(exc)) from None
        cert = creds.certificate()
        click.echo(
            f"issued {name} ({role}) serial {cert.serial_number:x}, valid until "
            f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC, in {out_dir}"
        )


@click.command("code")
@_fleet_option
@click.option("--box", "box", required=True, help="the box's name (becomes its identity)")
@click.option("--valid-days", type=click.IntRange(1, 90), default=7, show_default=True)
@click.option(
    "--replace",
    is_flag=True,
    help="re-enrollment: revoke the box's certificates, let a new key enroll",
)
@_accounts_option
def code_cmd(
    fleet_dir: Path, box: str, valid_days: int, replace: bool, accounts_spec: str | None
) -> None:
    """Register a box (if new) and print a one-time enrollment code for it."""
    accounts = _accounts(accounts_spec)
    with _fleet(fleet_dir) as (fleet, registry):
        valid = timedelta(days=valid_days)
        if replace:
            issued, revoked = flows.prepare_reenrollment(fleet, registry, box, accounts, valid)
            if revoked.serials:
                click.echo(f"revoked {', '.join(f'{s:x}' for s in revoked.serials)}")
            if revoked.xmpp_removed is False:
                click.echo(f"XMPP account {revoked.xmpp}: its password is replaced at enrollment")
        else:
            issued = flows.new_code(fleet, registry, box, valid)
        click.echo(f"box     {issued.box}")
        click.echo(f"code    {issued.code}")
        click.echo(f"expires {issued.expires:%Y-%m-%d %H:%M} UTC (usable once)")


@click.command("revoke")
@_fleet_option
@click.option("--box", default=None, help="a lost or stolen box: all its certificates")
@click.option("--serial", default=None, help="one certificate, by serial (hex)")
@click.option("--reason", default="keyCompromise", show_default=True)
@_accounts_option
def revoke_cmd(
    fleet_dir: Path,
    box: str | None,
    serial: str | None,
    reason: str,
    accounts_spec: str | None,
) -> None:
    """Revoke a box or one certificate and republish the CRL."""
    if (box is None) == (serial is None):
        raise click.UsageError("give either --box NAME or --serial HEX")
    accounts = _accounts(accounts_spec)
    with _fleet(fleet_dir) as (fleet, registry):
        if serial is not None:
            try:
                number = int(serial.removeprefix("0x"), 16)
            except ValueError:
                raise click.ClickException(
                    f"--serial {serial!r}: not a hexadecimal number"
                ) from None
            fleet.revoke(number, reason)
            crl = fleet.publish_crl()
            click.echo(f"revoked {number:x}; CRL republished: {crl}")
            return
        assert box is not None
        done = flows.revoke_box(fleet, registry, box, accounts, reason)
        serials = ", ".join(f"{s:x}" for s in done.serials) or "none (none was valid)"
        click.echo(f"box {box} revoked; certificates revoked: {serials}")
        click.echo(f"CRL republished: {done.crl}")
        if done.xmpp_removed is False:
            raise click.ClickException(
                f"XMPP account {done.xmpp} NOT removed: no account store given; run again "
                "with --xmpp-accounts to finish"
            )
        if done.xmpp_removed:
            click.echo(f"XMPP account {done.xmpp} removed")


@click.command("crl")
@_fleet_option
def crl_cmd(fleet_dir: Path) -> None:
    """Publish a fresh CRL now (the enrollment service does it hourly)."""
    with _fleet(fleet_dir) as (fleet, _):
        path = fleet.publish_crl()
        crl = x509.load_pem_x509_crl(path.read_bytes())
        until = f"{crl.next_update_utc:%Y-%m-%d %H:%M} UTC" if crl.next_update_utc else "-"
        click.echo(f"{path}: {len(list(crl))} revoked, valid until {until}")


@click.command("list")
@_fleet_option
def list_cmd(fleet_dir: Path) -> None:
    """The boxes and every certificate the fleet CA issued."""
    with _fleet(fleet_dir) as (fleet, registry):
        click.echo("boxes")
        for b in registry.boxes():
            serial = f"{b.cert_serial:x}" if b.cert_serial else "-"
            extra = ""
            if b.code_expires:
                extra = f"  code until {b.code_expires:%Y-%m-%d %H:%M}"
            if b.state == "revoked" and b.xmpp_account:
                extra += "  XMPP ACCOUNT NOT REMOVED"
            click.echo(f"  {b.name:<24} {b.state:<9} {b.xmpp or '-':<32} {serial}{extra}")
        click.echo("certificates")
        now = datetime.now(UTC)
        for i in fleet.issued():
            state = f"revoked {i.revoked_at:%Y-%m-%d}" if i.revoked_at else "valid"
            if not i.revoked_at and i.not_after < now:
                state = "expired"
            click.echo(
                f"  {i.serial:x}  {i.name:<24} {i.role.value:<10} until "
                f"{i.not_after:%Y-%m-%d}  {state}"
            )


@click.command("sign-update")
@click.option(
    "--signer",
    "signer_dir",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="credentials of a release certificate (role release)",
)
@click.option("--version", "version", required=True, help="major.minor.patch")
@click.argument("source", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.argument("out", type=click.Path(path_type=Path, dir_okay=False))
def sign_update_cmd(signer_dir: Path, version: str, source: Path, out: Path) -> None:
    """Bundle the files under SOURCE as release VERSION, signed, into OUT."""
    from homeflex.pki.bundle import Credentials
    from homeflex.pki.release import sign_bundle

    try:
        manifest = sign_bundle(source, version, Credentials.load(signer_dir), out)
    except (ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{out}: release {manifest.version}, {len(manifest.files)} files, signed")


def add_commands(group: click.Group) -> None:
    commands = (init_cmd, issue_cmd, code_cmd, revoke_cmd, crl_cmd, list_cmd, sign_update_cmd)
    for command in commands:
        group.add_command(command)
