//! musicrfm as a CLAP / VST3 plugin (and a standalone app with the `standalone` feature).
//!
//! Threads (docs/architecture.md, "Threads in the plugin"): the host's audio thread runs
//! [`audio::AudioState::process`]; the model runs on the engine thread (`engine::stream`), which
//! `activate()` starts; the engine link thread ([`engine_link`]) feeds it the persisted state and
//! the setup parameters; the GUI thread edits parameters and state. Nothing starts in `Default`,
//! so a host's scan stays cheap.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::Ordering::{Acquire, Release};
use std::time::{Duration, Instant};

use engine::stream::{Clock, Engine, EngineConfig, reprompt_frames_for};
use nice_plug::prelude::*;
use nice_plug_egui::RepaintNotifier;

pub mod audio;
pub mod editor_feed;
pub mod engine_link;
pub mod params;
pub mod standalone;
pub mod timeline;

use audio::AudioState;
use engine_link::EngineLink;
use params::ClockMode;
pub use params::MusicrfmParams;

/// How long `activate()` waits for a set model to load, so the latency it reports is the
/// engine's.
const LOAD_WAIT: Duration = Duration::from_secs(60);

pub struct Musicrfm {
    /// Shared with the host wrapper (all threads), the engine link thread and the editor.
    params: Arc<MusicrfmParams>,
    /// Cloned into the editor; the audio side pokes it when engine status changes.
    repaint: RepaintNotifier,
    /// The engine link (owns the engine); main thread creates and drops it in `activate()`.
    link: Option<EngineLink>,
    /// The configuration the running engine was started with.
    engine_config: Option<EngineConfig>,
    /// The audio thread's state (the engine's audio endpoint); `None` until `activate()`.
    audio: Option<AudioState>,
}

impl Default for Musicrfm {
    fn default() -> Self {
        let params = Arc::new(MusicrfmParams::default());
        standalone::apply_launch(&params); // the standalone app's launch options, if any
        Self {
            params,
            repaint: RepaintNotifier::new(),
            link: None,
            engine_config: None,
            audio: None,
        }
    }
}

impl Musicrfm {
    /// Start (or keep) the engine for `config`; returns the latency to report.
    fn start_engine(&mut self, config: EngineConfig, offline: bool) -> Option<u32> {
        if self.engine_config.as_ref() != Some(&config) || self.link.is_none() {
            self.audio = None;
            self.link = None; // stops the previous link and engine threads
            let (handle, endpoint) = Engine::spawn(config.clone()).ok()?;
            self.params.editor_feed.set(Some(handle.monitor()));
            let link = EngineLink::spawn(handle, self.params.clone()).ok()?;
            let rate = u64::from(config.sample_rate);
            self.audio = Some(AudioState::new(endpoint, link.shared.clone(), rate));
            self.link = Some(link);
            self.engine_config = Some(config);
        }
        let link = self.link.as_ref()?;
        let audio = self.audio.as_mut()?;
        // The link thread sets this again once it has sent the state as it is now.
        link.shared.settled.store(false, Release);
        let started = Instant::now();
        while started.elapsed() < LOAD_WAIT {
            let settled = link.shared.settled.load(Acquire);
            let expect = link.shared.expect_audio.load(Acquire);
            if settled && (!expect || audio.endpoint.status().running) {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let status = audio.endpoint.status();
        let latency = if status.running {
            status.latency_samples as u32
        } else {
            0
        };
        audio.activated(offline, latency);
        Some(latency)
    }
}

/// `MUSICRFM_SIMULATE_STEP_MS`: the least time a decoder step takes (see
/// [`EngineConfig::step_floor`]): on a fast machine, hear what a slower one does. Unset, empty
/// or not a number: full speed.
fn simulated_step_time() -> Duration {
    std::env::var("MUSICRFM_SIMULATE_STEP_MS")
        .ok()
        .and_then(|ms| ms.trim().parse::<f64>().ok())
        .filter(|ms| ms.is_finite() && *ms > 0.0)
        .map_or(Duration::ZERO, |ms| Duration::from_secs_f64(ms / 1000.0))
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
    /// Note on/off for the slot in MIDI notes mode.
    const MIDI_INPUT: MidiConfig = MidiConfig::Basic;
    /// Large enough that the wrapper's input event queue never grows (grows = allocates) in
    /// `process()`: a dense automation lane plus a chord per buffer.
    const INPUT_EVENT_CAPACITY: usize = 8192;

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
        buffer_config: &BufferConfig,
        context: &mut impl ActivateContext<Self>,
    ) -> bool {
        // The context parameter's seconds as decoder positions.
        let window =
            self.params.context.value().max(1) as usize * params::STEPS_PER_SECOND as usize;
        let config = EngineConfig {
            sample_rate: buffer_config.sample_rate.round() as u32,
            clock: match self.params.clock.value() {
                ClockMode::Timeline => Clock::Timeline,
                ClockMode::Live => Clock::Live,
            },
            cushion_steps: self.params.cushion.value().max(0) as usize,
            window,
            reprompt_frames: reprompt_frames_for(window),
            step_floor: simulated_step_time(),
            ..EngineConfig::default()
        };
        let offline = buffer_config.process_mode == ProcessMode::Offline;
        match self.start_engine(config, offline) {
            Some(latency) => {
                context.set_latency_samples(latency);
                true
            }
            None => false,
        }
    }

    fn reset(&mut self) {
        if let Some(audio) = &mut self.audio {
            audio.playing = false;
            audio.notes.clear();
        }
    }

    fn process(
        &mut self,
        buffer: &mut Buffer,
        _aux: &mut AuxiliaryBuffers,
        context: &mut impl ProcessContext<Self>,
    ) -> ProcessStatus {
        match &mut self.audio {
            Some(audio) => audio.process(&self.params, buffer, context),
            None => {
                for channel in buffer.as_slice() {
                    channel.fill(0.0);
                }
                ProcessStatus::Normal
            }
        }
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
