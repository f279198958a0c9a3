//! Where a generation step's time goes: nanoseconds per [`Phase`], summed over the process.
//!
//! The hot paths wrap their work in [`timed`]; a bench reads a [`Profile`] before and after the
//! steps it times and prints the difference per step. Phases nest exclusively: time spent in an
//! inner phase (the linear layers inside an attention block, a meter inside a step) is charged
//! to the inner phase only, so the phases of a step add up to at most its wall time and the
//! rest is what no phase covers (tensor glue, reshapes, residual adds, the caller's loop).
//!
//! The cost is two `Instant::now` and two relaxed atomic adds per timed region: a few hundred
//! regions per decoder step, microseconds against a step of tens of milliseconds.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// A part of a generation step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Codebook embeddings and positions.
    Embed,
    /// The blocks' linear layers (attention projections, feed-forward), activations in and out;
    /// in the CPU's one-position step also the feed-forward's activation, which runs inside its
    /// first product.
    Linears,
    /// Self- and cross-attention over the cached keys and values, the cache write included.
    Attention,
    /// Layer norms and the feed-forward activation (the CPU's one-position step: the norms).
    Norms,
    /// Steering: the vectors added after each block.
    Steering,
    /// The final norm and the per-codebook LM heads.
    LmHeads,
    /// Logits to the host, classifier-free guidance and picking the codes.
    Sampling,
    /// Live concept meters reading the residual stream.
    Meters,
    /// EnCodec decoding the new frame (streaming), and resampling to the host rate.
    Codec,
}

impl Phase {
    pub const ALL: [Phase; 9] = [
        Phase::Embed,
        Phase::Linears,
        Phase::Attention,
        Phase::Norms,
        Phase::Steering,
        Phase::LmHeads,
        Phase::Sampling,
        Phase::Meters,
        Phase::Codec,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Embed => "embed",
            Phase::Linears => "linears",
            Phase::Attention => "attention",
            Phase::Norms => "norms+act",
            Phase::Steering => "steering",
            Phase::LmHeads => "lm heads",
            Phase::Sampling => "sampling",
            Phase::Meters => "meters",
            Phase::Codec => "codec",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

static NANOS: [AtomicU64; Phase::ALL.len()] = [const { AtomicU64::new(0) }; Phase::ALL.len()];

thread_local! {
    /// The phase this thread is in and when its current stretch began.
    static CURRENT: Cell<Option<(Phase, Instant)>> = const { Cell::new(None) };
    /// What this thread charged.
    static THREAD_NANOS: [Cell<u64>; Phase::ALL.len()] = const { [const { Cell::new(0) }; Phase::ALL.len()] };
}

fn charge(phase: Phase, from: Instant, to: Instant) {
    let nanos = u64::try_from(to.saturating_duration_since(from).as_nanos()).unwrap_or(u64::MAX);
    NANOS[phase.index()].fetch_add(nanos, Ordering::Relaxed);
    THREAD_NANOS.with(|t| t[phase.index()].set(t[phase.index()].get().saturating_add(nanos)));
}

/// Restores the enclosing phase when a timed region ends, unwinding included.
struct Region {
    outer: Option<Phase>,
}

impl Drop for Region {
    fn drop(&mut self) {
        let now = Instant::now();
        if let Some((phase, since)) = CURRENT.get() {
            charge(phase, since, now);
        }
        CURRENT.set(self.outer.map(|phase| (phase, now)));
    }
}

/// Run `f`, charging its time to `phase` (less any phase timed inside it).
#[inline]
pub fn timed<T>(phase: Phase, f: impl FnOnce() -> T) -> T {
    let now = Instant::now();
    let outer = CURRENT.get().map(|(outer, since)| {
        charge(outer, since, now);
        outer
    });
    CURRENT.set(Some((phase, now)));
    let _region = Region { outer };
    f()
}

/// Nanoseconds per phase, all threads of the process together, since it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Profile {
    nanos: [u64; Phase::ALL.len()],
}

impl Profile {
    /// The counts now.
    pub fn now() -> Self {
        Self {
            nanos: std::array::from_fn(|i| NANOS[i].load(Ordering::Relaxed)),
        }
    }

    /// The counts of the calling thread alone.
    pub fn this_thread() -> Self {
        THREAD_NANOS.with(|t| Self {
            nanos: std::array::from_fn(|i| t[i].get()),
        })
    }

    /// What was charged between `earlier` and this reading.
    pub fn since(&self, earlier: &Profile) -> Profile {
        Self {
            nanos: std::array::from_fn(|i| self.nanos[i].saturating_sub(earlier.nanos[i])),
        }
    }

    /// Both readings' counts added (to sum the differences of several steps).
    pub fn plus(&self, other: &Profile) -> Profile {
        Self {
            nanos: std::array::from_fn(|i| self.nanos[i].saturating_add(other.nanos[i])),
        }
    }

    /// Milliseconds charged to `phase`.
    pub fn ms(&self, phase: Phase) -> f64 {
        self.nanos[phase.index()] as f64 / 1e6
    }

    /// Milliseconds charged to every phase together.
    pub fn total_ms(&self) -> f64 {
        self.nanos.iter().sum::<u64>() as f64 / 1e6
    }

    /// The phases with time charged, and their milliseconds.
    pub fn phases(&self) -> impl Iterator<Item = (Phase, f64)> + '_ {
        Phase::ALL
            .into_iter()
            .map(|p| (p, self.ms(p)))
            .filter(|&(_, ms)| ms > 0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spin(micros: u64) {
        let start = Instant::now();
        while start.elapsed().as_micros() < u128::from(micros) {
            std::hint::spin_loop();
        }
    }

    #[test]
    fn nested_phases_are_charged_exclusively() {
        let before = Profile::this_thread();
        let started = Instant::now();
        timed(Phase::Meters, || {
            spin(2_000);
            timed(Phase::Codec, || spin(3_000));
            spin(1_000);
        });
        let wall = started.elapsed().as_secs_f64() * 1e3;
        let p = Profile::this_thread().since(&before);
        assert!(Profile::now().ms(Phase::Codec) >= p.ms(Phase::Codec));
        assert!(p.ms(Phase::Codec) >= 3.0, "{p:?}");
        assert!(p.ms(Phase::Meters) >= 3.0, "{p:?}");
        // The inner region is not counted twice: the phases add up to at most the wall time.
        assert!(p.total_ms() <= wall + 1e-3, "{p:?} > {wall} ms");
        assert!(p.ms(Phase::Meters) < wall - 3.0 + 1e-3, "{p:?}");
    }

    #[test]
    fn a_panic_inside_restores_the_outer_phase() {
        let result = std::panic::catch_unwind(|| {
            timed(Phase::Steering, || {
                let _ = std::panic::catch_unwind(|| timed(Phase::Embed, || panic!("inner")));
                assert_eq!(CURRENT.get().map(|(p, _)| p), Some(Phase::Steering));
            })
        });
        assert!(result.is_ok());
        assert_eq!(CURRENT.get(), None);
    }
}
