//! Who created which video job: the only record the gateway keeps of upstream-held jobs.
//!
//! A video job lives on the upstream that took it, and an upstream lists every job made with
//! its credential, whichever key asked the gateway. So the gateway records, through Raft, the
//! key that created each job, and `GET /v1/videos` shows a key only the jobs recorded as its
//! own. Retrieve, content and delete need no lookup: their ids are signed for the key.
//!
//! Invariants kept here:
//! - `owners`, `by_age` and `per_key` describe the same entries.
//! - Bounded: an entry older than [`RETENTION_SECS`] (by the time carried in the newest
//!   record) is forgotten, and a key keeps at most [`JOBS_PER_KEY`] entries, its oldest
//!   forgotten first. A forgotten job still answers to its id; it is only no longer listed.
//! - Deterministic: times travel inside the commands; nothing here reads a clock.

use imbl::{OrdMap, OrdSet};
use serde::{Deserialize, Serialize};

use crate::model::KeyId;

/// How long a job stays listed: upstreams keep jobs and their content for a limited time
/// (OpenAI's carry `expires_at`), after which the upstream no longer lists them anyway.
pub const RETENTION_SECS: u64 = 7 * 24 * 3600;

/// The most jobs one key has listed; beyond it, its oldest are forgotten first.
pub const JOBS_PER_KEY: usize = 1000;

/// A job as the upstream knows it: the upstream's id in the settings and the job's own id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct VideoJob {
    pub upstream: String,
    pub job: String,
}

/// The owner of every recorded job (see the module doc). Cheap to clone: persistent maps.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VideoOwners {
    /// Each job's key and the time it was recorded (seconds since the epoch).
    owners: OrdMap<VideoJob, (KeyId, u64)>,
    /// Every entry by time, oldest first: for retention.
    by_age: OrdSet<(u64, VideoJob)>,
    /// Each key's entries by time, oldest first: for its bound and for deleting the key.
    per_key: OrdMap<KeyId, OrdSet<(u64, VideoJob)>>,
}

impl VideoOwners {
    /// Whether `key` created `job` on `upstream` (and it is still recorded).
    pub fn owns(&self, key: &KeyId, upstream: &str, job: &str) -> bool {
        // The lookup needs an owned key; a list checks at most a page of jobs.
        let job = VideoJob {
            upstream: upstream.to_owned(),
            job: job.to_owned(),
        };
        self.owners.get(&job).is_some_and(|(owner, _)| owner == key)
    }

    /// How many jobs are recorded.
    pub fn len(&self) -> usize {
        self.owners.len()
    }

    pub fn is_empty(&self) -> bool {
        self.owners.is_empty()
    }

    /// Records `key` as the creator of `job` at `at`, then applies the bounds. A job id the
    /// upstream hands out again (after a restart, say) belongs to its latest creator.
    pub fn record(&mut self, key: KeyId, job: VideoJob, at: u64) {
        self.remove(&job);
        self.by_age.insert((at, job.clone()));
        self.per_key
            .entry(key.clone())
            .or_default()
            .insert((at, job.clone()));
        self.owners.insert(job, (key.clone(), at));

        let horizon = at.saturating_sub(RETENTION_SECS);
        while let Some((oldest_at, oldest)) = self.by_age.get_min().cloned() {
            if oldest_at >= horizon {
                break;
            }
            self.remove(&oldest);
        }
        while let Some(oldest) = self
            .per_key
            .get(&key)
            .filter(|jobs| jobs.len() > JOBS_PER_KEY)
            .and_then(|jobs| jobs.get_min().cloned())
        {
            self.remove(&oldest.1);
        }
    }

    /// Forgets `job` if `key` owns it (a deleted job); another key's entry stays.
    pub fn forget(&mut self, key: &KeyId, job: &VideoJob) {
        if self.owners.get(job).is_some_and(|(owner, _)| owner == key) {
            self.remove(job);
        }
    }

