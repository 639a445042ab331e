//! Which managers or accounts a stage traces, and what it kept about them
//! since it was last asked (`feidan backtest --trace`, `--trace-account`).
//! Nothing is kept, and nothing is looked up, while no one is traced.

use crate::event::Id;

#[derive(Debug)]
pub struct Tracer<T> {
    traced: ahash::HashSet<Id>,
    kept: Vec<T>,
}

impl<T> Default for Tracer<T> {
    fn default() -> Self {
        Tracer {
            traced: ahash::HashSet::default(),
            kept: Vec::new(),
        }
    }
}

impl<T> Tracer<T> {
    /// Traces these ids from now on.
    pub fn add(&mut self, ids: impl IntoIterator<Item = Id>) {
        self.traced.extend(ids);
    }

    /// Whether `id` is traced.
    pub fn wants(&self, id: &str) -> bool {
        !self.traced.is_empty() && self.traced.contains(id)
    }

    /// Keeps these traces, after the ones already kept.
    pub fn keep(&mut self, traces: impl IntoIterator<Item = T>) {
        self.kept.extend(traces);
    }

    /// What was kept since the last call, in the order kept.
    pub fn take(&mut self) -> Vec<T> {
        std::mem::take(&mut self.kept)
    }
}
