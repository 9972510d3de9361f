//! Validation of the URLs the gateway itself fetches from (JWKS, token endpoints).

use crate::config::ConfigError;

/// Checks that `url` (at YAML path `at`) is http or https. Plain http to anything but loopback
/// is allowed with a warning that says what is at `risk`. False (with an error) otherwise.
pub fn check_fetch_url(
    url: &str,
    at: &str,
    risk: &str,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<ConfigError>,
) -> bool {
    match url::Url::parse(url) {
        Ok(u) if u.scheme() == "https" => true,
        Ok(u) if u.scheme() == "http" => {
            let local = u.host_str().is_some_and(|h| {
                h == "localhost" || h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
            });
            if !local {
                warnings.push(ConfigError::new(at, format!("plain http: {risk}")));
            }
            true
        }
        _ => {
            errors.push(ConfigError::new(at, format!("\"{url}\" is not an http(s) URL")));
            false
        }
    }
}
