"""``slmdeploy plugins``: what is loaded, from where, providing which stages and keys."""

from __future__ import annotations

import json

import click

from slmdeploy.cli.options import json_option
from slmdeploy.cli.session import Session


@click.command()
@json_option()
@click.option("--options", "with_options", is_flag=True, help="Also list each stage plugin's table keys.")
@click.pass_obj
def plugins(session: Session, as_json: bool, with_options: bool) -> None:
    """List loaded plugins: name, version, hooks, where from, and the stages they provide."""
    from slmdeploy.host.inventory import describe_plugins, registry_notices, render_plugins
    from slmdeploy.host.registry import Registry

    # Clashing names are listed, not raised: this is the command that shows the user which plugins to choose from.
    registry = Registry(session.plugin_manager(), allow_clashes=True)
    listing = describe_plugins(registry, with_options)
    click.echo(json.dumps(listing, indent=2) if as_json else render_plugins(listing))
    for notice in registry_notices(registry):
        click.echo(notice, err=True)
