//! Pinning stage threads to cores.
//!
//! Stages are pinned round-robin over the cores this process may use (its
//! cpuset), in the order they are started. With `pin_threads = false`
//! nothing is pinned and the kernel schedules freely.

/// Assigns cores to stages in start order.
#[derive(Debug)]
pub struct CorePlan {
    cores: Vec<core_affinity::CoreId>,
    next: usize,
}

impl CorePlan {
    /// A plan over the allowed cores, or an empty plan when pinning is off
    /// or the cores cannot be read.
    pub fn new(pin_threads: bool) -> Self {
        let cores = if pin_threads {
            core_affinity::get_core_ids().unwrap_or_default()
        } else {
            Vec::new()
        };
        Self { cores, next: 0 }
    }

    /// The core for the next stage, if pinning.
    pub fn next_core(&mut self) -> Option<core_affinity::CoreId> {
        if self.cores.is_empty() {
            return None;
        }
        let core = self.cores[self.next % self.cores.len()];
        self.next += 1;
        Some(core)
    }
}

/// Pins the calling thread; a failure is logged, not fatal.
pub fn pin_current(stage: &str, core: Option<core_affinity::CoreId>) {
    if let Some(core) = core
        && !core_affinity::set_for_current(core)
    {
        tracing::warn!(
            stage,
            core = core.id,
            "cannot pin thread to core; running unpinned"
        );
    }
}
