//! The built `musicrfm.clap` in a third-party CLAP host (clack-host): scan, instantiate,
//! activate, process blocks of varying size, automate a parameter, and round-trip the state.
//!
//! The plugin file is `$MUSICRFM_CLAP` (set by `cargo xtask test` to the release bundle), or
//! else the `libmusicrfm.so` that `cargo test --workspace` builds beside this test binary.

use std::ffi::CString;
use std::path::PathBuf;

use clack_extensions::params::{ParamInfoBuffer, PluginParams};
use clack_extensions::render::{PluginRender, RenderMode};
use clack_extensions::state::PluginState;
use clack_host::events::event_types::ParamValueEvent;
use clack_host::prelude::*;

struct Shared;

impl SharedHandler<'_> for Shared {
    fn request_restart(&self) {}
    fn request_process(&self) {}
    fn request_callback(&self) {}
}

struct Host;

impl HostHandlers for Host {
    type Shared<'a> = Shared;
    type MainThread<'a> = ();
    type AudioProcessor<'a> = ();
}

const SAMPLE_RATE: f64 = 48_000.0;
const MAX_FRAMES: u32 = 512;

fn plugin_path() -> PathBuf {
    if let Some(path) = std::env::var_os("MUSICRFM_CLAP") {
        return PathBuf::from(path);
    }
    // target/<profile>/deps/clap_host-<hash> → target/<profile>/libmusicrfm.so
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binary lives in target/<profile>/deps");
    profile_dir.join("libmusicrfm.so")
}

/// Threads of this process (Linux: the entries of `/proc/self/task`).
fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .count()
}

fn load_entry() -> (PluginEntry, CString) {
    let path = plugin_path();
    assert!(
        path.is_file(),
        "plugin not built: {} (run `cargo xtask test`, or `cargo test --workspace`)",
        path.display()
    );
    // SAFETY: loading our own plugin library, which follows the CLAP entry contract.
    let entry = unsafe { PluginEntry::load(&path) }.expect("load CLAP entry");
    let factory = entry.get_plugin_factory().expect("plugin factory");
    let descriptor = factory.plugin_descriptors().next().expect("one descriptor");
    let id = descriptor.id().expect("plugin id").to_owned();
    let name = descriptor.name().map(|n| n.to_string_lossy().into_owned());
    assert_eq!(id.to_str().unwrap(), "com.musicrfm.musicrfm");
    assert_eq!(name.as_deref(), Some("musicrfm"));
    (entry, id)
}

fn instantiate(entry: &PluginEntry, id: &CString) -> PluginInstance<Host> {
    let info = HostInfo::new(
        "musicrfm-test-host",
        "musicrfm",
        "https://example.invalid",
        "0.1",
    )
    .expect("host info");
    PluginInstance::<Host>::new(|_| Shared, |_| (), entry, id, &info).expect("instantiate")
}

fn save_state(instance: &mut PluginInstance<Host>) -> Vec<u8> {
    let handle = instance.plugin_handle();
    let state: PluginState = handle.get_extension().expect("state extension");
    let mut bytes = Vec::new();
    state.save(&handle, &mut bytes).expect("save state");
    bytes
}

fn load_state(instance: &mut PluginInstance<Host>, bytes: &[u8]) {
    let handle = instance.plugin_handle();
    let state: PluginState = handle.get_extension().expect("state extension");
    state
        .load(&handle, &mut std::io::Cursor::new(bytes))
        .expect("load state");
}

/// The id and current value of the parameter named `name`.
fn find_param(instance: &mut PluginInstance<Host>, name: &str) -> (ClapId, f64) {
    let handle = instance.plugin_handle();
    let params: PluginParams = handle.get_extension().expect("params extension");
    let mut buffer = ParamInfoBuffer::new();
    for index in 0..params.count(&handle) {
        let info = params
            .get_info(&handle, index, &mut buffer)
            .expect("param info");
        if info.name == name.as_bytes() {
            let id = info.id;
            let value = params.get_value(&handle, id).expect("param value");
            return (id, value);
        }
    }
    panic!("no parameter named {name}");
}

/// Every parameter's name, in the plugin's order.
fn param_names(instance: &mut PluginInstance<Host>) -> Vec<String> {
    let handle = instance.plugin_handle();
    let params: PluginParams = handle.get_extension().expect("params extension");
    let mut buffer = ParamInfoBuffer::new();
    (0..params.count(&handle))
        .map(|index| {
            let info = params
                .get_info(&handle, index, &mut buffer)
                .expect("param info");
            String::from_utf8_lossy(info.name).into_owned()
        })
        .collect()
}

