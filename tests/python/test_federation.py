"""A local federation of real processes, as the README starts one: `seuil gen
--layout federated`, two `seuil node`s and a coordinator `seuil serve` over
them, on free loopback ports. A statistician's ADBC queries give the
coordinator's cells exactly as the single-process server's over the same data
(the `server` fixture: 3,000 persons, the demo's seed)."""

import os
import re
import subprocess
import sys
import threading

import adbc_driver_flightsql.dbapi as flightsql
import pytest

from conftest import PASSWORD, seuil_binary, wait_for_port

NODE = re.compile(r"^seuil: data node serving Arrow Flight on (grpc://[\w.\-]+:\d+)")
SERVE = re.compile(r"^seuil: serving Flight SQL on (grpc://([\w.\-]+):(\d+))")
DEMO_SEED = 2026

QUERIES = [
    "SELECT ben_res_dpt, count(*) AS persons FROM ir_ben_r GROUP BY ben_res_dpt",
    "SELECT ben_sex_cod, count(DISTINCT ben_nir_ano) AS persons FROM ir_ben_r GROUP BY 1",
    "SELECT prs_nat_ref, sum(prs_pai_mnt) AS paid, avg(bse_rem_mnt) AS reimbursed FROM er_prs_f GROUP BY 1",
    "SELECT pha_atc_cla, sum(pha_act_qsn) AS boxes FROM er_pha_f GROUP BY 1",
    "SELECT r.libelle, count(*) AS persons FROM ir_imb_r i JOIN ref_cim10 r ON substr(i.med_mtf_cod, 1, 3) = r.code GROUP BY 1",
    "SELECT b.ben_sex_cod, sum(p.prs_pai_mnt) AS paid FROM er_prs_f p JOIN ir_ben_r b ON p.ben_nir_psa = b.ben_nir_psa GROUP BY ROLLUP(b.ben_sex_cod)",
]


def start(args, pattern, env):
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=sys.stderr, text=True, env=env)
    found = {}
    ready = threading.Event()

    def read_stdout():
        for line in process.stdout:
            match = pattern.match(line)
            if match and not ready.is_set():
                found["match"] = match
                ready.set()

    threading.Thread(target=read_stdout, daemon=True).start()
    if not ready.wait(timeout=180):
        process.kill()
        pytest.fail(f"{args[1]} did not announce its address")
    return process, found["match"]


@pytest.fixture(scope="module")
def coordinator(tmp_path_factory):
    binary = seuil_binary()
    folder = tmp_path_factory.mktemp("federation")
    env = {**os.environ, "RUST_LOG": "warn"}
    subprocess.run(
        [binary, "gen", "--persons", "3000", "--seed", str(DEMO_SEED), "--out", folder / "data", "--layout", "federated"],
        check=True,
        capture_output=True,
    )
    processes = []
    urls = {}
    for name in ["cnam", "hospitals"]:
        config = folder / f"{name}.toml"
        config.write_text(
            f'[server]\nlisten = "127.0.0.1:0"\ndata = "{folder / "data" / name}"\n'
            f'audit_log = "{folder / (name + ".audit.jsonl")}"\ndemo_persons = 0\n'
        )
        process, match = start([binary, "node", "--config", str(config)], NODE, env)
        processes.append(process)
        urls[name] = match.group(1)
    password_hash = subprocess.run(
        [binary, "hash-password"], input=PASSWORD, capture_output=True, text=True, check=True
    ).stdout.strip()
    nodes = "".join(f'\n[[nodes]]\nname = "{name}"\nurl = "{url}"\n' for name, url in urls.items())
    config = folder / "coordinator.toml"
    config.write_text(
        f'[server]\nlisten = "127.0.0.1:0"\naudit_log = "{folder / "coordinator.audit.jsonl"}"\ndemo_persons = 0\n'
        f'\n[users.alice]\nrole = "researcher"\npassword_hash = "{password_hash}"\n{nodes}'
    )
    process, match = start([binary, "serve", "--config", str(config)], SERVE, env)
    processes.append(process)
    wait_for_port(match.group(2), int(match.group(3)), timeout=30)
    yield match.group(1)
    for process in processes:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def cells(uri, sql):
    with flightsql.connect(uri, db_kwargs={"username": "alice", "password": PASSWORD}, autocommit=True) as conn:
        with conn.cursor() as cur:
            cur.execute(sql)
            table = cur.fetch_arrow_table()
    metadata = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    rows = sorted(table.to_pylist(), key=repr)
    return rows, metadata


@pytest.mark.parametrize("sql", QUERIES)
def test_the_coordinator_releases_the_single_servers_cells(server, coordinator, sql):
    expected_rows, expected_metadata = cells(server.uri, sql)
    rows, metadata = cells(coordinator, sql)
    assert metadata.pop("seuil.nodes") == "cnam"
    assert metadata == expected_metadata
    assert len(rows) == len(expected_rows)
    for got, expected in zip(rows, expected_rows):
        assert got.keys() == expected.keys()
        for key in got:
            if isinstance(got[key], float):
                assert got[key] == pytest.approx(expected[key], rel=1e-9), (sql, key)
            else:
                assert got[key] == expected[key], (sql, key)


def test_a_query_over_both_nodes_persons_names_them(coordinator):
    sql = "SELECT b.dgn_pal, count(*) FROM t_mco_b b JOIN t_mco_c c ON b.eta_num = c.eta_num AND b.rsa_num = c.rsa_num GROUP BY 1"
    with flightsql.connect(coordinator, db_kwargs={"username": "alice", "password": PASSWORD}, autocommit=True) as conn:
        with conn.cursor() as cur, pytest.raises(Exception) as refused:
            cur.execute(sql)
            cur.fetchall()
    assert "cnam" in str(refused.value) and "hospitals" in str(refused.value)
