//! The Flight service the network sees: every call but `Handshake` passes
//! authentication here, once, before reaching the Flight SQL service, which
//! finds the caller's [`Session`] in the request.
//!
//! Doing it in one place means a new handler cannot forget it. The gateway
//! also answers `GetSchema`, which arrow-flight's Flight SQL dispatch does
//! not route to the service.

use std::sync::Arc;

use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo, HandshakeRequest, PollInfo,
    SchemaAsIpc, SchemaResult, Ticket,
};
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use tonic::{Request, Response, Status, Streaming};

use super::auth::{Authenticator, Session};
use super::service::SeuilFlightSql;
use super::status;
use crate::server::status::ServerError;

/// Authentication in front of [`SeuilFlightSql`].
#[derive(Clone)]
pub struct Gateway {
    sql: Arc<SeuilFlightSql>,
    auth: Authenticator,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// The gateway to a service.
    pub fn new(sql: SeuilFlightSql, auth: Authenticator) -> Self {
        Self {
            sql: Arc::new(sql),
            auth,
        }
    }

    /// The request, with the caller's session attached; `Unauthenticated`
    /// without a valid bearer token.
    #[allow(clippy::result_large_err)]
    fn authenticated<T>(&self, mut request: Request<T>) -> Result<Request<T>, Status> {
        let session: Session = self.auth.authenticate(request.metadata())?;
        request.extensions_mut().insert(session);
        Ok(request)
    }
}

type Sql = SeuilFlightSql;

#[tonic::async_trait]
impl FlightService for Gateway {
    type HandshakeStream = <Sql as FlightService>::HandshakeStream;
    type ListFlightsStream = <Sql as FlightService>::ListFlightsStream;
    type DoGetStream = <Sql as FlightService>::DoGetStream;
    type DoPutStream = <Sql as FlightService>::DoPutStream;
    type DoActionStream = <Sql as FlightService>::DoActionStream;
    type ListActionsStream = <Sql as FlightService>::ListActionsStream;
    type DoExchangeStream = <Sql as FlightService>::DoExchangeStream;

    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        FlightService::handshake(self.sql.as_ref(), request).await
    }

    async fn list_flights(
        &self,
        request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        let request = self.authenticated(request)?;
        FlightService::list_flights(self.sql.as_ref(), request).await
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let request = self.authenticated(request)?;
        FlightService::get_flight_info(self.sql.as_ref(), request).await
    }

    async fn poll_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        let request = self.authenticated(request)?;
        FlightService::poll_flight_info(self.sql.as_ref(), request).await
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        let request = self.authenticated(request)?;
        let session = request
            .extensions()
            .get::<Session>()
            .cloned()
            .ok_or_else(|| {
                Status::from(ServerError::Unauthenticated(
                    "authentication required".into(),
                ))
            })?;
        let schema = self.sql.schema_for(&session, request.get_ref()).await?;
        let options = IpcWriteOptions::default();
        SchemaResult::try_from(SchemaAsIpc::new(&schema, &options))
            .map(Response::new)
            .map_err(|e| status::internal("encoding a schema", e))
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let request = self.authenticated(request)?;
        FlightService::do_get(self.sql.as_ref(), request).await
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        let request = self.authenticated(request)?;
        FlightService::do_put(self.sql.as_ref(), request).await
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        let request = self.authenticated(request)?;
        FlightService::do_exchange(self.sql.as_ref(), request).await
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        let request = self.authenticated(request)?;
        FlightService::do_action(self.sql.as_ref(), request).await
    }

    async fn list_actions(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        let request = self.authenticated(request)?;
        FlightService::list_actions(self.sql.as_ref(), request).await
    }
}
