//! The journal (`/var/lib/nodebake/state.json`): which steps finished for
//! which metadata, and the last error. Saved atomically after every step,
//! so a run killed at any point resumes where it stopped.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use nodebake_contract::layout;
use serde::{Deserialize, Serialize};

use crate::root::Root;

/// Version of the journal format.
pub const JOURNAL_VERSION: u32 = 1;

/// One finished step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Step id.
    pub id: String,
    /// Unix time it finished.
    pub finished_at: u64,
    /// `applied` or `already in place`.
    pub result: String,
}

/// The last failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorRecord {
    /// Step that failed.
    pub step: String,
    /// Error chain (never contains secrets: errors name fields, not values).
    pub message: String,
    /// Unix time.
    pub at: u64,
}

/// The journal file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    /// [`JOURNAL_VERSION`].
    pub version: u32,
    /// Digest of the metadata the finished steps were made for.
    pub metadata_digest: Option<String>,
    /// Which source the metadata came from.
    pub metadata_source: Option<String>,
    /// Finished steps, in the order they finished; one entry per id.
    pub steps: Vec<StepRecord>,
    /// Last failure, cleared by a successful step.
    pub last_error: Option<ErrorRecord>,
    /// Unix time every step had finished.
    pub completed_at: Option<u64>,
}

/// `secs` since the epoch as `YYYY-MM-DD HH:MM:SS UTC` (the proleptic
/// Gregorian calendar; days to civil date as in H. Hinnant's algorithm).
pub fn human_time(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Journal {
    /// Loads the journal under `root`; an absent file is an empty journal.
    pub fn load(root: &Root) -> Result<Self> {
        match root.read_opt(layout::STATE_JOURNAL)? {
            None => Ok(Self {
                version: JOURNAL_VERSION,
                ..Self::default()
            }),
            Some(text) => serde_json::from_str(&text)
                .with_context(|| format!("parsing {}", layout::STATE_JOURNAL)),
        }
    }

    /// Saves atomically (0600: it names the metadata source).
    pub fn save(&self, root: &Root) -> Result<()> {
        let mut text = serde_json::to_string_pretty(self)?;
        text.push('\n');
        root.write(layout::STATE_JOURNAL, text.as_bytes(), 0o600)?;
        Ok(())
    }

    /// Starts over when the metadata changed since the steps were recorded.
    pub fn bind_to(&mut self, digest: &str, source: &str) {
        if self.metadata_digest.as_deref() != Some(digest) {
            self.steps.clear();
            self.completed_at = None;
            self.metadata_digest = Some(digest.to_string());
        }
        self.metadata_source = Some(source.to_string());
    }

    /// Whether `id` finished for the bound metadata.
    pub fn is_done(&self, id: &str) -> bool {
        self.steps.iter().any(|s| s.id == id)
    }

    /// Records that `id` finished (replacing an older record of it).
    pub fn finish(&mut self, id: &str, result: &str) {
        self.steps.retain(|s| s.id != id);
        self.steps.push(StepRecord {
            id: id.to_string(),
            finished_at: now(),
            result: result.to_string(),
        });
        self.last_error = None;
    }

    /// Records a failure of `step`.
    pub fn fail(&mut self, step: &str, error: &anyhow::Error) {
        self.last_error = Some(ErrorRecord {
            step: step.to_string(),
            message: format!("{error:#}"),
            at: now(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_times() {
        assert_eq!(human_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(human_time(1_700_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(human_time(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(human_time(4_107_542_399), "2100-02-28 23:59:59 UTC");
        assert_eq!(human_time(4_107_542_400), "2100-03-01 00:00:00 UTC");
    }

    #[test]
    fn records_each_step_once_and_resets_on_new_metadata() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::new(t.path());
        let mut j = Journal::load(&root).unwrap();
        j.bind_to("d1", "test");
        j.finish("a", "applied");
        j.finish("a", "applied");
        j.save(&root).unwrap();
        let mut j = Journal::load(&root).unwrap();
        assert_eq!(j.steps.len(), 1);
        j.bind_to("d1", "test");
        assert!(j.is_done("a"));
        j.bind_to("d2", "test");
        assert!(!j.is_done("a"));
    }
}
