//! The Flight SQL service: turns each Flight SQL request into engine calls,
//! and engine results into Flight responses.
//!
//! A query goes through two calls. `GetFlightInfo` checks it (the engine
//! plans and rewrites it without running it, in a query slot and under the
//! query's deadline) and answers a ticket; `DoGet` runs it: waits for one of
//! the user's query slots, writes the audit line of its start, runs the
//! engine under the query's deadline, writes the line of its end, and only
//! then streams the released cells, batch by batch. Both lines are synced
//! to disk: a query that crashes the server leaves the first. Refused and
//! failed queries are audited where they fail.
//!
//! Callers are authenticated before they get here (see [`super::gateway`]);
//! each handler reads the caller's [`Session`] from the request.

use std::pin::Pin;
use std::sync::Arc;

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::{SqlInfoData, XdbcTypeInfoData};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, ActionCreatePreparedSubstraitPlanRequest, Any, Command,
    CommandGetCatalogs, CommandGetCrossReference, CommandGetDbSchemas, CommandGetExportedKeys,
    CommandGetImportedKeys, CommandGetPrimaryKeys, CommandGetSqlInfo, CommandGetTableTypes,
    CommandGetTables, CommandGetXdbcTypeInfo, CommandPreparedStatementQuery,
    CommandStatementIngest, CommandStatementQuery, CommandStatementSubstraitPlan,
    CommandStatementUpdate, DoPutPreparedStatementResult, ProstMessageExt, SqlInfo,
    TicketStatementQuery,
};
use arrow_flight::{
    Action, ActionType, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest,
    HandshakeResponse, IpcMessage, SchemaAsIpc, Ticket,
};
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::scalar::ScalarValue;
use futures::{Stream, TryStreamExt};
use prost::Message;
use prost::bytes::Bytes;
use seuil_engine::{CheckedQuery, Engine, EngineError, ErrorKind, QueryResult, Rule};
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use super::audit::{AuditLog, AuditRecord, Outcome};
use super::auth::{AUTHORIZATION, Authenticator, Session};
use super::kept::{KeptChecks, ticket_content};
use super::limits::{Deadline, LimitedStream, QuerySlots};
use super::params::{bind, number_question_marks};
use super::prepared::{Statement, Statements};
use super::{metadata, session, status};
use crate::config::Limits;
use crate::server::status::ServerError;

type DoGetStream = <SeuilFlightSql as FlightService>::DoGetStream;
type DoActionStream = <SeuilFlightSql as FlightService>::DoActionStream;
type HandshakeStream = Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>;

/// The Flight SQL service of seuil.
pub struct SeuilFlightSql {
    engine: Engine,
    auth: Authenticator,
    audit: AuditLog,
    slots: QuerySlots,
    statements: Statements,
    kept: KeptChecks,
    sql_info: Arc<SqlInfoData>,
    xdbc: Arc<XdbcTypeInfoData>,
    query_timeout_seconds: u64,
}

impl std::fmt::Debug for SeuilFlightSql {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeuilFlightSql")
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

/// The authenticated caller of a request, put there by the gateway. Missing
/// means the request did not pass the gateway: refuse rather than serve.
fn caller<T>(request: &Request<T>) -> Result<Session, Status> {
    request
        .extensions()
        .get::<Session>()
        .cloned()
        .ok_or_else(|| {
            Status::from(ServerError::Unauthenticated(
                "authentication required".into(),
            ))
        })
}

/// A schema in the IPC form that Flight messages carry.
pub(crate) fn schema_bytes(schema: &Schema) -> Result<Bytes, Status> {
    let options = IpcWriteOptions::default();
    IpcMessage::try_from(SchemaAsIpc::new(schema, &options))
        .map(|IpcMessage(bytes)| bytes)
        .map_err(|e| status::internal("encoding a schema", e))
}

/// A one-batch answer (catalog and metadata calls).
fn one_batch(batch: RecordBatch) -> DoGetStream {
    let schema = batch.schema();
    let stream = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(futures::stream::iter([Ok(batch)]))
        .map_err(status::from_flight);
    Box::pin(stream)
}

/// A `FlightInfo` whose one endpoint's ticket is `command` itself.
fn info_for(
    command: Any,
    schema: Option<&Schema>,
    descriptor: FlightDescriptor,
) -> Result<FlightInfo, Status> {
    let ticket = Ticket::new(command.encode_to_vec());
    let mut info = FlightInfo::new()
        .with_endpoint(FlightEndpoint::new().with_ticket(ticket))
        .with_descriptor(descriptor);
    if let Some(schema) = schema {
        info = info
            .try_with_schema(schema)
            .map_err(|e| status::internal("encoding a schema", e))?;
    }
    Ok(info)
}

/// The `FlightInfo` of a catalog or metadata command, for an authenticated
/// caller: its ticket is the command itself, its schema known up front.
fn metadata_info(
    command: Any,
    schema: &Schema,
    request: Request<FlightDescriptor>,
) -> Result<Response<FlightInfo>, Status> {
    caller(&request)?;
    Ok(Response::new(info_for(
        command,
        Some(schema),
        request.into_inner(),
    )?))
}

/// An empty answer, for an authenticated caller: seuil declares no primary
/// or foreign keys, and clients want an empty table rather than an error.
fn empty_answer<T>(
    request: &Request<T>,
    schema: SchemaRef,
) -> Result<Response<DoGetStream>, Status> {
    caller(request)?;
    Ok(Response::new(one_batch(RecordBatch::new_empty(schema))))
}

fn arrow_status<E: std::fmt::Display>(context: &str) -> impl Fn(E) -> Status + '_ {
    move |e| status::internal(context, e)
}

