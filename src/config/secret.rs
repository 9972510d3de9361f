//! Secret values: written as `${env:NAME}`, `${file:PATH}` or a literal, resolved at load,
//! and never printed, logged or serialized.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A secret as the operator wrote it in the config file.
///
/// `Debug` and `Serialize` show only the reference (`${env:NAME}`), never a literal value, so a
/// config can be dumped to `/config` or a log without leaking what it holds.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// `${env:NAME}`: read from the process environment at load.
    Env(String),
    /// `${file:PATH}`: read from a file at load (a relative path is relative to the config file).
    File(String),
    /// A value written directly in the config.
    Literal(Secret),
}

/// What a redacted secret looks like wherever a config is shown.
pub const REDACTED: &str = "[redacted]";

impl SecretSource {
    /// Parses the written form: a whole-value `${env:…}` / `${file:…}` reference, or a literal.
    pub fn parse(text: &str) -> Result<Self, String> {
        let Some(inner) = text.strip_prefix("${").and_then(|t| t.strip_suffix('}')) else {
            if text.contains("${") {
                return Err("a secret reference must be the whole value, like \"${env:NAME}\"".into());
            }
            return Ok(Self::Literal(Secret::new(text.to_owned())));
        };
        match inner.split_once(':') {
            Some(("env", name)) if is_env_name(name) => Ok(Self::Env(name.to_owned())),
            Some(("env", _)) => Err("an environment variable name is letters, digits and '_'".into()),
            Some(("file", path)) if !path.is_empty() => Ok(Self::File(path.to_owned())),
            _ => Err(format!("unknown secret reference \"{text}\"; use ${{env:NAME}} or ${{file:PATH}}")),
        }
    }

    /// Resolves the reference into the secret value. `base_dir` anchors relative file paths.
    pub fn resolve(&self, base_dir: &Path) -> Result<Secret, String> {
        match self {
            Self::Literal(secret) => Ok(secret.clone()),
            Self::Env(name) => match std::env::var(name) {
                Ok(value) if !value.is_empty() => Ok(Secret::new(value)),
                Ok(_) => Err(format!("environment variable {name} is empty")),
                Err(_) => Err(format!("environment variable {name} is not set")),
            },
            Self::File(path) => {
                let full = base_dir.join(path);
                let text = std::fs::read_to_string(&full)
                    .map_err(|e| format!("cannot read secret file {}: {e}", full.display()))?;
                // Files written by editors and `echo` end in a newline that is not part of the secret.
                let value = text.trim_end_matches(['\r', '\n']);
                if value.is_empty() {
                    return Err(format!("secret file {} is empty", full.display()));
                }
                Ok(Secret::new(value.to_owned()))
            }
        }
    }
}

fn is_env_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Env(name) => write!(f, "${{env:{name}}}"),
            Self::File(path) => write!(f, "${{file:{path}}}"),
            Self::Literal(_) => f.write_str(REDACTED),
        }
    }
}

impl Serialize for SecretSource {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&format_args!("{self:?}"))
    }
}

impl<'de> Deserialize<'de> for SecretSource {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A resolved secret value. It cannot be printed: `Debug` and `Display` write `[redacted]`, and
/// it has no `Serialize`. Read it with [`Secret::expose`] only where it is put on the wire.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Box<str>);

impl Secret {
    /// Wraps a value.
    pub fn new(value: String) -> Self {
        Self(value.into_boxed_str())
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_value_reference_is_parsed() {
        assert_eq!(SecretSource::parse("${env:GH_SECRET}"), Ok(SecretSource::Env("GH_SECRET".into())));
        assert_eq!(
            SecretSource::parse("${file:secrets/token}"),
            Ok(SecretSource::File("secrets/token".into()))
        );
    }

    #[test]
    fn a_reference_inside_a_longer_value_is_refused() {
        assert!(SecretSource::parse("Bearer ${env:X}").is_err());
        assert!(SecretSource::parse("${vault:x}").is_err());
        assert!(SecretSource::parse("${env:BAD-NAME}").is_err());
    }

    #[test]
    fn literals_never_show_when_printed_or_serialized() {
        let source = SecretSource::parse("hunter2").unwrap();
        assert_eq!(format!("{source:?}"), REDACTED);
        assert_eq!(serde_json::to_string(&source).unwrap(), "\"[redacted]\"");
        let secret = source.resolve(Path::new(".")).unwrap();
        assert_eq!(format!("{secret} {secret:?}"), "[redacted] [redacted]");
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn references_show_as_written() {
        let source = SecretSource::parse("${env:ADMIN_TOKEN}").unwrap();
        assert_eq!(serde_json::to_string(&source).unwrap(), "\"${env:ADMIN_TOKEN}\"");
    }

    #[test]
    fn file_references_resolve_relative_to_the_config_and_drop_the_newline() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "s3cret\n").unwrap();
        let secret = SecretSource::File("token".into()).resolve(dir.path()).unwrap();
        assert_eq!(secret.expose(), "s3cret");
        let missing = SecretSource::File("nope".into()).resolve(dir.path());
        assert!(missing.unwrap_err().contains("cannot read secret file"));
    }

    #[test]
    fn a_missing_environment_variable_is_named() {
        let err =
            SecretSource::Env("PORTCULLIS_TEST_SURELY_UNSET".into()).resolve(Path::new(".")).unwrap_err();
        assert!(err.contains("PORTCULLIS_TEST_SURELY_UNSET"));
    }
}
