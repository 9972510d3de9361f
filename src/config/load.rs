//! Reading a configuration file into [`Config`], with the YAML path of any error.

use super::{Config, ConfigError, ConfigErrors};

/// Parses YAML text into a [`Config`]. Unknown fields are errors.
pub fn parse_yaml(text: &str) -> Result<Config, ConfigErrors> {
    let deserializer = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let message = without_yaml_path(&e.into_inner().to_string()).to_owned();
        let mut error = ConfigError::new(path, message.clone());
        if message.contains("unknown field") {
            error =
                error.hint("check the spelling against the configuration reference (docs/configuration.md)");
        } else if message.contains("missing field") {
            error = error.hint("this field is required here");
        }
        ConfigErrors::one(error)
    })
}

/// serde_yaml starts some messages with its own `path: `; ours is given separately.
fn without_yaml_path(message: &str) -> &str {
    match message.split_once(": ") {
        Some((head, rest))
            if !head.is_empty()
                && head.bytes().all(|b| b.is_ascii_alphanumeric() || b"[]._-".contains(&b)) =>
        {
            rest
        }
        _ => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_errors_with_their_path() {
        let err = parse_yaml(
            "listen: [\"127.0.0.1:1\"]\npublic_url: http://x\nservers:\n  - name: a\n    path: /a\n    upstream: http://127.0.0.1:2\n    bogus: 1\n",
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("error: servers[0].bogus: unknown field `bogus`"), "{text}");
        assert!(text.contains("hint:"), "{text}");
    }

    #[test]
    fn wrong_types_name_the_field() {
        let err = parse_yaml(
            "listen: [\"127.0.0.1:1\"]\npublic_url: http://x\nservers:\n  - name: a\n    path: /a\n    upstream: http://127.0.0.1:2\n    connect_timeout: soon\n",
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("error: servers[0].connect_timeout: "), "{err}");
    }

    #[test]
    fn listeners_take_a_string_or_a_map() {
        let config = parse_yaml(
            "listen:\n  - 127.0.0.1:8080\n  - {address: \"127.0.0.1:8443\", tls: {cert: c.pem, key: k.pem}}\npublic_url: http://x\n",
        )
        .unwrap();
        assert_eq!(config.listen[0].address, "127.0.0.1:8080");
        assert_eq!(config.listen[1].tls.as_ref().unwrap().cert, "c.pem");
    }
}
