//! Serde helpers for protobuf JSON: 64-bit integers are strings, enums are
//! their names (unknown values stay numbers).

use serde::Serializer;

/// Serialises an integer as a JSON string, as protobuf JSON does for
/// 64-bit integers.
pub fn int_as_string<T: std::fmt::Display, S: Serializer>(
    value: &T,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

/// Serialises an enum field by its proto name.
pub fn enum_name<E, S>(value: &i32, serializer: S) -> Result<S::Ok, S::Error>
where
    E: TryFrom<i32> + ProtoName,
    S: Serializer,
{
    match E::try_from(*value) {
        Ok(known) => serializer.serialize_str(known.proto_name()),
        Err(_) => serializer.serialize_i32(*value),
    }
}

/// An enum value's name in the .proto file.
pub trait ProtoName {
    /// The name, e.g. `SANDBOX_READY`.
    fn proto_name(&self) -> &'static str;
}
