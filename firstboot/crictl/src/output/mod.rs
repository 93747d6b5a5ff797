//! What crictl prints: protobuf JSON re-indented the way Go's
//! `json.Indent` does ([`json`]), `-o go-template` field paths
//! ([`template`]), tab-aligned tables ([`table`]) and human-readable sizes,
//! ages and times ([`human`]).

pub mod human;
pub mod json;
pub mod table;
pub mod template;
