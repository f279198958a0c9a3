//! What the editor reads of the engine, handed over without locks on the audio thread.
//!
//! `activate()` (main thread) stores the running engine's [`Monitor`] here whenever it starts
//! an engine; the GUI thread reads it each frame with a `try_read` (the main thread holds the
//! write lock for one pointer swap) and builds a [`gui::EngineView`] from atomics. The audio
//! thread never touches this; the editor never touches the engine's command channel or model.

use engine::stream::{ModelState, Monitor};
use parking_lot::RwLock;

use crate::params::SLOTS;

#[derive(Default)]
pub struct EditorFeed {
    /// The running engine's monitor. Main thread writes (activate), GUI thread reads.
    monitor: RwLock<Option<Monitor>>,
}

impl EditorFeed {
    /// A new engine started (or none runs).
    pub fn set(&self, monitor: Option<Monitor>) {
        *self.monitor.write() = monitor;
    }

    /// The engine's readout, or `None` when none runs (or, for one frame, while a new engine
    /// is being handed over).
    pub fn view(&self) -> Option<gui::EngineView> {
        let monitor = self.monitor.try_read()?.clone()?;
        Some(view(&monitor))
    }
}

/// The editor's view of `monitor`, read now.
pub fn view(monitor: &Monitor) -> gui::EngineView {
    let status = monitor.status();
    let (buffered, capacity) = monitor.buffered();
    let model = match monitor.model() {
        ModelState::None => gui::ModelView::None,
        ModelState::Loading(name) => gui::ModelView::Loading(name),
        ModelState::Loaded(m) => gui::ModelView::Loaded {
            name: m.name,
            d_model: m.d_model,
            blocks: m.blocks,
        },
        ModelState::Busy => gui::ModelView::Busy,
    };
    gui::EngineView {
        model,
        backend: engine::stream::monitor::backend(),
        running: status.running,
        step: status.step,
        steps_done: status.steps_done,
        underruns: status.underruns,
        slides: status.slides,
        cached_steps: status.cached_steps,
        prompt_pending: status.prompt_pending,
        steps_per_second: monitor.steps_per_second(),
        buffered_seconds: monitor.seconds(buffered),
        buffer_capacity_seconds: monitor.seconds(capacity),
        latency_seconds: monitor.seconds(status.latency_samples),
        meters: std::array::from_fn(|slot| {
            (slot < SLOTS)
                .then(|| monitor.meter(slot))
                .flatten()
                .map(|m| gui::MeterView {
                    scores: m.scores().to_vec(),
                    updates: m.updates,
                })
        }),
    }
}

/// Repo ids of the MusicGen models in the local Hugging Face cache (`models--ORG--NAME` with a
/// snapshot that has the model files), sorted.
pub fn cached_models() -> Vec<String> {
    let mut ids: Vec<String> = engine::hub::cache_dirs()
        .iter()
        .filter_map(|dir| std::fs::read_dir(dir).ok())
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let id = name.strip_prefix("models--")?.replacen("--", "/", 1);
            let snapshots = std::fs::read_dir(entry.path().join("snapshots")).ok()?;
            snapshots
                .flatten()
                .any(|s| engine::hub::download::has_model_files(&s.path()))
                .then_some(id)
        })
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{MusicrfmParams, Shape};
    use engine::stream::{Engine, EngineConfig};
    use gui::EditorModel;
    use nice_plug::prelude::Param;

    fn set(param: &impl Param, plain: f32) {
        let ptr = param.as_ptr();
        // SAFETY: the parameter is alive for the call.
        unsafe { ptr._internal_set_normalized_value(ptr.preview_normalized(plain)) };
    }

    #[test]
    fn the_alpha_preview_is_master_times_the_shaped_strength_per_step() {
        let params = MusicrfmParams::default();
        set(&params.master, 1.5);
        set(&params.slots.0[2].strength, 0.5);
        let shape = &params.slots.0[2].shape;
        let ptr = shape.as_ptr();
        // SAFETY: as above.
        unsafe { ptr._internal_set_normalized_value(shape.preview_normalized(Shape::Rise)) };
        set(&params.slots.0[2].length, 2.0); // 100 steps
        let mut alpha = [0.0f32; 4];
        params.alpha_preview(2, 50, &mut alpha);
        // Rise over 100 steps from the origin: step 50 is halfway.
        assert!((alpha[0] - 1.5 * 0.5 * 0.5).abs() < 1e-6, "{alpha:?}");
        assert!((alpha[1] - 1.5 * 0.5 * 0.51).abs() < 1e-6, "{alpha:?}");
        params.alpha_preview(2, 100, &mut alpha);
        assert!(alpha.iter().all(|a| (a - 0.75).abs() < 1e-6), "{alpha:?}");
        params.alpha_preview(0, 0, &mut alpha);
        assert_eq!(alpha, [0.0; 4], "slot 1 has strength 0");
    }

    #[test]
    fn the_feed_reads_a_running_engine_and_none_before() {
        let feed = EditorFeed::default();
        assert_eq!(feed.view(), None);
        let (handle, _endpoint) = Engine::spawn(EngineConfig {
            sample_rate: 44_100,
            ring_samples: 44_100,
            ..EngineConfig::default()
        })
        .unwrap();
        feed.set(Some(handle.monitor()));
        let view = feed.view().expect("an engine runs");
        assert_eq!(view.model, gui::ModelView::None);
        assert!(!view.running);
        assert_eq!(view.buffer_capacity_seconds, 1.0);
        assert_eq!(view.steps_per_second, None);
        assert!(view.meters.iter().all(Option::is_none));
    }
}
