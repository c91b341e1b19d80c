//! Waiting for the world to reach a state, with a useful message when it does not.

use std::{fmt::Display, future::Future, time::Duration};

use crate::{Error, Result};

/// How often [`wait_for`] checks again.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Calls `check` until it returns `Ok`, at most until `timeout` has passed.
///
/// An `Err` from `check` means "not yet": its text is kept, and the timeout error reports the
/// last one, so a failing test says what it saw rather than only that it waited.
pub async fn wait_for<T, E, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last = match check().await {
            Ok(value) => return Ok(value),
            Err(not_yet) => not_yet.to_string(),
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: what.to_owned(),
                timeout,
                last,
            });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_the_value_once_the_check_passes() {
        let mut calls = 0;
        let value = wait_for("the third call", Duration::from_secs(5), || {
            calls += 1;
            let n = calls;
            async move {
                if n >= 3 {
                    Ok(n)
                } else {
                    Err(format!("call {n}"))
                }
            }
        })
        .await
        .expect("passes on the third call");
        assert_eq!(value, 3);
    }

    #[tokio::test]
    async fn a_timeout_reports_what_was_last_seen() {
        let err = wait_for("never", Duration::from_millis(120), || async {
            Err::<(), _>("still red")
        })
        .await
        .expect_err("never passes");
        let text = err.to_string();
        assert!(text.contains("waiting for never"), "{text}");
        assert!(text.contains("still red"), "{text}");
    }
}
