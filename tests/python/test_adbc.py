"""ADBC's Flight SQL driver, as a statistician uses it from a notebook:
DB-API with and without parameters, Arrow tables, pandas, polars, catalog
browsing with adbc_get_objects, and clear refusals."""

import adbc_driver_flightsql.dbapi as flightsql
import adbc_driver_manager
import polars
import pyarrow
import pytest

BY_SEX = "SELECT ben_sex_cod, count(*) AS persons FROM ir_ben_r GROUP BY ben_sex_cod ORDER BY ben_sex_cod"


def connect(server, user="alice"):
    # Read-only, no transactions: autocommit tells the driver so.
    return flightsql.connect(server.uri, db_kwargs={"username": user, "password": "demo"}, autocommit=True)


def metadata(table: pyarrow.Table) -> dict:
    return {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}


def test_dbapi_query_returns_rows(server):
    with connect(server) as conn, conn.cursor() as cur:
        cur.execute(BY_SEX)
        rows = cur.fetchall()
        assert [row[0] for row in rows] == [1, 2]
        assert all(row[1] >= 11 for row in rows)
        assert [d[0] for d in cur.description] == ["ben_sex_cod", "persons"]


def test_dbapi_parameters_bind_with_qmark(server):
    literal = BY_SEX.replace("GROUP BY", "WHERE ben_nai_ann >= 1960 GROUP BY")
    with connect(server) as conn, conn.cursor() as cur:
        cur.execute(literal)
        expected = cur.fetchall()
        cur.execute(BY_SEX.replace("GROUP BY", "WHERE ben_nai_ann >= ? GROUP BY"), (1960,))
        assert cur.fetchall() == expected
        # Another value, same statement.
        cur.execute(BY_SEX.replace("GROUP BY", "WHERE ben_nai_ann >= ? GROUP BY"), (2030,))
        assert cur.fetchall() == []


def test_fetch_arrow_table_carries_the_release_metadata(server):
    with connect(server) as conn, conn.cursor() as cur:
        cur.execute("SELECT ben_res_dpt, count(*) AS persons FROM ir_ben_r GROUP BY ben_res_dpt")
        table = cur.fetch_arrow_table()
    assert table.num_rows > 10
    released = metadata(table)
    assert released["seuil.policy"] == "snds"
    assert released["seuil.mode"] == "threshold"
    assert released["seuil.min_persons"] == "11"
    assert int(released["seuil.cells_released"]) == table.num_rows
    # How many cells were suppressed is kept in the audit log: a count would
    # tell a cell of 0 persons from one of a few.
    assert not any("suppressed" in key for key in released)
    assert "fewer than 11 persons" in released["seuil.suppression"]


def test_pandas_and_polars(server):
    sql = "SELECT prs_nat_ref, count(*) AS claims, sum(prs_pai_mnt) AS paid FROM er_prs_f GROUP BY 1 ORDER BY 1"
    with connect(server) as conn, conn.cursor() as cur:
        cur.execute(sql)
        frame = cur.fetch_df()
        cur.execute(sql)
        table = cur.fetch_arrow_table()
    assert list(frame.columns) == ["prs_nat_ref", "claims", "paid"]
    assert (frame["claims"] > 0).all()
    frame_polars = polars.from_arrow(table)
    assert frame_polars.shape == frame.shape
    assert frame_polars["claims"].to_list() == frame["claims"].to_list()


def tables_of(objects: list) -> set:
    return {
        table["table_name"]
        for catalog in objects
        for schema in catalog["catalog_db_schemas"] or []
        if schema["db_schema_name"] == "public"
        for table in schema["db_schema_tables"] or []
    }


def test_adbc_get_objects_shows_the_roles_tables(server):
    with connect(server) as conn:
        objects = conn.adbc_get_objects(depth="all").read_all().to_pylist()
        assert [c["catalog_name"] for c in objects] == ["seuil"]
        assert tables_of(objects) == {
            "er_pha_f", "er_prs_f", "ir_ben_r", "ir_imb_r", "ref_atc", "ref_cim10", "ref_dpt", "t_mco_b", "t_mco_c",
        }
        schema = conn.adbc_get_table_schema("ir_ben_r", db_schema_filter="public")
        assert "ben_res_dpt" in schema.names
    with connect(server, "rita") as conn:
        objects = conn.adbc_get_objects(depth="all").read_all().to_pylist()
        assert tables_of(objects) == {"er_prs_f", "ir_ben_r", "ref_cim10", "ref_dpt", "t_mco_b", "t_mco_c"}
        columns = {
            column["column_name"]
            for catalog in objects
            for schema in catalog["catalog_db_schemas"]
            for table in schema["db_schema_tables"]
            if table["table_name"] == "er_prs_f"
            for column in table["table_columns"]
        }
        assert "prs_pai_mnt" in columns and "bse_rem_mnt" not in columns


def test_a_refusal_names_the_rule_and_how_to_fix_it(server):
    with connect(server) as conn, conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error) as refused:
            cur.execute("SELECT * FROM er_prs_f")
    message = str(refused.value)
    assert "refused by rule 1 (aggregates only)" in message
    assert "Hint" in message


def test_bad_password_is_refused(server):
    with pytest.raises(adbc_driver_manager.Error) as refused:
        with flightsql.connect(
            server.uri, db_kwargs={"username": "alice", "password": "nope"}, autocommit=True
        ) as conn:
            with conn.cursor() as cur:
                cur.execute(BY_SEX)
    assert "nauthenticated" in str(refused.value) or "UNAUTHENTICATED" in str(refused.value)


def test_a_dp_result_carries_its_noise_and_what_is_left_of_the_budget(server):
    with connect(server, "bob") as conn, conn.cursor() as cur:
        cur.execute(BY_SEX)
        table = cur.fetch_arrow_table()
    # Both sexes hold about 1,500 persons: far above the selection threshold.
    assert table.num_rows == 2
    released = metadata(table)
    assert released["seuil.mode"] == "dp"
    assert float(released["seuil.dp.epsilon_spent"]) == 1.0
    assert 0.0 <= float(released["seuil.dp.epsilon_left"]) < 10.0
    persons = {k.decode(): v.decode() for k, v in table.schema.field("persons").metadata.items()}
    assert persons["seuil.dp.mechanism"] == "laplace"
    # count(*): one person moves 4 cells by at most 1 row, at epsilon 1/2.
    assert float(persons["seuil.dp.scale"]) == 8.0
    assert float(persons["seuil.dp.ci95"]) > 0
