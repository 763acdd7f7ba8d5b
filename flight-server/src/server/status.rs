//! Errors at the edge: every error the server answers with is a
//! [`ServerError`], and each becomes one gRPC status, here and nowhere else.
//!
//! The engine already keeps data values out of its messages (DESIGN.md §2,
//! rule 5). What could carry internals (setup problems, Arrow and Flight
//! encoding failures) is logged on the server and answered with a generic
//! message.

use arrow_flight::error::FlightError;
use datafusion::error::DataFusionError;
use seuil_engine::EngineError;
use tonic::Status;

/// Every error the server answers with.
#[derive(Debug)]
pub enum ServerError {
    /// An error of the engine: refusals, invalid queries, limits, faults.
    Engine(EngineError),
    /// No valid credentials or token.
    Unauthenticated(String),
    /// A limit of the server's own: login attempts, query queues, open
    /// statements, parameter sizes.
    Busy(String),
    /// A request that is not what the protocol expects.
    BadRequest(String),
    /// Something seuil does not do.
    Unsupported(String),
    /// The server is stopping.
    Stopping,
    /// A structure shared by requests can no longer be used (a thread
    /// panicked while holding it); the message names the structure only.
    Unavailable(&'static str),
    /// An internal failure while doing `context`: logged with its detail,
    /// answered without it.
    Internal {
        /// What the server was doing.
        context: String,
        /// The failure, for the log.
        detail: String,
    },
}

impl From<ServerError> for Status {
    fn from(error: ServerError) -> Self {
        match error {
            ServerError::Engine(error) => from_engine(&error),
            ServerError::Unauthenticated(message) => Status::unauthenticated(message),
            ServerError::Busy(message) => Status::resource_exhausted(message),
            ServerError::BadRequest(message) => Status::invalid_argument(message),
            ServerError::Unsupported(message) => Status::unimplemented(message),
            ServerError::Stopping => Status::unavailable("the server is stopping"),
            ServerError::Unavailable(what) => Status::internal(what),
            ServerError::Internal { context, detail } => {
                tracing::error!(error = %detail, "{context}");
                Status::internal(format!(
                    "internal error while {context}; see the server log"
                ))
            }
        }
    }
}

impl From<EngineError> for ServerError {
    fn from(error: EngineError) -> Self {
        ServerError::Engine(error)
    }
}

/// The mapping from engine errors to gRPC codes. The message is the
/// engine's client message; what it keeps from clients (setup problems,
/// internal faults) goes to the log.
pub fn from_engine(error: &EngineError) -> Status {
    let message = error.client_message();
    match error {
        EngineError::Refused(_) => Status::permission_denied(message),
        EngineError::InvalidQuery(_) => Status::invalid_argument(message),
        EngineError::UnknownRole(_) => Status::unauthenticated(message),
        EngineError::Limit(_) => Status::resource_exhausted(message),
        EngineError::Execution(_) => Status::internal(message),
        EngineError::Setup(detail) => {
            tracing::error!(%detail, "engine setup error while serving a query");
            Status::internal(message)
        }
        EngineError::Internal(detail) => {
            tracing::error!(%detail, "internal error while serving a query");
            Status::internal(message)
        }
        EngineError::Audit(detail) => {
            tracing::error!(%detail, "the audit log cannot be written");
            Status::internal(message)
        }
        EngineError::Unavailable(_) => Status::unavailable(message),
    }
}

/// An error met while streaming a result. The engine passes its own error,
/// boxed: it is mapped like any engine error; anything else is reported by
/// kind only.
pub fn from_stream(error: &DataFusionError) -> Status {
    match error {
        DataFusionError::External(inner) => match inner.downcast_ref::<EngineError>() {
            Some(engine) => from_engine(engine),
            None => {
                tracing::warn!("query failed while streaming");
                Status::internal("query failed while running")
            }
        },
        DataFusionError::ResourcesExhausted(_) => {
            Status::resource_exhausted("limit reached: the query needs more memory than allowed")
        }
        _ => {
            tracing::warn!("query failed while streaming");
            Status::internal("query failed while running")
        }
    }
}

/// A Flight encoding error: statuses pass through, the rest is internal.
pub fn from_flight(error: FlightError) -> Status {
    match error {
        FlightError::Tonic(status) => *status,
        FlightError::ExternalError(inner) => match inner.downcast::<DataFusionError>() {
            Ok(error) => from_stream(&error),
            Err(other) => internal("encoding a result", other),
        },
        other => internal("encoding a result", other),
    }
}

/// An internal failure: logged with its detail, answered without it.
pub fn internal(context: &str, error: impl std::fmt::Display) -> Status {
    Status::from(ServerError::Internal {
        context: context.to_string(),
        detail: error.to_string(),
    })
}

/// A request that is not what the protocol expects.
pub fn bad_request(message: impl Into<String>) -> Status {
    Status::from(ServerError::BadRequest(message.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use seuil_engine::Rule;
    use tonic::Code;

    #[test]
    fn each_engine_error_has_its_code() {
        let cases = [
            (
                EngineError::refused(Rule::AggregatesOnly, "rows", "group"),
                Code::PermissionDenied,
            ),
            (
                EngineError::InvalidQuery("syntax".into()),
                Code::InvalidArgument,
            ),
            (EngineError::UnknownRole("x".into()), Code::Unauthenticated),
            (
                EngineError::Limit("too long".into()),
                Code::ResourceExhausted,
            ),
            (EngineError::Execution("arrow error".into()), Code::Internal),
            (
                EngineError::Setup("/secret/path missing".into()),
                Code::Internal,
            ),
        ];
        for (error, code) in cases {
            assert_eq!(from_engine(&error).code(), code, "{error:?}");
        }
        let setup = from_engine(&EngineError::Setup("/secret/path missing".into()));
        assert!(!setup.message().contains("/secret"));
    }

    #[test]
    fn a_stream_error_of_the_engine_keeps_its_code() {
        let limit = DataFusionError::External(Box::new(EngineError::Limit("memory".into())));
        assert_eq!(from_stream(&limit).code(), Code::ResourceExhausted);
        let other = DataFusionError::Execution("value 42 failed".into());
        let status = from_stream(&other);
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("42"));
    }

    #[test]
    fn a_refusal_names_its_rule() {
        let status = from_engine(&EngineError::refused(
            Rule::AggregatesOnly,
            "rows",
            "add a GROUP BY",
        ));
        assert!(status.message().contains("rule 1"), "{}", status.message());
    }
}
