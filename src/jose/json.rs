//! Strict JSON for JOSE headers, payloads and key sets.
//!
//! `serde_json` silently keeps the last of two duplicate keys, so a token could carry
//! `{"tenantId":"A","tenantId":"B"}` and different parsers would disagree on who it is
//! for. This parser builds the same `serde_json::Value` but refuses duplicate keys at any
//! depth and nesting deeper than [`MAX_DEPTH`].

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::BTreeSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::map::Entry;
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
    let seed = StrictValue {
        depth: 0,
        failure: &failure,
    };
    match parse(bytes, seed, &failure)? {
        Value::Object(map) => Ok(map),
        _ => Err(JsonError::NotAnObject),
    }
}

/// What the verifier reads in a JWS header, from the same strict parse as
/// [`parse_object`] (the same refusals, for the same documents) without building the map.
#[derive(Debug, Clone, PartialEq)]
pub struct JwsHeader {
    /// Which of the caller's algorithm names `alg` is (its index), if any.
    pub alg: Option<usize>,
    /// `crit` is present.
    pub has_crit: bool,
    /// `kid` as it came, when present.
    pub kid: Option<Value>,
}

/// Parses a JWS header: a JSON object under the strict rules above, of which only `alg`
/// (compared with `alg`), `crit` (present or not) and `kid` are kept.
pub fn parse_header(bytes: &[u8], algs: &[&str]) -> Result<JwsHeader, JsonError> {
    let failure = Cell::new(None);
    let seed = HeaderSeed {
        algs,
        strict: StrictValue {
            depth: 0,
            failure: &failure,
        },
    };
    parse(bytes, seed, &failure)?.ok_or(JsonError::NotAnObject)
}

/// Runs `seed` over the whole of `bytes`. Read as bytes, serde_json checks UTF-8 string by
/// string; every document it accepts is UTF-8 as a whole (outside strings only ASCII is
/// valid JSON), so a document that is gets read as text, checked once, and any other as
/// bytes, refused as ever.
fn parse<S, T>(bytes: &[u8], seed: S, failure: &Cell<Option<JsonError>>) -> Result<T, JsonError>
where
    S: for<'de> DeserializeSeed<'de, Value = T>,
{
    match std::str::from_utf8(bytes) {
        Ok(text) => run(serde_json::Deserializer::from_str(text), seed, failure),
        Err(_) => run(serde_json::Deserializer::from_slice(bytes), seed, failure),
    }
}

fn run<'de, R, S>(
    mut deserializer: serde_json::Deserializer<R>,
    seed: S,
    failure: &Cell<Option<JsonError>>,
) -> Result<S::Value, JsonError>
where
    R: serde_json::de::Read<'de>,
    S: DeserializeSeed<'de>,
{
    let parsed = seed.deserialize(&mut deserializer);
    parsed
        .and_then(|value| deserializer.end().map(|()| value))
        .map_err(|_| failure.get().unwrap_or(JsonError::Syntax))
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
            match object.entry(key) {
                Entry::Occupied(_) => return Err(self.fail(JsonError::DuplicateKey)),
                Entry::Vacant(entry) => {
                    entry.insert(map.next_value_seed(child)?);
                }
            }
        }
        Ok(Value::Object(object))
    }
}

/// The top level of a JWS header: an object is read member by member as
/// [`StrictValue`] reads one, keeping three members; anything else is read by
/// [`StrictValue`] (so that it is refused for the same reason) and answers `None`.
#[derive(Clone, Copy)]
struct HeaderSeed<'a, 'f> {
    algs: &'a [&'a str],
    strict: StrictValue<'f>,
}

