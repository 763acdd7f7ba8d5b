"""A statistician's first session with seuil, from Python.

Start the demo server in another terminal (`seuil serve`), then run

    pip install adbc-driver-flightsql pyarrow pandas
    python examples/notebook_quickstart.py

or paste the cells (the `# %%` blocks) into a notebook. Every query is plain
SQL; seuil answers with aggregated cells only, and tells, in the Arrow
schema's `seuil.*` metadata, what it released and what it held back.

Settings come from the environment: SEUIL_URI (default
grpc://127.0.0.1:50051), SEUIL_USER (alice) and SEUIL_PASSWORD (demo).
"""

# %% Connect
import os

import adbc_driver_flightsql.dbapi as flightsql
import adbc_driver_manager
import pandas as pd
import pyarrow as pa

URI = os.environ.get("SEUIL_URI", "grpc://127.0.0.1:50051")
USER = os.environ.get("SEUIL_USER", "alice")
PASSWORD = os.environ.get("SEUIL_PASSWORD", "demo")

# seuil is read-only and has no transactions: autocommit says so to the driver.
conn = flightsql.connect(URI, db_kwargs={"username": USER, "password": PASSWORD}, autocommit=True)


def run(sql: str, params=None) -> pa.Table:
    """Runs a query and returns its cells as an Arrow table."""
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetch_arrow_table()


def release_report(table: pa.Table) -> dict:
    """What seuil says about a result: the `seuil.*` schema metadata."""
    metadata = table.schema.metadata or {}
    return {
        key.decode().removeprefix("seuil."): value.decode()
        for key, value in metadata.items()
        if key.startswith(b"seuil.")
    }


def show(title: str, table: pa.Table, rows: int = 10) -> None:
    report = release_report(table)
    print(f"\n## {title}")
    print(table.to_pandas().head(rows).to_string(index=False))
    print(
        f"-> {report.get('cells_released')} cells released "
        f"(policy {report.get('policy')} {report.get('policy_version')}, {report.get('mode')} mode): "
        f"{report.get('suppression')}"
    )


# %% Who is in the data: persons by département. Small départements fall
# under the threshold and are suppressed, not rounded or shown.
persons = run(
    "SELECT ben_res_dpt AS departement, count(*) AS persons "
    "FROM ir_ben_r GROUP BY ben_res_dpt ORDER BY persons DESC"
)
show("Persons by département", persons)

# %% Claims and spending by care nature and year. A query never names the
# person: seuil counts distinct persons per cell on its own.
spending = run(
    "SELECT prs_nat_ref AS care_nature, date_part('year', exe_soi_dtd) AS year, "
    "count(*) AS claims, round(sum(prs_pai_mnt)) AS paid "
    "FROM er_prs_f GROUP BY 1, 2 ORDER BY claims DESC"
)
show("Claims by care nature and year", spending)

# %% Hospital stays by diagnosis chapter.
stays = run(
    "SELECT substr(s.dgn_pal, 1, 1) AS chapter, count(*) AS stays "
    "FROM t_mco_b s GROUP BY 1 ORDER BY stays DESC"
)
show("Stays by diagnosis chapter", stays)

# %% A parameter (`?`), as in any DB-API: persons born from a given year, by sex.
born_after = run(
    "SELECT ben_sex_cod AS sex, count(*) AS persons FROM ir_ben_r WHERE ben_nai_ann >= ? GROUP BY 1 ORDER BY 1",
    (1970,),
)
show("Persons born in 1970 or later, by sex", born_after)

# %% pandas from here on: the released cells are ordinary data frames.
frame: pd.DataFrame = spending.to_pandas()
print("\n## Share of spending by care nature (released cells only)")
shares = frame.groupby("care_nature")["paid"].sum().sort_values(ascending=False)
print((shares / shares.sum()).head(5).round(3).to_string())

# %% What a refusal looks like: row-level output never leaves, and the error
# says which rule refused and how to write the query instead.
try:
    run("SELECT ben_nai_ann, ben_res_dpt FROM ir_ben_r")
except adbc_driver_manager.Error as refusal:
    message = str(refusal)
    print("\n## A refused query")
    print(message[message.find("refused"):].splitlines()[0] if "refused" in message else message)

# %% A wider audience: users of the `public` role (bob in the demo) get
# differentially private answers. Every number is noisy, each field's
# metadata gives the noise's 95% interval, and each query spends part of
# the user's privacy budget, charged before anything is read.
DP_USER = os.environ.get("SEUIL_DP_USER", "bob")
dp_conn = flightsql.connect(URI, db_kwargs={"username": DP_USER, "password": PASSWORD}, autocommit=True)
with dp_conn.cursor() as cur:
    cur.execute(
        "SELECT floor(ben_nai_ann / 10) * 10 AS decade, count(*) AS persons "
        "FROM ir_ben_r GROUP BY 1 ORDER BY 1"
    )
    noisy = cur.fetch_arrow_table()
dp_conn.close()
field = {k.decode(): v.decode() for k, v in noisy.schema.field("persons").metadata.items()}
ci95 = float(field["seuil.dp.ci95"])
decades = noisy.to_pandas()
decades["low"] = decades["persons"] - ci95
decades["high"] = decades["persons"] + ci95
report = release_report(noisy)
print("\n## Persons by decade of birth (differential privacy)")
print(decades.to_string(index=False))
print(
    f"-> {field['seuil.dp.mechanism']} noise of scale {field['seuil.dp.scale']}, 95% within ±{ci95:g}; "
    f"spent epsilon {report.get('dp.epsilon_spent')}, epsilon left {report.get('dp.epsilon_left')}"
)

conn.close()