impl SeuilFlightSql {
    /// The service over an engine, with its authenticator, audit log and
    /// limits.
    pub fn new(
        engine: Engine,
        auth: Authenticator,
        audit: AuditLog,
        limits: &Limits,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            engine: engine.with_audit(Arc::new(audit.clone())),
            auth,
            audit,
            slots: QuerySlots::new(
                limits.max_concurrent_queries_per_user,
                limits.max_concurrent_queries,
                limits.max_queued_queries_per_user,
                std::time::Duration::from_secs(limits.queue_wait_seconds),
            ),
            statements: Statements::default(),
            kept: KeptChecks::default(),
            sql_info: Arc::new(metadata::sql_info(limits.max_sql_bytes)?),
            xdbc: Arc::new(metadata::xdbc_type_info()?),
            query_timeout_seconds: limits.query_timeout_seconds,
        })
    }

    /// Appends the audit line of a request the engine does not see (one
    /// refused before it reaches the engine); a log that cannot be written
    /// answers with that failure instead.
    async fn audit(&self, record: AuditRecord, answer: Status) -> Status {
        match self.audit.append_async(record).await {
            Ok(_) => answer,
            Err(e) => status::from_engine(&EngineError::Audit(e.to_string())),
        }
    }

    /// Audits a request refused before it reaches the engine, and answers
    /// its status.
    async fn refused(&self, record: AuditRecord, error: &EngineError) -> Status {
        self.audit(record.failed(error), status::from_engine(error))
            .await
    }

    /// Checks a query without running it: its result and parameter schemas,
    /// and its rewrite, which [`KeptChecks`] can keep for the run. The check
    /// plans the query, so it takes a slot and has a deadline too; the
    /// engine audits a failed check.
    async fn check(&self, session: &Session, sql: &str) -> Result<CheckedQuery, Status> {
        let user = &session.user;
        let _slot = match self.slots.acquire(&user.name).await {
            Ok(slot) => slot,
            Err(busy) => {
                let record = AuditRecord::new(&user.name, &user.role, sql, Outcome::Error);
                return Err(self.busy(record, busy).await);
            }
        };
        let deadline = Deadline::after(self.query_timeout_seconds);
        let engine_sql = number_question_marks(sql);
        self.engine
            .check_before(user, &engine_sql, Some(deadline))
            .await
            .map_err(|error| status::from_engine(&error))
    }

    /// Audits a Substrait plan of `bytes` bytes, which seuil does not take,
    /// and answers its status.
    async fn substrait_refused(&self, session: &Session, bytes: usize) -> Status {
        let user = &session.user;
        // No SQL: the line says what was asked.
        let asked = format!("-- Substrait plan of {bytes} bytes");
        let mut record = AuditRecord::new(&user.name, &user.role, &asked, Outcome::Error);
        record.error = Some(ErrorKind::InvalidQuery);
        let answer = Status::from(ServerError::Unsupported(
            "seuil takes SQL text, not Substrait plans".into(),
        ));
        record.message = Some(answer.message().to_string());
        self.audit(record, answer).await
    }

    /// Audits a query refused for want of a slot, and answers its status.
    async fn busy(&self, mut record: AuditRecord, busy: Status) -> Status {
        record.outcome = Outcome::Error;
        record.error = Some(ErrorKind::Limit);
        record.message = Some(busy.message().to_string());
        self.audit(record, busy).await
    }

    /// Runs a query and streams its released cells: slot, deadline, the
    /// engine (which audits the query's start and end), then the stream.
    /// `kept` is the query's check if it is still kept: the engine then
    /// runs it without planning it again.
    async fn run(
        &self,
        session: &Session,
        sql: &str,
        params: Vec<ScalarValue>,
        kept: Option<CheckedQuery>,
    ) -> Result<Response<DoGetStream>, Status> {
        let user = &session.user;
        let slot = match self.slots.acquire(&user.name).await {
            Ok(slot) => slot,
            Err(busy) => {
                let record = AuditRecord::started(&user.name, &user.role, sql, &params);
                return Err(self.busy(record.next(Outcome::Error), busy).await);
            }
        };
        let deadline = Deadline::after(self.query_timeout_seconds);
        let result = match kept {
            Some(check) => self.engine.run_checked_before(check, Some(deadline)).await,
            None => {
                let engine_sql = number_question_marks(sql);
                self.engine
                    .query_before(user, &engine_sql, params, Some(deadline))
                    .await
            }
        };
        let QueryResult {
            schema,
            stream,
            report,
            timings,
            ..
        } = result.map_err(|error| status::from_engine(&error))?;
        tracing::info!(
            user = %user.name,
            released = report.cells_released,
            suppressed = report.cells_suppressed,
            planning_ms = timings.planning.as_millis(),
            cells_ms = timings.computing_cells.as_millis(),
            release_rules_ms = timings.release_rules.as_millis(),
            "query released"
        );
        let batches = stream.map_err(|e| FlightError::Tonic(Box::new(status::from_stream(&e))));
        let encoded = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches)
            .map_err(status::from_flight);
        let limited: DoGetStream = Box::pin(LimitedStream::new(Box::pin(encoded), deadline, slot));
        Ok(Response::new(limited))
    }

    /// The schema a `GetSchema` call asks about.
    pub(crate) async fn schema_for(
        &self,
        session: &Session,
        descriptor: &FlightDescriptor,
    ) -> Result<SchemaRef, Status> {
        let any = Any::decode(&*descriptor.cmd)
            .map_err(|_| status::bad_request("the descriptor is not a Flight SQL command"))?;
        let command = Command::try_from(any)
            .map_err(|_| status::bad_request("the descriptor is not a Flight SQL command"))?;
        let schema = match command {
            Command::CommandStatementQuery(query) => {
                Arc::clone(&self.check(session, &query.query).await?.prepared().result)
            }
            Command::CommandPreparedStatementQuery(query) => {
                self.statements
                    .get(&session.user.name, &query.prepared_statement_handle)?
                    .result
            }
            Command::CommandGetCatalogs(query) => query.into_builder().schema(),
            Command::CommandGetDbSchemas(query) => query.into_builder().schema(),
            Command::CommandGetTables(query) => metadata::tables_schema(&query),
            Command::CommandGetTableTypes(query) => query.into_builder().schema(),
            Command::CommandGetSqlInfo(query) => query.into_builder(&self.sql_info).schema(),
            Command::CommandGetXdbcTypeInfo(_) => self.xdbc.schema(),
            Command::CommandGetPrimaryKeys(_) => metadata::primary_keys_schema(),
            Command::CommandGetImportedKeys(_)
            | Command::CommandGetExportedKeys(_)
            | Command::CommandGetCrossReference(_) => metadata::foreign_keys_schema(),
            other => {
                return Err(status::bad_request(format!(
                    "GetSchema does not apply to {}",
                    other.type_url()
                )));
            }
        };
        Ok(schema)
    }
}

