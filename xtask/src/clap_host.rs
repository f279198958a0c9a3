//! A minimal CLAP host (clack-host) for the built `musicrfm.clap`: load, instantiate, state
//! save/load and editing, parameter ids, and a block-by-block process loop. Shared by
//! `cargo xtask bounce` and the plugin's host tests (`tests/tests/clap_host.rs`).

use std::ffi::CString;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use clack_extensions::latency::PluginLatency;
use clack_extensions::params::{ParamInfoBuffer, PluginParams};
use clack_extensions::render::{PluginRender, RenderMode};
use clack_extensions::state::PluginState;
use clack_host::events::event_types::{
    NoteOffEvent, NoteOnEvent, ParamValueEvent, TransportEvent, TransportFlags,
};
use clack_host::events::{EventFlags, EventHeader, Match};
use clack_host::prelude::*;
pub use clack_host::utils::ClapId;
use clack_host::utils::FixedPoint;

pub struct Shared;

impl SharedHandler<'_> for Shared {
    fn request_restart(&self) {}
    fn request_process(&self) {}
    fn request_callback(&self) {}
}

pub struct Host;

impl HostHandlers for Host {
    type Shared<'a> = Shared;
    type MainThread<'a> = ();
    type AudioProcessor<'a> = ();
}

pub type Instance = PluginInstance<Host>;

/// The plugin a test loads: `$MUSICRFM_CLAP` (`cargo xtask test` sets it to the release bundle),
/// else the `libmusicrfm.so` that `cargo test --workspace` builds in the profile directory of
/// the running test binary (`target/<profile>/deps/<test>`).
pub fn test_plugin() -> PathBuf {
    if let Some(path) = std::env::var_os("MUSICRFM_CLAP") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("."));
    profile_dir.join("libmusicrfm.so")
}

/// The plugin library's entry and its one plugin's id.
pub fn load_entry(path: &Path) -> anyhow::Result<(PluginEntry, CString)> {
    if !path.is_file() {
        bail!("plugin not built: {}", path.display());
    }
    // SAFETY: loading our own plugin library, which follows the CLAP entry contract.
    let entry = unsafe { PluginEntry::load(path) }
        .map_err(|e| anyhow!("loading {}: {e:?}", path.display()))?;
    let factory = entry
        .get_plugin_factory()
        .ok_or_else(|| anyhow!("{}: no plugin factory", path.display()))?;
    let descriptor = factory
        .plugin_descriptors()
        .next()
        .ok_or_else(|| anyhow!("{}: no plugin", path.display()))?;
    let id = descriptor
        .id()
        .ok_or_else(|| anyhow!("{}: plugin without id", path.display()))?
        .to_owned();
    Ok((entry, id))
}

pub fn instantiate(entry: &PluginEntry, id: &CString) -> anyhow::Result<Instance> {
    let info = HostInfo::new(
        "musicrfm-host",
        "musicrfm",
        "https://example.invalid",
        "0.1",
    )
    .map_err(|e| anyhow!("host info: {e:?}"))?;
    PluginInstance::<Host>::new(|_| Shared, |_| (), entry, id, &info)
        .map_err(|e| anyhow!("instantiate: {e:?}"))
}

pub fn save_state(instance: &mut Instance) -> anyhow::Result<Vec<u8>> {
    let handle = instance.plugin_handle();
    let state: PluginState = handle
        .get_extension()
        .ok_or_else(|| anyhow!("no state extension"))?;
    let mut bytes = Vec::new();
    state
        .save(&handle, &mut bytes)
        .map_err(|e| anyhow!("save state: {e:?}"))?;
    Ok(bytes)
}

pub fn load_state(instance: &mut Instance, bytes: &[u8]) -> anyhow::Result<()> {
    let handle = instance.plugin_handle();
    let state: PluginState = handle
        .get_extension()
        .ok_or_else(|| anyhow!("no state extension"))?;
    state
        .load(&handle, &mut std::io::Cursor::new(bytes))
        .map_err(|e| anyhow!("load state: {e:?}"))
}

/// nice-plug's state: an 8-byte little-endian length, then JSON (`params`: plain values by
/// parameter id; `fields`: each persisted field as a JSON string holding its JSON).
pub fn state_json(state: &[u8]) -> anyhow::Result<serde_json::Value> {
    let header: [u8; 8] = state
        .get(..8)
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| anyhow!("state shorter than its header"))?;
    let length = u64::from_le_bytes(header) as usize;
    if length != state.len() - 8 {
        bail!(
            "state header says {length} bytes, {} follow",
            state.len() - 8
        );
    }
    serde_json::from_slice(&state[8..]).context("state JSON")
}

