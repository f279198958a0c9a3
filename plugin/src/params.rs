//! The plugin's parameters and persisted state. Parameter ids are frozen: hosts store automation
//! and presets by these strings, so renaming one breaks every saved project.

use std::sync::Arc;

use nice_plug::prelude::*;
use parking_lot::RwLock;

/// The prompt a fresh instance starts with.
pub const DEFAULT_PROMPT: &str = "";

#[derive(Params)]
pub struct MusicrfmParams {
    /// Steering strength η of the concept direction. Written by the host (automation) and the GUI,
    /// read by the audio thread each block, which forwards it to the engine thread per step.
    #[id = "strength"]
    pub strength: FloatParam,

    /// The text prompt. Written by the GUI thread, read by the background loader; persisted in the
    /// plugin state. Never touched by the audio thread.
    #[persist = "prompt"]
    pub prompt: Arc<RwLock<String>>,
}

impl Default for MusicrfmParams {
    fn default() -> Self {
        Self {
            strength: FloatParam::new(
                "Strength",
                0.0,
                FloatRange::Linear {
                    min: -1.0,
                    max: 1.0,
                },
            )
            .with_step_size(0.001)
            .with_value_to_string(formatters::v2s_f32_rounded(3)),
            prompt: Arc::new(RwLock::new(DEFAULT_PROMPT.to_owned())),
        }
    }
}

impl gui::EditorModel for MusicrfmParams {
    fn strength(&self) -> &FloatParam {
        &self.strength
    }

    fn prompt(&self) -> &RwLock<String> {
        &self.prompt
    }
}
