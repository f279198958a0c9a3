//! musicrfm as a CLAP / VST3 plugin (and a standalone app with the `standalone` feature).
//!
//! The audio thread only reads parameters and writes output; the model will run on an engine
//! thread of its own (see docs/architecture.md, "Threads in the plugin"). Until the engine is wired
//! in, the plugin renders silence.

use std::num::NonZeroU32;
use std::sync::Arc;

use nice_plug::prelude::*;
use nice_plug_egui::RepaintNotifier;

pub mod params;

pub use params::MusicrfmParams;

pub struct Musicrfm {
    /// Shared with the host wrapper (all threads) and the editor (GUI thread).
    params: Arc<MusicrfmParams>,
    /// Cloned into the editor; the audio side pokes it when engine status changes.
    repaint: RepaintNotifier,
}

impl Default for Musicrfm {
    fn default() -> Self {
        Self {
            params: Arc::new(MusicrfmParams::default()),
            repaint: RepaintNotifier::new(),
        }
    }
}

impl Plugin for Musicrfm {
    const NAME: &'static str = "musicrfm";
    const VENDOR: &'static str = "musicrfm";
    const URL: &'static str = env!("CARGO_PKG_REPOSITORY");
    const EMAIL: &'static str = "dev@musicrfm.invalid";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    const AUDIO_IO_LAYOUTS: &'static [AudioIOLayout] = &[AudioIOLayout {
        main_input_channels: None,
        main_output_channels: NonZeroU32::new(2),
        ..AudioIOLayout::const_default()
    }];

    const SAMPLE_ACCURATE_AUTOMATION: bool = true;

    type Editor = nice_plug_egui::EguiEditor<gui::EditorApp<MusicrfmParams>>;
    type SysExMessage = ();
    type BackgroundTask = ();

    fn params(&self) -> Arc<dyn Params> {
        self.params.clone()
    }

    fn editor(&mut self, _async_executor: AsyncExecutor<Self>) -> Option<Self::Editor> {
        gui::create_editor(self.params.clone(), self.repaint.clone())
    }

    fn activate(
        &mut self,
        _audio_io_layout: &AudioIOLayout,
        _buffer_config: &BufferConfig,
        _context: &mut impl ActivateContext<Self>,
    ) -> bool {
        true
    }

    fn process(
        &mut self,
        buffer: &mut Buffer,
        _aux: &mut AuxiliaryBuffers,
        _context: &mut impl ProcessContext<Self>,
    ) -> ProcessStatus {
        for channel in buffer.as_slice() {
            channel.fill(0.0);
        }
        ProcessStatus::Normal
    }
}

impl ClapPlugin for Musicrfm {
    const CLAP_ID: &'static str = "com.musicrfm.musicrfm";
    const CLAP_DESCRIPTION: Option<&'static str> =
        Some("MusicGen steered live by RFM concept directions");
    const CLAP_MANUAL_URL: Option<&'static str> = Some(Self::URL);
    const CLAP_SUPPORT_URL: Option<&'static str> = None;
    const CLAP_FEATURES: &'static [ClapFeature] = &[
        ClapFeature::Instrument,
        ClapFeature::Synthesizer,
        ClapFeature::Stereo,
    ];
}

impl Vst3Plugin for Musicrfm {
    const VST3_CLASS_ID: [u8; 16] = *b"musicrfmSteerGen";
    const VST3_SUBCATEGORIES: &'static [Vst3SubCategory] =
        &[Vst3SubCategory::Instrument, Vst3SubCategory::Synth];
}

nice_export_clap!(Musicrfm);
nice_export_vst3!(Musicrfm);
