//! The Flight session actions: `CloseSession` (ADBC sends it when a
//! connection closes), `GetSessionOptions` and `SetSessionOptions` (ADBC
//! reads and sets the current catalog and schema with them).
//!
//! arrow-flight 59 does not define these messages, so they are declared here
//! from `Flight.proto`. Unlike the Flight SQL actions, their bodies are the
//! bare messages, not wrapped in `Any`.
//!
//! A seuil session holds nothing beyond the bearer token: every query is
//! planned in the role's catalog `seuil`, schema `public`. Closing a session
//! therefore changes nothing on the server; the token stays valid until it
//! expires, since several connections may share one.

use std::collections::HashMap;

use crate::server::status::ServerError;
use prost::Message;
use prost::bytes::Bytes;
use tonic::Status;

/// Action type of `CloseSession`.
pub(crate) const CLOSE_SESSION: &str = "CloseSession";
/// Action type of `GetSessionOptions`.
pub(crate) const GET_SESSION_OPTIONS: &str = "GetSessionOptions";
/// Action type of `SetSessionOptions`.
pub(crate) const SET_SESSION_OPTIONS: &str = "SetSessionOptions";

/// The session options there are, with their only values.
const OPTIONS: [(&str, &str); 2] = [("catalog", "seuil"), ("schema", "public")];

#[derive(Clone, PartialEq, Message)]
pub(crate) struct SessionOptionValue {
    #[prost(oneof = "option_value::OptionValue", tags = "1, 2, 3, 4, 5")]
    pub(crate) option_value: Option<option_value::OptionValue>,
}

pub(crate) mod option_value {
    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct StringListValue {
        #[prost(string, repeated, tag = "1")]
        pub(crate) values: Vec<String>,
    }

    /// `SessionOptionValue.option_value`, one case per protobuf field.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub(crate) enum OptionValue {
        #[prost(string, tag = "1")]
        String(String),
        #[prost(bool, tag = "2")]
        Bool(bool),
        #[prost(sfixed64, tag = "3")]
        Int64(i64),
        #[prost(double, tag = "4")]
        Double(f64),
        #[prost(message, tag = "5")]
        StringList(StringListValue),
    }
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct SetSessionOptionsRequest {
    #[prost(map = "string, message", tag = "1")]
    pub(crate) session_options: HashMap<String, SessionOptionValue>,
}

#[derive(Clone, Copy, PartialEq, Message)]
pub(crate) struct SetSessionOptionError {
    #[prost(int32, tag = "1")]
    pub(crate) value: i32,
}

/// `SetSessionOptionsResult.ErrorValue`.
const INVALID_NAME: i32 = 1;
const INVALID_VALUE: i32 = 2;

#[derive(Clone, PartialEq, Message)]
pub(crate) struct SetSessionOptionsResult {
    #[prost(map = "string, message", tag = "1")]
    pub(crate) errors: HashMap<String, SetSessionOptionError>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct GetSessionOptionsResult {
    #[prost(map = "string, message", tag = "1")]
    pub(crate) session_options: HashMap<String, SessionOptionValue>,
}

#[derive(Clone, Copy, PartialEq, Message)]
pub(crate) struct CloseSessionResult {
    #[prost(int32, tag = "1")]
    pub(crate) status: i32,
}

/// `CloseSessionResult.Status.CLOSED`.
const CLOSED: i32 = 1;

/// The action types answered here, for `ListActions`.
pub(crate) fn action_types() -> [(&'static str, &'static str); 3] {
    [
        (
            CLOSE_SESSION,
            "Closes the session. Request: CloseSessionRequest. Result: CloseSessionResult",
        ),
        (
            GET_SESSION_OPTIONS,
            "The session's options (catalog, schema). Request: GetSessionOptionsRequest. Result: GetSessionOptionsResult",
        ),
        (
            SET_SESSION_OPTIONS,
            "Sets session options; seuil has one catalog and one schema. Request: SetSessionOptionsRequest. Result: SetSessionOptionsResult",
        ),
    ]
}

/// Answers a session action, or `None` when `action_type` is not one.
pub(crate) fn answer(action_type: &str, body: &[u8]) -> Option<Result<Bytes, Status>> {
    let reply = match action_type {
        CLOSE_SESSION => Ok(CloseSessionResult { status: CLOSED }.encode_to_vec()),
        GET_SESSION_OPTIONS => Ok(GetSessionOptionsResult {
            session_options: OPTIONS
                .iter()
                .map(|(name, value)| ((*name).to_string(), string_value(value)))
                .collect(),
        }
        .encode_to_vec()),
        SET_SESSION_OPTIONS => SetSessionOptionsRequest::decode(body)
            .map(|request| set_options(&request).encode_to_vec())
            .map_err(|_| {
                Status::from(ServerError::BadRequest(
                    "the body is not a SetSessionOptionsRequest".into(),
                ))
            }),
        _ => return None,
    };
    Some(reply.map(Bytes::from))
}

fn string_value(value: &str) -> SessionOptionValue {
    SessionOptionValue {
        option_value: Some(option_value::OptionValue::String(value.to_string())),
    }
}

/// Accepts what is already so (catalog `seuil`, schema `public`); reports
/// every other name or value as an error of the result, as the protocol asks.
fn set_options(request: &SetSessionOptionsRequest) -> SetSessionOptionsResult {
    let mut errors = HashMap::new();
    for (name, value) in &request.session_options {
        let error = match OPTIONS.iter().find(|(known, _)| known == name) {
            None => Some(INVALID_NAME),
            Some((_, only)) if *value == string_value(only) => None,
            Some(_) => Some(INVALID_VALUE),
        };
        if let Some(value) = error {
            errors.insert(name.clone(), SetSessionOptionError { value });
        }
    }
    SetSessionOptionsResult { errors }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_session_answers_closed() {
        let reply = answer(CLOSE_SESSION, &[]).unwrap().unwrap();
        assert_eq!(CloseSessionResult::decode(reply).unwrap().status, CLOSED);
    }

    #[test]
    fn the_options_are_the_one_catalog_and_schema() {
        let reply = answer(GET_SESSION_OPTIONS, &[]).unwrap().unwrap();
        let options = GetSessionOptionsResult::decode(reply)
            .unwrap()
            .session_options;
        assert_eq!(options["catalog"], string_value("seuil"));
        assert_eq!(options["schema"], string_value("public"));
    }

    #[test]
    fn setting_other_values_is_reported_per_option() {
        let request = SetSessionOptionsRequest {
            session_options: HashMap::from([
                ("catalog".to_string(), string_value("seuil")),
                ("schema".to_string(), string_value("private")),
                ("colour".to_string(), string_value("blue")),
            ]),
        };
        let reply = answer(SET_SESSION_OPTIONS, &request.encode_to_vec())
            .unwrap()
            .unwrap();
        let errors = SetSessionOptionsResult::decode(reply).unwrap().errors;
        assert_eq!(errors.len(), 2);
        assert_eq!(errors["schema"].value, INVALID_VALUE);
        assert_eq!(errors["colour"].value, INVALID_NAME);
        assert!(answer("DoSomethingElse", &[]).is_none());
    }
}
