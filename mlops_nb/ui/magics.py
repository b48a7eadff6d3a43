"""IPython magics: ``%%mlops step`` runs a cell as a pipeline step; ``%mlops run|dag|runs|lineage`` look around.

Thin over the Python API: the step runtime (``engine.step.execute_step``), ``mlops_nb.run``, the metadata store.
Loading the extension prints nothing. Errors a user can fix show as one line, without a traceback.
"""

from __future__ import annotations

import atexit
import os
import shlex
from pathlib import Path

from IPython.core.magic import Magics, line_cell_magic, magics_class
from traitlets import Bool
from traitlets.config import Configurable

from ..exceptions import MlopsError

_SUBCOMMANDS = (
    "step (cell magic), run, dag, runs, lineage, timeline, features, models, monitor, dashboard, notebook, end"
)


class MagicUsageError(MlopsError):
    """A magic was called with arguments it does not take; the message ends with its usage."""


def _one_line_error(shell, etype, value, tb, tb_offset=None):
    """Show an MlopsError as one line (``custom_exceptions`` handler); the cell still fails."""
    stb = [f"{etype.__name__}: {value}"]
    shell._showtraceback(etype, value, stb)
    return stb


def notebook_path(shell, chosen: Path | None = None) -> Path | None:
    """The notebook this kernel runs: ``$MLOPS_NB_NOTEBOOK`` (headless), else the one ``%mlops notebook PATH``
    chose, else what the front end tells the kernel: JupyterLab (``JPY_SESSION_NAME``, ``__session__``) or VS Code
    (``__vsc_ipynb_file__``)."""
    from ..settings import NOTEBOOK_ENV

    namespace = shell.user_ns if shell is not None else {}
    for candidate in (
        os.environ.get(NOTEBOOK_ENV),
        chosen,
        os.environ.get("JPY_SESSION_NAME"),
        namespace.get("__session__"),
        namespace.get("__vsc_ipynb_file__"),
    ):
        if candidate and str(candidate).endswith(".ipynb"):
            path = Path(candidate)
            if not path.is_absolute():
                path = Path.cwd() / path
                if not path.is_file():
                    path = Path.cwd() / Path(candidate).name
            if path.is_file():
                return path.resolve()
    return None


