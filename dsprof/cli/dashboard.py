"""``dsprof dashboard RUN [RUN_B] [--port P] [--host H]``."""

from __future__ import annotations

import click


def serve(run_a: str, run_b: str | None, host: str, port: int) -> None:
    """Open the runs, print the address and serve until Ctrl-C (also for ``run --dashboard``)."""
    from dsprof.dashboard.app import create_app
    from dsprof.dashboard.server import DashboardServer
    from dsprof.dashboard.source import RunSource

    sources = [RunSource(run_a, "A")] + ([RunSource(run_b, "B")] if run_b else [])
    try:
        server = DashboardServer(create_app(*sources), host=host, port=port)
        click.echo(f"dsprof dashboard: {server.url}  (Ctrl-C stops it)", err=True)
        server.serve_forever()
    finally:
        for src in sources:
            src.close()


@click.command("dashboard")
@click.argument("run_a", metavar="RUN", type=click.Path(path_type=str))
@click.argument("run_b", metavar="[RUN_B]", required=False, type=click.Path(path_type=str))
@click.option("--port", default=8050, show_default=True, type=int,
              help="Port to serve on (0 picks a free one).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to bind. Anything but 127.0.0.1 exposes the run to the network.")
def dashboard_command(run_a: str, run_b: str | None, port: int, host: str) -> None:
    """Browse RUN in a web dashboard (RUN_B too: the Compare page shows both).

    Serves on 127.0.0.1 and opens no browser; the address is printed. Reads only the run
    directories given."""
    serve(run_a, run_b, host, port)
