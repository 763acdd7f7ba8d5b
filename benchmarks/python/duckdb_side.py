"""The DuckDB side of seuil-bench: times SQL in DuckDB over the Parquet files.

Reads one JSON document on standard input:

    {"data": DIR, "runs": N, "queries": [{"name": ..., "sql": ...}, ...]}

registers each ``DIR/*.parquet`` as a view named after the file stem (hidden
folders such as ``.seuil-index`` are not looked into), runs each query once to
warm up and then ``runs`` times, reading the whole result as an Arrow table,
and writes one JSON document on standard output:

    {"duckdb": VERSION, "threads": T,
     "results": [{"name", "ms", "rows"} | {"name", "error"}, ...]}

``ms`` is the best of the timed runs, from the call to the last row. DuckDB
keeps its default threads; ``/`` divides integers as DataFusion does
(``integer_division``) so that the same SQL means the same thing.
"""

import json
import sys
import time
from pathlib import Path

import duckdb


def fetch(con, sql):
    """Runs `sql` and reads the whole result as an Arrow table."""
    relation = con.sql(sql)
    if hasattr(relation, "to_arrow_table"):
        return relation.to_arrow_table()
    return relation.fetch_arrow_table()  # DuckDB before 1.4


def quote_identifier(name):
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text):
    return "'" + text.replace("'", "''") + "'"


def time_query(con, sql, runs):
    fetch(con, sql)  # warm-up
    best, rows = float("inf"), 0
    for _ in range(max(runs, 1)):
        started = time.perf_counter()
        table = fetch(con, sql)
        elapsed = (time.perf_counter() - started) * 1000.0
        best, rows = min(best, elapsed), table.num_rows
    return best, rows


def main():
    request = json.load(sys.stdin)
    data = Path(request["data"]).resolve()
    runs = int(request.get("runs", 3))
    con = duckdb.connect()
    con.execute("SET integer_division = true")
    files = sorted(data.glob("*.parquet"))
    if not files:
        raise SystemExit(f"no Parquet file in {data}")
    for path in files:
        con.execute(
            f"CREATE VIEW {quote_identifier(path.stem)} AS "
            f"SELECT * FROM read_parquet({quote_literal(str(path))})"
        )
    results = []
    for query in request["queries"]:
        name = query["name"]
        try:
            ms, rows = time_query(con, query["sql"], runs)
            results.append({"name": name, "ms": ms, "rows": rows})
        except duckdb.Error as error:
            results.append({"name": name, "error": str(error)})
    threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
    json.dump(
        {"duckdb": duckdb.__version__, "threads": int(threads), "results": results},
        sys.stdout,
    )
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