    /// Forgets every job of `key` (a deleted key).
    pub fn forget_key(&mut self, key: &KeyId) {
        if let Some(jobs) = self.per_key.remove(key) {
            for (at, job) in jobs {
                self.owners.remove(&job);
                self.by_age.remove(&(at, job));
            }
        }
    }

    fn remove(&mut self, job: &VideoJob) {
        let Some((key, at)) = self.owners.remove(job) else {
            return;
        };
        let entry = (at, job.clone());
        self.by_age.remove(&entry);
        if let Some(jobs) = self.per_key.get_mut(&key) {
            jobs.remove(&entry);
            if jobs.is_empty() {
                self.per_key.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> KeyId {
        KeyId::parse(id).unwrap()
    }

    fn job(id: &str) -> VideoJob {
        VideoJob {
            upstream: "up".into(),
            job: id.into(),
        }
    }

    #[test]
    fn a_job_is_owned_only_by_the_key_that_created_it() {
        let mut owners = VideoOwners::default();
        owners.record(key("key_a"), job("v1"), 100);
        owners.record(key("key_b"), job("v2"), 101);
        assert!(owners.owns(&key("key_a"), "up", "v1"));
        assert!(!owners.owns(&key("key_b"), "up", "v1"));
        assert!(!owners.owns(&key("key_a"), "other-up", "v1"));
        assert!(owners.owns(&key("key_b"), "up", "v2"));
    }

    #[test]
    fn only_the_owner_forgets_a_job_and_a_deleted_key_forgets_all_of_its() {
        let mut owners = VideoOwners::default();
        owners.record(key("key_a"), job("v1"), 100);
        owners.record(key("key_a"), job("v2"), 100);
        owners.record(key("key_b"), job("v3"), 100);
        owners.forget(&key("key_b"), &job("v1"));
        assert!(owners.owns(&key("key_a"), "up", "v1"));
        owners.forget(&key("key_a"), &job("v1"));
        assert!(!owners.owns(&key("key_a"), "up", "v1"));
        owners.forget_key(&key("key_a"));
        assert!(!owners.owns(&key("key_a"), "up", "v2"));
        assert!(owners.owns(&key("key_b"), "up", "v3"));
        assert_eq!(owners.len(), 1);
        assert_eq!(owners.by_age.len(), 1);
        assert_eq!(owners.per_key.len(), 1);
    }

    #[test]
    fn a_job_id_handed_out_again_belongs_to_its_latest_creator() {
        let mut owners = VideoOwners::default();
        owners.record(key("key_a"), job("v1"), 100);
        owners.record(key("key_b"), job("v1"), 200);
        assert!(!owners.owns(&key("key_a"), "up", "v1"));
        assert!(owners.owns(&key("key_b"), "up", "v1"));
        assert_eq!((owners.len(), owners.by_age.len()), (1, 1));
        assert!(!owners.per_key.contains_key(&key("key_a")));
    }

    #[test]
    fn entries_older_than_the_retention_are_forgotten() {
        let mut owners = VideoOwners::default();
        owners.record(key("key_a"), job("old"), 1_000);
        owners.record(key("key_b"), job("kept"), 2_000);
        owners.record(key("key_b"), job("new"), 1_000 + RETENTION_SECS + 1);
        assert!(!owners.owns(&key("key_a"), "up", "old"));
        assert!(owners.owns(&key("key_b"), "up", "kept"));
        assert!(owners.owns(&key("key_b"), "up", "new"));
        assert!(!owners.per_key.contains_key(&key("key_a")));
    }

    #[test]
    fn a_key_keeps_at_most_its_bound_oldest_forgotten_first() {
        let mut owners = VideoOwners::default();
        owners.record(key("key_b"), job("other"), 0);
        for i in 0..=JOBS_PER_KEY as u64 {
            owners.record(key("key_a"), job(&format!("v{i}")), i);
        }
        assert!(!owners.owns(&key("key_a"), "up", "v0"));
        assert!(owners.owns(&key("key_a"), "up", "v1"));
        assert!(owners.owns(&key("key_b"), "up", "other"));
        assert_eq!(owners.len(), JOBS_PER_KEY + 1);
    }
}
