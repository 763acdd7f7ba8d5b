//! The Flight SQL server end to end, in-process on a free port, through the
//! Rust `FlightSqlServiceClient`: queries, prepared statements, catalog and
//! server metadata, each auth failure, each error code, the limits and the
//! audit log.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod server_common;

use std::time::{Duration, Instant};

use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::sql::{
    CommandGetCrossReference, CommandGetDbSchemas, CommandGetImportedKeys, CommandGetPrimaryKeys,
    CommandGetTables, CommandGetXdbcTypeInfo, CommandStatementQuery, ProstMessageExt, SqlInfo,
};
use arrow_flight::{Action, FlightDescriptor, HandshakeRequest, IpcMessage};
use datafusion::arrow::array::{Array, AsArray, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Schema};
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use server_common::{
    BY_DEPARTEMENT, Fixture, audit_lines, channel, code, fetch, fetch_ticket, login, pretty, query,
};
use seuil_engine::User;
use seuil_flight_server::server::audit;
use tonic::Code;

/// A query whose result streams long enough to hold its slot: the released
/// cells of one aggregate, joined with themselves three times (531,441 rows).
const LONG_RESULT: &str = "WITH c AS (SELECT ben_res_dpt AS d, count(*) AS n FROM ir_ben_r GROUP BY 1) \
                           SELECT a.d, b.d, x.d, a.n + b.n + x.n FROM c a, c b, c x";

fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

fn names(batches: &[RecordBatch], column: &str) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            let array = b
                .column_by_name(column)
                .expect("column")
                .as_string::<i32>()
                .clone();
            (0..array.len())
                .map(move |i| array.value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test]