pub fn state_bytes(json: &serde_json::Value) -> Vec<u8> {
    let body = serde_json::to_vec(json).expect("a JSON value serialises");
    let mut out = (body.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

/// Set persisted field `name` to `value` (serialised as the field's JSON string).
pub fn set_field(json: &mut serde_json::Value, name: &str, value: &serde_json::Value) {
    json["fields"][name] = serde_json::Value::String(value.to_string());
}

/// Set parameter `id` to the plain value `text` in the state: a number for float and int
/// parameters, a variant id (`rise`) for enum parameters. nice-plug stores each as a tagged
/// value: `{"f32": 0.5}`, `{"i32": 3}`, `{"bool": true}`, `{"string": "rise"}`.
pub fn set_param(json: &mut serde_json::Value, id: &str, text: &str) -> anyhow::Result<()> {
    let slot = json["params"]
        .get_mut(id)
        .ok_or_else(|| anyhow!("no parameter `{id}`"))?;
    let kind = slot
        .as_object()
        .and_then(|o| o.keys().next())
        .cloned()
        .ok_or_else(|| anyhow!("parameter `{id}`: unexpected state value {slot}"))?;
    let value = match kind.as_str() {
        "string" => serde_json::Value::String(text.to_owned()),
        "i32" => {
            let v: i32 = text
                .parse()
                .with_context(|| format!("parameter `{id}`: `{text}` is not an integer"))?;
            serde_json::json!(v)
        }
        "bool" => {
            let v: bool = text
                .parse()
                .with_context(|| format!("parameter `{id}`: `{text}` is not true or false"))?;
            serde_json::json!(v)
        }
        _ => {
            let v: f32 = text
                .parse()
                .ok()
                .filter(|v: &f32| v.is_finite())
                .ok_or_else(|| anyhow!("parameter `{id}`: `{text}` is not a number"))?;
            serde_json::json!(v)
        }
    };
    *slot = serde_json::json!({ kind: value });
    Ok(())
}

/// nice-plug's CLAP parameter id for the string id (its `hash_param_id`).
pub fn clap_param_id(id: &str) -> ClapId {
    let mut hash: u32 = 0;
    for byte in id.bytes() {
        hash = hash.wrapping_mul(31).wrapping_add(u32::from(byte));
    }
    ClapId::new(hash & !(1 << 31))
}

/// The CLAP value (normalised for floats) of parameter `id` at plain value `plain`.
pub fn clap_value(instance: &mut Instance, id: &str, plain: f64) -> anyhow::Result<f64> {
    let handle = instance.plugin_handle();
    let params: PluginParams = handle
        .get_extension()
        .ok_or_else(|| anyhow!("no params extension"))?;
    let text = CString::new(format!("{plain}")).expect("a number has no NUL");
    params
        .text_to_value(&handle, clap_param_id(id), &text)
        .ok_or_else(|| anyhow!("parameter `{id}` does not take {plain}"))
}

/// The id and current CLAP value of the parameter named `name`.
pub fn find_param(instance: &mut Instance, name: &str) -> anyhow::Result<(ClapId, f64)> {
    let handle = instance.plugin_handle();
    let params: PluginParams = handle
        .get_extension()
        .ok_or_else(|| anyhow!("no params extension"))?;
    let mut buffer = ParamInfoBuffer::new();
    for index in 0..params.count(&handle) {
        let Some(info) = params.get_info(&handle, index, &mut buffer) else {
            continue;
        };
        if info.name == name.as_bytes() {
            let id = info.id;
            let value = params
                .get_value(&handle, id)
                .ok_or_else(|| anyhow!("parameter {name}: no value"))?;
            return Ok((id, value));
        }
    }
    bail!("no parameter named {name}")
}

/// The text the plugin shows for parameter `id` (a frozen string id) at its current value.
/// musicrfm's hidden `engine` parameter reads out the engine's counters this way.
pub fn param_text(instance: &mut Instance, id: &str) -> anyhow::Result<String> {
    let handle = instance.plugin_handle();
    let params: PluginParams = handle
        .get_extension()
        .ok_or_else(|| anyhow!("no params extension"))?;
    let param = clap_param_id(id);
    let value = params
        .get_value(&handle, param)
        .ok_or_else(|| anyhow!("no parameter `{id}`"))?;
    let mut buffer = vec![0u8; 1024];
    let text = params
        .value_to_text(&handle, param, value, &mut buffer)
        .map_err(|_| anyhow!("parameter `{id}`: no text for {value}"))?;
    let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
    Ok(String::from_utf8_lossy(&text[..end]).into_owned())
}

/// One counter of musicrfm's engine report (the hidden `engine` parameter's text,
/// `key=value` pairs).
pub fn engine_counter(instance: &mut Instance, key: &str) -> anyhow::Result<u64> {
    let text = param_text(instance, "engine")?;
    text.split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
        .ok_or_else(|| anyhow!("the engine report has no `{key}`: {text}"))
}

/// Every parameter's name, in the plugin's order.
pub fn param_names(instance: &mut Instance) -> anyhow::Result<Vec<String>> {
    let handle = instance.plugin_handle();
    let params: PluginParams = handle
        .get_extension()
        .ok_or_else(|| anyhow!("no params extension"))?;
    let mut buffer = ParamInfoBuffer::new();
    let mut names = Vec::new();
    for index in 0..params.count(&handle) {
        if let Some(info) = params.get_info(&handle, index, &mut buffer) {
            names.push(String::from_utf8_lossy(info.name).into_owned());
        }
    }
    Ok(names)
}

pub fn set_offline(instance: &mut Instance) -> anyhow::Result<()> {
    set_render_mode(instance, RenderMode::Offline)
}

/// Back to realtime rendering (the mode a plugin starts in).
pub fn set_realtime(instance: &mut Instance) -> anyhow::Result<()> {
    set_render_mode(instance, RenderMode::Realtime)
}

fn set_render_mode(instance: &mut Instance, mode: RenderMode) -> anyhow::Result<()> {
    let handle = instance.plugin_handle();
    let render: PluginRender = handle
        .get_extension()
        .ok_or_else(|| anyhow!("no render extension"))?;
    render
        .set(&handle, mode)
        .map_err(|e| anyhow!("render mode {mode:?}: {e:?}"))
}

pub fn latency(instance: &mut Instance) -> u32 {
    let handle = instance.plugin_handle();
    handle
        .get_extension::<PluginLatency>()
        .map_or(0, |latency| latency.get(&handle))
}

/// What the host sends at an absolute sample of the run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HostEvent {
    /// A parameter's CLAP value (normalised for floats).
    Param {
        param: ClapId,
        value: f64,
    },
    /// A MIDI note-on, channel 0; velocity in 0..=1.
    NoteOn {
        key: u8,
        velocity: f64,
    },
    NoteOff {
        key: u8,
    },
}

/// A [`HostEvent`] at absolute sample `sample` of the run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimedEvent {
    pub sample: u64,
    pub event: HostEvent,
}

