//! Fd leases: which shard the unbound ops of one fd go to while a lease
//! holds (see `native_any`), striped by fd number.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use spargio_sys::op::fs::SharedFd;

const LEASE_STRIPES: usize = 16;

/// The runtime's fd leases, striped by fd number.
pub(crate) struct FdLeases {
    stripes: [Mutex<Stripe>; LEASE_STRIPES],
}

impl Default for FdLeases {
    fn default() -> Self {
        FdLeases {
            stripes: std::array::from_fn(|_| Mutex::default()),
        }
    }
}

#[derive(Default)]
struct Stripe {
    leases: HashMap<RawFd, LeaseState>,
    /// Size at which lapsed leases are swept out.
    sweep_at: usize,
}

struct LeaseState {
    shard: usize,
    /// Ops in flight (and sessions) holding the lease.
    holders: usize,
    /// How long the lease outlives its last holder.
    idle: Duration,
    /// When the lease lapses, once it has no holder.
    expires: Option<Instant>,
}

impl LeaseState {
    fn holds(&self, now: Instant) -> bool {
        self.holders > 0 || self.expires.is_some_and(|t| now < t)
    }
}

impl FdLeases {
    fn stripe(&self, fd: RawFd) -> MutexGuard<'_, Stripe> {
        self.stripes[fd as usize % LEASE_STRIPES]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The shard `fd` is leased to, if its lease holds at `now`.
    pub(crate) fn holder(&self, fd: RawFd, now: Instant) -> Option<usize> {
        let g = self.stripe(fd);
        g.leases.get(&fd).filter(|l| l.holds(now)).map(|l| l.shard)
    }

    /// Joins `fd`'s lease, or starts one on `pick()`'s shard if none holds.
    pub(crate) fn acquire(
        self: &Arc<Self>,
        fd: &SharedFd,
        idle: Duration,
        pick: impl FnOnce() -> usize,
    ) -> Lease {
        let raw = fd.as_raw_fd();
        let now = Instant::now();
        let mut g = self.stripe(raw);
        let shard = match g.leases.get_mut(&raw) {
            Some(l) if l.holds(now) => {
                l.holders += 1;
                l.idle = idle;
                l.expires = None;
                l.shard
            }
            _ => {
                if g.leases.len() >= g.sweep_at {
                    g.leases.retain(|_, l| l.holds(now));
                    g.sweep_at = (g.leases.len() * 2).max(64);
                }
                let shard = pick();
                g.leases.insert(
                    raw,
                    LeaseState {
                        shard,
                        holders: 1,
                        idle,
                        expires: None,
                    },
                );
                shard
            }
        };
        Lease {
            leases: self.clone(),
            fd: fd.clone(),
            shard,
        }
    }
}

/// One holder's share of an fd's lease. It keeps the fd open, so the fd
/// number cannot be reused (and inherit the lease) while the lease is held.
pub(crate) struct Lease {
    leases: Arc<FdLeases>,
    fd: SharedFd,
    pub(crate) shard: usize,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let raw = self.fd.as_raw_fd();
        let mut g = self.leases.stripe(raw);
        if let Some(l) = g.leases.get_mut(&raw) {
            l.holders -= 1;
            if l.holders == 0 {
                l.expires = Some(Instant::now() + l.idle);
            }
        }
    }
}