@magics_class
class MlopsMagics(Magics, Configurable):
    """``%%mlops step NAME [options]`` and ``%mlops run|dag|runs|lineage``."""

    quiet = Bool(False, config=True, help="Do not print the one-line status after each step.")

    def __init__(self, shell=None, **kwargs):
        super().__init__(shell=shell, **kwargs)
        self._ctx = None
        self._notebook: Path | None = None  # chosen with %mlops notebook PATH

    # the session's run -------------------------------------------------------------------------------------
    def context(self):
        """The run this kernel's steps record into: the driver's (headless) or a manual one made on first use."""
        from ..engine.driver import open_run
        from ..engine.step import RunContext, load_pipeline
        from ..project import Project
        from ..settings import NO_CACHE_ENV, PLAN_ENV, RUN_ENV

        if self._ctx is not None:
            return self._ctx
        path = notebook_path(self.shell, self._notebook)
        run_id = os.environ.get(RUN_ENV)
        if run_id:
            project = Project()
            pipeline = load_pipeline(path)
            no_cache = os.environ.get(NO_CACHE_ENV) == "1"
            planned = _read_plan(os.environ.get(PLAN_ENV))
            self._ctx = RunContext(project, run_id, pipeline, no_cache=no_cache, planned=planned)
            return self._ctx
        project = Project.discover(path.parent if path else None)
        pipeline = load_pipeline(path) if path else None
        if pipeline is None:
            from ..pipeline.notebook import Pipeline

            pipeline = Pipeline(Path.cwd() / "interactive.ipynb", [], strict=False)
            if not self.quiet:
                print(
                    "mlops: this kernel does not know which notebook it runs, so its steps record as pipeline "
                    "'interactive' and share no cache with `mlops-nb run`; run `%mlops notebook PATH` first"
                )
        params = {k: self.shell.user_ns.get(k, v) for k, v in pipeline.params.items()}
        run_id = open_run(project, pipeline, _jsonable(params), "interactive", "manual")
        self._ctx = RunContext(project, run_id, pipeline, owns_run=True)
        atexit.register(self._ctx.finish_at_exit)
        return self._ctx

    # %%mlops step ------------------------------------------------------------------------------------------
    @line_cell_magic
    def mlops(self, line: str, cell: str | None = None):
        """``%%mlops step NAME [--inputs a,b] [--outputs x,y] [--reads PATH,...] [--no-cache] [--retries N]``
        runs the cell as a pipeline step: cached, recorded, with lineage.

        Line magics: ``%mlops run [-p NAME VALUE]... [--no-cache]`` runs this notebook headless;
        ``%mlops dag`` draws its DAG; ``%mlops runs [N]`` lists runs; ``%mlops models [NAME]`` the registry;
        ``%mlops lineage NAME`` shows lineage
        of a variable produced by a step (or an artifact hash / step run id); ``%mlops dashboard`` shows the
        project's dashboard widget (pipeline, runs, lineage, features, models, deployments, monitoring).
        """
        __tracebackhide__ = True
        if cell is not None:
            return self._step(line, cell)
        try:
            words = shlex.split(line)
        except ValueError as exc:  # an unclosed quote
            raise MagicUsageError(f"cannot parse `%mlops {line[:60]}`: {exc}; close the quote") from None
        if not words:
            raise MagicUsageError(f"%mlops needs a subcommand: {_SUBCOMMANDS}")
        handler = getattr(self, f"_cmd_{words[0]}", None)
        if handler is None:
            raise MagicUsageError(f"unknown %mlops subcommand {words[0]!r}; use one of: {_SUBCOMMANDS}")
        return handler(words[1:])

    def _step(self, line: str, cell: str):
        from ..engine.step import execute_step
        from ..exceptions import StepFailedError
        from ..pipeline.inference import analyze
        from ..pipeline.notebook import parse_magic_line

        try:
            args = parse_magic_line(line)
        except ValueError as exc:
            raise MagicUsageError(
                f"{exc}; usage: %%mlops step NAME [--inputs a,b] [--outputs x,y] "
                "[--reads PATH,...] [--no-cache] [--retries N]"
            ) from None
        ctx = self.context()
        known = {s.name: s for s in ctx.pipeline.steps}.get(args.name)
        source = f"%%mlops {line}\n{cell}"
        if known is not None and ctx.pipeline.cells[known.cell_index]["source"].strip() == source.strip():
            pipeline = ctx.pipeline  # the cell as parsed (always so in a headless run): no re-parse
        else:
            pipeline = ctx.pipeline.with_cell(line, cell)
        step = pipeline.step(args.name)
        problems = pipeline.problems_of(step.cell_index)
        if problems:
            raise MagicUsageError(problems[0])
        if not pipeline.path.is_file():  # no notebook file: infer from this session
            analysis = analyze(step.code)
            if step.declared_inputs is None:
                step.inputs = [n for n in analysis.reads if n in ctx.produced_names()]
            if step.declared_outputs is None:
                step.outputs = sorted(analysis.assigned)
        ctx.pipeline = pipeline

        def run_body(source: str) -> None:
            result = self.shell.run_cell(source, store_history=False)
            if not result.success:
                raise result.error_in_exec or result.error_before_exec

        echo = (lambda text: None) if self.quiet else print
        result = execute_step(ctx, step, self.shell.user_ns, run_body, echo=echo)
        if result.status == "failed":
            raise StepFailedError(
                f"step {step.name!r} (cell {step.cell}) failed: {result.error}",
                step.name,
                step.cell_index,
            )

    # line subcommands --------------------------------------------------------------------------------------
    def _project(self):
        """This session's project: its run's, else the one the notebook's folder belongs to."""
        from ..project import Project

        if self._ctx is not None:
            return self._ctx.project
        path = notebook_path(self.shell, self._notebook)
        return Project.discover(path.parent if path else None)

    def _notebook_or_fail(self) -> Path:
        path = notebook_path(self.shell, self._notebook)
        if path is None:
            raise MagicUsageError(
                "cannot tell which notebook this kernel runs; name it (%mlops dag NOTEBOOK.ipynb, or once "
                "%mlops notebook PATH), run it from JupyterLab or with mlops-nb run, or set MLOPS_NB_NOTEBOOK"
            )
        return path

    def _cmd_run(self, words: list[str]):
        """``%mlops run [-p NAME VALUE]... [--no-cache]``: run this notebook headless (saved version)."""
        from ..engine.driver import run as run_notebook
        from ..pipeline.notebook import ArgumentError, ArgumentParser

        parser = ArgumentParser(prog="%mlops run", add_help=False)
        parser.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
        parser.add_argument("--no-cache", action="store_true")
        parser.add_argument("--executor")
        try:
            args = parser.parse_args(words)
        except ArgumentError as exc:
            raise MagicUsageError(
                f"{exc}; usage: %mlops run [-p NAME VALUE]... [--no-cache] [--executor NAME]"
            ) from None
        from ..settings import RUN_ENV

        if os.environ.get(RUN_ENV):
            raise MagicUsageError(
                "%mlops run inside a headless run would start a run within the run; remove the cell, or make it a "
                "step of its own pipeline"
            )
        params, no_cache, executor = dict(args.param), args.no_cache, args.executor
        path = self._notebook_or_fail()
        if not self.quiet:
            print(f"mlops: running {path} as saved (unsaved edits are not in this run)")
        kwargs = {"executor": executor} if executor else {}
        run = run_notebook(path, params=params, no_cache=no_cache, trigger="manual", **kwargs)
        return _runs_frame([run])

    def _cmd_dag(self, words: list[str]):
        """``%mlops dag [NOTEBOOK]``: the DAG (of this notebook, or of NOTEBOOK) as a picture (top-down, readable at
        notebook width), coloured by the last run's statuses. Naming the file works where the kernel cannot tell
        its notebook (papermill, nbclient, a console)."""
        from ..pipeline.notebook import Pipeline
        from .plots import Picture, dag_diagram

        if len(words) > 1:
            raise MagicUsageError("usage: %mlops dag [NOTEBOOK.ipynb]")
        if words:
            path = Path(words[0]).expanduser()
            if path.suffix != ".ipynb" or not path.is_file():
                raise MagicUsageError(f"{words[0]} is not a notebook file; give the path of a saved .ipynb file")
        else:
            path = self._notebook_or_fail()
        pipeline = Pipeline.from_notebook(path, strict=False)
        statuses = {s.step: s.status for s in self._project().metadata.latest_step_runs(pipeline.name).values()}
        return Picture(dag_diagram(pipeline, statuses), f"DAG of {pipeline.name}: {len(pipeline.steps)} steps")

    def _cmd_notebook(self, words: list[str]):
        """``%mlops notebook PATH``: the notebook this session's steps belong to (for front ends that do not tell
        the kernel, such as a console or nbclient); steps then share the cache of ``mlops-nb run PATH``."""
        if len(words) != 1:
            raise MagicUsageError("usage: %mlops notebook PATH (the .ipynb file this session runs)")
        path = Path(words[0]).expanduser()
        if path.suffix != ".ipynb" or not path.is_file():
            raise MagicUsageError(f"{words[0]} is not a notebook file; give the path of the saved .ipynb file")
        if self._ctx is not None and self._ctx.owns_run:  # steps recorded so far stay in their own run
            self._ctx.finish()
            atexit.unregister(self._ctx.finish_at_exit)
            self._ctx = None
        self._notebook = path.resolve()
        if not self.quiet:
            print(f"mlops: this session's steps belong to {self._notebook}")

    def _cmd_end(self, words: list[str]):
        """``%mlops end``: end this session's manual run now (``failed`` if a step's last try failed, else
        ``succeeded``); the next step starts a new run. In a headless run it does nothing: its driver ends it."""
        if words:
            raise MagicUsageError("usage: %mlops end (ends this session's manual run)")
        ctx = self._ctx
        if ctx is None or not ctx.owns_run:
            if not self.quiet:
                print("no manual run to end" if ctx is None else "this headless run is ended by its driver")
            return None
        ctx.finish()
        atexit.unregister(ctx.finish_at_exit)
        self._ctx = None
        return _runs_frame([ctx.store.get_run(ctx.run_id)])

    def _cmd_runs(self, words: list[str]):
        """``%mlops runs [N]`` (or ``--limit N``, as the CLI spells it): the latest runs as a DataFrame."""
        if words[:1] == ["--limit"]:
            words = words[1:] or ["--limit"]  # `--limit` alone: a usage error below
        if len(words) > 1 or (words and not (words[0].isdigit() and 0 < int(words[0]) <= 1_000_000)):
            raise MagicUsageError(f"usage: %mlops runs [N] (N a number of runs from 1 to 1000000), not "
                                  f"{' '.join(words)[:40]!r}")  # fmt: skip
        limit = int(words[0]) if words else 20
        return _runs_frame(self._project().metadata.list_runs(limit))

    def _cmd_timeline(self, words: list[str]):
        """``%mlops timeline [RUN]``: a bar per step run of RUN (default: the latest run), parallel steps overlap."""
        from .plots import Picture, timeline

        run = self._project().metadata.get_run(words[0] if words else "latest")
        return Picture(timeline(run), f"timeline of run {run.id}: {len(run.step_runs)} step runs")

    def _cmd_lineage(self, words: list[str]):
        """``%mlops lineage NAME``: a picture of the lineage of a variable a step produced (or of an artifact
        hash, ``RUN.N``, ``RUN/STEP``, an output name or a logged prediction ``request:ID``)."""
        from .plots import Picture, lineage_diagram

        if not words:
            raise MagicUsageError(
                "usage: %mlops lineage NAME (a variable made by a step, an artifact hash or RUN/STEP)"
            )
        target = words[0]
        if target.startswith("request:"):  # a logged prediction: request -> bundle -> model version -> data
            from ..serving import request_lineage

            graph = request_lineage(target[len("request:") :], project=self._project())
            return Picture(lineage_diagram(graph), f"lineage of {graph.nodes[graph.root].label}")
        ctx = self.context()
        known = ctx.produced(target)
        node = known.hash if known else target
        producer = ctx.sources([target], self.shell.user_ns).get(target) if known else None
        graph = ctx.store.lineage(node, direction="up", producer=producer)
        upstream = [n for n in graph.upstream() if n.kind == "step_run"]
        title = (
            f"lineage of {graph.nodes[graph.root].label}: {len(upstream)} step run{'s' * (len(upstream) != 1)} upstream"
        )
        return Picture(lineage_diagram(graph), title)

    def _cmd_features(self, words: list[str]):
        """``%mlops features [VIEW]``: the feature views as a table, or one view's statistics with histograms."""
        from .reports import features_report

        if len(words) > 1:
            raise MagicUsageError("usage: %mlops features [VIEW]")
        return features_report(self._project().features, words[0] if words else None)

    def _cmd_models(self, words: list[str]):
        """``%mlops models [NAME]``: the registered models, or one model's versions (aliases, approval state,
        metrics)."""
        from ..promotion import models
        from .reports import models_report

        if len(words) > 1:
            raise MagicUsageError("usage: %mlops models [NAME]")
        name = words[0] if words else None
        return models_report(name, models(name, project=self._project()))

    def _cmd_monitor(self, words: list[str]):
        """``%mlops monitor MODEL [--window 1d] [--reference FILE|VIEW] [--actions]``: monitor a served model and
        show its report inline (drift per column with histograms, performance over time, alerts). Alerts are
        recorded; their actions (a retraining run, a command) run only with ``--actions``, so that re-running a
        notebook never starts a pipeline run from inside another."""
        from ..monitoring import monitor

        usage = "usage: %mlops monitor NAME[@ALIAS|/VERSION] [--window 1d] [--reference FILE|VIEW] [--actions]"
        if not words or words[0].startswith("-"):
            raise MagicUsageError(usage)
        options: dict = {"window": None, "reference": None, "actions": False}
        rest = words[1:]
        while rest:
            key = rest.pop(0).removeprefix("--")
            if key == "actions":
                options["actions"] = True
                continue
            if key not in options or not rest:
                raise MagicUsageError(usage)
            options[key] = rest.pop(0)
        return monitor(words[0], project=self._project(), trigger="manual", **options)

    def _cmd_dashboard(self, words: list[str]):
        """``%mlops dashboard``: the project's dashboard widget (``mlops_nb.dashboard``): this notebook's DAG by
        last status, runs, lineage, features, models with Approve / Reject / Promote / Rollback buttons,
        deployments and monitoring; its Refresh button updates it without re-running the cell. A kernel that does
        not know its notebook gets the project's pipelines to pick from."""
        from .dashboard import dashboard

        if words:
            raise MagicUsageError("usage: %mlops dashboard (it shows this notebook's project)")
        return dashboard(notebook_path(self.shell, self._notebook), project=self._project())


def _jsonable(values: dict) -> dict:
    import json

    out = {}
    for key, value in values.items():
        try:
            json.dumps(value)
            out[key] = value
        except TypeError:
            out[key] = repr(value)
    return out


def _runs_frame(runs):
    from .reports import runs_frame

    return runs_frame(runs)


def _read_plan(path: str | None) -> dict:
    """The cache hits the driver recorded for this headless kernel (``$MLOPS_NB_PLAN``), if any."""
    if not path:
        return {}
    import json

    return json.loads(Path(path).read_text(encoding="utf-8"))


def load_ipython_extension(ipython) -> None:
    """``%load_ext mlops_nb``: register the magics; MlopsErrors show as one line. Prints nothing."""
    from .progress import install

    ipython.register_magics(MlopsMagics)
    ipython.set_custom_exc((MlopsError,), _one_line_error)
    install(lines_to_stdout=True)  # tqdm.auto bars (widgets in a notebook); their step lines are plain output
