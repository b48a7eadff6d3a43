"""MLflow's UI inside Jupyter, at ``<base_url>mlflow/``, through jupyter-server-proxy.

jupyter-server-proxy finds :func:`mlflow_ui` through the ``jupyter_serverproxy_servers`` entry point
(pyproject.toml), calls it once when the Jupyter server starts, and starts the process it describes on the first
request to ``/mlflow/`` (the JupyterLab launcher's "MLflow" tile opens it). The command is made at that moment:
its project is the one the server's root folder belongs to, found as the REST extension finds it
(:func:`~mlops_nb.settings.find_home`, so ``$MLOPS_NB_HOME`` wins), and its store is that project's MLflow
database (``.mlops/mlflow.db`` unless ``tracking_uri`` names another database).

The proxy strips ``/mlflow`` from the path (``absolute_url`` False) and MLflow's pages ask for their scripts and
API with relative paths, so ``mlflow ui`` needs no ``--static-prefix``. Jupyter authenticates every request; the
proxy leaves cross-site request checks to the app behind it, so MLflow's own stay on: the Host header is set to
MLflow's address (its DNS-rebinding check is about direct visits to its port), and the origin the browser used for
that first request (Binder's host, say) is added to MLflow's allowed origins, so the UI's own POSTs pass and other
sites' are still refused.

``python -m mlops_nb.ui.server.proxy HOME -- MLFLOW_COMMAND...`` is the process the proxy starts: it creates and
migrates a missing SQLite store under the registry's lock (a fresh store opened by two processes at once races on
its migrations), then becomes ``mlflow ui``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

#: Seconds the proxy waits for MLflow to answer: its imports take 2-3 s, a fresh store's migrations 2-6 s more,
#: and the first start measured 20 s on a busy 2-core machine.
TIMEOUT = 90.0

#: MLflow's job runner (GenAI scoring and trace archival, unused here) is off: it starts seven huey consumers of
#: ~240 MB each, more than a Binder session's memory. No usage telemetry either.
ENVIRONMENT = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}

_ORIGINS_ENV = "MLFLOW_SERVER_CORS_ALLOWED_ORIGINS"
_DATABASE_SCHEMES = ("sqlite:", "postgresql", "mysql", "mssql")


def mlflow_ui() -> dict:
    """jupyter-server-proxy's server-process config for MLflow's UI (the ``mlflow`` entry point's value).

    Returns:
        keyword arguments of jupyter-server-proxy's ``ServerProcess``: ``command`` and ``environment`` (callables,
        called when the UI is first opened; the command's argument is the port the proxy chose), ``timeout``,
        ``absolute_url``, ``request_headers_override`` and a ``launcher_entry`` titled "MLflow".
    """
    return {
        "command": _command,
        "environment": _environment,
        "timeout": TIMEOUT,
        "absolute_url": False,
        "request_headers_override": {"Host": "127.0.0.1:{port}"},
        "launcher_entry": {"title": "MLflow", "category": "Other"},
        "new_browser_tab": True,
    }


def mlflow_command(home: str | os.PathLike, port: int | str) -> list[str]:
    """The ``mlflow ui`` command that serves the project at ``home`` on 127.0.0.1:``port``.

    One worker: memory is what a hosted server such as Binder has least of. The store is the project's tracking
    URI when that is a database; for a tracking server (``http://``) the UI is that server's own, so this falls back
    to the embedded ``.mlops/mlflow.db``. Artifacts are read where the registry wrote them (``.mlops/mlartifacts``).
    """
    from ...project import Project

    project = Project(home)
    store = project.tracking_uri
    if not store.startswith(_DATABASE_SCHEMES):
        store = f"sqlite:///{project.mlflow_db}"
    return [
        str(Path(sys.executable).with_name("mlflow")),
        "ui",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        store,
        "--default-artifact-root",
        project.mlartifacts_dir.as_uri(),
        "--no-serve-artifacts",
        "--workers",
        "1",
    ]


def _handler():
    """The Jupyter request handler being served (the proxy calls the config's callables while serving one)."""
    from jupyter_server.base.call_context import CallContext

    return CallContext.get(CallContext.JUPYTER_HANDLER)


def _server_root() -> Path:
    """The running Jupyter server's root folder (the current folder outside a server)."""
    handler = _handler()
    if handler is not None and handler.settings.get("server_root_dir"):
        return Path(handler.settings["server_root_dir"]).expanduser().resolve()
    from jupyter_server.serverapp import ServerApp

    if ServerApp.initialized():
        return Path(ServerApp.instance().root_dir).expanduser().resolve()
    return Path.cwd()


def _escape(text: str) -> str:
    """``text`` through the proxy's ``str.format`` of every command part and environment value, unchanged."""
    return text.replace("{", "{{").replace("}", "}}")


def _command(port: int) -> list[str]:
    """The process jupyter-server-proxy starts: this module's :func:`main`, which becomes ``mlflow ui``."""
    from ...settings import find_home

    home = find_home(_server_root())
    return [_escape(part) for part in (sys.executable, "-m", __name__, str(home), "--", *mlflow_command(home, port))]


def _environment() -> dict[str, str]:
    """MLflow's environment: :data:`ENVIRONMENT`, and the browser's origin among the allowed ones."""
    environment = dict(ENVIRONMENT)
    handler = _handler()
    host = handler.request.host if handler is not None else ""
    if host:
        origins = [origin for origin in os.environ.get(_ORIGINS_ENV, "").split(",") if origin.strip()]
        origins += [f"https://{host}", f"http://{host}"]  # behind a TLS-terminating proxy tornado sees http
        environment[_ORIGINS_ENV] = ",".join(origins)
    return {name: _escape(value) for name, value in environment.items()}


def main(argv: list[str] | None = None) -> None:
    """``HOME -- COMMAND...``: create and migrate the project's SQLite store if it is missing, then exec COMMAND."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 3 or argv[1] != "--":
        raise SystemExit("usage: python -m mlops_nb.ui.server.proxy HOME -- MLFLOW_COMMAND...")
    home, command = argv[0], argv[2:]
    from ...exceptions import MlopsError
    from ...project import Project

    project = Project(home)
    store = command[command.index("--backend-store-uri") + 1] if "--backend-store-uri" in command else None
    try:
        if store == project.tracking_uri and project.registry.sqlite_path is not None:
            if not project.registry.sqlite_path.exists():
                project.registry.client  # noqa: B018 - opening creates and migrates it, under the registry's lock
    except MlopsError as exc:  # mlflow ui then says what is wrong in its own words
        print(f"mlops_nb: {exc}", file=sys.stderr, flush=True)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
