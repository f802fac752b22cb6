//! Key actors under the node's supervision tree: they lease the next slice of a budget into its
//! slot with its first mark persisted, stop renewing near the end of a budget, give a failed
//! grant back, and are restarted over the same slots when they fail.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use aigw_actors::lease::{HeldLease, first_mark};
use aigw_actors::{KeyActors, KeyLeases, KeyMsg, LeaseLedger, NodeActors};
use aigw_config::RoutingSettings;
use parking_lot::Mutex;

/// A ledger that grants from `available` and records what it was asked: the node's is Raft.
#[derive(Default)]
struct RecordingLedger {
    available: AtomicU64,
    /// The next grant fails (the write timed out) instead of granting.
    fail_next: AtomicBool,
    /// The next grant panics (a bug in the actor's I/O).
    panic_next: AtomicBool,
    /// Grants wait for `release` (a Raft write still in flight).
    hold: AtomicBool,
    release: tokio::sync::Notify,
    closed: Mutex<Vec<(u64, u64)>>,
    marks: Mutex<Vec<(u64, u64)>>,
}

impl LeaseLedger for RecordingLedger {
    type Budget = &'static str;

    fn available(&self, _budget: &&'static str) -> u64 {
        self.available.load(Ordering::SeqCst)
    }

    async fn grant(&self, _budget: &&'static str, _lease: u64, want: u64) -> Result<u64, String> {
        if self.panic_next.swap(false, Ordering::SeqCst) {
            panic!("injected");
        }
        if self.fail_next.swap(false, Ordering::SeqCst) {
            return Err("timed out".into());
        }
        if self.hold.load(Ordering::SeqCst) {
            self.release.notified().await;
        }
        let granted = want.min(self.available.load(Ordering::SeqCst));
        self.available.fetch_sub(granted, Ordering::SeqCst);
        Ok(granted)
    }

    async fn close(&self, _budget: &&'static str, lease: u64, used: u64) {
        self.closed.lock().push((lease, used));
    }

    async fn persist_mark(&self, lease: u64, mark: u64) -> Result<(), String> {
        self.marks.lock().push((lease, mark));
        Ok(())
    }
}

async fn tree(prefix: &str) -> (NodeActors, Arc<RecordingLedger>, KeyActors<RecordingLedger>) {
    let actors = NodeActors::start(1, prefix, Vec::new(), &RoutingSettings::default())
        .await
        .unwrap();
    let ledger = Arc::new(RecordingLedger::default());
    let keys = actors.start_keys(Arc::clone(&ledger)).await.unwrap();
    (actors, ledger, keys)
}

fn renew(want: u64) -> KeyMsg<&'static str> {
    KeyMsg::Renew {
        slot: 1,
        budget: "key_a/tokens/0",
        period: 0,
        want,
    }
}

