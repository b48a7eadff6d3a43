"""The stores: artifacts (content-addressed files), metadata and lineage (DuckDB), the feature store (DuckDB and
Parquet). Each takes explicit paths; :class:`~mlops_nb.project.Project` knows where a project keeps them."""
