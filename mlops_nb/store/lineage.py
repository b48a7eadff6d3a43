"""Lineage: the artifacts and step runs around one node, joined by the metadata store's input/output events.

Lineage is walked breadth first, one hop (artifact <-> step run) per round. DuckDB uses an index only for
``column = ?``, so a small frontier is looked up node by node through the events indexes, all its nodes in one
statement (a ``UNION ALL`` of index probes: a statement costs ~0.5 ms, a probe inside one a fraction of that), and
a large one with one scan of events joined to the list. Rows already read in one call are not read again: the
walk reads every event of each node it expands, which is what drawing the graph needs too. (A recursive CTE over
all events scanned the table on every hop: ~50 ms for a 5-step lineage among 200k events, see
benchmarks/bench_metadata.py.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

INDEX_LOOKUPS = 4  # frontiers up to this size are looked up node by node (a UNION ALL of 10 joins plans slowly)


@dataclass(frozen=True)
class LineageNode:
    """A node of a lineage graph: an artifact or a step run.

    Attributes:
        kind: ``artifact`` or ``step_run``.
        id: the artifact hash or the step run id.
        label: what to show (``raw (parquet)`` or ``train [succeeded]``).
        depth: steps away from the node asked about; negative upstream, positive downstream.
        attrs: the record's fields.
    """

    kind: str
    id: str
    label: str
    depth: int
    attrs: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def key(self) -> str:
        """``kind:id``, the node's key in the graph."""
        return f"{self.kind}:{self.id}"


@dataclass
class LineageGraph:
    """The lineage around one artifact or step run: artifacts and step runs joined by input/output events.

    Attributes:
        root: key (``kind:id``) of the node asked about.
        nodes: key -> :class:`LineageNode`.
        edges: ``(source key, target key, name)``: artifact -> step run for an input, step run -> artifact for
            an output; ``name`` is the variable name.
    """

    root: str
    nodes: dict[str, LineageNode] = field(default_factory=dict)
    edges: list[tuple[str, str, str | None]] = field(default_factory=list)

    def upstream(self) -> list[LineageNode]:
        """Nodes the root was derived from, nearest first."""
        return sorted((n for n in self.nodes.values() if n.depth < 0), key=lambda n: (-n.depth, n.kind != "step_run"))

    def downstream(self) -> list[LineageNode]:
        """Nodes derived from the root, nearest first."""
        return sorted((n for n in self.nodes.values() if n.depth > 0), key=lambda n: (n.depth, n.kind != "step_run"))

    def records(self) -> list[dict]:
        """One dict per node (kind, id, label, depth), ordered from farthest upstream to farthest downstream."""
        nodes = sorted(self.nodes.values(), key=lambda n: (n.depth, n.kind, n.id))
        return [{"kind": n.kind, "id": n.id, "label": n.label, "depth": n.depth, **n.attrs} for n in nodes]

    def to_dict(self) -> dict:
        """A JSON-able dict: root, nodes and edges."""
        return {
            "root": self.root,
            "nodes": self.records(),
            "edges": [{"source": s, "target": t, "name": n} for s, t, n in self.edges],
        }

    def to_mermaid(self) -> str:
        """A top-down mermaid ``flowchart`` of the graph (artifacts as rounded boxes, step runs as boxes): deep
        lineage grows downward and stays readable at notebook width."""
        ids = {key: f"n{i}" for i, key in enumerate(sorted(self.nodes))}
        lines = ["flowchart TD"]
        for key, node in sorted(self.nodes.items()):
            label = node.label.replace('"', "'")
            shape = f'("{label}")' if node.kind == "artifact" else f'["{label}"]'
            lines.append(f"  {ids[key]}{shape}")
        for source, target, name in self.edges:
            arrow = f" -->|{name}| " if name else " --> "
            lines.append(f"  {ids[source]}{arrow}{ids[target]}")
        lines.append(f"  style {ids[self.root]} stroke-width:3px")
        return "\n".join(lines)


