//! Configuration: one TOML file plus `JTL_SIDECAR_<SECTION>__<KEY>` environment
//! overrides, merged with figment over the defaults of SPEC §3, then validated into typed
//! settings. Validation reports every problem at once, one line each, naming the key.
//!
//! The steps, one file each: [`raw`] is the file's shape with its defaults, [`env`] turns
//! environment variables into overrides, [`shape`] reports unknown keys and wrong types,
//! [`validate`] checks each section and builds the typed [`settings`]. This module loads
//! and collects the problems.

use std::fmt;
use std::path::Path;

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use figment::value::Dict;

mod cidr;
mod env;
mod raw;
mod settings;
mod shape;
mod validate;

pub use crate::secrets::Secret;
pub use cidr::{Cidr, NotACidr};
pub use raw::*;
pub use settings::*;
pub use shape::accepted_keys;

use env::{env_overrides, process_env};
use shape::check_shape;
use validate::validate;

/// Environment variables starting with this override config keys.
pub const ENV_PREFIX: &str = "JTL_SIDECAR_";
/// Environment variable that may name the config file instead of `--config`.
pub const CONFIG_PATH_ENV: &str = "JTL_SIDECAR_CONFIG";
/// One thing wrong with the config: the key (dotted path) and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub key: String,
    pub reason: String,
}

impl ConfigProblem {
    fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigProblem {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

/// A key as shown in a problem line: as written when it is plain, else quoted with
/// escapes, so a key holding a newline cannot forge another line.
fn printable_key(name: &str) -> String {
    let plain = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
    if plain {
        name.to_owned()
    } else {
        format!("{name:?}")
    }
}

/// Every problem found; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigProblem>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, problem) in self.0.iter().enumerate() {
            if index > 0 {
                writeln!(f)?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A valid config, the effective raw values (for `check` to print), and warnings about
/// things that are allowed but probably not meant.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub config: Config,
    /// The values in force, derived ones included.
    pub effective: RawConfig,
    /// The keys of `effective` whose values were derived, not written (`jtl.token_url`).
    pub derived: Vec<&'static str>,
    pub warnings: Vec<String>,
}

impl LoadedConfig {
    /// The effective config as TOML, secrets redacted, each derived value marked
    /// `# (derived)`.
    pub fn to_redacted_toml(&self) -> String {
        let mut section = String::new();
        let mut out = String::new();
        for line in self.effective.to_redacted_toml().lines() {
            out.push_str(line);
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.to_owned();
            } else if let Some((key, _)) = line.split_once(" = ")
                && self.derived.contains(&format!("{section}.{key}").as_str())
            {
                out.push_str(" # (derived)");
            }
            out.push('\n');
        }
        out
    }
}

/// Loads `path` with overrides from the process environment.
pub fn load_file(path: &Path) -> Result<LoadedConfig, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        ConfigErrors(vec![ConfigProblem::new(
            "config",
            format!("cannot read {}: {error}", path.display()),
        )])
    })?;
    load_str(&text, process_env())
}

/// Loads a TOML document (an embedded config) with overrides from the process
/// environment.
pub fn load_str_with_process_env(toml_text: &str) -> Result<LoadedConfig, ConfigErrors> {
    load_str(toml_text, process_env())
}

/// Loads a TOML document with overrides from `env` (name, value pairs; only the ones
/// starting with [`ENV_PREFIX`] are read).
pub fn load_str(
    toml_text: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<LoadedConfig, ConfigErrors> {
    let schema = shape::schema();
    let mut problems = Vec::new();
    let overrides = env_overrides(env, &schema, &mut problems);
    let figment = Figment::from(Serialized::defaults(RawConfig::default()))
        .merge(Toml::string(toml_text))
        .merge(Serialized::defaults(overrides));

    let mut merged = match figment.extract::<Dict>() {
        Ok(merged) => merged,
        Err(error) => {
            problems.extend(error.into_iter().map(|e| figment_problem(&e)));
            return Err(ConfigErrors(problems));
        }
    };
    // Unknown keys and ill-typed values are reported and dropped (their defaults stand
    // in), so the checks below still run and every problem is reported at once.
    check_shape(&mut merged, &schema, "", &mut problems);
    let shape_problems = problems.len();
    let mut effective: RawConfig = Figment::from(Serialized::defaults(RawConfig::default()))
        .merge(Serialized::defaults(merged))
        .extract()
        .map_err(|error| {
            problems.extend(error.into_iter().map(|e| figment_problem(&e)));
            ConfigErrors(problems.clone())
        })?;
    let mut warnings = Vec::new();
    let mut derived = Vec::new();
    let config = validate(&effective, &mut problems, &mut warnings, &mut derived);
    // A key already reported for its type stands at its default now: say nothing more
    // about it (a wrongly typed secret is not also "missing").
    let reported: Vec<String> = problems[..shape_problems]
        .iter()
        .map(|p| p.key.clone())
        .collect();
    let mut index = 0;
    problems.retain(|problem| {
        index += 1;
        index <= shape_problems || !reported.contains(&problem.key)
    });
    match config {
        Some(config) if problems.is_empty() => {
            // `check` prints the values in force, derived ones included (SPEC §3).
            effective.jtl.token_url = config.jtl.token_url.to_string();
            effective.jtl.scope = config.jtl.scope.clone().unwrap_or_default();
            effective.jtl.api_base_url = config.jtl.api_base_url.to_string();
            // `jtl.jwks_url` is the session-token key set, or the app-token one when
            // only app tokens are accepted.
            if let Some(profile) = config.session.profiles.last() {
                effective.jtl.jwks_url = profile.key_set_url.to_string();
            }
            if let Some(issuer) = config.session.app_token_issuer() {
                effective.session.issuer = issuer.to_owned();
            }
            Ok(LoadedConfig {
                config,
                effective,
                derived,
                warnings,
            })
        }
        _ => Err(ConfigErrors(problems)),
    }
}

fn figment_problem(error: &figment::Error) -> ConfigProblem {
    let key = if error.path.is_empty() {
        "config".to_owned()
    } else {
        error.path.join(".")
    };
    ConfigProblem::new(key, one_line(&error.kind.to_string()))
}

/// TOML syntax errors come with a multi-line source excerpt; keep the sentences only, so
/// that each problem stays on one line.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|line| {
            !line.is_empty()
                && !line.starts_with('|')
                && !line.starts_with('^')
                && !line.starts_with(|c: char| c.is_ascii_digit())
        })
        .collect::<Vec<_>>()
        .join(": ")
}