/// The transport a block starts with: playing or stopped, at a song position in samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportState {
    pub playing: bool,
    pub position: u64,
}

/// A question the host asks the plugin on the main thread ([`Playback::wait_before`]).
pub type HostCheck<'a> = &'a dyn Fn(&mut Instance) -> bool;

/// One run of the plugin: activate, process the blocks, deactivate.
pub struct Playback<'a> {
    pub sample_rate: f64,
    /// Host buffer sizes, in order.
    pub blocks: &'a [usize],
    /// Sorted by sample.
    pub events: &'a [TimedEvent],
    /// The transport at each block's first sample (the argument: samples since the run began);
    /// `None`: no transport at all, as a host that has none (the plugin runs freely).
    pub transport: Option<&'a dyn Fn(u64) -> TransportState>,
    /// Switch the render mode to offline after activating, as hosts that do not re-activate.
    pub offline_after_activation: bool,
    /// Call `process()` no faster than real time, as a realtime host's audio callback does.
    pub paced: bool,
    /// Before the block that starts at this sample of the run, call this on the main thread
    /// until it returns `true` (at most a minute): a host that waits, transport stopped, for
    /// something the plugin reports.
    pub wait_before: Option<(u64, HostCheck<'a>)>,
}

impl Default for Playback<'_> {
    fn default() -> Self {
        Self {
            sample_rate: 48_000.0,
            blocks: &[],
            events: &[],
            transport: None,
            offline_after_activation: false,
            paced: false,
            wait_before: None,
        }
    }
}

/// What a [`Playback`] produced.
pub struct Played {
    /// Each output channel's samples.
    pub channels: Vec<Vec<f32>>,
    /// The latency the plugin reported after activating.
    pub latency: u32,
}

