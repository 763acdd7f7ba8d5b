//! Errors at the edge: each engine error becomes one gRPC status, here and
//! nowhere else.
//!
//! The engine already keeps data values out of its messages (DESIGN.md §2,
//! rule 5). What could carry internals (setup problems, Arrow and Flight
//! encoding failures) is logged on the server and answered with a generic
//! message.

use arrow_flight::error::FlightError;
use datafusion::error::DataFusionError;
use seuil_engine::EngineError;
use tonic::Status;

/// The one mapping from engine errors to gRPC codes.
pub fn from_engine(error: &EngineError) -> Status {
    match error {
        EngineError::Refused(_) => Status::permission_denied(error.to_string()),
        EngineError::InvalidQuery(_) => Status::invalid_argument(error.to_string()),
        EngineError::UnknownRole(_) => Status::unauthenticated(
            "your user's role is not defined by the policy in force; ask the operator",
        ),
        EngineError::Limit(_) => Status::resource_exhausted(error.to_string()),
        EngineError::Execution(_) => Status::internal(error.to_string()),
        EngineError::Setup(detail) => {
            tracing::error!(%detail, "engine setup error while serving a query");
            Status::internal("the server cannot run queries right now; see its log")
        }
        EngineError::Internal(detail) => {
            tracing::error!(%detail, "internal error while serving a query");
            Status::internal("internal error of seuil; the operator's log has the detail")
        }
    }
}

/// The kind of an engine error, as the audit log records it.
pub fn error_kind(error: &EngineError) -> &'static str {
    match error {
        EngineError::Refused(_) => "refused",
        EngineError::InvalidQuery(_) => "invalid_query",
        EngineError::UnknownRole(_) => "unknown_role",
        EngineError::Limit(_) => "limit",
        EngineError::Execution(_) => "execution",
        EngineError::Setup(_) => "setup",
        EngineError::Internal(_) => "internal",
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
    tracing::error!(%error, "{context}");
    Status::internal(format!(
        "internal error while {context}; see the server log"
    ))
}

/// A request that is not what the protocol expects.
pub fn bad_request(message: impl Into<String>) -> Status {
    Status::invalid_argument(message.into())
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
