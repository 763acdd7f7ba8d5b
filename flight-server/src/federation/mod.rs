//! Federation over Arrow Flight (DESIGN.md §3): `seuil node` serves a data
//! site's tables ([`node`]); `seuil serve --node NAME=URL` makes the server
//! their coordinator ([`coordinator`]); [`wire`] is what crosses between
//! them. The engine decides what runs where and what a node may let out;
//! this module carries the bytes.

pub mod coordinator;
pub mod node;
pub mod wire;
