"""The jupyter_server extension: mlops_nb's REST API under ``/mlops/api/`` (see :mod:`.handlers`), which the
JupyterLab sidebar reads.

Installing the package enables it (``etc/jupyter/jupyter_server_config.d/mlops_nb.json``); ``jupyter server
extension list`` shows it. Its project is the one the server root belongs to (``$MLOPS_NB_HOME`` when set), and
pipelines are the notebooks under the server root.
"""

from __future__ import annotations

from pathlib import Path


def _jupyter_server_extension_points() -> list[dict]:
    """jupyter_server's entry point: this module is the extension."""
    return [{"module": "mlops_nb.ui.server"}]


def _load_jupyter_server_extension(server_app) -> None:
    """Add the API's handlers to a running Jupyter server."""
    from jupyter_server.utils import url_path_join

    from ...project import Project
    from ...settings import find_home
    from .handlers import API, ROUTES
    from .jobs import Jobs

    root = Path(server_app.root_dir).expanduser().resolve()
    project = Project(find_home(root))
    web_app = server_app.web_app
    web_app.settings["mlops_nb"] = {"project": project, "root": root, "jobs": Jobs(project)}
    base = url_path_join(web_app.settings["base_url"], API)
    web_app.add_handlers(".*$", [(base + pattern, handler) for pattern, handler in ROUTES])
    server_app.log.info("mlops_nb: REST API at %s for the project %s", base, project.home)