fn transport_event(state: TransportState, sample_rate: f64) -> TransportEvent {
    let mut flags = TransportFlags::HAS_SECONDS_TIMELINE;
    if state.playing {
        flags |= TransportFlags::IS_PLAYING;
    }
    let zero = FixedPoint::from_int(0);
    TransportEvent {
        header: EventHeader::new_core(0, EventFlags::empty()),
        flags,
        song_pos_beats: zero,
        song_pos_seconds: FixedPoint::from_float(state.position as f64 / sample_rate),
        tempo: 0.0,
        tempo_inc: 0.0,
        loop_start_beats: zero,
        loop_end_beats: zero,
        loop_start_seconds: zero,
        loop_end_seconds: zero,
        bar_start: zero,
        bar_number: 0,
        time_signature_numerator: 4,
        time_signature_denominator: 4,
    }
}

fn push_event(buffer: &mut EventBuffer, at: u32, event: HostEvent) {
    let note = |key: u8| Pckn::new(0u16, 0u16, u16::from(key), Match::All);
    match event {
        HostEvent::Param { param, value } => {
            buffer.push(&ParamValueEvent::new(at, param, Pckn::match_all(), value));
        }
        HostEvent::NoteOn { key, velocity } => {
            buffer.push(&NoteOnEvent::new(at, note(key), velocity));
        }
        HostEvent::NoteOff { key } => buffer.push(&NoteOffEvent::new(at, note(key), 0.0)),
    }
}

impl Playback<'_> {
    /// Run it on `instance`.
    pub fn run(&self, instance: &mut Instance) -> anyhow::Result<Played> {
        let max_frames = self.blocks.iter().copied().max().unwrap_or(1).max(1);
        let config = PluginAudioConfiguration {
            sample_rate: self.sample_rate,
            min_frames_count: 1,
            max_frames_count: max_frames as u32,
        };
        let stopped = instance
            .activate(|_, _| (), config)
            .map_err(|e| anyhow!("activate: {e:?}"))?;
        let latency = latency(instance);
        if self.offline_after_activation {
            set_offline(instance)?;
        }
        let mut processor = stopped
            .start_processing()
            .map_err(|e| anyhow!("start processing: {e:?}"))?;

        let mut outputs = vec![vec![f32::NAN; max_frames]; 2];
        let mut output_ports = AudioPorts::with_capacity(2, 1);
        let total: usize = self.blocks.iter().sum();
        let mut channels = vec![Vec::with_capacity(total), Vec::with_capacity(total)];
        let mut steady_time = 0u64;
        let mut next_event = 0usize;
        let mut events = EventBuffer::with_capacity(64);
        let mut output_event_buffer = EventBuffer::new();
        let mut started = std::time::Instant::now();
        for &frames in self.blocks {
            if let Some((at, until)) = self.wait_before
                && at == steady_time
            {
                let waited = std::time::Instant::now();
                while !until(instance) {
                    if waited.elapsed() > std::time::Duration::from_secs(60) {
                        bail!("waited a minute before sample {at} for the plugin");
                    }
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                // The waiting was stopped time: pacing goes on from here.
                started = std::time::Instant::now()
                    - std::time::Duration::from_secs_f64(steady_time as f64 / self.sample_rate);
            }
            if self.paced {
                let due = std::time::Duration::from_secs_f64(steady_time as f64 / self.sample_rate);
                if let Some(rest) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(rest);
                }
            }
            events.clear();
            let end = steady_time + frames as u64;
            while let Some(timed) = self.events.get(next_event).filter(|e| e.sample < end) {
                let at = timed.sample.saturating_sub(steady_time) as u32;
                push_event(&mut events, at, timed.event);
                next_event += 1;
            }
            output_event_buffer.clear();
            let mut output_events = OutputEvents::from_buffer(&mut output_event_buffer);
            for channel in outputs.iter_mut() {
                channel.fill(f32::NAN);
            }
            let transport = self
                .transport
                .map(|at| transport_event(at(steady_time), self.sample_rate));
            let input_audio = InputAudioBuffers::empty();
            let mut output_audio = output_ports.with_output_buffers([AudioPortBuffer {
                latency: 0,
                channels: AudioPortBufferType::f32_output_only(
                    outputs.iter_mut().map(|b| &mut b.as_mut_slice()[..frames]),
                ),
            }]);
            processor
                .process(
                    &input_audio,
                    &mut output_audio,
                    &events.as_input(),
                    &mut output_events,
                    Some(steady_time),
                    transport.as_ref(),
                )
                .map_err(|e| anyhow!("process: {e:?}"))?;
            steady_time = end;
            for (all, channel) in channels.iter_mut().zip(&outputs) {
                all.extend_from_slice(&channel[..frames]);
            }
        }
        instance.deactivate(processor.stop_processing());
        Ok(Played { channels, latency })
    }
}
