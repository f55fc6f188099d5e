//! `JTL_SIDECAR_<SECTION>__<KEY>` environment variables, turned into a dict shaped like
//! the config so figment can merge it over the file.

use figment::value::{Dict, Value};

use super::{CONFIG_PATH_ENV, ConfigProblem, ENV_PREFIX, printable_key};

/// The process environment, without panicking on values that are not UTF-8: a
/// `JTL_SIDECAR_` variable whose value is not UTF-8 is kept with a marker value that
/// validation reports by name (never by value); other variables are not our business.
pub(super) fn process_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(name, value)| {
            let name = name.into_string().ok()?;
            if !name.starts_with(ENV_PREFIX) {
                return None;
            }
            Some(match value.into_string() {
                Ok(value) => (name, value),
                Err(_) => (name, NOT_UTF8.to_owned()),
            })
        })
        .collect()
}

/// Stands for an environment value that is not UTF-8 (it contains a NUL, which no real
/// environment value can).
pub(super) const NOT_UTF8: &str = "\0not-utf-8";

/// Turns `JTL_SIDECAR_<SECTION>__<KEY>` variables into a dict shaped like the config.
/// Values of string keys are taken verbatim (a secret such as `007` must stay a string);
/// others are parsed as TOML-like values (`true`, `8080`, `["/a", "/b"]`).
pub(super) fn env_overrides(
    env: impl IntoIterator<Item = (String, String)>,
    schema: &Dict,
    problems: &mut Vec<ConfigProblem>,
) -> Dict {
    let mut overrides = Dict::new();
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(name, _)| name.starts_with(ENV_PREFIX) && name != CONFIG_PATH_ENV)
        .collect();
    vars.sort();
    for (name, raw) in vars {
        let mut path: Vec<String> = name[ENV_PREFIX.len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        let is_claim_header = path.len() == 3 && path[0] == "ingress" && path[1] == "claim_headers";
        if is_claim_header {
            // Claim names are case-sensitive (`tenantSlug`): keep the variable's spelling.
            if let Some(claim) = name.rsplit("__").next() {
                path[2] = claim.to_owned();
            }
        }
        let dotted = path
            .iter()
            .map(|segment| printable_key(segment))
            .collect::<Vec<_>>()
            .join(".");
        let value = if is_claim_header {
            Value::from(raw)
        } else {
            match find(schema, &path) {
                // `session.audience` takes one app id or a list: `["a", "b"]` is a list.
                Some(Value::String(..)) if dotted == "session.audience" && raw.starts_with('[') => {
                    raw.parse::<Value>().unwrap_or_else(|never| match never {})
                }
                Some(Value::String(..)) => Value::from(raw),
                Some(Value::Dict(..)) => {
                    problems.push(ConfigProblem::new(
                        dotted,
                        format!("{name} names a section, not a key"),
                    ));
                    continue;
                }
                Some(_) => raw.parse::<Value>().unwrap_or_else(|never| match never {}),
                None => {
                    problems.push(ConfigProblem::new(
                        dotted,
                        format!("unknown key (from environment variable {name})"),
                    ));
                    continue;
                }
            }
        };
        insert(&mut overrides, &path, value);
    }
    overrides
}

fn find<'d>(dict: &'d Dict, path: &[String]) -> Option<&'d Value> {
    let (first, rest) = path.split_first()?;
    let value = dict.get(first)?;
    if rest.is_empty() {
        return Some(value);
    }
    match value {
        Value::Dict(_, inner) => find(inner, rest),
        _ => None,
    }
}

fn insert(dict: &mut Dict, path: &[String], value: Value) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    if rest.is_empty() {
        dict.insert(first.clone(), value);
        return;
    }
    let entry = dict
        .entry(first.clone())
        .or_insert_with(|| Value::from(Dict::new()));
    if let Value::Dict(_, inner) = entry {
        insert(inner, rest, value);
    }
}
