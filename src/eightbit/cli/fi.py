"""``eightbit fi``: placeholder until the fixed-point core lands."""

from __future__ import annotations

import click


@click.command()
@click.argument("values", nargs=-1, required=True)
def fi(values: tuple[str, ...]) -> None:
    """Show VALUES as fixed-point numbers."""
    click.echo(" ".join(values))
