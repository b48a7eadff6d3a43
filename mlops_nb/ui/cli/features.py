"""``mlops-nb features list|show|ingest|materialize|stats``: thin commands over :class:`~mlops_nb.store.features.store.FeatureStore`.

Only click is imported at module level, so ``mlops-nb --help`` stays light; errors are
:class:`~mlops_nb.exceptions.MlopsError`, which the main command group prints as one line (exit status 1).
"""

from __future__ import annotations

import json

import click

from ..format import echo_json, indented, short, table, ttl


def _store(ctx: click.Context):
    from ...project import Project

    return Project((ctx.obj or {}).get("home")).features


def _echo_result(result, as_json: bool) -> None:
    """An ingest or materialization result: one line, or JSON."""
    if as_json:
        echo_json(result.to_dict())
    else:
        click.echo(result.line())


@click.group()
def features() -> None:
    """Feature store: views, ingestion, statistics and the online table (.mlops/features.duckdb).

    Example: mlops-nb features list
    """


@features.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON records.")
@click.pass_context
def list_views(ctx: click.Context, as_json: bool) -> None:
    """List the feature views: entity, keys, features, rows, segments, time range, TTL, online keys.

    Example: mlops-nb features list --json
    """
    frame = _store(ctx).list_views()
    seconds_of = [t.total_seconds() if hasattr(t, "total_seconds") else None for t in frame["ttl"]]
    records = json.loads(frame.drop(columns="ttl").to_json(orient="records", date_format="iso"))
    for record, seconds in zip(records, seconds_of, strict=True):
        record["ttl_seconds"] = seconds
    if as_json:
        echo_json(records)
        return
    if not records:
        click.echo("No feature views yet; register one with FeatureStore().register_view(...)")
        return
    rows = [
        [
            r["view"],
            r["version"],
            r["entity"],
            r["join_keys"],
            r["features"],
            r["rows"],
            r["segments"],
            (r["last_ts"] or "-")[:19],
            ttl(r["ttl_seconds"]),
            r["online_keys"] if r["online_keys"] is not None else "-",
        ]
        for r in records
    ]
    click.echo(
        table(rows, ["VIEW", "V", "ENTITY", "KEYS", "FEATURES", "ROWS", "SEGMENTS", "LAST EVENT", "TTL", "ONLINE"])
    )


@features.command()
@click.argument("view")
@click.option("--json", "as_json", is_flag=True, help="Print the description as JSON.")
@click.pass_context
def show(ctx: click.Context, view: str, as_json: bool) -> None:
    """Show VIEW: its definition, state hash, segments and online table.

    Example: mlops-nb features show customer_stats
    """
    info = _store(ctx).describe(view)
    if as_json:
        echo_json(info)
        return
    click.echo(f"{info['name']} v{info['version']}  entity {info['entity']} ({', '.join(info['join_keys'])})")
    if info["description"]:
        click.echo(f"  {info['description']}")
    created = info["created_timestamp"] or "(ingest time)"
    click.echo(f"  timestamp {info['timestamp']}, created {created}, ttl {ttl(info['ttl_seconds'])}")
    click.echo(f"  features: {', '.join(f'{k} {v}' for k, v in info['features'].items())}")
    click.echo(f"  state {info['state_hash'][:12]}, {info['rows']} rows in {len(info['segments'])} segments")
    if info["segments"]:
        rows = [
            [
                s["seq"],
                s["rows"],
                (s["min_ts"] or "")[:19],
                (s["max_ts"] or "")[:19],
                s["ties_rows"],
                (s["ingested_at"] or "")[:19],
                s["hash"][:12],
            ]
            for s in info["segments"]
        ]
        text = table(rows, ["segment", "rows", "first event", "last event", "supersedes", "ingested", "hash"])
        click.echo(indented(text, "  "))
    online = info["online"]
    if online:
        click.echo(f"  online: {online['rows']} keys up to {online['end']}, materialized {online['materialized_at']}")
    else:
        click.echo(f"  online: not materialized (mlops-nb features materialize {view})")


@features.command()
@click.argument("view")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--allow-extra", is_flag=True, help="Ignore columns the view's schema does not have.")
@click.option("--assume-utc", is_flag=True, help="Take naive timestamps as UTC instead of refusing them.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def ingest(ctx: click.Context, view: str, file: str, allow_extra: bool, assume_utc: bool, as_json: bool) -> None:
    """Validate FILE (.parquet, .csv or .jsonl) and store it as a new segment of VIEW; nothing is written if a
    row is invalid.

    Example: mlops-nb features ingest customer_stats data/stats.parquet
    """
    result = _store(ctx).ingest(view, file, allow_extra=allow_extra, assume_utc=assume_utc)
    _echo_result(result, as_json)


@features.command()
@click.argument("view")
@click.option("--end", help="Latest event time to take (ISO 8601; default: now).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def materialize(ctx: click.Context, view: str, end: str | None, as_json: bool) -> None:
    """Upsert the latest value per key of VIEW into its online table (only newer values replace older ones).

    Example: mlops-nb features materialize customer_stats --end 2024-06-30T00:00:00Z
    """
    result = _store(ctx).materialize(view, end=end)
    _echo_result(result, as_json)


@features.command()
@click.argument("view")
@click.option("--by-segment", is_flag=True, help="The statistics kept for each segment at ingest.")
@click.option("--json", "as_json", is_flag=True, help="Print every statistic (histograms included) as JSON.")
@click.pass_context
def stats(ctx: click.Context, view: str, by_segment: bool, as_json: bool) -> None:
    """Feature statistics of VIEW: count, nulls, mean, std, min, quantiles, max, top values.

    Example: mlops-nb features stats customer_stats --json
    """
    store = _store(ctx)
    if as_json and not by_segment:
        echo_json(store.stats_dict(view))
        return
    frame = store.stats(view, by_segment=by_segment)
    if as_json:
        echo_json(json.loads(frame.to_json(orient="records")))
        return
    columns = [
        c
        for c in ["segment", "feature", "dtype", "count", "nulls", "mean", "std", "min", "p50", "max", "top"]
        if c in frame.columns
    ]
    rows = [[short(None if v != v else v) for v in record] for record in frame[columns].itertuples(index=False)]
    click.echo(table(rows, columns))