async fn wait_until(what: &str, condition: impl Fn() -> bool) {
    for _ in 0..500 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

fn next_of(leases: &KeyLeases<&'static str>) -> Option<HeldLease<&'static str>> {
    leases[1].next.lock().clone()
}

#[tokio::test]
async fn a_key_actor_parks_the_next_slice_with_its_first_mark_persisted() {
    let (actors, ledger, keys) = tree("keys-next").await;
    ledger.available.store(1000, Ordering::SeqCst);
    let leases: Arc<KeyLeases<&'static str>> = Arc::default();
    assert!(leases[1].start_renewal());
    keys.send("key_a", &leases, renew(100)).await.unwrap();
    wait_until("the renewal is over", || {
        !leases[1].renewing.load(Ordering::Acquire)
    })
    .await;

    let next = next_of(&leases).expect("a next slice is parked");
    assert_eq!((next.slice, next.used, next.period), (100, 0, 0));
    // The mark in memory is the one on disk, not the whole slice: admissions wait for a
    // raise before they pass it, so a crash never settles below what was admitted.
    assert_eq!(next.mark, first_mark(0, 100));
    assert_eq!(*ledger.marks.lock(), vec![(next.id, first_mark(0, 100))]);
    assert_eq!(ledger.available.load(Ordering::SeqCst), 900);

    // One slot holds one next slice: a second renewal leases nothing more.
    keys.send("key_a", &leases, renew(100)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(ledger.available.load(Ordering::SeqCst), 900);
    actors.stop().await;
}

#[tokio::test]
async fn no_slice_is_leased_ahead_when_the_budget_has_less_than_one_left() {
    let (actors, ledger, keys) = tree("keys-end").await;
    ledger.available.store(99, Ordering::SeqCst);
    let leases: Arc<KeyLeases<&'static str>> = Arc::default();
    keys.send("key_a", &leases, renew(100)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(next_of(&leases), None);
    assert_eq!(
        ledger.available.load(Ordering::SeqCst),
        99,
        "left for whoever needs it"
    );
    actors.stop().await;
}

#[tokio::test]
async fn a_grant_that_may_have_been_applied_is_given_back_unused() {
    let (actors, ledger, keys) = tree("keys-fail").await;
    ledger.available.store(1000, Ordering::SeqCst);
    ledger.fail_next.store(true, Ordering::SeqCst);
    let leases: Arc<KeyLeases<&'static str>> = Arc::default();
    keys.send("key_a", &leases, renew(100)).await.unwrap();
    wait_until("the lease is closed", || !ledger.closed.lock().is_empty()).await;
    let closed = ledger.closed.lock().clone();
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].1, 0, "closed with nothing used");
    assert_eq!(next_of(&leases), None);
    actors.stop().await;
}

#[tokio::test]
async fn a_key_actor_that_fails_is_restarted_over_the_same_slots() {
    let (actors, ledger, keys) = tree("keys-restart").await;
    ledger.available.store(1000, Ordering::SeqCst);
    ledger.panic_next.store(true, Ordering::SeqCst);
    let leases: Arc<KeyLeases<&'static str>> = Arc::default();
    assert!(leases[1].start_renewal());
    keys.send("key_a", &leases, renew(100)).await.unwrap();
    // The supervisor restarts it, and frees the renewal it died in.
    wait_until("the renewal is freed", || {
        !leases[1].renewing.load(Ordering::Acquire)
    })
    .await;
    assert_eq!(next_of(&leases), None);

    // The same key's next renewal reaches the new incarnation, over the same slots.
    assert!(leases[1].start_renewal());
    keys.send("key_a", &leases, renew(100)).await.unwrap();
    wait_until("the next slice is parked", || next_of(&leases).is_some()).await;
    assert_eq!(ledger.available.load(Ordering::SeqCst), 900);

    // A stopped key actor is started again on demand.
    keys.stop("key_a", "idle");
    tokio::time::sleep(Duration::from_millis(50)).await;
    leases[1].next.lock().take();
    keys.send("key_a", &leases, renew(100)).await.unwrap();
    wait_until("a slice is parked again", || next_of(&leases).is_some()).await;
    actors.stop().await;
}

/// Regression for jepsen's exact phase: a request that finds its slice spent while the key
/// actor is leasing the next one waits for that renewal and finds the slice parked, instead of
/// asking beside it (the renewal may be taking the budget's last units).
#[tokio::test]
async fn a_request_can_wait_for_the_renewal_under_way_and_find_the_next_slice() {
    let (actors, ledger, keys) = tree("keys-wait").await;
    ledger.available.store(100, Ordering::SeqCst);
    ledger.hold.store(true, Ordering::SeqCst);
    let leases: Arc<KeyLeases<&'static str>> = Arc::default();
    assert!(leases[1].start_renewal());
    keys.send("key_a", &leases, renew(100)).await.unwrap();
    let waiter = {
        let leases = Arc::clone(&leases);
        tokio::spawn(async move {
            leases[1].renewal_over(Duration::from_secs(30)).await;
            next_of(&leases)
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !waiter.is_finished(),
        "it waits while the grant is in flight"
    );
    // A stored permit: the grant goes on whether or not it is already waiting.
    ledger.release.notify_one();
    let next = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the renewal's end wakes the waiter")
        .unwrap();
    assert_eq!(next.map(|l| l.slice), Some(100), "the next slice is parked");
    // With no renewal under way, there is nothing to wait for.
    tokio::time::timeout(
        Duration::from_millis(500),
        leases[1].renewal_over(Duration::from_secs(30)),
    )
    .await
    .expect("returns at once");
    actors.stop().await;
}
