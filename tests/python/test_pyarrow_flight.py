"""Plain `pyarrow.flight`, no Flight SQL client: a Basic-auth handshake for
the bearer token, then a FlightDescriptor holding a CommandStatementQuery
packed in a protobuf Any (the message classes come from flightsql-dbapi)."""

import flightsql.flightsql_pb2 as flightsql_pb2
import pytest
from google.protobuf import any_pb2
from pyarrow import flight


def descriptor(sql: str) -> flight.FlightDescriptor:
    command = any_pb2.Any()
    command.Pack(flightsql_pb2.CommandStatementQuery(query=sql))
    return flight.FlightDescriptor.for_command(command.SerializeToString())


def test_handshake_then_query(server):
    client = flight.FlightClient(server.uri.replace("grpc://", "grpc+tcp://"))
    header = client.authenticate_basic_token("alice", "demo")
    assert header[0] == b"authorization" and header[1].startswith(b"Bearer ")
    options = flight.FlightCallOptions(headers=[header])
    info = client.get_flight_info(
        descriptor("SELECT ben_sex_cod, count(*) AS persons FROM ir_ben_r GROUP BY 1 ORDER BY 1"), options
    )
    table = client.do_get(info.endpoints[0].ticket, options).read_all()
    assert table.column_names == ["ben_sex_cod", "persons"]
    assert table.num_rows == 2
    assert table.schema.metadata[b"seuil.cells_released"] == b"2"
    client.close()


def test_calls_without_a_token_are_unauthenticated(server):
    client = flight.FlightClient(server.uri.replace("grpc://", "grpc+tcp://"))
    with pytest.raises(flight.FlightUnauthenticatedError):
        client.get_flight_info(descriptor("SELECT count(*) FROM ir_ben_r"))
    with pytest.raises(flight.FlightUnauthenticatedError):
        client.authenticate_basic_token("alice", "wrong")
    client.close()


def test_a_dp_result_and_its_metadata(server):
    client = flight.FlightClient(server.uri.replace("grpc://", "grpc+tcp://"))
    options = flight.FlightCallOptions(headers=[client.authenticate_basic_token("bob", "demo")])
    info = client.get_flight_info(
        descriptor("SELECT ben_sex_cod, count(DISTINCT ben_nir_psa) AS persons FROM ir_ben_r GROUP BY 1"),
        options,
    )
    table = client.do_get(info.endpoints[0].ticket, options).read_all()
    assert table.num_rows == 2
    assert table.schema.metadata[b"seuil.mode"] == b"dp"
    assert b"seuil.dp.charge_id" in table.schema.metadata
    field = table.schema.field("persons").metadata
    # COUNT(DISTINCT person) is the partition selection's own noisy count.
    assert field[b"seuil.dp.mechanism"] == b"laplace_threshold"
    assert float(field[b"seuil.dp.ci95"]) > 0
    client.close()