def _step_depth(hops: int) -> int:
    """Signed hops between nodes -> signed steps (an artifact and the step run that made it are one step)."""
    return (1 if hops > 0 else -1) * ((abs(hops) + 1) // 2)


def lookup(con, query: str, column: str, values: list[str], memo: dict | None = None) -> list[tuple]:
    """The rows of ``query`` (ending in ``WHERE {match}``) whose ``column`` is one of ``values``, value by value
    in the order given.

    Up to :data:`INDEX_LOOKUPS` values are index probes, one ``UNION ALL`` branch each, in one statement; more are
    one scan. ``memo`` keeps the rows of each ``(query, column, value)`` read so far in a call, so that a node is
    read once however often it is asked about.
    """
    if memo is None:
        memo = {}
    missing = list(dict.fromkeys(v for v in values if (query, column, v) not in memo))
    if len(missing) > INDEX_LOOKUPS:
        sql = query.format(match=f"{column} IN (SELECT unnest(?::VARCHAR[]))")
        found: dict[str, list[tuple]] = {v: [] for v in missing}
        position = _column_position(query, column)
        for row in con.execute(sql, [missing]).fetchall():
            found[row[position]].append(row)
    elif missing:
        probe = query.format(match=f"{column} = ?").replace("SELECT ", "SELECT {i} AS _branch, ", 1)
        sql = " UNION ALL ".join(probe.format(i=i) for i in range(len(missing)))
        found = {v: [] for v in missing}
        for row in con.execute(sql, missing).fetchall():
            found[missing[row[0]]].append(tuple(row[1:]))
    else:
        found = {}
    for value, rows in found.items():
        memo[(query, column, value)] = rows
    return [row for value in values for row in memo[(query, column, value)]]


def _column_position(query: str, column: str) -> int:
    """Where ``column`` is among the selected columns of ``query`` (``SELECT a, b FROM ...``)."""
    selected = query.split("SELECT ", 1)[1].split(" FROM ", 1)[0]
    return [c.strip() for c in selected.split(",")].index(column)


# every event of a node: what the walk follows and what the graph shows (names, producers, edges)
_EVENTS = "SELECT artifact, step_run_id, direction, source, name FROM events WHERE {match}"


def walk(
    con, kind: str, ident: str, max_hops: int, up: bool, producer: str | None = None, memo: dict | None = None
) -> dict[tuple[str, str], int]:
    """Nodes at most ``max_hops`` up (or down) from the root -> fewest hops to them (the root: 0).

    An edge runs artifact -> step run for an input and step run -> artifact for an output. Lineage is exact when
    step runs made equal artifacts: an input event names its *source*, the step run whose output the consumer
    loaded, so walking up from a consumer reaches that producer only, and walking down from a producer reaches
    the consumers that loaded its output. An input with no source (a variable no step made) reaches every
    producer. A ``reuse`` event (a cached step run's outputs) counts as an output only of the root. ``producer``
    pins a root artifact to the step run that made it. ``memo``: rows read so far in this call (see :func:`lookup`).
    """
    hops = {(kind, ident): 0}
    root_from, root_run = None, ident.rsplit(".", 1)[0] + "."
    if kind == "step_run":
        rows = con.execute("SELECT cached_from FROM step_runs WHERE id = ?", [ident]).fetchall()
        root_from = rows[0][0] if rows else None
    # a state is a node and, for an artifact, the one step run it is followed through (None: any)
    seen = {(kind, ident, producer)}
    frontier = [(kind, ident, producer)]
    for n in range(1, max_hops + 1):
        if not frontier:
            break
        reached: list[tuple[str, str, str | None]] = []
        artifacts: dict[str, set[str | None]] = {}
        for k, i, via in frontier:
            if k == "artifact":
                artifacts.setdefault(i, set()).add(via)
        step_runs = [i for k, i, _ in frontier if k == "step_run"]
        by_artifact: dict[str, list[tuple]] = {}
        for row in lookup(con, _EVENTS, "artifact", list(artifacts), memo):
            by_artifact.setdefault(row[0], []).append(row[:4])
        for digest, vias in artifacts.items():
            rows = by_artifact.get(digest, [])
            if up:
                made = [s for _, s, d, _ in rows if d == "out" or (d == "reuse" and s == ident)]
                for via in vias:
                    chosen = [s for s in made if s == via] if via is not None else made
                    reached += [("step_run", s, None) for s in (chosen or made)]
            else:
                for _, step_run_id, direction, source in rows:
                    if direction != "in":
                        continue
                    if source == root_from and source is not None and not step_run_id.startswith(root_run):
                        continue  # the cached root's outputs: its own run's consumers, not every run's
                    if source is None or None in vias or source in vias:
                        reached.append(("step_run", step_run_id, None))
        for digest, step_run_id, direction, source, _ in lookup(con, _EVENTS, "step_run_id", step_runs, memo):
            if up and direction == "in":
                reached.append(("artifact", digest, source))
            elif not up and (direction == "out" or (direction == "reuse" and step_run_id == ident)):
                reached.append(("artifact", digest, step_run_id))
                if direction == "reuse" and root_from:
                    reached.append(("artifact", digest, root_from))
        frontier = []
        for state in reached:
            if state not in seen:
                seen.add(state)
                frontier.append(state)
                hops.setdefault(state[:2], n)
    return hops


def lineage_graph(
    con, kind: str, ident: str, direction: str, max_hops: int, producer: str | None = None
) -> LineageGraph:
    """The graph around node ``kind:ident`` (``up``, ``down`` or ``both``, at most ``max_hops`` hops each way),
    read on the metadata store's open connection ``con``; ``producer`` pins a root artifact to the step run that
    made it."""
    found: dict[tuple[str, str], int] = {(kind, ident): 0}
    memo: dict = {}
    for name in ("up", "down") if direction == "both" else (direction,):
        sign = -1 if name == "up" else 1
        for key, hops in walk(con, kind, ident, max_hops, name == "up", producer, memo).items():
            if hops:
                found.setdefault(key, sign * hops)
    graph = LineageGraph(root=f"{kind}:{ident}")
    _fill_graph(con, graph, found, memo, producer)
    return graph


def _fill_graph(
    con, graph: LineageGraph, found: dict[tuple[str, str], int], memo: dict, producer: str | None = None
) -> None:
    hashes = [i for k, i in found if k == "artifact"]
    step_ids = [i for k, i in found if k == "step_run"]
    names: dict[str, set[str]] = {}
    producers: dict[str, set[str]] = {}
    for digest, sid, direction, _, name in lookup(con, _EVENTS, "artifact", hashes, memo):
        if name is not None:
            names.setdefault(digest, set()).add(name)
        if direction == "out":
            producers.setdefault(digest, set()).add(sid)
    shown = set(step_ids) | ({producer} if producer else set())  # the root's own producer is not "another"
    for digest, kind, size, summary in lookup(
        con, "SELECT hash, kind, size, summary FROM artifacts WHERE {match}", "hash", hashes, memo
    ):
        label = "/".join(sorted(names.get(digest, ()))) or digest[:12]
        others = len(producers.get(digest, set()) - shown)
        graph.nodes[f"artifact:{digest}"] = LineageNode(
            "artifact",
            digest,
            f"{label} ({kind})" + (f"; also produced by {others} other step run{'s' * (others > 1)}" if others else ""),
            _step_depth(found[("artifact", digest)]),
            {"artifact_kind": kind, "size": size, "summary": summary, "also_produced_by": others},
        )
    for sid, run_id, step, status in lookup(
        con, "SELECT id, run_id, step, status FROM step_runs WHERE {match}", "id", step_ids, memo
    ):
        graph.nodes[f"step_run:{sid}"] = LineageNode(
            "step_run",
            sid,
            f"{step} [{status}]",
            _step_depth(found[("step_run", sid)]),
            {"run_id": run_id, "step": step, "status": status},
        )
    for digest, sid, direction, _, name in lookup(con, _EVENTS, "step_run_id", step_ids, memo):
        a, s = f"artifact:{digest}", f"step_run:{sid}"
        if a in graph.nodes and (direction != "reuse" or s == graph.root):
            graph.edges.append((a, s, name) if direction == "in" else (s, a, name))
