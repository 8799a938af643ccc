"""``slmdeploy plugins``: what is loaded, from where, providing which stages and keys."""

from __future__ import annotations

import json

import click

from slmdeploy.cli.session import Session


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--options", "with_options", is_flag=True, help="Also list each stage plugin's table keys.")
@click.pass_obj
def plugins(session: Session, as_json: bool, with_options: bool) -> None:
    """List loaded plugins: name, version, hooks, where from, and the stages they provide."""
    from slmdeploy.host.inventory import describe_plugins, render_plugins

    listing = describe_plugins(session.plugin_manager(), with_options)
    click.echo(json.dumps(listing, indent=2) if as_json else render_plugins(listing))