impl<'de> DeserializeSeed<'de> for HeaderSeed<'_, '_> {
    type Value = Option<JwsHeader>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for HeaderSeed<'_, '_> {
    type Value = Option<JwsHeader>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JWS header")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        self.strict.visit_f64(v).map(|_| None)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        self.strict.visit_seq(seq).map(|_| None)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let child = self.strict.child()?;
        let mut seen = SeenKeys::default();
        let mut header = JwsHeader {
            alg: None,
            has_crit: false,
            kid: None,
        };
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let member = match &*key {
                "alg" => Member::Alg,
                "crit" => Member::Crit,
                "kid" => Member::Kid,
                _ => Member::Other,
            };
            if !seen.insert(key) {
                return Err(self.strict.fail(JsonError::DuplicateKey));
            }
            match member {
                Member::Alg => {
                    header.alg = map.next_value_seed(IsString {
                        expected: self.algs,
                        strict: child,
                    })?;
                }
                Member::Crit => {
                    map.next_value_seed(IsString {
                        expected: &[],
                        strict: child,
                    })?;
                    header.has_crit = true;
                }
                Member::Kid => header.kid = Some(map.next_value_seed(child)?),
                // Read as strictly, without building it.
                Member::Other => {
                    map.next_value_seed(IsString {
                        expected: &[],
                        strict: child,
                    })?;
                }
            }
        }
        Ok(Some(header))
    }
}

enum Member {
    Alg,
    Crit,
    Kid,
    Other,
}

/// The keys of one object so far: a few in place (a header has a handful), the rest in
/// a set, so that many keys cost n log n comparisons, not n squared.
#[derive(Default)]
struct SeenKeys<'de> {
    few: [Cow<'de, str>; 8],
    count: usize,
    many: BTreeSet<Cow<'de, str>>,
}

impl<'de> SeenKeys<'de> {
    /// False when `key` was seen before.
    fn insert(&mut self, key: Cow<'de, str>) -> bool {
        if self.few[..self.count].contains(&key) {
            return false;
        }
        match self.few.get_mut(self.count) {
            Some(slot) => {
                *slot = key;
                self.count += 1;
                true
            }
            None => self.many.insert(key),
        }
    }
}

/// A key, borrowed from the document unless it had to be unescaped.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// A value read as [`StrictValue`] reads it (the same refusals), answering which of the
/// strings `expected` it is instead of building it: a string or number is not
/// allocated, an array or object is built and dropped.
#[derive(Clone, Copy)]
struct IsString<'a, 'f> {
    expected: &'a [&'a str],
    strict: StrictValue<'f>,
}

