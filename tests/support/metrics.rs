//! Reading the gateway's Prometheus metrics on its admin listener, and waiting for them.

use std::time::{Duration, Instant};

use super::gateway::Gateway;
use super::{plain_client, PATIENCE};

/// The whole `/metrics` text.
pub async fn text(gateway: &Gateway) -> String {
    let response = plain_client().get(gateway.admin_url("/metrics")).send().await.expect("metrics");
    response.text().await.expect("metrics text")
}

/// The value of the series `series` (its name and labels exactly as exposed), if present.
pub async fn value(gateway: &Gateway, series: &str) -> Option<f64> {
    let text = text(gateway).await;
    text.lines().find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

/// The sum of `family`'s series whose labels include every `label="value"` given (0 when none).
pub async fn sum(gateway: &Gateway, family: &str, labels: &[&str]) -> u64 {
    let text = text(gateway).await;
    text.lines()
        .filter(|line| line.starts_with(&format!("{family}{{")))
        .filter(|line| labels.iter().all(|label| line.contains(label)))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Waits until the metrics text contains every one of `lines` (a request is counted when it is
/// logged, just after its response); panics with the last text after [`PATIENCE`].
pub async fn wait_for(gateway: &Gateway, lines: &[&str]) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let text = text(gateway).await;
        if lines.iter().all(|line| text.contains(line)) {
            return text;
        }
        assert!(Instant::now() < deadline, "{lines:?} not all in:\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