/// Activate, process blocks of varying size with a parameter change in the middle, deactivate.
/// Returns every output sample.
fn run_blocks(instance: &mut PluginInstance<Host>, param: ClapId, value: f64) -> Vec<f32> {
    let config = PluginAudioConfiguration {
        sample_rate: SAMPLE_RATE,
        min_frames_count: 1,
        max_frames_count: MAX_FRAMES,
    };
    let stopped = instance.activate(|_, _| (), config).expect("activate");
    let mut processor = stopped.start_processing().expect("start processing");

    let mut outputs = vec![vec![f32::NAN; MAX_FRAMES as usize]; 2];
    let mut output_ports = AudioPorts::with_capacity(2, 1);
    let mut all = Vec::new();
    let mut steady_time = 0u64;
    for (i, frames) in [64usize, 1, 300, 512, 7, 256, 129].into_iter().enumerate() {
        let event = ParamValueEvent::new(0, param, Pckn::match_all(), value);
        let events = [event];
        let input_events = if i == 2 {
            InputEvents::from_buffer(&events)
        } else {
            InputEvents::empty()
        };
        let mut output_event_buffer = EventBuffer::new();
        let mut output_events = OutputEvents::from_buffer(&mut output_event_buffer);
        for channel in outputs.iter_mut() {
            channel.fill(f32::NAN);
        }
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
                &input_events,
                &mut output_events,
                Some(steady_time),
                None,
            )
            .expect("process");
        steady_time += frames as u64;
        for channel in &outputs {
            all.extend_from_slice(&channel[..frames]);
        }
    }
    instance.deactivate(processor.stop_processing());
    all
}

#[test]
fn clap_scan_process_and_state_round_trip() {
    // A DAW scans hundreds of plugins: the scan (entry, factory, descriptor) must not start
    // the engine, whose model loading runs on threads of its own. This is the only test in
    // this binary, so no other test's threads come and go meanwhile.
    let threads = thread_count();
    let (entry, id) = load_entry();
    assert_eq!(
        thread_count(),
        threads,
        "scanning the plugin started a thread"
    );

    let mut first = instantiate(&entry, &id);
    let default_state = save_state(&mut first);
    let names = param_names(&mut first);
    assert_eq!(names.len(), 3 * 8 + 10, "parameters: {names:?}");
    for k in 1..=8 {
        for what in ["strength", "shape", "length"] {
            let name = format!("Slot {k} {what}");
            assert!(names.contains(&name), "no parameter {name}: {names:?}");
        }
    }
    for name in [
        "Master",
        "Layers",
        "Layers value",
        "Gate",
        "Guidance",
        "Temperature",
        "Top k",
        "Seed",
        "Clock",
        "Cushion",
    ] {
        assert!(names.iter().any(|n| n == name), "no parameter {name}");
    }
    let (strength, initial) = find_param(&mut first, "Slot 1 strength");
    assert_eq!(
        initial, 0.5,
        "slot 1 strength defaults to 0 (normalised 0.5 of -2..2)"
    );

    // Offline render mode is what a bounce uses; the plugin must accept it.
    {
        let handle = first.plugin_handle();
        let render: PluginRender = handle.get_extension().expect("render extension");
        render
            .set(&handle, RenderMode::Offline)
            .expect("offline render mode");
    }

    // CLAP hosts see float parameters normalised to 0..1: 0.8 is strength 1.2.
    let samples = run_blocks(&mut first, strength, 0.8);
    assert_eq!(samples.len(), 2 * (64 + 1 + 300 + 512 + 7 + 256 + 129));
    assert!(
        samples.iter().all(|s| s.is_finite()),
        "every output sample is written and finite"
    );
    let (_, automated) = find_param(&mut first, "Slot 1 strength");
    assert!(
        (automated - 0.8).abs() < 1e-6,
        "the parameter event reached the plugin: {automated}"
    );

    let saved = save_state(&mut first);
    assert_ne!(
        saved, default_state,
        "the automated value must be part of the state"
    );

    let mut second = instantiate(&entry, &id);
    load_state(&mut second, &saved);
    let (_, restored) = find_param(&mut second, "Slot 1 strength");
    assert!(
        (restored - 0.8).abs() < 1e-6,
        "state restores the parameter: {restored}"
    );
    let saved_again = save_state(&mut second);
    assert_eq!(
        String::from_utf8_lossy(&saved),
        String::from_utf8_lossy(&saved_again),
        "state survives save → load → save byte for byte"
    );
    assert_eq!(saved, saved_again);

    // The persisted prompt (not a parameter) round-trips as well: a host restoring a project
    // hands back a state whose prompt the user typed in the editor.
    let with_prompt = state_with_prompt(&saved, "dreamy lofi with \"quoted\" words ♪");
    let mut third = instantiate(&entry, &id);
    load_state(&mut third, &with_prompt);
    let restored = save_state(&mut third);
    let as_json = |bytes: &[u8]| serde_json::from_slice::<serde_json::Value>(&bytes[8..]).unwrap();
    assert_eq!(as_json(&restored), as_json(&with_prompt));
    let mut fourth = instantiate(&entry, &id);
    load_state(&mut fourth, &restored);
    assert_eq!(save_state(&mut fourth), restored);
}

/// nice-plug's state: an 8-byte little-endian length, then JSON whose `fields.prompt` holds the
/// persisted prompt serialised as a JSON string.
fn state_with_prompt(state: &[u8], prompt: &str) -> Vec<u8> {
    let length = u64::from_le_bytes(state[..8].try_into().unwrap()) as usize;
    assert_eq!(length, state.len() - 8, "state header is the JSON length");
    let mut json: serde_json::Value = serde_json::from_slice(&state[8..]).unwrap();
    json["fields"]["prompt"] = serde_json::Value::String(serde_json::to_string(prompt).unwrap());
    let body = serde_json::to_vec(&json).unwrap();
    let mut out = (body.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}
