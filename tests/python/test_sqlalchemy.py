"""SQLAlchemy through flightsql-dbapi's `datafusion+flightsql` dialect, the
way Superset connects, and flightsql-dbapi's DB-API on its own."""

import flightsql
import flightsql.sqlalchemy  # noqa: F401 (registers the `datafusion+flightsql` dialect name)
import sqlalchemy
from flightsql import FlightSQLClient
from sqlalchemy import text


def engine_for(server, prepared_statements=False):
    # `insecure=true`: plaintext gRPC (the test server listens on loopback).
    url = f"datafusion+flightsql://alice:demo@{server.host}:{server.port}?insecure=true"
    if prepared_statements:
        # Without this feature the dialect inlines parameter values when it
        # compiles a statement, before it knows them: `text()` parameters
        # become NULL. With it, values travel as Flight SQL prepared
        # statement parameters.
        url += "&feature-sqlalchemy-prepared-statements=on"
    return sqlalchemy.create_engine(url)


def test_sqlalchemy_runs_queries(server):
    engine = engine_for(server)
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT ben_sex_cod, count(*) AS persons FROM ir_ben_r GROUP BY ben_sex_cod ORDER BY ben_sex_cod")
        ).fetchall()
    assert [row[0] for row in rows] == [1, 2]
    assert all(row[1] >= 11 for row in rows)


def test_sqlalchemy_reflects_the_roles_tables(server):
    engine = engine_for(server)
    inspector = sqlalchemy.inspect(engine)
    assert "public" in inspector.get_schema_names()
    tables = inspector.get_table_names(schema="public")
    assert "ir_ben_r" in tables and "er_prs_f" in tables
    columns = {c["name"] for c in inspector.get_columns("ir_ben_r", schema="public")}
    assert {"ben_res_dpt", "ben_sex_cod"} <= columns


def test_sqlalchemy_binds_parameters_as_prepared_statements(server):
    engine = engine_for(server, prepared_statements=True)
    query = text("SELECT count(*) AS n FROM ir_ben_r WHERE ben_res_dpt = :dpt")
    with engine.connect() as conn:
        (paris,) = conn.execute(query, {"dpt": "075"}).fetchone()
        (lyon,) = conn.execute(query, {"dpt": "069"}).fetchone()
        (literal,) = conn.execute(
            text("SELECT count(*) AS n FROM ir_ben_r WHERE ben_res_dpt = '075'")
        ).fetchone()
    assert paris == literal and paris >= 11
    assert lyon != paris


def test_flightsql_dbapi_prepares_parameters(server):
    client = FlightSQLClient(host=server.host, port=server.port, user="alice", password="demo", insecure=True)
    with flightsql.connect(client) as conn:
        cursor = conn.cursor()
        cursor.execute(
            "SELECT ben_sex_cod, count(*) FROM ir_ben_r WHERE ben_nai_ann >= ? GROUP BY 1 ORDER BY 1", [1960]
        )
        rows = cursor.fetchall()
    assert [row[0] for row in rows] == [1, 2]