#[tonic::async_trait]
impl FlightSqlService for SeuilFlightSql {
    type FlightService = SeuilFlightSql;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<HandshakeStream>, Status> {
        let header = request
            .metadata()
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .map(str::to_string);
        let peer = request.remote_addr().map(|a| a.ip());
        let (token, _) = self.auth.login(header.as_deref(), peer).await?;
        let bearer = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|e| status::internal("writing the token header", e))?;
        let reply = HandshakeResponse {
            protocol_version: 0,
            payload: Bytes::from(token),
        };
        let stream: HandshakeStream = Box::pin(futures::stream::iter([Ok(reply)]));
        let mut response = Response::new(stream);
        response.metadata_mut().insert(AUTHORIZATION, bearer);
        Ok(response)
    }

    // Queries.

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let session = caller(&request)?;
        let check = self.check(&session, &query.query).await?;
        let ticket = TicketStatementQuery {
            statement_handle: Bytes::from(self.kept.keep(check, &query.query)),
        };
        // No schema in the FlightInfo of a query: its release metadata (cells
        // released and suppressed) exists only once DoGet has run it, and
        // clients that find no schema here (ADBC among them) take the
        // stream's, which carries it. GetSchema gives the schema up front.
        Ok(Response::new(info_for(
            ticket.as_any(),
            None,
            request.into_inner(),
        )?))
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let session = caller(&request)?;
        let content = ticket_content(&ticket.statement_handle);
        let sql = std::str::from_utf8(content.sql)
            .map_err(|_| status::bad_request("the ticket is not a seuil query ticket"))?;
        let kept = content.id.and_then(|id| self.kept.take(id, &session.user));
        self.run(&session, sql, Vec::new(), kept).await
    }

    async fn do_put_statement_update(
        &self,
        command: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let session = caller(&request)?;
        let error = EngineError::refused(
            Rule::ReadOnly,
            "seuil answers queries only and never changes data",
            "send a SELECT query",
        );
        let user = &session.user;
        let record = AuditRecord::new(&user.name, &user.role, &command.query, Outcome::Refused);
        Err(self.refused(record, &error).await)
    }

    async fn do_put_statement_ingest(
        &self,
        command: CommandStatementIngest,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let session = caller(&request)?;
        let error = EngineError::refused(
            Rule::ReadOnly,
            "seuil is read-only: it does not ingest data",
            "send a SELECT query",
        );
        let user = &session.user;
        // No SQL: the line says what was asked.
        let asked = format!("-- Flight SQL ingest into table {:?}", command.table);
        let record = AuditRecord::new(&user.name, &user.role, &asked, Outcome::Refused);
        Err(self.refused(record, &error).await)
    }

    async fn get_flight_info_substrait_plan(
        &self,
        query: CommandStatementSubstraitPlan,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let session = caller(&request)?;
        let bytes = query.plan.as_ref().map_or(0, |plan| plan.plan.len());
        Err(self.substrait_refused(&session, bytes).await)
    }

    async fn do_action_create_prepared_substrait_plan(
        &self,
        query: ActionCreatePreparedSubstraitPlanRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let session = caller(&request)?;
        let bytes = query.plan.as_ref().map_or(0, |plan| plan.plan.len());
        Err(self.substrait_refused(&session, bytes).await)
    }

    // Prepared statements.

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let session = caller(&request)?;
        let check = self.check(&session, &query.query).await?;
        let prepared = check.prepared().clone();
        let result = ActionCreatePreparedStatementResult {
            prepared_statement_handle: Bytes::new(),
            dataset_schema: schema_bytes(&prepared.result)?,
            parameter_schema: schema_bytes(&prepared.parameters)?,
        };
        let mut statement = Statement::new(
            &session.user.name,
            &query.query,
            prepared.parameters,
            prepared.result,
        );
        // Clients prepare most queries to run them once, right away: the
        // first run takes the check (later ones plan again).
        if statement.parameters.fields().is_empty() {
            statement.kept = Some(self.kept.keep_id(check));
        }
        let handle = self.statements.insert(statement)?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: Bytes::from(handle.into_bytes()),
            ..result
        })
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let session = caller(&request)?;
        let handle = query.prepared_statement_handle;
        let statement = self.statements.get(&session.user.name, &handle)?;
        let mut batches = FlightRecordBatchStream::new_from_flight_data(
            request.into_inner().map_err(FlightError::from),
        );
        // Read no more than shows that there is more than one row.
        let mut collected = Vec::new();
        let mut rows = 0;
        while let Some(batch) = batches
            .try_next()
            .await
            .map_err(|_| status::bad_request("the parameters are not a readable Arrow stream"))?
        {
            rows += batch.num_rows();
            collected.push(batch);
            if rows > 1 {
                break;
            }
        }
        let values = bind(&collected, &statement.parameters)?;
        self.statements.bind(&session.user.name, &handle, values)?;
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(handle),
        })
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let session = caller(&request)?;
        let statement = self
            .statements
            .get(&session.user.name, &query.prepared_statement_handle)?;
        statement.values()?;
        // No schema, for the same reason as for plain queries; the dataset
        // schema came with the statement's creation.
        Ok(Response::new(info_for(
            query.as_any(),
            None,
            request.into_inner(),
        )?))
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let session = caller(&request)?;
        let statement = self
            .statements
            .get(&session.user.name, &query.prepared_statement_handle)?;
        let values = statement.values()?;
        let kept = statement
            .kept
            .as_deref()
            .and_then(|id| self.kept.take(id, &session.user));
        self.run(&session, &statement.sql, values, kept).await
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        let session = caller(&request)?;
        self.statements
            .close(&session.user.name, &query.prepared_statement_handle)
    }

    // Catalog and server metadata.

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        metadata_info(query.as_any(), &schema, request)
    }

    async fn do_get_catalogs(
        &self,
        _query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        caller(&request)?;
        let batch = metadata::catalogs().map_err(arrow_status("listing catalogs"))?;
        Ok(Response::new(one_batch(batch)))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        metadata_info(query.as_any(), &schema, request)
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        caller(&request)?;
        let batch = metadata::db_schemas(query).map_err(arrow_status("listing schemas"))?;
        Ok(Response::new(one_batch(batch)))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = metadata::tables_schema(&query);
        metadata_info(query.as_any(), &schema, request)
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let session = caller(&request)?;
        let ctx = self
            .engine
            .role_context(&session.user.role)
            .ok_or_else(|| {
                status::from_engine(&EngineError::UnknownRole(session.user.role.clone()))
            })?;
        let batch = metadata::tables(ctx, query)
            .await
            .map_err(arrow_status("listing tables"))?;
        Ok(Response::new(one_batch(batch)))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        metadata_info(query.as_any(), &schema, request)
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        caller(&request)?;
        let batch = metadata::table_types(query).map_err(arrow_status("listing table types"))?;
        Ok(Response::new(one_batch(batch)))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder(&self.sql_info).schema();
        metadata_info(query.as_any(), &schema, request)
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        caller(&request)?;
        let batch = query
            .into_builder(&self.sql_info)
            .build()
            .map_err(arrow_status("describing the server"))?;
        Ok(Response::new(one_batch(batch)))
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = self.xdbc.schema();
        metadata_info(query.as_any(), &schema, request)
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        caller(&request)?;
        let batch = self
            .xdbc
            .record_batch(query.data_type)
            .map_err(arrow_status("describing types"))?;
        Ok(Response::new(one_batch(batch)))
    }

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = metadata::primary_keys_schema();
        metadata_info(query.as_any(), &schema, request)
    }

    async fn do_get_primary_keys(
        &self,
        _query: CommandGetPrimaryKeys,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        empty_answer(&request, metadata::primary_keys_schema())
    }

    async fn get_flight_info_imported_keys(
        &self,
        query: CommandGetImportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = metadata::foreign_keys_schema();
        metadata_info(query.as_any(), &schema, request)
    }

    async fn do_get_imported_keys(
        &self,
        _query: CommandGetImportedKeys,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        empty_answer(&request, metadata::foreign_keys_schema())
    }

    async fn get_flight_info_exported_keys(
        &self,
        query: CommandGetExportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = metadata::foreign_keys_schema();
        metadata_info(query.as_any(), &schema, request)
    }

    async fn do_get_exported_keys(
        &self,
        _query: CommandGetExportedKeys,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        empty_answer(&request, metadata::foreign_keys_schema())
    }

    async fn get_flight_info_cross_reference(
        &self,
        query: CommandGetCrossReference,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = metadata::foreign_keys_schema();
        metadata_info(query.as_any(), &schema, request)
    }

    async fn do_get_cross_reference(
        &self,
        _query: CommandGetCrossReference,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        empty_answer(&request, metadata::foreign_keys_schema())
    }

    // Session actions.

    async fn do_action_fallback(
        &self,
        request: Request<Action>,
    ) -> Result<Response<DoActionStream>, Status> {
        caller(&request)?;
        let action = request.into_inner();
        match session::answer(&action.r#type, &action.body) {
            Some(Ok(body)) => {
                let reply = futures::stream::iter([Ok(arrow_flight::Result { body })]);
                Ok(Response::new(Box::pin(reply)))
            }
            Some(Err(status)) => Err(status),
            None => Err(Status::from(ServerError::Unsupported(format!(
                "seuil does not implement the action {:?}",
                action.r#type
            )))),
        }
    }

    async fn list_custom_actions(&self) -> Option<Vec<Result<ActionType, Status>>> {
        Some(
            session::action_types()
                .into_iter()
                .map(|(name, description)| {
                    Ok(ActionType {
                        r#type: name.to_string(),
                        description: description.to_string(),
                    })
                })
                .collect(),
        )
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}