async fn a_query_streams_the_same_cells_as_the_engine_with_release_metadata() {
    let fixture = Fixture::new();
    let server = fixture.start().await;
    let mut client = login(channel(&server).await, "alice").await;

    let batches = query(&mut client, BY_DEPARTEMENT).await.unwrap();
    let engine = seuil_tests::open_engine(fixture.data.path()).await;
    let local = engine
        .query(&User::new("alice", "researcher"), BY_DEPARTEMENT)
        .await
        .unwrap();
    let expected: Vec<RecordBatch> = local.stream.try_collect().await.unwrap();
    assert_eq!(pretty(&batches), pretty(&expected));

    let metadata = batches[0].schema().metadata().clone();
    assert_eq!(metadata["seuil.policy"], "snds");
    assert_eq!(metadata["seuil.min_persons"], "11");
    assert_eq!(
        metadata["seuil.cells_released"],
        local.report.cells_released.to_string()
    );
    // How many cells were suppressed is for the audit log only: a count
    // would tell a cell of 0 persons from one of a few.
    assert!(
        metadata.keys().all(|k| !k.contains("suppressed")),
        "{metadata:?}"
    );
    assert!(metadata["seuil.suppression"].contains("fewer than 11 persons"));
    assert!(
        local.report.cells_suppressed > 0,
        "the test query should suppress cells"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_ticket_runs_its_kept_check_once_and_only_for_its_user() {
    let fixture = Fixture::new();
    let server = fixture.start().await;
    let mut alice = login(channel(&server).await, "alice").await;
    let expected = pretty(&query(&mut alice, BY_DEPARTEMENT).await.unwrap());

    // The first DoGet runs the check GetFlightInfo kept; a second one of the
    // same ticket (a client's retry) plans the query again, same cells.
    let info = alice.execute(BY_DEPARTEMENT.into(), None).await.unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    for _ in 0..2 {
        let batches = fetch_ticket(&mut alice, ticket.clone()).await.unwrap();
        assert_eq!(pretty(&batches), expected);
    }

    // Another user holding alice's ticket gets what their own query gets:
    // alice's check is not theirs.
    let info = alice.execute(BY_DEPARTEMENT.into(), None).await.unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let mut bob = login(channel(&server).await, "bob").await;
    let own = query(&mut bob, BY_DEPARTEMENT).await;
    let borrowed = fetch_ticket(&mut bob, ticket.clone()).await;
    match (own, borrowed) {
        (Err(own), Err(borrowed)) => {
            assert_eq!(code(&own), code(&borrowed));
            assert_eq!(own.to_string(), borrowed.to_string());
        }
        (Ok(own), Ok(borrowed)) => {
            // bob's dp cells (noisy, and few of them at this size) are not
            // alice's.
            let mode = |b: &[RecordBatch]| {
                b.first()
                    .map(|b| b.schema().metadata()["seuil.mode"].clone())
            };
            assert_eq!(mode(&own), mode(&borrowed));
            assert_ne!(mode(&borrowed).as_deref(), Some("threshold"));
            assert_ne!(pretty(&borrowed), expected);
        }
        (own, borrowed) => panic!("bob's own query: {own:?}; with alice's ticket: {borrowed:?}"),
    }
    // Bob's attempt did not take alice's kept check: her ticket still runs.
    let batches = fetch_ticket(&mut alice, ticket).await.unwrap();
    assert_eq!(pretty(&batches), expected);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_prepared_statement_binds_a_parameter() {
    let fixture = Fixture::new();
    let server = fixture.start().await;
    let mut client = login(channel(&server).await, "alice").await;

    let literal = query(
        &mut client,
        "SELECT ben_sex_cod, count(*) AS n FROM ir_ben_r WHERE ben_nai_ann >= 1960 GROUP BY 1 ORDER BY 1",
    )
    .await
    .unwrap();
    for placeholder in ["$1", "?"] {
        let sql = format!(
            "SELECT ben_sex_cod, count(*) AS n FROM ir_ben_r WHERE ben_nai_ann >= {placeholder} GROUP BY 1 ORDER BY 1"
        );
        let mut statement = client.prepare(sql, None).await.unwrap();
        let parameters = statement.parameter_schema().unwrap().clone();
        assert_eq!(parameters.fields().len(), 1);
        let dataset = statement.dataset_schema().unwrap().clone();
        assert_eq!(dataset.field(1).name(), "n");
        assert_eq!(dataset.metadata()["seuil.mode"], "threshold");
        // The client sends an Int64; the server casts it to the column's type.
        let binding = RecordBatch::try_from_iter(vec![(
            "0",
            std::sync::Arc::new(Int64Array::from(vec![1960])) as _,
        )])
        .unwrap();
        statement.set_parameters(binding).unwrap();
        let info = statement.execute().await.unwrap();
        let batches = fetch(&mut client, info).await.unwrap();
        assert_eq!(pretty(&batches), pretty(&literal), "{placeholder}");
        statement.close().await.unwrap();
    }

    // Without its parameter bound, a prepared query does not run.
    let mut unbound = client
        .prepare(
            "SELECT count(*) FROM ir_ben_r WHERE ben_nai_ann >= $1".into(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        code(&unbound.execute().await.unwrap_err()),
        Code::InvalidArgument
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn each_auth_failure_is_unauthenticated() {
    let mut fixture = Fixture::new();
    let server = fixture.start().await;
    let channel = channel(&server).await;

    // No token.
    let mut anonymous = arrow_flight::sql::client::FlightSqlServiceClient::new(channel.clone());
    let error = anonymous
        .execute(BY_DEPARTEMENT.into(), None)
        .await
        .unwrap_err();
    assert_eq!(code(&error), Code::Unauthenticated);
    assert_eq!(
        code(&anonymous.get_catalogs().await.unwrap_err()),
        Code::Unauthenticated
    );

    // Garbage token.
    let mut forger = arrow_flight::sql::client::FlightSqlServiceClient::new(channel.clone());
    forger.set_token("0".repeat(64));
    assert_eq!(
        code(
            &forger
                .execute(BY_DEPARTEMENT.into(), None)
                .await
                .unwrap_err()
        ),
        Code::Unauthenticated
    );

    // Bad password, unknown user, malformed header: the raw handshake, to see the code.
    let mut raw = FlightServiceClient::new(channel.clone());
    for credentials in ["alice:wrong", "mallory:demo", "no-colon"] {
        let mut request = tonic::Request::new(futures::stream::iter([HandshakeRequest::default()]));
        let basic = format!(
            "Basic {}",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, credentials)
        );
        request
            .metadata_mut()
            .insert("authorization", basic.parse().unwrap());
        let status = raw.handshake(request).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{credentials}");
    }
    let status = raw
        .handshake(tonic::Request::new(futures::stream::iter([
            HandshakeRequest::default(),
        ])))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    server.shutdown().await.unwrap();

    // Expired token: a server whose tokens live zero seconds.
    fixture.config.server.token_lifetime_seconds = 0;
    let server = fixture.start().await;
    let mut client = login(self::channel(&server).await, "alice").await;
    let error = client
        .execute(BY_DEPARTEMENT.into(), None)
        .await
        .unwrap_err();
    assert_eq!(code(&error), Code::Unauthenticated);
    assert!(error.to_string().contains("expired"), "{error}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn each_error_has_its_code_and_a_clear_message() {
    let mut fixture = Fixture::new();
    fixture.config.limits.max_sql_bytes = 1_000;
    let server = fixture.start().await;
    let mut client = login(channel(&server).await, "alice").await;

    let refused = query(&mut client, "SELECT ben_nai_ann FROM ir_ben_r")
        .await
        .unwrap_err();
    assert_eq!(code(&refused), Code::PermissionDenied);
    let message = refused.to_string();
    assert!(
        message.contains("refused by rule 1 (aggregates only)"),
        "{message}"
    );
    assert!(message.contains("Hint"), "{message}");

    let malformed = query(&mut client, "SELEC count(*) FROM ir_ben_r")
        .await
        .unwrap_err();
    assert_eq!(code(&malformed), Code::InvalidArgument);

    let unknown = query(&mut client, "SELECT count(*) FROM nowhere")
        .await
        .unwrap_err();
    assert_eq!(code(&unknown), Code::InvalidArgument);

    let long = format!(
        "SELECT count(*) FROM ir_ben_r WHERE ben_nai_ann > 0 {}",
        " ".repeat(1_000)
    );
    let too_long = query(&mut client, &long).await.unwrap_err();
    assert_eq!(code(&too_long), Code::ResourceExhausted);

    let writes = query(&mut client, "DELETE FROM ir_ben_r")
        .await
        .unwrap_err();
    assert_eq!(code(&writes), Code::PermissionDenied);

    // bob's role is in dp mode: what has no noise mechanism yet is refused.
    let mut bob = login(channel(&server).await, "bob").await;
    let rollup = query(
        &mut bob,
        "SELECT ben_sex_cod, count(*) FROM ir_ben_r GROUP BY ROLLUP (ben_sex_cod)",
    )
    .await
    .unwrap_err();
    assert_eq!(code(&rollup), Code::PermissionDenied);
    assert!(
        rollup.to_string().contains("differential privacy"),
        "{rollup}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_dp_user_gets_noisy_cells_until_the_budget_is_spent_even_after_a_restart() {
    let fixture = Fixture::new();
    let by_sex = "SELECT ben_sex_cod, count(*) AS persons FROM ir_ben_r GROUP BY 1";
    {
        let server = fixture.start().await;
        let mut bob = login(channel(&server).await, "bob").await;
        // A prepared statement tells the cost before anything runs.
        let statement = bob.prepare(by_sex.into(), None).await.unwrap();
        let schema = statement.dataset_schema().unwrap().clone();
        assert_eq!(schema.metadata()["seuil.mode"], "dp");
        assert_eq!(schema.metadata()["seuil.dp.epsilon"], "1");
        assert_eq!(schema.field(1).metadata()["seuil.dp.mechanism"], "laplace");
        statement.close().await.unwrap();
        let batches = query(&mut bob, by_sex).await.unwrap();
        let metadata = batches[0].schema().metadata().clone();
        assert_eq!(metadata["seuil.dp.epsilon_spent"], "1");
        assert_eq!(metadata["seuil.dp.epsilon_left"], "9");
        let field = batches[0].schema().field(1).metadata().clone();
        assert_eq!(field["seuil.dp.mechanism"], "laplace");
        assert!(field.contains_key("seuil.dp.scale") && field.contains_key("seuil.dp.ci95"));
        for _ in 1..10 {
            query(&mut bob, by_sex).await.unwrap();
        }
        let spent = query(&mut bob, by_sex).await.unwrap_err();
        assert_eq!(code(&spent), Code::PermissionDenied);
        assert!(
            spent.to_string().contains("privacy budget is spent"),
            "{spent}"
        );
        server.shutdown().await.unwrap();
    }
    let server = fixture.start().await;
    let mut bob = login(channel(&server).await, "bob").await;
    let spent = query(&mut bob, by_sex).await.unwrap_err();
    assert_eq!(code(&spent), Code::PermissionDenied);
    // Every released answer was charged, and the audit holds each charge.
    let charges: Vec<_> = audit_lines(&fixture.audit_log())
        .into_iter()
        .filter(|line| line["outcome"] == "ok" && line["user"] == "bob")
        .map(|line| line["budget"]["micro_epsilon"].as_i64().unwrap())
        .collect();
    assert_eq!(charges, vec![1_000_000; 10]);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_query_past_its_deadline_is_stopped() {
    let mut fixture = Fixture::new();
    fixture.config.limits.query_timeout_seconds = 0;
    let server = fixture.start().await;
    let mut client = login(channel(&server).await, "alice").await;
    let error = query(&mut client, BY_DEPARTEMENT).await.unwrap_err();
    assert_eq!(code(&error), Code::ResourceExhausted);
    assert!(
        error.to_string().contains("longer than 0 seconds"),
        "{error}"
    );
    server.shutdown().await.unwrap();
}

/// Waits, boundedly, until `alice` may start a query again.
async fn until_a_slot_is_free(
    client: &mut arrow_flight::sql::client::FlightSqlServiceClient<tonic::transport::Channel>,
) {
    let started = Instant::now();
    loop {
        match query(client, BY_DEPARTEMENT).await {
            Ok(_) => return,
            Err(error)
                if code(&error) == Code::ResourceExhausted
                    && started.elapsed() < Duration::from_secs(20) =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("the slot was not freed: {error}"),
        }
    }
}

#[tokio::test]
async fn concurrent_queries_are_capped_per_user_and_a_dropped_stream_frees_its_slot() {
    let mut fixture = Fixture::new();
    fixture.config.limits.max_concurrent_queries_per_user = 1;
    // No queue: a query beyond the slot is refused at once.
    fixture.config.limits.max_queued_queries_per_user = 0;
    let server = fixture.start().await;
    let mut client = login(channel(&server).await, "alice").await;

    // Hold the one slot: read one batch of a long result and stop reading.
    let info = client.execute(LONG_RESULT.into(), None).await.unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let mut held = client.do_get(ticket).await.unwrap();
    let first = held.next().await.expect("a first batch").unwrap();
    assert!(first.num_rows() > 0);

    let busy = query(&mut client, BY_DEPARTEMENT).await.unwrap_err();
    assert_eq!(code(&busy), Code::ResourceExhausted);
    assert!(busy.to_string().contains("queries at once"), "{busy}");

    // Another user is not affected.
    let mut carol = login(channel(&server).await, "carol").await;
    query(&mut carol, BY_DEPARTEMENT).await.unwrap();

    // The client goes away mid-stream: its query is cancelled and the slot freed.
    drop(held);
    until_a_slot_is_free(&mut client).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn catalog_calls_show_the_roles_scope_only() {
    let fixture = Fixture::new();
    let server = fixture.start().await;
    let channel = channel(&server).await;

    let tables_of = |include_schema| CommandGetTables {
        catalog: None,
        db_schema_filter_pattern: Some("public".into()),
        table_name_filter_pattern: None,
        table_types: vec![],
        include_schema,
    };
    let mut alice = login(channel.clone(), "alice").await;
    let info = alice.get_tables(tables_of(false)).await.unwrap();
    let tables = names(&fetch(&mut alice, info).await.unwrap(), "table_name");
    assert_eq!(
        tables,
        [
            "er_pha_f",
            "er_prs_f",
            "ir_ben_r",
            "ir_imb_r",
            "ref_atc",
            "ref_cim10",
            "ref_dpt",
            "t_mco_b",
            "t_mco_c"
        ]
    );

    let mut rita = login(channel.clone(), "rita").await;
    let info = rita.get_tables(tables_of(true)).await.unwrap();
    let batches = fetch(&mut rita, info).await.unwrap();
    let tables = names(&batches, "table_name");
    assert_eq!(
        tables,
        [
            "er_prs_f",
            "ir_ben_r",
            "ref_cim10",
            "ref_dpt",
            "t_mco_b",
            "t_mco_c"
        ]
    );
    let schemas = batches[0]
        .column_by_name("table_schema")
        .unwrap()
        .as_binary::<i32>()
        .clone();
    let er_prs_f = Schema::try_from(IpcMessage(schemas.value(0).to_vec().into())).unwrap();
    assert!(er_prs_f.field_with_name("prs_pai_mnt").is_ok());
    assert!(
        er_prs_f.field_with_name("bse_rem_mnt").is_err(),
        "a column outside the scope is listed"
    );

    let info = alice.get_catalogs().await.unwrap();
    assert_eq!(
        names(&fetch(&mut alice, info).await.unwrap(), "catalog_name"),
        ["seuil"]
    );
    let info = alice
        .get_db_schemas(CommandGetDbSchemas {
            catalog: None,
            db_schema_filter_pattern: None,
        })
        .await
        .unwrap();
    assert_eq!(
        names(&fetch(&mut alice, info).await.unwrap(), "db_schema_name"),
        ["information_schema", "public"]
    );
    let info = alice.get_table_types().await.unwrap();
    assert_eq!(
        names(&fetch(&mut alice, info).await.unwrap(), "table_type"),
        ["TABLE", "VIEW"]
    );

    // information_schema answers within the scope too.
    let batches = query(
        &mut rita,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1",
    )
    .await
    .unwrap();
    assert_eq!(names(&batches, "table_name").len(), 6);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn server_metadata_keys_schemas_and_session_actions_answer() {
    let fixture = Fixture::new();
    let server = fixture.start().await;
    let channel = channel(&server).await;
    let mut client = login(channel.clone(), "alice").await;

    let info = client
        .get_sql_info(vec![
            SqlInfo::FlightSqlServerName,
            SqlInfo::FlightSqlServerReadOnly,
            SqlInfo::SqlIdentifierQuoteChar,
            SqlInfo::SqlTransactionsSupported,
            SqlInfo::SqlKeywords,
        ])
        .await
        .unwrap();
    let batches = fetch(&mut client, info).await.unwrap();
    assert_eq!(rows(&batches), 5);

    let info = client
        .get_xdbc_type_info(CommandGetXdbcTypeInfo { data_type: None })
        .await
        .unwrap();
    assert!(fetch(&mut client, info).await.unwrap()[0].num_rows() >= 10);

    let table = |name: &str| (None, Some("public".to_string()), name.to_string());
    let (catalog, db_schema, name) = table("ir_ben_r");
    let info = client
        .get_primary_keys(CommandGetPrimaryKeys {
            catalog,
            db_schema,
            table: name,
        })
        .await
        .unwrap();
    assert_eq!(rows(&fetch(&mut client, info).await.unwrap()), 0);
    let (catalog, db_schema, name) = table("er_prs_f");
    let info = client
        .get_imported_keys(CommandGetImportedKeys {
            catalog,
            db_schema,
            table: name,
        })
        .await
        .unwrap();
    assert_eq!(rows(&fetch(&mut client, info).await.unwrap()), 0);
    let info = client
        .get_cross_reference(CommandGetCrossReference {
            pk_catalog: None,
            pk_db_schema: None,
            pk_table: "ir_ben_r".into(),
            fk_catalog: None,
            fk_db_schema: None,
            fk_table: "er_prs_f".into(),
        })
        .await
        .unwrap();
    assert_eq!(rows(&fetch(&mut client, info).await.unwrap()), 0);

    // GetSchema of a query, without running it.
    let mut raw = FlightServiceClient::new(channel.clone());
    let command = CommandStatementQuery {
        query: BY_DEPARTEMENT.into(),
        transaction_id: None,
    };
    let mut request =
        tonic::Request::new(FlightDescriptor::new_cmd(command.as_any().encode_to_vec()));
    let token = client.token().unwrap().clone();
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let schema = raw.get_schema(request).await.unwrap().into_inner();
    let schema = Schema::try_from(IpcMessage(schema.schema)).unwrap();
    assert_eq!(schema.field(2).name(), "persons");
    assert_eq!(schema.field(2).data_type(), &DataType::Int64);

    // The session actions clients send on close.
    for action in ["CloseSession", "GetSessionOptions"] {
        let results: Vec<_> = client
            .do_action(Action::new(action, Vec::new()))
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(results.len(), 1, "{action}");
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn writes_ingest_and_substrait_plans_are_refused_and_audited() {
    use arrow_flight::sql::{
        CommandStatementIngest, CommandStatementSubstraitPlan, ProstMessageExt, SubstraitPlan,
    };
    use datafusion::arrow::datatypes::Field;

    let fixture = Fixture::new();
    let server = fixture.start().await;
    let mut client = login(channel(&server).await, "alice").await;

    let write = client
        .execute_update("DELETE FROM ir_ben_r".to_string(), None)
        .await
        .unwrap_err();
    assert!(
        write.to_string().contains("rule") || write.to_string().contains("queries only"),
        "{write}"
    );
    let schema = std::sync::Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
    let batch =
        RecordBatch::try_new(schema, vec![std::sync::Arc::new(Int64Array::from(vec![1]))]).unwrap();
    let ingest = CommandStatementIngest {
        table: "ir_ben_r".to_string(),
        ..Default::default()
    };
    let ingested = client
        .execute_ingest(ingest, futures::stream::iter([Ok(batch)]))
        .await
        .unwrap_err();
    assert!(ingested.to_string().contains("read-only"), "{ingested}");
    let substrait = CommandStatementSubstraitPlan {
        plan: Some(SubstraitPlan {
            plan: vec![0u8; 16].into(),
            version: "0.1".to_string(),
        }),
        transaction_id: None,
    };
    let descriptor = FlightDescriptor::new_cmd(substrait.as_any().encode_to_vec());
    let mut request = tonic::Request::new(descriptor);
    let bearer = format!("Bearer {}", client.token().unwrap());
    request
        .metadata_mut()
        .insert("authorization", bearer.parse().unwrap());
    let planned = client
        .inner_mut()
        .get_flight_info(request)
        .await
        .unwrap_err();
    assert_eq!(planned.code(), Code::Unimplemented);
    server.shutdown().await.unwrap();

    let lines = audit_lines(&fixture.audit_log());
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0]["outcome"], "refused");
    assert_eq!(lines[0]["rule"], "read_only");
    assert_eq!(lines[0]["sql"], "DELETE FROM ir_ben_r");
    assert_eq!(lines[1]["outcome"], "refused");
    assert_eq!(lines[1]["rule"], "read_only");
    assert!(
        lines[1]["sql"].as_str().unwrap().contains("ingest"),
        "{}",
        lines[1]
    );
    assert_eq!(lines[2]["outcome"], "error");
    assert_eq!(lines[2]["error"], "invalid_query");
    assert!(
        lines[2]["sql"].as_str().unwrap().contains("Substrait"),
        "{}",
        lines[2]
    );
    let key = audit::AuditKey::load(&fixture.audit_key()).unwrap();
    let verified = audit::verify_file(&fixture.audit_log(), &key, None)
        .unwrap()
        .unwrap();
    assert_eq!(verified.entries, 3);
}

#[tokio::test]
async fn every_query_is_audited_in_a_verified_chain() {
    let fixture = Fixture::new();
    let server = fixture.start().await;
    let mut client = login(channel(&server).await, "alice").await;

    query(&mut client, BY_DEPARTEMENT).await.unwrap();
    query(&mut client, "SELECT ben_nai_ann FROM ir_ben_r")
        .await
        .unwrap_err();
    query(&mut client, "SELEC 1").await.unwrap_err();
    server.shutdown().await.unwrap();

    let lines = audit_lines(&fixture.audit_log());
    assert_eq!(lines.len(), 4);
    // A query that runs has two lines: when it starts, before the engine
    // runs it, and when it ends.
    let started = &lines[0];
    assert_eq!(started["outcome"], "started");
    assert_eq!(started["sql"], BY_DEPARTEMENT);
    assert_eq!(started["prev"], audit::GENESIS);
    let ok = &lines[1];
    assert_eq!(ok["query_id"], started["query_id"]);
    assert_eq!(ok["query_id"].as_str().unwrap().len(), 32);
    assert_eq!(ok["user"], "alice");
    assert_eq!(ok["role"], "researcher");
    assert_eq!(ok["sql"], BY_DEPARTEMENT);
    assert_eq!(ok["outcome"], "ok");
    assert_eq!(ok["plan_sha256"].as_str().unwrap().len(), 64);
    assert!(ok["cells_released"].as_u64().unwrap() > 0);
    assert!(ok["suppressed"]["persons"].as_u64().unwrap() > 0);
    assert!(ok["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(ok["prev"], started["hash"]);
    // Queries refused when checked never start.
    let refused = &lines[2];
    assert_eq!(refused["outcome"], "refused");
    assert_eq!(refused["rule"], "aggregates_only");
    assert_eq!(refused["prev"], ok["hash"]);
    assert_eq!(lines[3]["outcome"], "error");
    assert_eq!(lines[3]["error"], "invalid_query");

    let key = audit::AuditKey::load(&fixture.audit_key()).unwrap();
    let verified = audit::verify_file(&fixture.audit_log(), &key, None)
        .unwrap()
        .unwrap();
    assert_eq!(verified.entries, 4);
    let kept = std::fs::read_to_string(audit::AuditLog::head_path(&fixture.audit_log())).unwrap();
    assert_eq!(kept.trim(), verified.head);

    // A restarted server continues the chain.
    let server = fixture.start().await;
    let mut client = login(channel(&server).await, "alice").await;
    query(&mut client, BY_DEPARTEMENT).await.unwrap();
    server.shutdown().await.unwrap();
    let verified = audit::verify_file(&fixture.audit_log(), &key, Some(kept.trim()))
        .unwrap()
        .unwrap();
    assert_eq!(verified.entries, 6);
}
