//! The merged config compared with the shape of the defaults: unknown keys and values of
//! the wrong type, each reported by key (a secret's value never shown).

use figment::value::{Dict, Value};

use super::env::NOT_UTF8;
use super::raw::RawConfig;
use super::{ConfigProblem, printable_key};

/// The shape every config is compared with: the defaults, serialized.
pub(super) fn schema() -> Dict {
    match Value::serialize(RawConfig::default()) {
        Ok(Value::Dict(_, dict)) => dict,
        _ => Dict::new(),
    }
}

/// Every key the config accepts, dotted (`ingress.headers.tenant_id`), sorted. A table of
/// free names (`ingress.claim_headers`) is one key.
pub fn accepted_keys() -> Vec<String> {
    fn leaves(dict: &Dict, prefix: &str, keys: &mut Vec<String>) {
        for (name, value) in dict {
            let key = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}.{name}")
            };
            match value {
                Value::Dict(_, inner) if !inner.is_empty() => leaves(inner, &key, keys),
                _ => keys.push(key),
            }
        }
    }
    let mut keys = Vec::new();
    leaves(&schema(), "", &mut keys);
    keys.sort();
    keys
}

/// Reports every unknown key and every value of the wrong type, comparing the merged
/// config against the shape of the defaults.
pub(super) fn check_shape(
    given: &mut Dict,
    schema: &Dict,
    prefix: &str,
    problems: &mut Vec<ConfigProblem>,
) {
    given.retain(|name, value| {
        let key = if prefix.is_empty() {
            printable_key(name)
        } else {
            format!("{prefix}.{}", printable_key(name))
        };
        let Some(expected) = schema.get(name) else {
            problems.push(ConfigProblem::new(key, "unknown key"));
            return false;
        };
        if key == "ingress.claim_headers" {
            let Value::Dict(_, entries) = value else {
                let found = kind(value, false);
                problems.push(ConfigProblem::new(
                    key,
                    format!("expected a table of claim = \"Header-Name\", found {found}"),
                ));
                return false;
            };
            entries.retain(|claim, header| {
                let is_string = matches!(header, Value::String(..));
                if !is_string {
                    problems.push(ConfigProblem::new(
                        format!("{key}.{}", printable_key(claim)),
                        format!(
                            "expected a header name (a string), found {}",
                            kind(header, false)
                        ),
                    ));
                }
                is_string
            });
            return true;
        }
        if key == "session.audience" {
            // One app id, or a list of them (a move to a new app registration).
            let fits = match &*value {
                Value::String(..) => true,
                Value::Array(_, items) => {
                    items.iter().all(|item| matches!(item, Value::String(..)))
                }
                _ => false,
            };
            if !fits {
                let found = kind(value, false);
                problems.push(ConfigProblem::new(
                    key,
                    format!("expected an app id (a string) or a list of them, found {found}"),
                ));
            }
            return fits;
        }
        let secret = SECRET_KEYS.contains(&key.as_str());
        let found = kind(value, secret);
        let mut wrong = |expected: &str| {
            problems.push(ConfigProblem::new(
                &key,
                format!("expected {expected}, found {found}"),
            ));
            false
        };
        match (expected, &mut *value) {
            (Value::Dict(_, inner_schema), Value::Dict(_, inner)) => {
                check_shape(inner, inner_schema, &key, problems);
                true
            }
            (Value::Dict(..), _) => wrong("a table"),
            (_, Value::String(_, text)) if text == NOT_UTF8 => {
                problems.push(ConfigProblem::new(
                    &key,
                    "the environment variable's value is not UTF-8",
                ));
                false
            }
            (Value::String(..), Value::String(..)) | (Value::Bool(..), Value::Bool(..)) => true,
            (Value::String(..), _) => wrong("a string"),
            (Value::Bool(..), _) => wrong("true or false"),
            // The one fractional key: any number here, its range is checked later.
            (Value::Num(..), Value::Num(_, number)) if key == "tracing.sample_ratio" => {
                number.to_f64().is_some() || wrong("a number from 0 to 1")
            }
            (Value::Num(..), Value::Num(_, number))
                if number
                    .to_u128_lossy()
                    .is_some_and(|n| n <= u128::from(u64::MAX)) =>
            {
                true
            }
            (Value::Num(..), _) => wrong("a whole number, 0 or more"),
            (Value::Array(..), Value::Array(_, items))
                if items.iter().all(|item| matches!(item, Value::String(..))) =>
            {
                true
            }
            (Value::Array(..), _) => wrong("an array of strings"),
            (_, _) => true,
        }
    });
}

/// Keys whose values are never shown, not even in an error.
const SECRET_KEYS: &[&str] = &[
    "jtl.client_secret",
    "tenants.database_url",
    "shared_cache.redis_url",
];

/// What was found, for a type error; the value itself only when it is not a secret.
fn kind(value: &Value, secret: bool) -> String {
    if secret {
        return match value {
            Value::String(..) => "a string",
            Value::Num(..) => "a number",
            Value::Bool(..) => "a boolean",
            Value::Dict(..) => "a table",
            Value::Array(..) => "an array",
            _ => "another type",
        }
        .to_owned();
    }
    match value {
        Value::String(_, text) => format!("the string {text:?}"),
        Value::Char(_, c) => format!("the character {c:?}"),
        Value::Bool(_, b) => format!("{b}"),
        Value::Num(_, number) => match (number.to_i128(), number.to_u128(), number.to_f64()) {
            (Some(n), _, _) => format!("the number {n}"),
            (_, Some(n), _) => format!("the number {n}"),
            (_, _, Some(n)) => format!("the number {n}"),
            _ => "a number".to_owned(),
        },
        Value::Empty(..) => "nothing".to_owned(),
        Value::Dict(..) => "a table".to_owned(),
        Value::Array(..) => "an array".to_owned(),
    }
}