impl<'de> DeserializeSeed<'de> for IsString<'_, '_> {
    type Value = Option<usize>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Option<usize>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for IsString<'_, '_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Option<usize>, E> {
        Ok(None)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Option<usize>, E> {
        Ok(None)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Option<usize>, E> {
        Ok(None)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Option<usize>, E> {
        self.strict.visit_f64(v).map(|_| None)
    }

    fn visit_str<E>(self, v: &str) -> Result<Option<usize>, E> {
        Ok(self.expected.iter().position(|name| *name == v))
    }

    fn visit_unit<E>(self) -> Result<Option<usize>, E> {
        Ok(None)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Option<usize>, A::Error> {
        self.strict.visit_seq(seq).map(|_| None)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Option<usize>, A::Error> {
        self.strict.visit_map(map).map(|_| None)
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

    /// `parse_header` answers what `parse_object` and reading the three members of its
    /// map answer, refusals included.
    #[test]
    fn the_header_parse_agrees_with_the_object_parse() {
        let through_the_map = |doc: &[u8]| {
            parse_object(doc).map(|map| JwsHeader {
                alg: match map.get("alg").and_then(Value::as_str) {
                    Some("RS256") => Some(0),
                    Some("EdDSA") => Some(1),
                    _ => None,
                },
                has_crit: map.contains_key("crit"),
                kid: map.get("kid").cloned(),
            })
        };
        let mut docs: Vec<Vec<u8>> = [
            &br#"{"alg":"RS256","kid":"1","typ":"JWT"}"#[..],
            br#"{"alg":"RS256"}"#,
            br#"{"alg":"EdDSA","kid":"1"}"#,
            br#"{"alg":"RS2567"}"#,
            br#"{"alg":"RS25"}"#,
            br#"{"alg":"RS\u0032\u00356"}"#,
            br#"{"\u0061lg":"RS256"}"#,
            br#"{"alg":"RS256","\u0061lg":"RS256"}"#,
            br#"{"alg":"RS256","alg":"RS256"}"#,
            br#"{"kid":"a","kid":"a"}"#,
            br#"{"typ":"JWT","typ":"JWT"}"#,
            br#"{"alg":["RS256"]}"#,
            br#"{"alg":{"RS256":1}}"#,
            br#"{"alg":{"a":1,"a":2}}"#,
            br#"{"alg":[{"a":1,"a":2}]}"#,
            br#"{"alg":null}"#,
            br#"{"alg":1.5}"#,
            br#"{"alg":1e400}"#,
            br#"{"alg":true}"#,
            br#"{"alg":-1}"#,
            br#"{"kid":7}"#,
            br#"{"kid":{"x":[1,2]}}"#,
            br#"{"kid":null,"alg":"RS256"}"#,
            br#"{"crit":["exp"],"alg":"RS256"}"#,
            br#"{"crit":null}"#,
            br#"{"x":{"y":{"y":1,"y":2}}}"#,
            br#"{"x":[1,2,{"z":true}]}"#,
            br#"{}"#,
            br#"[]"#,
            br#"[{"a":1,"a":2}]"#,
            br#"[1e400]"#,
            br#""alg""#,
            br#"1"#,
            br#"-1"#,
            br#"1.5"#,
            br#"1e400"#,
            br#"true"#,
            br#"null"#,
            br#"{"alg":"RS256"} {}"#,
            br#"{"alg":"RS256""#,
            br#"{"alg":"RS256",}"#,
            br#"{"alg" "RS256"}"#,
            br#"{alg:"RS256"}"#,
            b"{\"alg\":\"RS256\",\"x\":\"\xff\"}",
            b"{\"alg\":\"RS256\",\"\xff\":1}",
            b"{\"alg\":\"RS256\",\"a\":1,\"a\":2,\"x\":\"\xff\"}",
            b"{\"\xc3\xa9\":1,\"\xc3\xa9\":2}",
            b"{\"\\u00e9\":1,\"\xc3\xa9\":2}",
            br#"{"\ud800":1}"#,
            b"",
            b" ",
            b"{\"alg\":\"RS256\"}\n",
        ]
        .iter()
        .map(|doc| doc.to_vec())
        .collect();
        for depth in [MAX_DEPTH - 2, MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1] {
            for key in ["alg", "kid", "crit", "x"] {
                docs.push(
                    format!("{{\"{key}\":{}1{}}}", "[".repeat(depth), "]".repeat(depth))
                        .into_bytes(),
                );
            }
        }
        // Past the short list of keys: repeats found in the set, or across list and set.
        for keys in [7, 8, 9, 20] {
            let names: Vec<String> = (0..keys).map(|i| format!("k{i}")).collect();
            for repeat in [None, Some(0), Some(keys - 1)] {
                let mut members: Vec<String> =
                    names.iter().map(|name| format!("\"{name}\":1")).collect();
                members.push(r#""alg":"RS256""#.into());
                if let Some(i) = repeat {
                    members.push(format!("\"{}\":2", names[i]));
                }
                docs.push(format!("{{{}}}", members.join(",")).into_bytes());
            }
        }
        let mut outcomes = Vec::new();
        for doc in &docs {
            let outcome = parse_header(doc, &["RS256", "EdDSA"]);
            assert_eq!(
                outcome,
                through_the_map(doc),
                "{}",
                String::from_utf8_lossy(doc)
            );
            outcomes.push(outcome.map(|header| (header.alg == Some(0), header.has_crit)));
        }
        for expected in [
            Ok((true, false)),
            Ok((false, false)),
            Ok((true, true)),
            Err(JsonError::Syntax),
            Err(JsonError::NotAnObject),
            Err(JsonError::DuplicateKey),
            Err(JsonError::TooDeep),
        ] {
            assert!(outcomes.contains(&expected), "{expected:?} never seen");
        }
    }
}
