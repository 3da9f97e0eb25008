//! Replay guard: remembers each accepted (signer, UUID) until its timestamp
//! leaves the freshness window, after which the freshness check refuses it
//! anyway. Memory is bounded; when full it refuses new requests rather than
//! forgetting old ones, because forgetting would re-open replays.

use std::collections::{BTreeSet, HashSet};
use std::sync::Mutex;

use uuid::Uuid;

use crate::epistula::EpistulaError;
use crate::keys::AccountId;

/// Default capacity: 100k requests inside one window (~6k requests/s at ±8 s).
pub const DEFAULT_CAPACITY: usize = 100_000;

type Key = (AccountId, Uuid);

#[derive(Debug)]
pub struct ReplayGuard {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    seen: HashSet<Key>,
    by_expiry: BTreeSet<(u64, Key)>,
}

impl Default for ReplayGuard {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl ReplayGuard {
    pub fn new(capacity: usize) -> Self {
        ReplayGuard {
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Admit a request once. `expires_ms` is when its timestamp goes stale.
    pub fn admit(
        &self,
        signer: AccountId,
        uuid: Uuid,
        expires_ms: u64,
        now_ms: u64,
    ) -> Result<(), EpistulaError> {
        // A poisoned lock only means another thread panicked mid-insert; the
        // sets are still consistent enough to keep refusing replays.
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(&(exp, key)) = inner.by_expiry.first() {
            if exp >= now_ms {
                break;
            }
            inner.by_expiry.pop_first();
            inner.seen.remove(&key);
        }
        let key = (signer, uuid);
        if inner.seen.contains(&key) {
            return Err(EpistulaError::Replayed {
                signer: signer.to_ss58(),
                uuid,
            });
        }
        if inner.seen.len() >= self.capacity {
            return Err(EpistulaError::ReplayGuardFull(self.capacity));
        }
        inner.seen.insert(key);
        inner.by_expiry.insert((expires_ms, key));
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .seen
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(b: u8) -> AccountId {
        AccountId([b; 32])
    }

    #[test]
    fn same_uuid_from_two_signers_is_not_a_replay() {
        let g = ReplayGuard::new(10);
        let u = Uuid::from_u128(7);
        g.admit(who(1), u, 100, 0).unwrap();
        g.admit(who(2), u, 100, 0).unwrap();
        assert!(matches!(
            g.admit(who(1), u, 100, 50),
            Err(EpistulaError::Replayed { .. })
        ));
    }

    #[test]
    fn entries_expire_and_memory_stays_bounded() {
        let g = ReplayGuard::new(3);
        for i in 0..3 {
            g.admit(who(1), Uuid::from_u128(i), 100 + i as u64, 0)
                .unwrap();
        }
        assert_eq!(
            g.admit(who(1), Uuid::from_u128(9), 200, 50),
            Err(EpistulaError::ReplayGuardFull(3))
        );
        // At 101 the first two have expired; room again.
        g.admit(who(1), Uuid::from_u128(9), 200, 102).unwrap();
        assert_eq!(g.len(), 2);
        // An expired entry may be admitted again: freshness refuses it upstream.
        g.admit(who(1), Uuid::from_u128(0), 300, 150).unwrap();
    }

    #[test]
    fn shared_between_threads() {
        let g = std::sync::Arc::new(ReplayGuard::new(10_000));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let g = g.clone();
                std::thread::spawn(move || {
                    (0..1000)
                        .filter(|i| g.admit(who(1), Uuid::from_u128(*i), 10, 0).is_ok())
                        .count()
                })
            })
            .collect();
        let admitted: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(
            admitted, 1000,
            "each UUID admitted exactly once across threads"
        );
    }
}
