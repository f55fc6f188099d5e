//! Strict JSON for JOSE headers, payloads and key sets.
//!
//! `serde_json` silently keeps the last of two duplicate keys, so a token could carry
//! `{"tenantId":"A","tenantId":"B"}` and different parsers would disagree on who it is
//! for. This parser builds the same `serde_json::Value` but refuses duplicate keys at any
//! depth and nesting deeper than [`MAX_DEPTH`].

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Deepest nesting of arrays and objects accepted (the top-level object is depth 1).
/// Real session tokens and key sets are two levels deep at most.
pub const MAX_DEPTH: usize = 16;

/// Why a document was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonError {
    /// Not valid JSON (syntax, invalid UTF-8, trailing data, numbers out of range...).
    Syntax,
    /// Valid JSON, but the top level is not an object.
    NotAnObject,
    /// The same key appears twice in one object.
    DuplicateKey,
    /// Nested deeper than [`MAX_DEPTH`].
    TooDeep,
}

/// Parses `bytes` as a JSON object under the strict rules above.
pub fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, JsonError> {
    let failure = Cell::new(None);
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let seed = StrictValue {
        depth: 0,
        failure: &failure,
    };
    let parsed = seed.deserialize(&mut deserializer);
    let value = match parsed.and_then(|value| deserializer.end().map(|()| value)) {
        Ok(value) => value,
        Err(_) => return Err(failure.get().unwrap_or(JsonError::Syntax)),
    };
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(JsonError::NotAnObject),
    }
}

/// A seed that deserializes any JSON value while enforcing the strict rules. The first
/// rule broken is recorded in `failure`, since serde errors only carry a message.
#[derive(Clone, Copy)]
struct StrictValue<'f> {
    depth: usize,
    failure: &'f Cell<Option<JsonError>>,
}

impl<'f> StrictValue<'f> {
    fn fail<E: de::Error>(&self, why: JsonError) -> E {
        self.failure.set(Some(why));
        E::custom("strict JSON rule broken")
    }

    fn child<E: de::Error>(&self) -> Result<StrictValue<'f>, E> {
        if self.depth + 1 > MAX_DEPTH {
            return Err(self.fail(JsonError::TooDeep));
        }
        Ok(StrictValue {
            depth: self.depth + 1,
            failure: self.failure,
        })
    }
}

impl<'de> DeserializeSeed<'de> for StrictValue<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictValue<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| self.fail(JsonError::Syntax))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let child = self.child()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(child)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let child = self.child()?;
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(self.fail(JsonError::DuplicateKey));
            }
            let value = map.next_value_seed(child)?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_a_plain_object() {
        let map = parse_object(br#"{"a":1,"b":[true,null,"x"],"c":{"d":1.5}}"#).unwrap();
        assert_eq!(map.len(), 3);
        assert_eq!(map["c"]["d"], 1.5);
    }

    #[test]
    fn refuses_duplicate_top_level_key() {
        assert_eq!(
            parse_object(br#"{"a":1,"a":2}"#),
            Err(JsonError::DuplicateKey)
        );
    }

    #[test]
    fn refuses_duplicate_key_spelled_with_an_escape() {
        assert_eq!(
            parse_object(br#"{"a":1,"\u0061":2}"#),
            Err(JsonError::DuplicateKey)
        );
    }

    #[test]
    fn refuses_duplicate_key_nested_in_arrays_and_objects() {
        assert_eq!(
            parse_object(br#"{"a":[{"x":{"y":1,"y":1}}]}"#),
            Err(JsonError::DuplicateKey)
        );
    }

    #[test]
    fn refuses_nesting_past_the_limit_but_not_at_it() {
        let at_limit = format!(
            "{{\"a\":{}1{}}}",
            "[".repeat(MAX_DEPTH - 1),
            "]".repeat(MAX_DEPTH - 1)
        );
        assert!(parse_object(at_limit.as_bytes()).is_ok());
        let past_limit = format!(
            "{{\"a\":{}1{}}}",
            "[".repeat(MAX_DEPTH),
            "]".repeat(MAX_DEPTH)
        );
        assert_eq!(parse_object(past_limit.as_bytes()), Err(JsonError::TooDeep));
    }

    #[test]
    fn refuses_a_nesting_bomb_without_exhausting_the_stack() {
        let bomb = format!("{{\"a\":{}", "[".repeat(100_000));
        assert_eq!(parse_object(bomb.as_bytes()), Err(JsonError::TooDeep));
    }

    #[test]
    fn refuses_non_objects_and_trailing_data() {
        assert_eq!(parse_object(b"[1]"), Err(JsonError::NotAnObject));
        assert_eq!(parse_object(b"\"s\""), Err(JsonError::NotAnObject));
        assert_eq!(parse_object(b"{} {}"), Err(JsonError::Syntax));
        assert_eq!(parse_object(b"{\"a\":1"), Err(JsonError::Syntax));
        assert_eq!(parse_object(b"{\"a\":\"\xff\"}"), Err(JsonError::Syntax));
        assert_eq!(parse_object(br#"{"a":1e400}"#), Err(JsonError::Syntax));
    }
}
