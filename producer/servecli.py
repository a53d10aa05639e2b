"""`producer serve`: the HTTP API and the review desk (producer/web/)."""

from __future__ import annotations

import click

from config.settings import Settings, env_var

__all__ = ["serve"]


@click.command()
@click.option("--host", envvar=env_var("api_host"), show_envvar=True, help="Address to bind.")
@click.option("--port", envvar=env_var("api_port"), show_envvar=True, type=click.IntRange(1, 65535))
@click.pass_obj
def serve(settings: Settings, host: str | None, port: int | None) -> None:
    """Serve the HTTP API under /v1 and the review desk at / (tokens: INKQ_API_TOKENS).

    Put it behind a TLS-terminating proxy when it leaves this host: sign-in tokens and session
    cookies must not cross a network in clear text.
    """
    try:
        import uvicorn

        from producer.web import create_app
    except ImportError as exc:
        raise click.ClickException(
            f"the web extra is not installed ({exc.name} is missing): pip install 'inkq[web]'"
        ) from exc
    settings = settings.replace(api_host=host, api_port=port)
    app = create_app(settings)
    # uvicorn's access log names paths, never headers or cookies: tokens stay out of it.
    uvicorn.run(app, host=settings.api_host, port=settings.api_port, log_level=settings.log_level, proxy_headers=True)
