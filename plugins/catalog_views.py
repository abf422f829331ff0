"""Catalog preparation: convenience views and macros available to every query."""

from __future__ import annotations

from hubindex import hookimpl


@hookimpl
def prepare_catalog(conn):  # noqa: ANN001, ANN201 - hook signature
    # TEMP objects: they live with the connection, so read-only connections get them too and
    # the catalog file itself is never changed by preparing it.
    conn.execute(
        "CREATE OR REPLACE TEMP VIEW open_failures AS "
        "SELECT * FROM failures WHERE resolved_at IS NULL"
    )
    conn.execute(
        "CREATE OR REPLACE TEMP MACRO hub_url(checkpoint_id) AS CASE "
        "WHEN starts_with(checkpoint_id, 'hf:') THEN 'https://huggingface.co/' || checkpoint_id[4:] "
        "WHEN starts_with(checkpoint_id, 'timm:') THEN 'https://huggingface.co/timm/' || checkpoint_id[6:] "
        "END"
    )
